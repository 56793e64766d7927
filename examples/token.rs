//! `token`: print an OAuth2 access token for scripts, or watch the manager
//! keep one fresh. A tool in the spirit of `gcloud auth print-access-token`,
//! and a worked example of the client-credentials source driven by a
//! `TokenManager` on smol, over the default HTTP client (ureq).
//!
//! ```sh
//! read -rs TOKENKEEPER_CLIENT_SECRET && export TOKENKEEPER_CLIENT_SECRET  # typed, not echoed
//! cargo run --example token -- --token-url https://auth.example.com/oauth/token \
//!     --client-id my-service --scope "orders:read"
//! curl -H "Authorization: Bearer $(cargo run -q --example token -- ...)" https://api.example.com/
//!
//! # Watch the manager for 60 s: one JSON object per line, never a token value.
//! cargo run --example token -- --token-url ... --client-id ... --watch 60
//!
//! # Share one token between processes: the first run asks the authority,
//! # later runs (and concurrent ones) reuse the cached token while it lasts.
//! cargo run --example token -- ... --cache-file ~/.cache/my-service/token.json
//! TOKENKEEPER_REDIS_URL=redis://:password@127.0.0.1:6379/0 \
//!     cargo run --features redis --example token -- ...
//! ```
//!
//! Run with `--help` for the flags. What it shows:
//!
//! - Configuration: a [`TokenEndpoint`] (URL, client id, and a
//!   [`ClientAuth`]: a secret sent as `client_secret_basic` or
//!   `client_secret_post`, or signed assertions, below) under a
//!   [`ClientCredentials`] grant with optional `scope`, `audience` and
//!   repeatable `resource` (RFC 8707).
//! - The secret stays out of argv, where any local user can read it (`ps`,
//!   `/proc/PID/cmdline`) and shell history keeps it: it comes from the
//!   environment variable `TOKENKEEPER_CLIENT_SECRET` or from
//!   `--client-secret-file PATH` (one trailing newline trimmed; the file
//!   wins when both are set). `--client-secret` is refused.
//! - Typed errors: a failure is a `SourceError` whose
//!   [`request_error`](SourceError::request_error) is a
//!   [`TokenRequestError`], which carries the RFC 6749 error code.
//! - Running the manager on an executor the library knows nothing about:
//!   the driver is a plain future, spawned on smol here.
//! - Caches shared between processes (`--cache-file`, `--redis-url`): a
//!   [`Chain`] in front of the source, below.
//!
//! # Without a shared secret on the wire
//!
//! ```sh
//! # private_key_jwt: a JWT signed with the key for every request (ES256, RS256
//! # or EdDSA from the key; --alg PS256 for an RSA key); no secret needed.
//! cargo run --example token -- --token-url ... --client-id my-service \
//!     --auth private_key_jwt --private-key-file key.pem --key-id 2024-01
//! # client_secret_jwt: a JWT signed HS256 with the secret, which stays here.
//! cargo run --example token -- --token-url ... --client-id my-service --auth client_secret_jwt
//! # Workload identity: the assertion a platform writes to a file, read for
//! # every request (Kubernetes, AZURE_FEDERATED_TOKEN_FILE, CI).
//! cargo run --example token -- --token-url ... --client-id my-app \
//!     --client-assertion-file "$AZURE_FEDERATED_TOKEN_FILE"
//! ```
//!
//! The key file is PEM (PKCS#8, PKCS#1 RSA or SEC1 EC) or DER; a key that
//! cannot sign (encrypted, an RSA key under 2048 bits, another curve, not
//! the `--alg` asked for) is bad usage (exit 2), told before any request and
//! never quoting the key. `--assertion-audience AUD` sets the signed
//! assertions' `aud` for an authority that wants its issuer rather than the
//! token URL. Signed assertions need the example's `jwt` feature (on by
//! default).
//!
//! # Discovery and token exchange
//!
//! ```sh
//! # The token endpoint from the authority's metadata (RFC 8414, else OpenID
//! # discovery), fetched once; signed assertions are then for the issuer.
//! cargo run --example token -- --issuer https://login.example.com/tenant-a \
//!     --client-id my-service --private-key-file key.pem
//! # Token exchange (RFC 8693): the workload's identity token, read from its
//! # file for every request, for a token for another audience; a security
//! # token service that wants no client authentication takes --auth none.
//! cargo run --example token -- --token-url https://sts.example.com/v1/token --auth none \
//!     --grant token-exchange --subject-token-file /var/run/secrets/tokens/sts \
//!     --audience //iam.example.com/pools/prod --scope cloud-platform
//! ```
//!
//! With `--issuer`, a client authentication the metadata does not list in
//! `token_endpoint_auth_methods_supported` (or a key whose algorithm it does
//! not list) is bad usage (exit 2), told before any token request. Discovery
//! is tried 3 times at most; no metadata after failures that may pass
//! (network, 5xx) is exit 3, and metadata that is missing or names another
//! issuer is exit 1. The subject token file is read as the assertion file is:
//! a missing or empty file, or a JWT in it that has expired, is a transient
//! failure naming the path. `--subject-token-type` defaults to
//! `urn:ietf:params:oauth:token-type:jwt`; `--audience` may be repeated with
//! token exchange.
//!
//! # Printing one token (no `--watch`)
//!
//! This runs the same manager a service would, waits for its first token
//! and prints the access token alone on stdout (then exits 0). The manager,
//! rather than one direct `TokenSource::fetch`, gives the retries a script
//! wants: a transient failure (network, timeout, HTTP 5xx or 429,
//! `temporarily_unavailable`) is retried with a short backoff (250 ms
//! doubling, at most 2 s between attempts, each attempt at most 5 s) for up
//! to 10 s in total. A permanent failure (`invalid_client`, `invalid_scope`,
//! `invalid_grant`, `unauthorized_client`, other 4xx answers) cannot improve
//! by retrying: `handle.token()` returns it at once, and the tool gives up
//! on the first one.
//!
//! On failure, stderr gets exactly one line naming the OAuth2 error code (or
//! the kind of failure when the authority sent none) and its description:
//!
//! ```text
//! token: error: invalid_client: client authentication failed (HTTP 401)
//! ```
//!
//! # Warnings
//!
//! What does not stop the run but deserves a look is a line on stderr, in
//! both modes (stdout keeps the token, or the JSON lines, alone):
//!
//! ```text
//! token: warning: token endpoint issued a token of type "mac", not Bearer; recorded on the token
//! token: warning: the authority granted scope "orders:read", not the scope asked for ("orders:read orders:write")
//! ```
//!
//! - The library's own warnings (its `log` records of warning level and
//!   above): a token type other than Bearer, a cache that cannot be read or
//!   written, a Redis server that is down or refuses our password. Never a
//!   token, a secret or the Redis URL.
//! - A granted scope other than the one asked for with `--scope`, compared
//!   as sets of scope tokens (an answer without `scope` grants what was
//!   asked). `--watch` repeats it only when the granted scope changes.
//!
//! Output into a closed pipe (`token --help | head -1`) is dropped quietly:
//! no panic, and the exit code is the one the run would have had (1 for a
//! token that could not be delivered).
//!
//! # Proxies
//!
//! Requests go through the proxy that `https_proxy` (or `http_proxy` for an
//! `http` URL, or `all_proxy`) names, except to hosts listed in `no_proxy`,
//! as curl reads these variables (upper-case names too, but `HTTP_PROXY`);
//! a token URL on loopback (`127.0.0.1`, `::1`, `localhost`) never goes
//! through a proxy. See `UreqClient` for the details.
//!
//! # Watching (`--watch SECS`)
//!
//! Runs the manager with the library's defaults for SECS seconds and prints
//! one JSON object per line on stdout, then exits 0:
//!
//! ```text
//! {"event":"token","expires_at_ms":1767225660000,"issued_at_ms":1767225600000,"stale_at_ms":1767225630000,"token_type":"Bearer","scope":"orders:read"}
//! {"event":"error","error":"temporarily_unavailable","kind":"transient","description":"try later (HTTP 503)","consecutive_failures":1,"at_ms":1767225625000,"retry_in_ms":412}
//! ```
//!
//! - `token`: each published token (times in ms since the Unix epoch, no
//!   later than the end of the year 9999, where a token with an absurd
//!   lifetime expires, so that readers parsing numbers as doubles read them
//!   exactly; the token value is never printed). `scope` is null when the
//!   authority sent none.
//! - `error`: each failed attempt. `error` is the OAuth2 code, or one of
//!   `connect`, `timeout`, `io`, `body_too_large`, `http`, `http_status`
//!   (an error status without an RFC 6749 body), `invalid_response`,
//!   `transient`, `permanent`. `retry_in_ms` is the backoff chosen after
//!   this failure. Lines follow the manager's events
//!   (`TokenHandle::events`), one for each failure, in the order things
//!   happened; the tool waits on them rather than polling.
//!
//! # Exit codes
//!
//! - 0: a token was printed (or the watch ran its course).
//! - 1: the authority refused: a permanent error such as `invalid_client`.
//!   Retrying will not help until the configuration changes. (Also: the
//!   token could not be written to stdout.)
//! - 1 also: discovery found no metadata, or metadata for another issuer.
//! - 2: bad usage: unknown or repeated flag, missing value, no secret, a
//!   key that cannot sign, a plain `http` token URL (or issuer) to a host
//!   that is not loopback, a client authentication the discovered metadata
//!   does not list.
//! - 3: no token within 10 s: transient failures, or no answer. Try later.
//!
//! # Sharing a token between processes (`--cache-file`, `--redis-url`)
//!
//! With `--cache-file PATH`, `--redis-url URL` or both, the source becomes
//! `Chain::new(source).cache(MemoryCache::new()).cache(file).cache(redis)`
//! (the file before Redis), in both modes: a run first reads the caches and
//! publishes (or prints) a cached token that is still valid for a while
//! (60 s, or half its lifetime for shorter tokens) without asking the
//! authority; otherwise it takes the refresh lease of the last shared cache
//! (a lock file next to the cache file, or a Redis `SET NX PX` key), reads
//! again in case another process just refreshed, and only then asks the
//! authority and writes the new token to every cache. Processes that find
//! the lease taken read the cache again every 200 ms or so, for at most
//! 2 s, then ask the authority themselves: a neighbour that hangs holding
//! the lease (or a plain `flock` on the lock file) costs cooperation, never
//! the token. So any number of scripts,
//! one-shot or `--watch`, started together or not, cost the authority about
//! what one process alone would (eight `--watch` processes on one file or
//! Redis server: 0.9 to 1.1 times, cold start included). A cache that fails
//! (unreadable file, Redis down or refusing the password) is skipped, with
//! a warning on stderr: the run still gets a token from the authority.
//!
//! - [`FileCache`]: JSON (the access token included) written with mode
//!   0600 to a temporary file and renamed over PATH, so readers never see
//!   half a file; the folder is created when missing. The entry records
//!   whom its token is for (a digest of the token URL, client id, scope,
//!   audience and resources, never the secret): a run for another client
//!   or scope reads it as a miss and replaces it, so give each its own file
//!   to keep both cached. A file that is not a regular file of the user's
//!   own, or that group or others may write, is not trusted (see the
//!   library's `FileCache`).
//! - `RedisCache` (only when the example is built with `--features
//!   redis`; without it the flag is a usage error saying so): the keys are
//!   `tokenkeeper:token-cli:<hash>:token` and `...:lease`, where the hash
//!   covers the token URL, client id, scope, audience and resources (not
//!   the secret), so different clients and scopes on one server never share
//!   a token. The URL may carry a password (`redis://:password@host:6379/0`):
//!   it is never printed, and like the client secret it is better kept out
//!   of argv, so the URL may come from the environment variable
//!   `TOKENKEEPER_REDIS_URL` instead (the flag wins).
//! - A one-shot run takes the lease for at most 6 s (its 5 s request
//!   timeout and a margin), so if it dies holding the Redis lease, the
//!   lease runs out within 6 s; `--watch` keeps the library's defaults
//!   (30 s). A file lock goes with its process at once, however it exits.
//!   Either way no other run waits for it more than the 2 s lease wait.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::future;
use serde::Serialize;
use smol::Timer;
#[cfg(feature = "redis")]
use tokenkeeper::cache::RedisCache;
use tokenkeeper::cache::{Chain, FileCache, MemoryCache};
use tokenkeeper::oauth2::{
    AuthMethod, ClientAuth, ClientCredentials, ConfigError, Discovery, DiscoveryError,
    HttpErrorKind, PresentedToken, TokenEndpoint, TokenExchange, TokenRequestError,
};
#[cfg(feature = "jwt")]
use tokenkeeper::oauth2::{KeyError, PrivateKey, SigningAlgorithm};
use tokenkeeper::{
    Backoff, Error, ErrorKind, ManagerEvent, SourceError, Token, TokenManager, TokenSource,
};

