//! Discovery: an authorization server's metadata from its issuer
//! identifier (RFC 8414, then OpenID Connect Discovery 1.0), fetched once.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use url::{Host, Url};

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::error::ErrorKind;
use crate::oauth2::client_auth::AuthMethod;
use crate::oauth2::http::{HttpClient, HttpError, HttpErrorKind, HttpRequest};
use crate::time::{duration_ms, from_ms};

const LOG: &str = "tokenkeeper::oauth2";

/// The largest metadata document read.
const MAX_DOCUMENT: usize = 256 * 1024;

/// The longest server text kept in an error.
const MAX_TEXT: usize = 200;

/// An authorization server's metadata (RFC 8414 §2; OpenID Connect
/// Discovery 1.0 §3): its issuer identifier, its token endpoint and what
/// that endpoint supports. Made by [`Discovery::fetch`], or from a
/// document you hold with [`from_json`](Self::from_json); turned into an
/// endpoint by [`TokenEndpoint::from_metadata`](crate::oauth2::TokenEndpoint::from_metadata).
///
/// ```
/// use tokenkeeper::oauth2::{AuthMethod, ServerMetadata};
///
/// let json = br#"{
///     "issuer": "https://auth.example.com",
///     "token_endpoint": "https://auth.example.com/oauth2/token",
///     "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
///     "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"]
/// }"#;
/// let metadata = ServerMetadata::from_json("https://auth.example.com", json)?;
/// assert_eq!(metadata.token_endpoint(), "https://auth.example.com/oauth2/token");
/// assert!(metadata.supports_auth_method(AuthMethod::PrivateKeyJwt));
/// assert!(!metadata.supports_auth_method(AuthMethod::ClientSecretPost));
/// # Ok::<(), tokenkeeper::oauth2::DiscoveryError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    document: Map<String, Value>,
}

impl fmt::Debug for ServerMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerMetadata")
            .field("issuer", &self.issuer)
            .field("token_endpoint", &self.token_endpoint)
            .field(
                "token_endpoint_auth_methods_supported",
                &self.token_endpoint_auth_methods_supported(),
            )
            .finish_non_exhaustive()
    }
}

impl ServerMetadata {
    /// Reads a metadata document fetched for `issuer`.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidDocument`] for a body that is not a JSON
    /// object, or without a `token_endpoint` URL;
    /// [`DiscoveryError::IssuerMismatch`] when its `issuer` is not
    /// `issuer`, character for character (RFC 8414 §3.3): a document that
    /// speaks for another server must not be trusted.
    pub fn from_json(issuer: &str, json: &[u8]) -> Result<ServerMetadata, DiscoveryError> {
        let invalid = |reason: &str| DiscoveryError::InvalidDocument {
            issuer: issuer.to_owned(),
            reason: reason.to_owned(),
        };
        let document = match serde_json::from_slice::<Value>(json) {
            Ok(Value::Object(document)) => document,
            Ok(_) => return Err(invalid("the document is not a JSON object")),
            Err(_) => return Err(invalid("the document is not JSON")),
        };
        match document.get("issuer") {
            Some(Value::String(found)) if found == issuer => {}
            Some(Value::String(found)) => {
                return Err(DiscoveryError::IssuerMismatch {
                    expected: issuer.to_owned(),
                    found: server_text(found),
                })
            }
            Some(_) => return Err(invalid("issuer is not a string")),
            None => return Err(invalid("issuer is missing")),
        }
        let token_endpoint = match document.get("token_endpoint") {
            Some(Value::String(url)) if Url::parse(url).is_ok() => url.clone(),
            Some(Value::String(_)) => return Err(invalid("token_endpoint is not a URL")),
            Some(_) => return Err(invalid("token_endpoint is not a string")),
            None => return Err(invalid("token_endpoint is missing")),
        };
        for list in [
            "token_endpoint_auth_methods_supported",
            "token_endpoint_auth_signing_alg_values_supported",
            "grant_types_supported",
        ] {
            match document.get(list) {
                None => {}
                Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
                Some(_) => return Err(invalid(&format!("{list} is not an array of strings"))),
            }
        }
        Ok(ServerMetadata {
            issuer: issuer.to_owned(),
            token_endpoint,
            document,
        })
    }

