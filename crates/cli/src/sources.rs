//! From a checked configuration to a token source: the client
//! authentication (secrets from the environment or files only), discovery,
//! the grant, and the shared caches in front of it.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[cfg(feature = "redis")]
use tokenkeeper::cache::RedisCache;
use tokenkeeper::cache::{Chain, FileCache, MemoryCache};
use tokenkeeper::oauth2::{
    ClientAuth, ClientCredentials, ConfigError, Discovery, DiscoveryError, PresentedToken,
    ServerMetadata, TokenEndpoint, TokenExchange,
};
#[cfg(feature = "jwt")]
use tokenkeeper::oauth2::{DpopKey, KeyError, PrivateKey, SigningAlgorithm};
use tokenkeeper::{Backoff, ErrorKind, TokenSource};

use super::config::{Auth, Config, Grant, Location};
use super::output::{install_warnings, say, usage_error, Scrubber, EXIT_REFUSED, EXIT_UNAVAILABLE};

/// Where the client secret comes from when no file is given.
pub const SECRET_ENV: &str = "TOKENKEEPER_CLIENT_SECRET";
/// Where the Redis URL comes from when `--redis-url` is not given.
pub const REDIS_URL_ENV: &str = "TOKENKEEPER_REDIS_URL";
/// What a Redis URL gets without the `redis` feature.
pub const NO_REDIS: &str = "the Redis cache is not in this build; build it with \
`--features redis` (cargo install --path crates/cli --features redis, or \
cargo run --features redis --example token -- ...)";
/// What a signed assertion gets without the `jwt` feature.
const NO_JWT: &str = "signed client assertions (client_secret_jwt, private_key_jwt) are not in \
this build; build it with the default features or `--features jwt`";
/// What a DPoP key gets without the `jwt` feature.
#[cfg(not(feature = "jwt"))]
const NO_DPOP: &str = "DPoP (--dpop-key-file) is not in this build; build it with the default \
features or `--features jwt`";
/// What a plain-http token URL to another host gets.
const INSECURE_URL: &str = "--token-url must be an https URL: plain http is allowed only to \
loopback (127.0.0.1, ::1, localhost), where the secret does not cross a network";
/// What a plain-http issuer on another host gets.
const INSECURE_ISSUER: &str = "--issuer must be an https URL: plain http is allowed only to \
loopback (127.0.0.1, ::1, localhost), where the secret does not cross a network";
/// How many times discovery tries before the tool gives up.
const DISCOVERY_ATTEMPTS: u32 = 3;
/// The longest one attempt may take when printing one token (and one
/// discovery attempt).
pub const ONE_SHOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a one-shot run may hold a shared cache's refresh lease: its
/// longest attempt and a margin.
const ONE_SHOT_LEASE_TTL: Duration = Duration::from_secs(6);

/// A source ready to run, and the scrubber every printed line goes
/// through.
pub struct Prepared {
    pub source: Box<dyn TokenSource>,
    pub scrub: &'static Scrubber,
}

