//! From flags to a checked configuration: the TOML file of `--config`
//! merged under the command line, then the rules flags follow together
//! (one location, the grant's own flags, one client authentication).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tokenkeeper::oauth2::AuthMethod;

use super::args::{AgentArgs, SourceArgs, TokenArgs};

/// What an `--auth` that is not a method gets.
pub const AUTH_VALUES: &str =
    "--auth takes basic, post, client_secret_jwt, private_key_jwt or none";

/// Where the token comes from, checked.
#[derive(Debug)]
pub struct Config {
    pub location: Location,
    /// Empty with `--auth none` and no `--client-id`.
    pub client_id: String,
    pub auth: Auth,
    /// The `aud` of signed assertions, when not the default.
    pub assertion_audience: Option<String>,
    pub grant: Grant,
    pub scope: Option<String>,
    /// At most one for the client-credentials grant.
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub client_secret_file: Option<PathBuf>,
    pub cache_file: Option<PathBuf>,
    /// The DPoP key's file: tokens bound to it (RFC 9449).
    pub dpop_key_file: Option<PathBuf>,
    /// The flag (or config key); the environment variable is read later.
    pub redis_url: Option<String>,
}

/// Where the token endpoint is.
#[derive(Debug)]
pub enum Location {
    /// `--token-url`.
    TokenUrl(String),
    /// `--issuer`: the endpoint from the authority's metadata.
    Issuer(String),
}

/// Which grant asks for the token.
#[derive(Debug)]
pub enum Grant {
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
pub enum Auth {
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

/// How a sink is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// The access token alone, no newline.
    Token,
    /// The token as a JSON object.
    Json,
}

/// `tokenkeeper token`, checked.
#[derive(Debug)]
pub struct TokenConfig {
    pub source: Config,
    pub watch: Option<Duration>,
    /// `--dpop-proof METHOD URL`: the request to print a proof for.
    pub dpop_proof: Option<(String, String)>,
}

/// `tokenkeeper agent`, checked.
#[derive(Debug)]
pub struct AgentConfig {
    pub source: Config,
    pub sinks: Vec<PathBuf>,
    pub format: SinkFormat,
}

/// The keys of a `--config` file: the flags' names. Secrets have no key.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    token_url: Option<String>,
    issuer: Option<String>,
    client_id: Option<String>,
    auth: Option<String>,
    private_key_file: Option<PathBuf>,
    key_id: Option<String>,
    alg: Option<String>,
    client_assertion_file: Option<PathBuf>,
    assertion_audience: Option<String>,
    grant: Option<String>,
    subject_token_file: Option<PathBuf>,
    subject_token_type: Option<String>,
    requested_token_type: Option<String>,
    scope: Option<String>,
    audience: Option<OneOrMany>,
    resource: Option<OneOrMany>,
    client_secret_file: Option<PathBuf>,
    cache_file: Option<PathBuf>,
    dpop_key_file: Option<PathBuf>,
    redis_url: Option<String>,
    watch: Option<WatchValue>,
    sink: Option<OneOrMany>,
    sink_format: Option<String>,
}

/// A repeatable flag's key: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// `watch = 60` or `watch = "60"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum WatchValue {
    Number(f64),
    Text(String),
}

/// Keys that would hold a secret: refused with a reason, not as unknown.
const SECRET_KEYS: [&str; 3] = ["client-secret", "secret", "client_secret"];

/// Reads the TOML file at `path`. Error messages name the file and the key,
/// never a value.
fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // Its message quotes the line, which may hold anything: the place
        // alone.
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        format!("--config {}: not valid TOML{at}", path.display())
    })?;
    if let Some(key) = SECRET_KEYS.iter().find(|key| table.contains_key(**key)) {
        return Err(format!(
            "--config {}: the key {key} is refused: a secret does not belong in a config file; \
             set {} or use client-secret-file = \"PATH\"",
            path.display(),
            super::sources::SECRET_ENV
        ));
    }
    if let Some(key) = table.keys().find(|key| key.contains('_')) {
        return Err(format!(
            "--config {}: unknown key {key} (keys are the flags' names, with dashes)",
            path.display()
        ));
    }
    FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
        // serde's message names the key (unknown field `x`, invalid type);
        // it quotes no value of ours.
        format!("--config {}: {}", path.display(), e.message())
    })
}

/// Fills what the command line left out from the file.
fn merge_source(source: &mut SourceArgs, file: &mut FileConfig) {
    macro_rules! fill {
        ($($field:ident),*) => {
            $(if source.$field.is_none() {
                source.$field = file.$field.take();
            })*
        };
    }
    fill!(
        token_url,
        issuer,
        client_id,
        auth,
        private_key_file,
        key_id,
        alg,
        client_assertion_file,
        assertion_audience,
        grant,
        subject_token_file,
        subject_token_type,
        requested_token_type,
        scope,
        client_secret_file,
        cache_file,
        dpop_key_file,
        redis_url
    );
    // A repeatable flag on the command line replaces the file's list.
    if source.audience.is_empty() {
        source.audience = file
            .audience
            .take()
            .map(OneOrMany::into_vec)
            .unwrap_or_default();
    }
    if source.resource.is_empty() {
        source.resource = file
            .resource
            .take()
            .map(OneOrMany::into_vec)
            .unwrap_or_default();
    }
}