    /// The issuer identifier, as asked for and as the document says.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint's URL, as the document says. Whether it may be
    /// used (https, or plain http to loopback) is checked when an endpoint
    /// is built on it.
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// The client authentication methods the token endpoint supports:
    /// `token_endpoint_auth_methods_supported`, or
    /// `["client_secret_basic"]` when the document omits it, as RFC 8414
    /// §2 and OpenID Connect Discovery §3 say.
    pub fn token_endpoint_auth_methods_supported(&self) -> Vec<&str> {
        self.strings("token_endpoint_auth_methods_supported")
            .unwrap_or_else(|| vec![AuthMethod::ClientSecretBasic.as_str()])
    }

    /// Whether the token endpoint supports `method` (see
    /// [`token_endpoint_auth_methods_supported`](Self::token_endpoint_auth_methods_supported)).
    pub fn supports_auth_method(&self, method: AuthMethod) -> bool {
        self.token_endpoint_auth_methods_supported()
            .contains(&method.as_str())
    }

    /// The JWS algorithms the token endpoint accepts for signed client
    /// assertions (`token_endpoint_auth_signing_alg_values_supported`), if
    /// the document says.
    pub fn token_endpoint_auth_signing_alg_values_supported(&self) -> Option<Vec<&str>> {
        self.strings("token_endpoint_auth_signing_alg_values_supported")
    }

    /// The grant types the server supports (`grant_types_supported`), if
    /// the document says.
    pub fn grant_types_supported(&self) -> Option<Vec<&str>> {
        self.strings("grant_types_supported")
    }

    /// Any member of the document (`jwks_uri`, say).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.document.get(name)
    }

    fn strings(&self, name: &str) -> Option<Vec<&str>> {
        match self.document.get(name) {
            Some(Value::Array(items)) => Some(items.iter().filter_map(Value::as_str).collect()),
            _ => None,
        }
    }
}