/// Builds the source `config` describes, installing the stderr logger on
/// the way; on failure, the message is printed and the exit code returned.
/// `one_shot`: a run that prints one token (shorter cache lease).
pub fn prepare(config: &Config, one_shot: bool) -> Result<Prepared, ExitCode> {
    let (auth, secret) = client_auth(config).map_err(|e| usage_error(&e))?;
    let redis_url = redis_url(config.redis_url.clone()).map_err(|e| usage_error(&e))?;
    // Without a secret (a key, an assertion file) there is nothing of ours
    // to look for: the library scrubs the assertions it sends.
    let scrub = Scrubber::new(secret.unwrap_or_default());
    // The logger lives as long as the process; so does the scrubber it
    // uses. Installed before discovery, whose retries it reports.
    let scrub: &'static Scrubber = Box::leak(Box::new(scrub));
    install_warnings(scrub, redis_url.as_ref().map(RedisUrl::copy));

    let endpoint = match &config.location {
        Location::TokenUrl(url) => TokenEndpoint::builder(url.as_str(), config.client_id.as_str()),
        Location::Issuer(issuer) => match smol::block_on(discover(issuer)) {
            Ok(metadata) => TokenEndpoint::from_metadata(&metadata, config.client_id.as_str()),
            Err(error) => return Err(discovery_failed(&error, scrub)),
        },
    };
    let mut endpoint = endpoint.client_auth(auth);
    #[cfg(feature = "jwt")]
    if let Some(path) = &config.dpop_key_file {
        endpoint = endpoint.dpop(dpop_key(path).map_err(|e| usage_error(&e))?);
    }
    #[cfg(not(feature = "jwt"))]
    if config.dpop_key_file.is_some() {
        return Err(usage_error(&NO_DPOP));
    }
    if let Some(audience) = &config.assertion_audience {
        endpoint = endpoint.assertion_audience(audience);
    }
    let endpoint = match endpoint.build() {
        Ok(endpoint) => endpoint,
        // The library's hint names a builder method (allow_insecure_http)
        // that a user of this tool has no flag for: name what they can do.
        Err(ConfigError::InsecureUrl(_)) => return Err(usage_error(&INSECURE_URL)),
        Err(error) => return Err(usage_error(&error.to_string())),
    };
    let source = grant(endpoint, config);
    // With a shared cache the source becomes a chain that reads the caches
    // first and writes new tokens back; nothing else here changes.
    let source = with_caches(source, config, redis_url, one_shot).map_err(|e| usage_error(&e))?;
    Ok(Prepared { source, scrub })
}

/// The grant the flags ask for, on `endpoint`.
fn grant(endpoint: TokenEndpoint, config: &Config) -> Box<dyn TokenSource> {
    match &config.grant {
        Grant::ClientCredentials => {
            let mut source = ClientCredentials::new(endpoint);
            if let Some(scope) = &config.scope {
                source = source.scope(scope);
            }
            // One at most: the checks refuse more for this grant.
            if let Some(audience) = config.audiences.first() {
                source = source.audience(audience);
            }
            for resource in &config.resources {
                source = source.resource(resource);
            }
            Box::new(source)
        }
        Grant::TokenExchange {
            subject_token_file,
            subject_token_type,
            requested_token_type,
        } => {
            let mut subject = PresentedToken::file(subject_token_file);
            if let Some(uri) = subject_token_type {
                subject = subject.token_type(uri);
            }
            let mut source = TokenExchange::new(endpoint, subject);
            if let Some(uri) = requested_token_type {
                source = source.requested_token_type(uri);
            }
            if let Some(scope) = &config.scope {
                source = source.scope(scope);
            }
            for audience in &config.audiences {
                source = source.audience(audience);
            }
            for resource in &config.resources {
                source = source.resource(resource);
            }
            Box::new(source)
        }
    }
}

/// The authority's metadata, fetched once: a failure that may pass is
/// retried as a token request is (250 ms doubling, each attempt at most
/// 5 s), [`DISCOVERY_ATTEMPTS`] times in all.
async fn discover(issuer: &str) -> Result<ServerMetadata, DiscoveryError> {
    Discovery::new(issuer)
        .backoff(Backoff::new(
            Duration::from_millis(250),
            2.0,
            Duration::from_secs(2),
        ))
        .request_timeout(ONE_SHOT_REQUEST_TIMEOUT)
        .max_attempts(DISCOVERY_ATTEMPTS)
        .fetch()
        .await
}