/// Where the client secret comes from when no file is given.
const SECRET_ENV: &str = "TOKENKEEPER_CLIENT_SECRET";
/// Where the Redis URL comes from when `--redis-url` is not given.
const REDIS_URL_ENV: &str = "TOKENKEEPER_REDIS_URL";
/// What a Redis URL gets without the `redis` feature.
const NO_REDIS: &str = "the Redis cache is not in this build of the example; \
build it with `--features redis` (cargo run --features redis --example token -- ...)";
/// What a signed assertion gets without the `jwt` feature.
const NO_JWT: &str = "signed client assertions (client_secret_jwt, private_key_jwt) are not in \
this build of the example; build it with the default features or `--features jwt`";
/// What an `--auth` that is not a method gets.
const AUTH_VALUES: &str = "--auth takes basic, post, client_secret_jwt, private_key_jwt or none";
/// What a plain-http token URL to another host gets.
const INSECURE_URL: &str = "--token-url must be an https URL: plain http is allowed only to \
loopback (127.0.0.1, ::1, localhost), where the secret does not cross a network";
/// What a plain-http issuer on another host gets.
const INSECURE_ISSUER: &str = "--issuer must be an https URL: plain http is allowed only to \
loopback (127.0.0.1, ::1, localhost), where the secret does not cross a network";
/// How many times discovery tries before the tool gives up.
const DISCOVERY_ATTEMPTS: u32 = 3;
/// The largest integer a JSON reader that uses doubles (JavaScript, jq)
/// reads exactly: 2^53 - 1. Times in `--watch` output never exceed it.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// How long printing one token keeps retrying transient failures.
const ONE_SHOT_BOUND: Duration = Duration::from_secs(10);
/// The longest one attempt may take when printing one token.
const ONE_SHOT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a one-shot run may hold a shared cache's refresh lease: its
/// longest attempt and a margin.
const ONE_SHOT_LEASE_TTL: Duration = Duration::from_secs(6);