/// The file named by `--config`, if any.
fn file_of(source: &SourceArgs) -> Result<FileConfig, String> {
    match &source.config {
        Some(path) => read_file(path),
        None => Ok(FileConfig::default()),
    }
}

impl TokenConfig {
    /// Checks `args`, with the config file's keys under them.
    pub fn from_args(mut args: TokenArgs) -> Result<TokenConfig, String> {
        let mut file = file_of(&args.source)?;
        merge_source(&mut args.source, &mut file);
        if file.sink.is_some() || file.sink_format.is_some() {
            return Err(
                "--config: the keys sink and sink-format go with `tokenkeeper agent`".to_owned(),
            );
        }
        let watch = match (args.watch, file.watch) {
            (Some(text), _) | (None, Some(WatchValue::Text(text))) => Some(watch_secs(&text)?),
            (None, Some(WatchValue::Number(secs))) => Some(secs_of(secs)?),
            (None, None) => None,
        };
        let dpop_proof = match args.dpop_proof {
            None => None,
            Some(values) => Some(dpop_proof(values, &args.source, watch.is_some())?),
        };
        Ok(TokenConfig {
            source: Config::check(args.source)?,
            watch,
            dpop_proof,
        })
    }
}

impl AgentConfig {
    /// Checks `args`, with the config file's keys under them.
    pub fn from_args(mut args: AgentArgs) -> Result<AgentConfig, String> {
        let mut file = file_of(&args.source)?;
        merge_source(&mut args.source, &mut file);
        if file.watch.is_some() {
            return Err("--config: the key watch goes with `tokenkeeper token`".to_owned());
        }
        if args.sink.is_empty() {
            args.sink = file
                .sink
                .take()
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect();
        }
        if args.sink.is_empty() {
            return Err("--sink FILE is required (it may be repeated)".to_owned());
        }
        let format = match args.sink_format.or(file.sink_format).as_deref() {
            None | Some("token") => SinkFormat::Token,
            Some("json") => SinkFormat::Json,
            Some(_) => return Err("--sink-format takes token or json".to_owned()),
        };
        Ok(AgentConfig {
            source: Config::check(args.source)?,
            sinks: args.sink,
            format,
        })
    }
}

/// `--dpop-proof METHOD URL`, checked: it needs the key, prints one token
/// (no --watch), and names an absolute http(s) URL.
fn dpop_proof(
    values: Vec<String>,
    source: &SourceArgs,
    watch: bool,
) -> Result<(String, String), String> {
    let [method, url]: [String; 2] = values
        .try_into()
        .map_err(|_| "--dpop-proof takes two values: METHOD URL".to_owned())?;
    if source.dpop_key_file.is_none() {
        return Err(
            "--dpop-proof needs --dpop-key-file PATH (the key the token is bound to)".to_owned(),
        );
    }
    if watch {
        return Err("--dpop-proof goes with one printed token, not with --watch".to_owned());
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err("--dpop-proof: METHOD is an HTTP method such as GET or POST".to_owned());
    }
    // Named, never quoted: a misplaced value may be a secret.
    match url::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
        _ => return Err("--dpop-proof: URL must be an absolute http or https URL".to_owned()),
    }
    Ok((method, url))
}

fn watch_secs(text: &str) -> Result<Duration, String> {
    secs_of(text.parse::<f64>().map_err(|_| WATCH_VALUES.to_owned())?)
}

const WATCH_VALUES: &str = "--watch takes a number of seconds above 0";

fn secs_of(secs: f64) -> Result<Duration, String> {
    Some(secs)
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| WATCH_VALUES.to_owned())
}

impl Config {
    /// The rules the flags follow together.
    fn check(args: SourceArgs) -> Result<Config, String> {
        let SourceArgs {
            config: _,
            token_url,
            issuer,
            client_id,
            auth,
            private_key_file,
            mut key_id,
            mut alg,
            client_assertion_file,
            assertion_audience,
            grant,
            subject_token_file,
            subject_token_type,
            requested_token_type,
            scope,
            audience: audiences,
            resource: resources,
            client_secret_file,
            cache_file,
            dpop_key_file,
            redis_url,
        } = args;
        // First: without Redis in this build, nothing else matters.
        if redis_url.is_some() && !cfg!(feature = "redis") {
            return Err(super::sources::NO_REDIS.to_owned());
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
        let exchange = match grant.as_deref() {
            None | Some("client-credentials" | "client_credentials") => false,
            Some("token-exchange" | "token_exchange") => true,
            Some(_) => return Err("--grant takes client-credentials or token-exchange".to_owned()),
        };
        let grant = match (exchange, subject_token_file) {
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
        let method = match auth.as_deref() {
            None => None,
            Some("basic") => Some(AuthMethod::ClientSecretBasic),
            Some("post") => Some(AuthMethod::ClientSecretPost),
            Some(name) => Some(name.parse().map_err(|_| AUTH_VALUES.to_owned())?),
        };
        let auth = Auth::from_flags(
            method,
            private_key_file,
            client_assertion_file,
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
        Ok(Config {
            location,
            client_id,
            auth,
            assertion_audience,
            grant,
            scope,
            audiences,
            resources,
            client_secret_file,
            cache_file,
            dpop_key_file,
            redis_url,
        })
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