/// Server text made safe to show: no control characters, cut.
fn server_text(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    match clean.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

/// Fetches an authorization server's metadata from its issuer identifier:
/// RFC 8414's `/.well-known/oauth-authorization-server` first (inserted
/// before the issuer's path, for an issuer with one:
/// `https://host/tenant` → `https://host/.well-known/oauth-authorization-server/tenant`),
/// then OpenID Connect's `/.well-known/openid-configuration` (appended to
/// the issuer: `https://host/tenant/.well-known/openid-configuration`).
///
/// The document is fetched once. A failure that may pass (the network, a
/// timeout, HTTP 5xx or 429) is retried with [`Backoff`] (500 ms doubling
/// up to 60 s, with full jitter, and at least any `Retry-After`), each
/// logged as a warning (`tokenkeeper::oauth2`), until the document comes
/// or [`max_attempts`](Self::max_attempts) is reached; by default it never
/// gives up, as the manager never does. A failure that cannot pass
/// (neither document exists, a document that is not metadata or names
/// another issuer) ends it at once.
///
/// The issuer must be `https`, except to loopback addresses, unless
/// [`allow_insecure_http`](Self::allow_insecure_http) says otherwise: the
/// document says where credentials go. No redirect is followed.
///
/// ```no_run
/// use std::time::Duration;
/// use tokenkeeper::oauth2::{Discovery, PrivateKey, TokenEndpoint};
///
/// # smol::block_on(async {
/// let metadata = Discovery::new("https://login.example.com/tenant-a")
///     .max_attempts(5)
///     .fetch()
///     .await?;
/// let endpoint = TokenEndpoint::from_metadata(&metadata, "svc")
///     .private_key_jwt(PrivateKey::from_file("/etc/svc/key.pem")?)
///     .build()?; // an error if the server does not list private_key_jwt
/// # let _ = endpoint;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// ```
pub struct Discovery {
    issuer: String,
    http: Option<Arc<dyn HttpClient>>,
    allow_insecure_http: bool,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    max_attempts: Option<u32>,
    request_timeout: Duration,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery of the server whose issuer identifier is `issuer`.
    pub fn new(issuer: impl Into<String>) -> Discovery {
        Discovery {
            issuer: issuer.into(),
            http: None,
            allow_insecure_http: false,
            backoff: Backoff::default(),
            clock: Arc::new(SystemClock),
            max_attempts: None,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// The HTTP client, which must implement [`HttpClient::get`]. Without
    /// one, the client of the `ureq` feature (on by default).
    pub fn http_client(mut self, http: impl HttpClient) -> Self {
        self.http = Some(Arc::new(http));
        self
    }

    /// Allows a plain `http` issuer on a host that is not loopback: only
    /// for closed test networks.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The waits between attempts after failures that may pass.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The clock the waits between attempts are measured on.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Gives up after `attempts` attempts (each tries both documents);
    /// at least one. Without it, attempts go on until one succeeds or a
    /// failure cannot pass.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// The longest one request may take; 10 s by default.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The URLs of the two documents, in the order they are tried.
    ///
    /// # Errors
    ///
    /// [`DiscoveryError::InvalidIssuer`] for an issuer that is not an
    /// `https` URL without query or fragment (RFC 8414 §2), or that is
    /// plain `http` to a host that is not loopback without
    /// [`allow_insecure_http`](Self::allow_insecure_http).
    ///
    /// ```
    /// use tokenkeeper::oauth2::Discovery;
    ///
    /// let urls = Discovery::new("https://login.example.com/tenant-a").document_urls()?;
    /// assert_eq!(urls[0].as_str(), "https://login.example.com/.well-known/oauth-authorization-server/tenant-a");
    /// assert_eq!(urls[1].as_str(), "https://login.example.com/tenant-a/.well-known/openid-configuration");
    /// # Ok::<(), tokenkeeper::oauth2::DiscoveryError>(())
    /// ```
    pub fn document_urls(&self) -> Result<[Url; 2], DiscoveryError> {
        let invalid = |why: &str| DiscoveryError::InvalidIssuer {
            issuer: self.issuer.clone(),
            reason: why.to_owned(),
        };
        let issuer = Url::parse(&self.issuer).map_err(|e| invalid(&e.to_string()))?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(invalid("an issuer has no query or fragment"));
        }
        if !issuer.username().is_empty() || issuer.password().is_some() {
            return Err(invalid("an issuer carries no user name or password"));
        }
        match issuer.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http || is_loopback(&issuer) => {}
            "http" => {
                return Err(invalid(
                    "plain http to a host that is not loopback; use https or allow_insecure_http",
                ))
            }
            _ => return Err(invalid("not an https URL")),
        }
        let path = issuer.path().trim_end_matches('/').to_owned();
        let mut oauth = issuer.clone();
        oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        let mut openid = issuer;
        openid.set_path(&format!("{path}/.well-known/openid-configuration"));
        Ok([oauth, openid])
    }

    /// Fetches the metadata, retrying failures that may pass.
    ///
    /// # Errors
    ///
    /// A [`DiscoveryError`]: at once for an invalid issuer, documents that
    /// do not exist or do not fit; after the last attempt for failures
    /// that may pass ([`kind`](DiscoveryError::kind) is then
    /// [`ErrorKind::Transient`]).
    pub async fn fetch(mut self) -> Result<ServerMetadata, DiscoveryError> {
        let urls = self.document_urls()?;
        let http = match self.http.take() {
            Some(http) => http,
            None => {
                crate::oauth2::endpoint::default_client().ok_or(DiscoveryError::NoHttpClient)?
            }
        };
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match self.attempt(&*http, &urls).await {
                Ok(metadata) => return Ok(metadata),
                Err(error) => error,
            };
            if error.kind() == ErrorKind::Permanent
                || self.max_attempts.is_some_and(|max| attempts >= max)
            {
                return Err(error);
            }
            let delay = self
                .backoff
                .next_delay(ErrorKind::Transient, error.retry_after());
            log::warn!(
                target: LOG,
                "discovery of {} failed (attempt {attempts}): {error}; retrying in {delay:?}",
                self.issuer
            );
            let wake_ms = self.clock.now_ms().saturating_add(duration_ms(delay));
            self.clock.sleep_until(from_ms(wake_ms)).await;
        }
    }

    /// One try of each document, in order; a document that does not exist
    /// passes to the next.
    async fn attempt(
        &self,
        http: &dyn HttpClient,
        urls: &[Url; 2],
    ) -> Result<ServerMetadata, DiscoveryError> {
        for url in urls {
            let request = HttpRequest::get(url.clone()).with_timeout(self.request_timeout);
            log::debug!(target: LOG, "GET {url} (discovery)");
            let response =
                http.get(request, MAX_DOCUMENT)
                    .await
                    .map_err(|error| DiscoveryError::Http {
                        url: url.to_string(),
                        error: Arc::new(error),
                    })?;
            match response.status() {
                200 => return ServerMetadata::from_json(&self.issuer, response.body()),
                // Not there: the other document may be.
                400..=499 if response.status() != 429 => continue,
                status => {
                    let retry_after = response
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    return Err(DiscoveryError::UnexpectedStatus {
                        url: url.to_string(),
                        status,
                        retry_after,
                    });
                }
            }
        }
        Err(DiscoveryError::NotFound {
            urls: urls.iter().map(Url::to_string).collect(),
        })
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Why discovery failed. Server text in it is cut and has no control
/// characters; a discovery document holds no secret.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer is not an `https` URL without query or fragment (or
    /// plain `http` to a host that is not loopback).
    InvalidIssuer {
        /// The issuer as given.
        issuer: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither document exists: both URLs answered 4xx.
    NotFound {
        /// The URLs tried.
        urls: Vec<String>,
    },
    /// A document that is not metadata.
    InvalidDocument {
        /// The issuer asked for.
        issuer: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The document's `issuer` is not the one asked for.
    IssuerMismatch {
        /// The issuer asked for.
        expected: String,
        /// The one the document names.
        found: String,
    },
    /// An answer other than 200 or 4xx (5xx, 429): it may pass.
    UnexpectedStatus {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's `Retry-After`, in seconds, if it sent one.
        retry_after: Option<Duration>,
    },
    /// No complete HTTP response: it may pass.
    Http {
        /// The URL.
        url: String,
        /// What the HTTP client said.
        error: Arc<HttpError>,
    },
    /// No HTTP client was given and no HTTP feature is enabled.
    NoHttpClient,
}

impl DiscoveryError {
    /// Whether trying again later may help: [`ErrorKind::Transient`] for
    /// the network and 5xx or 429 answers, [`ErrorKind::Permanent`] for
    /// the rest (an HTTP client that cannot GET among them).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DiscoveryError::Http { error, .. } if error.kind() == HttpErrorKind::Unsupported => {
                ErrorKind::Permanent
            }
            DiscoveryError::Http { .. } | DiscoveryError::UnexpectedStatus { .. } => {
                ErrorKind::Transient
            }
            _ => ErrorKind::Permanent,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            DiscoveryError::UnexpectedStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::InvalidIssuer { issuer, reason } => {
                write!(f, "invalid issuer {issuer:?}: {reason}")
            }
            DiscoveryError::NotFound { urls } => write!(
                f,
                "no authorization server metadata at {}",
                urls.join(" nor at ")
            ),
            DiscoveryError::InvalidDocument { issuer, reason } => {
                write!(f, "the metadata of {issuer} is invalid: {reason}")
            }
            DiscoveryError::IssuerMismatch { expected, found } => write!(
                f,
                "the metadata fetched for issuer {expected} names another issuer, {found:?}"
            ),
            DiscoveryError::UnexpectedStatus { url, status, .. } => {
                write!(f, "GET {url}: HTTP {status}")
            }
            DiscoveryError::Http { url, error } => write!(f, "GET {url}: {error}"),
            DiscoveryError::NoHttpClient => f.write_str(
                "no HTTP client: pass one with http_client(), or enable the `ureq` feature",
            ),
        }
    }
}