/// Reports a failed discovery and picks the exit code: bad usage for an
/// issuer that is no https URL, unavailable for failures that may pass,
/// refused for the rest (no metadata, or metadata for another issuer).
fn discovery_failed(error: &DiscoveryError, scrub: &Scrubber) -> ExitCode {
    let name = super::output::name();
    match error {
        DiscoveryError::InvalidIssuer { issuer, .. } if issuer.starts_with("http:") => {
            usage_error(&INSECURE_ISSUER)
        }
        DiscoveryError::InvalidIssuer { .. } => usage_error(&format!("--issuer: {error}")),
        error if error.kind() == ErrorKind::Transient => {
            say(&scrub.line(&format!(
                "{name}: error: discovery: {error}; no metadata after {DISCOVERY_ATTEMPTS} attempts"
            )));
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        error => {
            say(&scrub.line(&format!("{name}: error: discovery: {error}")));
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

/// The source as given, or behind a chain of caches when the command line
/// names a shared one: memory first, then the file, then Redis.
fn with_caches(
    source: Box<dyn TokenSource>,
    config: &Config,
    redis_url: Option<RedisUrl>,
    one_shot: bool,
) -> Result<Box<dyn TokenSource>, String> {
    if config.cache_file.is_none() && redis_url.is_none() {
        return Ok(source);
    }
    let mut chain = Chain::new(source).cache(MemoryCache::new());
    if let Some(path) = &config.cache_file {
        chain = chain.cache(FileCache::new(path));
    }
    #[cfg(feature = "redis")]
    if let Some(url) = redis_url {
        // The library's messages never quote the URL; scrubbed all the same.
        let cache = RedisCache::new(&url.0)
            .map_err(|e| format!("--redis-url: {}", url.scrub(&e.to_string())))?
            .key_prefix(redis_key_prefix(config));
        chain = chain.cache(cache);
    }
    #[cfg(not(feature = "redis"))]
    if redis_url.is_some() {
        return Err(NO_REDIS.to_owned());
    }
    if one_shot {
        chain = chain.lease_ttl(ONE_SHOT_LEASE_TTL);
    }
    Ok(Box::new(chain))
}

/// A Redis URL, which may hold a password: never printed, not even by
/// `Debug`.
pub struct RedisUrl(String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisUrl([redacted])")
    }
}

impl RedisUrl {
    /// Another value of the same URL, for the logger to scrub with.
    fn copy(&self) -> RedisUrl {
        RedisUrl(self.0.clone())
    }

    /// `text` without the URL or its password.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.replace(self.0.as_str(), "[redacted]");
        if let Some(password) = url::Url::parse(&self.0)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
            .filter(|p| p.chars().count() >= 4)
        {
            text = text.replace(password.as_str(), "[redacted]");
        }
        text
    }
}

/// The Redis URL: the flag, else the environment variable; a usage error
/// when this build has no Redis cache.
fn redis_url(flag: Option<String>) -> Result<Option<RedisUrl>, String> {
    let url = match flag {
        Some(url) => Some(RedisUrl(url)),
        None => match std::env::var(REDIS_URL_ENV) {
            Ok(url) if url.is_empty() => None,
            Ok(url) => Some(RedisUrl(url)),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("{REDIS_URL_ENV} is not valid UTF-8"))
            }
        },
    };
    if url.is_some() && !cfg!(feature = "redis") {
        return Err(NO_REDIS.to_owned());
    }
    Ok(url)
}