const EXIT_REFUSED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNAVAILABLE: u8 = 3;

const USAGE: &str = "\
usage: token (--token-url URL | --issuer URL) --client-id ID [options]

Prints an OAuth2 access token (client-credentials grant, or token exchange)
alone on stdout. The client secret is read from the environment variable
TOKENKEEPER_CLIENT_SECRET, or from --client-secret-file; never from the
command line. Signed assertions need no secret on the wire, or none at all.

options:
  --token-url URL            the token endpoint (https; http only to loopback)
  --issuer URL               instead of --token-url: the authority's issuer
                             identifier; its token endpoint comes from its
                             metadata (RFC 8414, else OpenID discovery), and
                             the client authentication must be one it lists
  --client-id ID             the client identifier (may be left out with
                             --auth none: nothing identifies the client)
  --auth METHOD              basic (client_secret_basic, the default), post
                             (client_secret_post), client_secret_jwt (a JWT
                             signed HS256 with the secret), private_key_jwt,
                             or none (no client authentication: a public
                             client, or a security token service)
  --private-key-file PATH    private_key_jwt: sign with the key in PATH (PEM:
                             PKCS#8, PKCS#1 or SEC1; or DER); implies
                             --auth private_key_jwt
  --key-id KID               private_key_jwt: the kid header
  --alg ALG                  private_key_jwt: ES256, RS256, PS256 or EdDSA
                             (default: from the key)
  --client-assertion-file PATH
                             authenticate with the assertion in PATH, read
                             again for every request (workload identity);
                             takes no secret
  --assertion-audience AUD   the aud of signed assertions (default: the
                             issuer with --issuer, else the token URL)
  --grant GRANT              client-credentials (the default) or
                             token-exchange (RFC 8693)
  --subject-token-file PATH  token-exchange: the subject token, read from
                             PATH again for every request
  --subject-token-type URI   token-exchange: its type (default:
                             urn:ietf:params:oauth:token-type:jwt)
  --requested-token-type URI token-exchange: the type of token to ask for
  --scope S                  space-separated scopes to ask for
  --audience A               the audience parameter (Auth0 and others); may
                             be repeated with token-exchange
  --resource R               a resource indicator (RFC 8707); may be repeated
  --watch SECS               keep the token fresh for SECS seconds and print one
                             JSON event per line (token values never printed)
  --client-secret-file PATH  read the secret from PATH (one trailing newline
                             is trimmed); takes precedence over the variable
  --cache-file PATH          share the token with other processes through the
                             JSON file PATH (mode 0600; one file per client
                             and scope): a valid cached token is used without
                             asking the authority, and a lock file next to it
                             lets one process refresh for all
  --redis-url URL            share the token through Redis (redis://[:PASSWORD@]
                             HOST:PORT/DB), after the file if both are given;
                             also read from TOKENKEEPER_REDIS_URL, which keeps
                             a password out of argv. The URL is never printed.
                             Needs the example built with --features redis
  -h, --help                 this text

Warnings (a token type other than Bearer, a scope other than asked for, a
cache that fails) are lines on stderr starting with 'token: warning:'.
Proxies: https_proxy, http_proxy, all_proxy and no_proxy as curl reads
them; a loopback token URL never goes through a proxy.

exit codes: 0 token printed or watch done; 1 refused by the authority
(e.g. invalid_client, or metadata that does not fit the issuer); 2 bad
usage; 3 no token within 10 s (transient failures or no answer)";

fn main() -> ExitCode {
    let mut args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(args)) => *args,
        Ok(Parsed::Help) => {
            // `token --help | head -1`: the reader may have gone already.
            let _ = writeln!(io::stdout().lock(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => return usage_error(&error),
    };
    let (auth, secret) = match client_auth(&args) {
        Ok(auth) => auth,
        Err(error) => return usage_error(&error),
    };
    let redis_url = match redis_url(args.redis_url.take()) {
        Ok(url) => url,
        Err(error) => return usage_error(&error),
    };
    // Without a secret (a key, an assertion file) there is nothing of ours
    // to look for: the library scrubs the assertions it sends.
    let scrub = Scrubber(secret.unwrap_or_default());
    // The logger lives as long as the process; so does the scrubber it
    // uses. Installed before discovery, whose retries it reports.
    let scrub: &'static Scrubber = Box::leak(Box::new(scrub));
    install_warnings(scrub, redis_url.as_ref().map(RedisUrl::copy));

    let endpoint = match &args.location {
        Location::TokenUrl(url) => TokenEndpoint::builder(url.as_str(), args.client_id.as_str()),
        Location::Issuer(issuer) => match smol::block_on(discover(issuer)) {
            Ok(metadata) => TokenEndpoint::from_metadata(&metadata, args.client_id.as_str()),
            Err(error) => return discovery_failed(&error, scrub),
        },
    };
    let mut endpoint = endpoint.client_auth(auth);
    if let Some(audience) = &args.assertion_audience {
        endpoint = endpoint.assertion_audience(audience);
    }
    let endpoint = endpoint.build();
    let endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        // The library's hint names a builder method (allow_insecure_http)
        // that a user of this tool has no flag for: name what they can do.
        Err(ConfigError::InsecureUrl(_)) => return usage_error(&INSECURE_URL),
        Err(error) => return usage_error(&error.to_string()),
    };
    let source = grant(endpoint, &args);
    // With a shared cache the source becomes a chain that reads the caches
    // first and writes new tokens back; nothing else here changes.
    let source = match with_caches(source, &args, redis_url) {
        Ok(source) => source,
        Err(error) => return usage_error(&error),
    };
    let asked = args.scope.as_deref();
    smol::block_on(async {
        match args.watch {
            None => print_token(source, scrub, asked).await,
            Some(duration) => watch(source, duration, scrub, asked).await,
        }
    })
}

// ---------------------------------------------------------------------------
// The grant and discovery

/// The grant the flags ask for, on `endpoint`.
fn grant(endpoint: TokenEndpoint, args: &Args) -> Box<dyn TokenSource> {
    match &args.grant {
        Grant::ClientCredentials => {
            let mut source = ClientCredentials::new(endpoint);
            if let Some(scope) = &args.scope {
                source = source.scope(scope);
            }
            // One at most: the parser refuses more for this grant.
            if let Some(audience) = args.audiences.first() {
                source = source.audience(audience);
            }
            for resource in &args.resources {
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
            if let Some(scope) = &args.scope {
                source = source.scope(scope);
            }
            for audience in &args.audiences {
                source = source.audience(audience);
            }
            for resource in &args.resources {
                source = source.resource(resource);
            }
            Box::new(source)
        }
    }
}

/// The authority's metadata, fetched once: a failure that may pass is
/// retried as a token request is (250 ms doubling, each attempt at most
/// 5 s), [`DISCOVERY_ATTEMPTS`] times in all.
async fn discover(issuer: &str) -> Result<tokenkeeper::oauth2::ServerMetadata, DiscoveryError> {
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
    match error {
        DiscoveryError::InvalidIssuer { issuer, .. } if issuer.starts_with("http:") => {
            usage_error(&INSECURE_ISSUER)
        }
        DiscoveryError::InvalidIssuer { .. } => usage_error(&format!("--issuer: {error}")),
        error if error.kind() == ErrorKind::Transient => {
            say(&scrub.line(&format!(
                "token: error: discovery: {error}; no metadata after {DISCOVERY_ATTEMPTS} attempts"
            )));
            ExitCode::from(EXIT_UNAVAILABLE)
        }
        error => {
            say(&scrub.line(&format!("token: error: discovery: {error}")));
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

// ---------------------------------------------------------------------------
// Shared caches

/// The source as given, or behind a chain of caches when the command line
/// names a shared one: memory first, then the file, then Redis.
fn with_caches(
    source: Box<dyn TokenSource>,
    args: &Args,
    redis_url: Option<RedisUrl>,
) -> Result<Box<dyn TokenSource>, String> {
    if args.cache_file.is_none() && redis_url.is_none() {
        return Ok(source);
    }
    let mut chain = Chain::new(source).cache(MemoryCache::new());
    if let Some(path) = &args.cache_file {
        chain = chain.cache(FileCache::new(path));
    }
    #[cfg(feature = "redis")]
    if let Some(url) = redis_url {
        // The library's messages never quote the URL; scrubbed all the same.
        let cache = RedisCache::new(&url.0)
            .map_err(|e| format!("--redis-url: {}", url.scrub(&e.to_string())))?
            .key_prefix(redis_key_prefix(args));
        chain = chain.cache(cache);
    }
    #[cfg(not(feature = "redis"))]
    if redis_url.is_some() {
        return Err(NO_REDIS.to_owned());
    }
    if args.watch.is_none() {
        chain = chain.lease_ttl(ONE_SHOT_LEASE_TTL);
    }
    Ok(Box::new(chain))
}

/// A Redis URL, which may hold a password: never printed, not even by
/// `Debug`.
struct RedisUrl(String);

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
    fn scrub(&self, text: &str) -> String {
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
fn redis_url(flag: Option<RedisUrl>) -> Result<Option<RedisUrl>, String> {
    let url = match flag {
        Some(url) => Some(url),
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

/// The Redis key prefix of this token: `tokenkeeper:token-cli:<hash>:`,
/// the hash (64-bit FNV-1a, the same in every build) covering what decides
/// which token the authority gives: token URL (or issuer), client id,
/// scope, audiences and resources, and for a token exchange the subject
/// token's file and type and the type asked for. The secret stays out of
/// it.
#[cfg(feature = "redis")]
fn redis_key_prefix(args: &Args) -> String {
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
    match &args.location {
        Location::TokenUrl(url) => feed(Some(url)),
        Location::Issuer(issuer) => {
            feed(Some("issuer"));
            feed(Some(issuer));
        }
    }
    feed(Some(&args.client_id));
    feed(args.scope.as_deref());
    feed(args.audiences.first().map(String::as_str));
    for resource in &args.resources {
        feed(Some(resource));
    }
    if let Grant::TokenExchange {
        subject_token_file,
        subject_token_type,
        requested_token_type,
    } = &args.grant
    {
        feed(Some("token-exchange"));
        feed(subject_token_file.to_str());
        feed(subject_token_type.as_deref());
        feed(requested_token_type.as_deref());
        for audience in args.audiences.iter().skip(1) {
            feed(Some(audience));
        }
    }
    format!("tokenkeeper:token-cli:{hash:016x}:")
}

// ---------------------------------------------------------------------------
// Printing one token

/// How a one-shot run ended.
enum Outcome {
    Token(Arc<Token>),
    Failed(SourceError),
    NoAnswer,
}

async fn print_token(source: impl TokenSource, scrub: &Scrubber, asked: Option<&str>) -> ExitCode {
    let (handle, driver) = TokenManager::builder(source)
        .backoff(Backoff::new(
            Duration::from_millis(250),
            2.0,
            Duration::from_secs(2),
        ))
        .request_timeout(ONE_SHOT_REQUEST_TIMEOUT)
        .wait_timeout(ONE_SHOT_BOUND)
        .build();
    // The library spawns nothing: the driver is a future, spawned here.
    let driver = smol::spawn(driver);

    // token() returns at once on a permanent failure (no retry can fix
    // it), and otherwise waits up to the bound with retries in between.
    let outcome = match handle.token().await {
        Ok(token) => Outcome::Token(token),
        Err(Error::Source(error))
        | Err(Error::Timeout {
            last_error: Some(error),
            ..
        }) => Outcome::Failed(error),
        Err(_) => Outcome::NoAnswer,
    };
    let attempts = handle.state().source_requests;
    handle.shutdown().await;
    driver.await;

    match outcome {
        Outcome::Token(token) => {
            if let Some(warning) = scope_warning(asked, &token) {
                say(&scrub.line(&warning));
            }
            let mut stdout = io::stdout().lock();
            match writeln!(stdout, "{}", token.access_token().secret()) {
                Ok(()) => ExitCode::SUCCESS,
                // Nobody reads the token (`token | false`): the exit code
                // says it was not delivered; a message would be noise.
                Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
                Err(error) => {
                    say(&format!("token: error: cannot write to stdout: {error}"));
                    ExitCode::FAILURE
                }
            }
        }
        Outcome::Failed(error) => {
            let failure = Failure::of(&error);
            let mut line = format!("token: error: {}: {}", failure.code, failure.description);
            let code = if error.is_permanent() {
                EXIT_REFUSED
            } else {
                line.push_str(&format!(
                    "; no token after {} s and {attempts} attempt{}",
                    ONE_SHOT_BOUND.as_secs(),
                    if attempts == 1 { "" } else { "s" }
                ));
                EXIT_UNAVAILABLE
            };
            say(&scrub.line(&line));
            ExitCode::from(code)
        }
        Outcome::NoAnswer => {
            say(&format!(
                "token: error: timeout: no answer from the token endpoint within {} s",
                ONE_SHOT_BOUND.as_secs()
            ));
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

// ---------------------------------------------------------------------------
// Watching

/// One line of `--watch` output. Field order is the order printed.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event<'a> {
    Token {
        expires_at_ms: u64,
        issued_at_ms: u64,
        stale_at_ms: u64,
        token_type: &'a str,
        scope: Option<&'a str>,
    },
    Error {
        error: &'a str,
        kind: &'static str,
        description: &'a str,
        consecutive_failures: u32,
        at_ms: u64,
        retry_in_ms: u64,
    },
}

async fn watch(
    source: impl TokenSource,
    duration: Duration,
    scrub: &Scrubber,
    asked: Option<&str>,
) -> ExitCode {
    // The library's defaults: what a service gets without tuning.
    let (handle, driver) = TokenManager::builder(source).build();
    // Both made before the driver runs: the first token and the first
    // failure are in them.
    let mut events = handle.events();
    let mut tokens = handle.subscribe();
    let driver = smol::spawn(driver);
    // The last scope warning given: a long watch repeats it only when the
    // granted scope changes, not on every refresh.
    let mut scope_warned: Option<String> = None;
    let mut end = Timer::after(duration);

    // Driven by the manager's events, in the order it acted; a publish
    // event is printed with the token it published, from the subscription.
    let result = loop {
        let event = future::or(events.next(), async {
            (&mut end).await;
            None
        })
        .await;
        let printed = match event {
            Some(ManagerEvent::Published { .. }) => {
                // The subscription has it already (the manager publishes,
                // then tells); after two quick publishes the first event
                // brings the newest token and the second finds none.
                match future::poll_once(tokens.next()).await.flatten() {
                    Some(token) => print_token_event(&token, scrub, asked, &mut scope_warned),
                    None => Ok(()),
                }
            }
            Some(ManagerEvent::FetchFailed {
                at,
                error,
                consecutive_failures,
                retry_in,
                ..
            }) => print_failure_event(&error, consecutive_failures, at, retry_in, scrub),
            Some(_) => Ok(()),
            // The time is up, or the manager stopped.
            None => break Ok(()),
        };
        if let Err(error) = printed {
            break Err(error);
        }
    };
    handle.shutdown().await;
    driver.await;

    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`token --watch 60 | head -1`): not an error.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            say(&format!("token: error: cannot write to stdout: {error}"));
            ExitCode::FAILURE
        }
    }
}

/// Prints a published token's event, and a warning if its scope is not the
/// one asked for (once per scope).
fn print_token_event(
    token: &Token,
    scrub: &Scrubber,
    asked: Option<&str>,
    scope_warned: &mut Option<String>,
) -> io::Result<()> {
    // Server text: the library scrubbed it already; so does the CLI, as for
    // every line it prints.
    let token_type = scrub.line(token.token_type());
    let scope = token.scope().map(|s| scrub.line(s));
    print_event(&Event::Token {
        expires_at_ms: epoch_ms(token.expires_at()),
        issued_at_ms: epoch_ms(token.issued_at()),
        stale_at_ms: epoch_ms(token.stale_at()),
        token_type: &token_type,
        scope: scope.as_deref(),
    })?;
    let warning = scope_warning(asked, token);
    if warning.is_some() && warning != *scope_warned {
        say(&scrub.line(warning.as_deref().unwrap_or_default()));
    }
    *scope_warned = warning;
    Ok(())
}

/// Prints a failed fetch's event.
fn print_failure_event(
    error: &SourceError,
    consecutive_failures: u32,
    at: SystemTime,
    retry_in: Duration,
    scrub: &Scrubber,
) -> io::Result<()> {
    let failure = Failure::of(error);
    let description = scrub.line(&failure.description);
    print_event(&Event::Error {
        error: &failure.code,
        kind: match error.kind() {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
        },
        description: &description,
        consecutive_failures,
        at_ms: epoch_ms(at),
        retry_in_ms: json_ms(retry_in),
    })
}

/// An instant as printed in `--watch` output: ms since the Unix epoch.
fn epoch_ms(t: SystemTime) -> u64 {
    json_ms(t.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// A duration as printed in `--watch` output: whole ms, at most
/// [`MAX_SAFE_INTEGER`], so that a reader that parses numbers as doubles
/// (every JavaScript reader, jq) never silently rounds one. The library
/// reads an instant no later than the end of the year 9999 (where a token
/// with an `expires_in` of centuries expires), well below 2^53 ms since
/// the epoch; a duration has no such bound.
fn json_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).map_or(MAX_SAFE_INTEGER, |ms| ms.min(MAX_SAFE_INTEGER))
}

fn print_event(event: &Event<'_>) -> io::Result<()> {
    let line = serde_json::to_string(event).map_err(io::Error::other)?;
    writeln!(io::stdout().lock(), "{line}")
}

// ---------------------------------------------------------------------------
// Warnings

/// The target of the manager's log records.
const MANAGER_TARGET: &str = "tokenkeeper::manager";
/// How the manager's warning about a failed fetch starts: this tool reports
/// each failure itself, as the error line or a `--watch` error event.
const FETCH_FAILED: &str = "token fetch failed";

/// Prints the library's warnings and errors on stderr, one line each
/// (`token: warning: ...`), from now on.
///
/// The library reports through the `log` facade and says nothing unless the
/// program installs a logger: without one, a token type other than Bearer
/// or a Redis server that refuses our password went unnoticed. Only records
/// of warning level and above from the library's targets (`tokenkeeper`,
/// `tokenkeeper::...`) are printed, and each is scrubbed like every other
/// line: the library never logs a token or a secret, and the scrubbing is a
/// second line of defence (the client secret, the Redis URL and its
/// password).
fn install_warnings(scrub: &'static Scrubber, redis_url: Option<RedisUrl>) {
    let logger = Box::leak(Box::new(StderrLog { scrub, redis_url }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

struct StderrLog {
    scrub: &'static Scrubber,
    redis_url: Option<RedisUrl>,
}

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let target = metadata.target();
        metadata.level() <= log::Level::Warn
            && (target == "tokenkeeper" || target.starts_with("tokenkeeper::"))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        if record.target() == MANAGER_TARGET && message.starts_with(FETCH_FAILED) {
            return;
        }
        let mut line = self.scrub.line(&format!("token: warning: {message}"));
        if let Some(url) = &self.redis_url {
            line = url.scrub(&line);
        }
        say(&line);
    }

    fn flush(&self) {}
}

/// The warning for a token whose granted scope differs from the one asked
/// for, compared as sets of space-separated scope tokens (RFC 6749 §3.3:
/// order does not matter). A token without a scope was granted the scope
/// asked for (RFC 6749 §5.1), and nothing is compared when no scope was
/// asked for: the authority's default is whatever it grants.
fn scope_warning(asked: Option<&str>, token: &Token) -> Option<String> {
    let asked = asked?;
    let granted = token.scope()?;
    let tokens = |scope: &'_ str| -> BTreeSet<String> {
        scope
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    (tokens(asked) != tokens(granted)).then(|| {
        format!(
            "token: warning: the authority granted scope {granted:?}, not the scope asked for \
             ({asked:?})"
        )
    })
}

// ---------------------------------------------------------------------------
// Errors

/// A failed attempt, as a code and a description.
struct Failure {
    /// The OAuth2 error code, or the kind of failure.
    code: String,
    description: String,
}

impl Failure {
    fn of(error: &SourceError) -> Failure {
        let (code, description) = match error.request_error() {
            Some(TokenRequestError::OAuth2(e)) => (
                e.code().as_str().to_owned(),
                format!(
                    "{} (HTTP {})",
                    e.description().unwrap_or("no description"),
                    e.status()
                ),
            ),
            Some(TokenRequestError::Http(e)) => {
                let code = match e.kind() {
                    HttpErrorKind::Connect => "connect",
                    HttpErrorKind::Timeout => "timeout",
                    HttpErrorKind::Io => "io",
                    HttpErrorKind::BodyTooLarge => "body_too_large",
                    _ => "http",
                };
                // Its Display starts with the kind ("connect: refused"); the
                // code already says that.
                let text = e.to_string();
                let message = text.split_once(": ").map_or(text.as_str(), |(_, m)| m);
                (code.to_owned(), message.to_owned())
            }
            Some(TokenRequestError::UnexpectedStatus { .. }) => {
                ("http_status".to_owned(), error.to_string())
            }
            Some(TokenRequestError::InvalidResponse { .. }) => {
                ("invalid_response".to_owned(), error.to_string())
            }
            // Another failure: the manager's request timeout, or a variant
            // added later.
            _ => {
                let kind = match error.kind() {
                    ErrorKind::Transient => "transient",
                    ErrorKind::Permanent => "permanent",
                };
                (kind.to_owned(), error.to_string())
            }
        };
        Failure { code, description }
    }
}

/// Makes text safe to print: one line, and never the client secret, even if
/// an authority echoed it somewhere the library did not expect. The library
/// already scrubs every encoding of the secret from what it reports; this is
/// a second line of defence, so it looks for the same forms: the secret as
/// is, form-urlencoded (`+` or `%20` for a space, either hex case),
/// JSON-escaped, and the base64 of `id:secret` (the part that depends on the
/// secret alone, whatever the id). (A secret shorter than 4 characters is
/// left alone as is: replacing every "s" would garble the text and protect
/// nothing. Its encodings are longer and are replaced.)
struct Scrubber(String);

impl Scrubber {
    fn line(&self, text: &str) -> String {
        // One line first, then the secret: a secret around a control
        // character must not survive the clean-up.
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        for form in self.forms() {
            text = text.replace(form.as_str(), "[redacted]");
        }
        text
    }

    /// Every form of the secret worth replacing, longest first (so that
    /// no shorter form cuts a longer one before it is found).
    fn forms(&self) -> Vec<String> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        use base64::Engine as _;

        let secret = self.0.as_str();
        let plus: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let lower_hex = |encoded: &str| {
            let mut out = String::new();
            let mut chars = encoded.chars();
            while let Some(c) = chars.next() {
                out.push(c);
                if c == '%' {
                    out.extend(chars.by_ref().take(2).map(|d| d.to_ascii_lowercase()));
                }
            }
            out
        };
        let pct20 = plus.replace('+', "%20");
        let json = serde_json::to_string(secret).unwrap_or_default();
        let json = json
            .get(1..json.len().saturating_sub(1))
            .unwrap_or_default()
            .to_owned();
        let slash = json.replace('/', "\\/");
        let ascii = |upper: bool| -> String {
            slash
                .chars()
                .map(|c| {
                    let mut units = [0; 2];
                    match c {
                        c if c.is_ascii() => c.to_string(),
                        c if upper => c
                            .encode_utf16(&mut units)
                            .iter()
                            .map(|u| format!("\\u{u:04X}"))
                            .collect(),
                        c => c
                            .encode_utf16(&mut units)
                            .iter()
                            .map(|u| format!("\\u{u:04x}"))
                            .collect(),
                    }
                })
                .collect()
        };
        let mut forms = vec![
            secret.to_owned(),
            lower_hex(&plus),
            lower_hex(&pct20),
            plus.clone(),
            pct20,
            ascii(false),
            ascii(true),
            json,
            slash,
        ];
        forms.retain(|form| form.chars().count() >= 4);
        // After `id:` the secret starts at any of three offsets in a group
        // of three bytes; the characters of whole groups of the secret's
        // own bytes are the same whatever the id.
        for bytes in [secret.as_bytes(), plus.as_bytes()] {
            for skip in 0..3 {
                let rest = bytes.get(skip..).unwrap_or_default();
                for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                    for part in [rest, &rest[..rest.len() / 3 * 3]] {
                        let encoded = engine.encode(part);
                        if encoded.len() >= 8 {
                            forms.push(encoded);
                        }
                    }
                }
            }
        }
        forms.sort();
        forms.dedup();
        forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
        forms
    }
}

// ---------------------------------------------------------------------------
// Arguments

/// The parsed command line.
#[derive(Debug)]
struct Args {
    location: Location,
    /// Empty with `--auth none` and no `--client-id`.
    client_id: String,
    auth: Auth,
    /// The `aud` of signed assertions, when not the default.
    assertion_audience: Option<String>,
    grant: Grant,
    scope: Option<String>,
    /// At most one for the client-credentials grant.
    audiences: Vec<String>,
    resources: Vec<String>,
    watch: Option<Duration>,
    client_secret_file: Option<String>,
    cache_file: Option<PathBuf>,
    redis_url: Option<RedisUrl>,
}

enum Parsed {
    Run(Box<Args>),
    Help,
}

/// Where the token endpoint is.
#[derive(Debug)]
enum Location {
    /// `--token-url`.
    TokenUrl(String),
    /// `--issuer`: the endpoint from the authority's metadata.
    Issuer(String),
}

/// Which grant asks for the token.
#[derive(Debug)]
enum Grant {
    ClientCredentials,
    /// RFC 8693, the subject token read from a file for every request.
    TokenExchange {
        subject_token_file: PathBuf,
        subject_token_type: Option<String>,
        requested_token_type: Option<String>,
    },
}

/// How the client authenticates, as the flags say.
#[derive(Debug)]
enum Auth {
    /// A secret from the environment or `--client-secret-file`, sent as
    /// this method says.
    Secret(AuthMethod),
    /// `private_key_jwt` with the key in this file.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    PrivateKey {
        file: PathBuf,
        key_id: Option<String>,
        /// `--alg` as given, checked with the key.
        alg: Option<String>,
    },
    /// The assertion in this file, read for every request.
    AssertionFile(PathBuf),
    /// No client authentication.
    None,
}

impl Args {
    /// Parses the arguments after the program name. Error messages name
    /// flags but never repeat values: a misplaced value may be a secret.
    fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Parsed, String> {
        let mut token_url = None;
        let mut issuer = None;
        let mut client_id = None;
        let mut grant = None;
        let mut subject_token_file = None;
        let mut subject_token_type = None;
        let mut requested_token_type = None;
        let mut auth = None;
        let mut private_key_file = None;
        let mut key_id = None;
        let mut alg = None;
        let mut assertion_file = None;
        let mut assertion_audience = None;
        let mut scope = None;
        let mut audiences = Vec::new();
        let mut resources = Vec::new();
        let mut watch = None;
        let mut client_secret_file = None;
        let mut cache_file = None;
        let mut redis_url = None;

        let mut args = args.into_iter().enumerate();
        while let Some((i, arg)) = args.next() {
            let Ok(arg) = arg.into_string() else {
                return Err(format!("argument {} is not valid UTF-8", i + 1));
            };
            // `--flag=value` or `--flag value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || -> Result<String, String> {
                let value = match inline.clone() {
                    Some(value) => value,
                    None => match args.next() {
                        Some((_, value)) => value
                            .into_string()
                            .map_err(|_| format!("the value of {flag} is not valid UTF-8"))?,
                        None => return Err(format!("{flag} needs a value")),
                    },
                };
                if value.is_empty() || value.starts_with("--") {
                    return Err(format!("{flag} needs a value"));
                }
                Ok(value)
            };
            match flag {
                "-h" | "--help" => return Ok(Parsed::Help),
                "--client-secret" | "--secret" => {
                    return Err(format!(
                        "{flag} is refused: a secret on the command line is visible to every \
                         local user (ps, /proc) and stays in shell history; set {SECRET_ENV} \
                         or use --client-secret-file PATH"
                    ))
                }
                "--token-url" => once(&mut token_url, flag, value()?)?,
                "--issuer" => once(&mut issuer, flag, value()?)?,
                "--grant" => {
                    let exchange = match value()?.as_str() {
                        "client-credentials" | "client_credentials" => false,
                        "token-exchange" | "token_exchange" => true,
                        _ => {
                            return Err(
                                "--grant takes client-credentials or token-exchange".to_owned()
                            )
                        }
                    };
                    once(&mut grant, flag, exchange)?;
                }
                "--subject-token-file" => {
                    once(&mut subject_token_file, flag, PathBuf::from(value()?))?
                }
                "--subject-token-type" => once(&mut subject_token_type, flag, value()?)?,
                "--requested-token-type" => once(&mut requested_token_type, flag, value()?)?,
                "--client-id" => once(&mut client_id, flag, value()?)?,
                "--auth" => {
                    let method = match value()?.as_str() {
                        "basic" => AuthMethod::ClientSecretBasic,
                        "post" => AuthMethod::ClientSecretPost,
                        name => name.parse().map_err(|_| AUTH_VALUES.to_owned())?,
                    };
                    once(&mut auth, flag, method)?;
                }
                "--private-key-file" => once(&mut private_key_file, flag, PathBuf::from(value()?))?,
                "--key-id" => once(&mut key_id, flag, value()?)?,
                "--alg" => once(&mut alg, flag, value()?)?,
                "--client-assertion-file" => {
                    once(&mut assertion_file, flag, PathBuf::from(value()?))?
                }
                "--assertion-audience" => once(&mut assertion_audience, flag, value()?)?,
                "--scope" => once(&mut scope, flag, value()?)?,
                "--audience" => audiences.push(value()?),
                "--resource" => resources.push(value()?),
                "--watch" => {
                    let secs = value()?
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0)
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .ok_or("--watch takes a number of seconds above 0")?;
                    once(&mut watch, flag, secs)?;
                }
                "--client-secret-file" => once(&mut client_secret_file, flag, value()?)?,
                "--cache-file" => once(&mut cache_file, flag, PathBuf::from(value()?))?,
                "--redis-url" => {
                    if !cfg!(feature = "redis") {
                        return Err(NO_REDIS.to_owned());
                    }
                    once(&mut redis_url, flag, RedisUrl(value()?))?;
                }
                flag if flag.starts_with('-') && flag.len() > 1 => {
                    return Err(format!("unknown option {flag}"))
                }
                _ => return Err(format!("unexpected argument {} (not an option)", i + 1)),
            }
        }

        let location = match (token_url, issuer) {
            (Some(url), None) => Location::TokenUrl(url),
            (None, Some(issuer)) => Location::Issuer(issuer),
            (Some(_), Some(_)) => {
                return Err(
                    "--token-url and --issuer are two ways to say one thing: give one".to_owned(),
                )
            }
            (None, None) => return Err("--token-url (or --issuer) is required".to_owned()),
        };
        let grant = match (grant.unwrap_or(false), subject_token_file) {
            (true, Some(subject_token_file)) => Grant::TokenExchange {
                subject_token_file,
                subject_token_type,
                requested_token_type,
            },
            (true, None) => {
                return Err("--grant token-exchange needs --subject-token-file PATH".to_owned())
            }
            (false, file) => {
                if file.is_some() || subject_token_type.is_some() || requested_token_type.is_some()
                {
                    return Err("--subject-token-file, --subject-token-type and \
                                --requested-token-type go with --grant token-exchange"
                        .to_owned());
                }
                if audiences.len() > 1 {
                    return Err(
                        "--audience is given twice (it may be repeated with --grant token-exchange)"
                            .to_owned(),
                    );
                }
                Grant::ClientCredentials
            }
        };
        let auth = Auth::from_flags(
            auth,
            private_key_file,
            assertion_file,
            &mut key_id,
            &mut alg,
        )?;
        let client_id = match (client_id, &auth) {
            (Some(id), _) => id,
            // Nothing identifies the client: a security token service.
            (None, Auth::None) => String::new(),
            (None, _) => return Err("--client-id is required".to_owned()),
        };
        if key_id.is_some() || alg.is_some() {
            return Err("--key-id and --alg go with --auth private_key_jwt".to_owned());
        }
        let signs = matches!(
            auth,
            Auth::PrivateKey { .. } | Auth::Secret(AuthMethod::ClientSecretJwt)
        );
        if assertion_audience.is_some() && !signs {
            return Err(
                "--assertion-audience goes with --auth private_key_jwt or client_secret_jwt"
                    .to_owned(),
            );
        }
        if client_secret_file.is_some() && !matches!(auth, Auth::Secret(_)) {
            return Err(
                "--client-secret-file: this client authentication takes no client secret"
                    .to_owned(),
            );
        }

        Ok(Parsed::Run(Box::new(Args {
            location,
            client_id,
            auth,
            assertion_audience,
            grant,
            scope,
            audiences,
            resources,
            watch,
            client_secret_file,
            cache_file,
            redis_url,
        })))
    }
}

impl Auth {
    /// The authentication the flags name. A key file means
    /// `private_key_jwt` without `--auth`; an assertion file is a method of
    /// its own. `key_id` and `alg` are taken when they belong to the key.
    fn from_flags(
        method: Option<AuthMethod>,
        private_key_file: Option<PathBuf>,
        assertion_file: Option<PathBuf>,
        key_id: &mut Option<String>,
        alg: &mut Option<String>,
    ) -> Result<Auth, String> {
        Ok(match (method, private_key_file, assertion_file) {
            (None, None, Some(file)) => Auth::AssertionFile(file),
            (_, _, Some(_)) => {
                return Err(
                    "--client-assertion-file is a client authentication of its own: \
                            give it without --auth and --private-key-file"
                        .to_owned(),
                )
            }
            (None | Some(AuthMethod::PrivateKeyJwt), Some(file), None) => Auth::PrivateKey {
                file,
                key_id: key_id.take(),
                alg: alg.take(),
            },
            (Some(AuthMethod::PrivateKeyJwt), None, None) => {
                return Err("--auth private_key_jwt needs --private-key-file PATH".to_owned())
            }
            (Some(_), Some(_), None) => {
                return Err("--private-key-file goes with --auth private_key_jwt".to_owned())
            }
            (Some(AuthMethod::None), None, None) => Auth::None,
            (method, None, None) => Auth::Secret(method.unwrap_or_default()),
        })
    }
}

/// Sets a flag that may be given once.
fn once<T>(slot: &mut Option<T>, flag: &str, value: T) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("{flag} is given twice"));
    }
    Ok(())
}

/// The client authentication the flags ask for, and the client secret
/// when it takes one (for the scrubber). The key is read here: a key that
/// cannot sign is bad usage, told before any request.
fn client_auth(args: &Args) -> Result<(ClientAuth, Option<String>), String> {
    match &args.auth {
        Auth::Secret(method) => {
            let secret = read_secret(args.client_secret_file.as_deref())?;
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

/// The client secret: from the file if one is given, else the environment.
fn read_secret(file: Option<&str>) -> Result<String, String> {
    let secret = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --client-secret-file {path}: {e}"))?;
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
            Some(path) => format!("--client-secret-file {path} holds an empty secret"),
            None => format!("{SECRET_ENV} is empty"),
        });
    }
    Ok(secret)
}

fn usage_error(message: &dyn fmt::Display) -> ExitCode {
    say(&format!("token: {message}"));
    say("usage: token (--token-url URL | --issuer URL) --client-id ID [options]; see --help");
    ExitCode::from(EXIT_USAGE)
}

/// Writes `line` and a newline to stderr. A stderr that cannot be written
/// (a closed pipe, a full disk) is ignored: the exit code still tells what
/// happened, and `eprintln!` would panic instead.
fn say(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}