impl std::error::Error for DiscoveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DiscoveryError::Http { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_urls_insert_and_append_the_issuers_path() {
        let urls = |issuer: &str| {
            Discovery::new(issuer)
                .document_urls()
                .map(|[a, b]| (a.to_string(), b.to_string()))
        };
        assert_eq!(
            urls("https://a.example").unwrap(),
            (
                "https://a.example/.well-known/oauth-authorization-server".into(),
                "https://a.example/.well-known/openid-configuration".into()
            )
        );
        assert_eq!(
            urls("https://a.example/").unwrap(),
            urls("https://a.example").unwrap()
        );
        assert_eq!(
            urls("https://a.example/t/1/").unwrap(),
            (
                "https://a.example/.well-known/oauth-authorization-server/t/1".into(),
                "https://a.example/t/1/.well-known/openid-configuration".into()
            )
        );
        assert!(urls("http://127.0.0.1:8080").is_ok());
        for bad in [
            "http://a.example",
            "https://a.example?x=1",
            "https://a.example#f",
            "https://u:p@a.example",
            "ftp://a.example",
            "not a url",
        ] {
            assert!(
                matches!(urls(bad), Err(DiscoveryError::InvalidIssuer { .. })),
                "{bad}"
            );
        }
        assert!(Discovery::new("http://a.example")
            .allow_insecure_http(true)
            .document_urls()
            .is_ok());
    }