/// The Redis key prefix of this token: `tokenkeeper:token-cli:<hash>:`
/// (the keys are `{tokenkeeper:token-cli:<hash>:}token` and `...lease`),
/// the hash (64-bit FNV-1a, the same in every build) covering what decides
/// which token the authority gives: token URL (or issuer), client id,
/// scope, audiences and resources, and for a token exchange the subject
/// token's file and type and the type asked for. The secret stays out of
/// it.
#[cfg(feature = "redis")]
fn redis_key_prefix(config: &Config) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |field: Option<&str>| {
        // Each field with its presence and length, so no two lists of
        // fields run together into the same bytes.
        let (present, bytes) = match field {
            Some(text) => (1u8, text.as_bytes()),
            None => (0u8, &[][..]),
        };
        let len = bytes.len() as u64;
        for byte in [present]
            .iter()
            .chain(&len.to_le_bytes())
            .chain(bytes.iter())
        {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    match &config.location {
        Location::TokenUrl(url) => feed(Some(url)),
        Location::Issuer(issuer) => {
            feed(Some("issuer"));
            feed(Some(issuer));
        }
    }
    feed(Some(&config.client_id));
    feed(config.scope.as_deref());
    feed(config.audiences.first().map(String::as_str));
    for resource in &config.resources {
        feed(Some(resource));
    }
    if let Grant::TokenExchange {
        subject_token_file,
        subject_token_type,
        requested_token_type,
    } = &config.grant
    {
        feed(Some("token-exchange"));
        feed(subject_token_file.to_str());
        feed(subject_token_type.as_deref());
        feed(requested_token_type.as_deref());
        for audience in config.audiences.iter().skip(1) {
            feed(Some(audience));
        }
    }
    format!("tokenkeeper:token-cli:{hash:016x}:")
}

/// The client authentication the flags ask for, and the client secret
/// when it takes one (for the scrubber). The key is read here: a key that
/// cannot sign is bad usage, told before any request.
fn client_auth(config: &Config) -> Result<(ClientAuth, Option<String>), String> {
    match &config.auth {
        Auth::Secret(method) => {
            let secret = read_secret(config.client_secret_file.as_deref())?;
            let auth = ClientAuth::with_secret(*method, secret.as_str())
                .ok_or_else(|| NO_JWT.to_owned())?;
            Ok((auth, Some(secret)))
        }
        #[cfg(feature = "jwt")]
        Auth::PrivateKey { file, key_id, alg } => {
            // Named, never quoted: a misplaced value may be a secret.
            let alg: Option<SigningAlgorithm> = match alg {
                Some(alg) => Some(
                    alg.parse()
                        .map_err(|_| "--alg takes ES256, RS256, PS256 or EdDSA".to_owned())?,
                ),
                None => None,
            };
            let mut key = PrivateKey::from_file(file).map_err(|e| match e {
                // It names the file already.
                KeyError::Read { .. } => format!("--private-key-file: {e}"),
                e => format!("--private-key-file {}: {e}", file.display()),
            })?;
            if let Some(alg) = alg {
                key = key.with_algorithm(alg).map_err(|e| format!("--alg: {e}"))?;
            }
            if let Some(key_id) = key_id {
                key = key.with_key_id(key_id);
            }
            Ok((ClientAuth::PrivateKeyJwt(key), None))
        }
        #[cfg(not(feature = "jwt"))]
        Auth::PrivateKey { .. } => Err(NO_JWT.to_owned()),
        Auth::AssertionFile(file) => Ok((ClientAuth::ClientAssertionFile(file.clone()), None)),
        Auth::None => Ok((ClientAuth::None, None)),
    }
}

/// The DPoP key kept in `path`, created there if missing.
#[cfg(feature = "jwt")]
fn dpop_key(path: &Path) -> Result<DpopKey, String> {
    DpopKey::load_or_create(path).map_err(|e| match e {
        // They name the file already.
        KeyError::Read { .. } | KeyError::Create { .. } | KeyError::Untrusted { .. } => {
            format!("--dpop-key-file: {e}")
        }
        e => format!("--dpop-key-file {}: {e}", path.display()),
    })
}

/// The client secret: from the file if one is given, else the environment.
fn read_secret(file: Option<&Path>) -> Result<String, String> {
    let secret = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --client-secret-file {}: {e}", path.display()))?;
            // Editors and `echo` add a final newline; it is not the secret's.
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_owned()
        }
        None => match std::env::var(SECRET_ENV) {
            Ok(secret) => secret,
            Err(std::env::VarError::NotPresent) => {
                return Err(format!(
                    "no client secret: set {SECRET_ENV} or use --client-secret-file PATH"
                ))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("{SECRET_ENV} is not valid UTF-8"))
            }
        },
    };
    if secret.is_empty() {
        return Err(match file {
            Some(path) => format!(
                "--client-secret-file {} holds an empty secret",
                path.display()
            ),
            None => format!("{SECRET_ENV} is empty"),
        });
    }
    Ok(secret)
}