    #[test]
    fn a_document_must_name_the_issuer_and_a_token_endpoint() {
        let issuer = "https://a.example";
        let doc = |json: &str| ServerMetadata::from_json(issuer, json.as_bytes());
        let ok = doc(r#"{"issuer":"https://a.example","token_endpoint":"https://a.example/t"}"#)
            .unwrap();
        assert_eq!(
            ok.token_endpoint_auth_methods_supported(),
            ["client_secret_basic"]
        );
        assert!(ok.supports_auth_method(AuthMethod::ClientSecretBasic));
        assert!(!ok.supports_auth_method(AuthMethod::ClientSecretPost));
        assert_eq!(ok.token_endpoint_auth_signing_alg_values_supported(), None);
        match doc(r#"{"issuer":"https://a.example/","token_endpoint":"https://a.example/t"}"#) {
            Err(DiscoveryError::IssuerMismatch { expected, found }) => {
                assert_eq!(
                    (expected.as_str(), found.as_str()),
                    (issuer, "https://a.example/")
                );
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "[]",
            "nope",
            r#"{"token_endpoint":"https://a.example/t"}"#,
            r#"{"issuer":"https://a.example"}"#,
            r#"{"issuer":"https://a.example","token_endpoint":"not a url"}"#,
            r#"{"issuer":"https://a.example","token_endpoint":"https://a.example/t","grant_types_supported":"x"}"#,
            r#"{"issuer":"https://a.example","token_endpoint":"https://a.example/t","token_endpoint_auth_methods_supported":[1]}"#,
        ] {
            assert!(
                matches!(doc(bad), Err(DiscoveryError::InvalidDocument { .. })),
                "{bad}"
            );
        }
        let hostile = format!(
            r#"{{"issuer":"https://evil.example/\u001b[2J{}","token_endpoint":"https://a.example/t"}}"#,
            "x".repeat(1000)
        );
        let error = doc(&hostile).unwrap_err().to_string();
        assert!(!error.contains('\u{1b}') && error.len() < 500, "{error}");
    }
}
