//! The token endpoint: its URL, the client's credentials and how they are
//! sent, and the HTTP client that carries the requests.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use url::{Host, Url};

use crate::error::SourceError;
use crate::oauth2::error::TokenRequestError;
use crate::oauth2::http::{HttpClient, HttpRequest};
use crate::oauth2::response::{parse, retry_after};
use crate::oauth2::scrub::{Scrubber, Secrets};
use crate::source::FetchContext;
use crate::token::{ClientId, ClientSecret, Token};

const LOG: &str = "tokenkeeper::oauth2";

/// The default cap on a token response body: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret. The default, and
    /// the method every server must support.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// A token endpoint configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse, or is not http(s).
    InvalidUrl(String),
    /// The URL is plain `http` to a host that is not loopback; see
    /// [`TokenEndpointBuilder::allow_insecure_http`].
    InsecureUrl(String),
    /// The URL carries a user name or password.
    CredentialsInUrl,
    /// No HTTP client was given and no HTTP feature is enabled.
    NoHttpClient,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidUrl(why) => write!(f, "invalid token URL: {why}"),
            ConfigError::InsecureUrl(url) => write!(
                f,
                "token URL {url} is plain http to a host that is not loopback; use https or allow_insecure_http"
            ),
            ConfigError::CredentialsInUrl => {
                f.write_str("the token URL must not carry a user name or password")
            }
            ConfigError::NoHttpClient => f.write_str(
                "no HTTP client: pass one with http_client(), or enable the `ureq` feature",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How the parameters of a token request travel in its body.
///
/// ```
/// use tokenkeeper::oauth2::{RequestBody, TokenEndpoint};
/// use tokenkeeper::{ClientId, ClientSecret};
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", ClientId::new("svc"), ClientSecret::new("s"))
///     .request_body(RequestBody::Json)
///     .build()
///     .unwrap();
/// # let _ = endpoint;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestBody {
    /// `application/x-www-form-urlencoded`, as RFC 6749 requires. The
    /// default.
    #[default]
    Form,
    /// `application/json`: one JSON object, each parameter a string member
    /// (a parameter given more than once, such as `resource`, an array of
    /// strings), for authorities that accept nothing else. With
    /// [`AuthMethod::ClientSecretPost`], `client_id` and `client_secret`
    /// are members too.
    Json,
}

/// Where and how to ask for tokens. Made by [`TokenEndpoint::builder`];
/// used by the grant sources.
///
/// ```
/// use std::sync::Arc;
/// use tokenkeeper::oauth2::{AuthMethod, TokenEndpoint};
/// use tokenkeeper::{ClientId, ClientSecret};
/// # use tokenkeeper::oauth2::{HttpClient, HttpError, HttpRequest, HttpResponse};
/// # struct MyClient;
/// # impl HttpClient for MyClient {
/// #     fn post(&self, _: HttpRequest, _: usize) -> tokenkeeper::BoxFuture<'_, Result<HttpResponse, HttpError>> { unimplemented!() }
/// # }
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/oauth/token", ClientId::new("svc"), ClientSecret::new("s"))
///     .auth_method(AuthMethod::ClientSecretPost)
///     .http_client(MyClient)
///     .build()
///     .unwrap();
/// assert_eq!(endpoint.url().as_str(), "https://auth.example.com/oauth/token");
///
/// // Plain http is refused except to loopback.
/// let err = TokenEndpoint::builder("http://auth.example.com/token", ClientId::new("svc"), ClientSecret::new("s"))
///     .http_client(MyClient)
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("not loopback"));
/// ```
#[derive(Clone)]
pub struct TokenEndpoint {
    url: Url,
    client_id: ClientId,
    client_secret: ClientSecret,
    auth: AuthMethod,
    body: RequestBody,
    http: Arc<dyn HttpClient>,
    max_body: usize,
    /// The `Authorization` header of [`AuthMethod::ClientSecretBasic`],
    /// made once: it carries the secret.
    authorization: Option<BasicAuthorization>,
    /// Finds the client secret in every form it is sent in, in server
    /// text; made once, shared by clones.
    scrubber: Arc<Scrubber>,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("url", &self.url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth", &self.auth)
            .field("body", &self.body)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// Configures a [`TokenEndpoint`].
pub struct TokenEndpointBuilder {
    url: String,
    client_id: ClientId,
    client_secret: ClientSecret,
    auth: AuthMethod,
    body: RequestBody,
    http: Option<Arc<dyn HttpClient>>,
    allow_insecure_http: bool,
    max_body: usize,
}

impl fmt::Debug for TokenEndpointBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpointBuilder")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .field("body", &self.body)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl TokenEndpoint {
    /// Starts configuring the endpoint at `url` for the client `client_id`
    /// with `client_secret`.
    pub fn builder(
        url: impl Into<String>,
        client_id: ClientId,
        client_secret: ClientSecret,
    ) -> TokenEndpointBuilder {
        TokenEndpointBuilder {
            url: url.into(),
            client_id,
            client_secret,
            auth: AuthMethod::default(),
            body: RequestBody::default(),
            http: None,
            allow_insecure_http: false,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The token URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The client identifier.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// POSTs a grant with `params` and turns the answer into a token.
    /// `secrets` are extra values (a refresh token) to scrub from errors.
    pub(crate) async fn request(
        &self,
        params: &[(&str, &str)],
        secrets: &[&str],
        cx: &FetchContext,
    ) -> Result<Token, SourceError> {
        let param = |name: &str| params.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        let grant = param("grant_type").unwrap_or("?");
        self.request_form(grant, self.encode_form(params), secrets, param("scope"), cx)
            .await
    }

    /// The body for `params` (a form, or JSON: see [`RequestBody`]), with
    /// the client's credentials when they travel in the body. It may carry
    /// secrets.
    pub(crate) fn encode_form(&self, params: &[(&str, &str)]) -> Vec<u8> {
        let credentials = (self.auth == AuthMethod::ClientSecretPost).then(|| {
            [
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.secret()),
            ]
        });
        let all = params
            .iter()
            .copied()
            .chain(credentials.into_iter().flatten());
        match self.body {
            RequestBody::Form => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (name, value) in all {
                    form.append_pair(name, value);
                }
                form.finish().into_bytes()
            }
            RequestBody::Json => json_body(all),
        }
    }

    /// The POST of `body`, with the `Authorization` header if the
    /// credentials travel in it.
    fn http_request(&self, body: Vec<u8>) -> HttpRequest {
        let request = match self.body {
            RequestBody::Form => HttpRequest::form_post(self.url.clone(), body),
            RequestBody::Json => HttpRequest::json_post(self.url.clone(), body),
        };
        match &self.authorization {
            Some(authorization) => request.header("Authorization", authorization.value()),
            None => request,
        }
    }

    /// Posts a form made by [`encode_form`](Self::encode_form) for `grant`.
    ///
    /// `secrets` are the credentials the form carries besides the client's
    /// (a refresh token; later client assertions, subject tokens): they are
    /// scrubbed, in every encoding, from server text, as the client secret
    /// is. `scope` is the scope the form asks for: a granted scope equal to
    /// it is kept without a look.
    pub(crate) async fn request_form(
        &self,
        grant: &str,
        form: Vec<u8>,
        secrets: &[&str],
        scope: Option<&str>,
        cx: &FetchContext,
    ) -> Result<Token, SourceError> {
        let mut request = self.http_request(form);
        if let Some(deadline) = cx.deadline_ms() {
            // Give up a little before the manager does, so an answer that
            // arrives is read, not dropped with the fetch.
            let left = deadline.saturating_sub(cx.now_ms());
            let margin = (left / 10).max(200);
            request =
                request.with_timeout(Duration::from_millis(left.saturating_sub(margin).max(1)));
        }
        log::debug!(target: LOG, "POST {} (grant_type={grant})", self.url);
        let result = self.http.post(request, self.max_body).await;
        // Made after the await: the future stays Send.
        let secrets = Secrets::new(&self.scrubber, secrets);
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                // The client's message may quote what the server sent.
                let e = e.scrubbed(|text| secrets.scrub(text));
                return Err(into_source_error(TokenRequestError::Http(e), None));
            }
        };
        let parsed = parse(response.status(), response.body(), &secrets, scope).map_err(|e| {
            let hint = response
                .header("retry-after")
                .and_then(|v| retry_after(v, cx.now_ms()));
            into_source_error(e, hint)
        })?;
        if !parsed.token_type.eq_ignore_ascii_case("bearer") {
            log::warn!(
                target: LOG,
                "token endpoint issued a token of type {:?}, not Bearer; recorded on the token",
                parsed.token_type
            );
        }
        let mut token = cx
            .token(parsed.access_token, parsed.expires_in)
            .with_token_type(parsed.token_type);
        if let Some(refresh_token) = parsed.refresh_token {
            token = token.with_refresh_token(refresh_token);
        }
        if let Some(id_token) = parsed.id_token {
            token = token.with_id_token(id_token);
        }
        if let Some(scope) = parsed.scope {
            token = token.with_scope(scope);
        }
        Ok(token)
    }
}

/// The `Authorization` value of [`AuthMethod::ClientSecretBasic`]:
/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1),
/// made once per endpoint. It carries the secret, so it never prints.
#[derive(Clone)]
struct BasicAuthorization(String);

impl BasicAuthorization {
    fn new(client_id: &ClientId, client_secret: &ClientSecret) -> BasicAuthorization {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!(
            "{}:{}",
            encode(client_id.as_str()),
            encode(client_secret.secret())
        );
        BasicAuthorization(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }

    /// The header value. Take care where it goes.
    fn value(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BasicAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BasicAuthorization(<redacted>)")
    }
}

/// `params` as one JSON object of strings; a name given more than once
/// becomes an array of its values, in order.
fn json_body<'a>(params: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<u8> {
    use serde_json::{Map, Value};
    let mut object = Map::new();
    for (name, value) in params {
        let value = Value::from(value);
        match object.get_mut(name) {
            None => {
                object.insert(name.to_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    // A map of strings always serializes.
    serde_json::to_vec(&Value::Object(object)).unwrap_or_default()
}

fn into_source_error(
    error: TokenRequestError,
    retry_after: Option<std::time::Duration>,
) -> SourceError {
    let mut e = SourceError::new(error.kind(), error.to_string());
    if let Some(after) = retry_after {
        e = e.with_retry_after(after);
    }
    e.with_cause(error)
}

impl TokenEndpointBuilder {
    /// How the client authenticates; [`AuthMethod::ClientSecretBasic`] by
    /// default.
    pub fn auth_method(mut self, auth: AuthMethod) -> Self {
        self.auth = auth;
        self
    }

    /// How the parameters travel: [`RequestBody::Form`] by default (RFC
    /// 6749), or [`RequestBody::Json`] for an authority that demands JSON.
    /// Every grant sends the same parameters either way.
    pub fn request_body(mut self, body: RequestBody) -> Self {
        self.body = body;
        self
    }

    /// The HTTP client to use. Without one, `build` picks the client of the
    /// `ureq` feature (on by default); with only the `surf` feature, pass a
    /// `SurfClient` here.
    pub fn http_client(mut self, http: impl HttpClient) -> Self {
        self.http = Some(Arc::new(http));
        self
    }

    /// Allows a plain `http` URL to a host that is not loopback. Credentials
    /// and tokens then cross the network unencrypted: only for closed test
    /// networks.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The largest response body accepted, [`DEFAULT_MAX_BODY`] by default.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Checks the configuration and makes the endpoint.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a URL that is invalid, insecure or carries
    /// credentials, or when there is no HTTP client.
    pub fn build(self) -> Result<TokenEndpoint, ConfigError> {
        let url = Url::parse(&self.url).map_err(|e| ConfigError::InvalidUrl(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::CredentialsInUrl);
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure_http || is_loopback(&url) => {}
            "http" => return Err(ConfigError::InsecureUrl(url.to_string())),
            other => {
                return Err(ConfigError::InvalidUrl(format!(
                    "unsupported scheme {other:?}"
                )))
            }
        }
        let http = match self.http {
            Some(http) => http,
            None => default_client().ok_or(ConfigError::NoHttpClient)?,
        };
        let authorization = (self.auth == AuthMethod::ClientSecretBasic)
            .then(|| BasicAuthorization::new(&self.client_id, &self.client_secret));
        // Every form of the secret, whichever method sends it: a proxy or a
        // misconfigured server may build the other one.
        let mut scrubber = Scrubber::default();
        scrubber.add_client_secret(self.client_id.as_str(), self.client_secret.secret());
        Ok(TokenEndpoint {
            url,
            client_id: self.client_id,
            client_secret: self.client_secret,
            auth: self.auth,
            body: self.body,
            http,
            max_body: self.max_body,
            authorization,
            scrubber: Arc::new(scrubber),
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

fn default_client() -> Option<Arc<dyn HttpClient>> {
    #[cfg(feature = "ureq")]
    let client: Option<Arc<dyn HttpClient>> = Some(Arc::new(crate::oauth2::UreqClient::new()));
    #[cfg(not(feature = "ureq"))]
    let client = None;
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::http::{HttpError, HttpResponse};
    use crate::BoxFuture;

    struct Never;

    impl HttpClient for Never {
        fn post(&self, _: HttpRequest, _: usize) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
            Box::pin(std::future::pending())
        }
    }

    fn build(url: &str) -> Result<TokenEndpoint, ConfigError> {
        TokenEndpoint::builder(url, ClientId::new("id"), ClientSecret::new("secret"))
            .http_client(Never)
            .build()
    }

    #[test]
    fn https_everywhere_http_only_on_loopback() {
        assert!(build("https://auth.example/token").is_ok());
        assert!(build("http://127.0.0.1:8080/token").is_ok());
        assert!(build("http://127.9.9.9/token").is_ok());
        assert!(build("http://[::1]:9/token").is_ok());
        assert!(build("http://localhost/token").is_ok());
        assert!(matches!(
            build("http://10.0.0.1/token"),
            Err(ConfigError::InsecureUrl(_))
        ));
        assert!(matches!(
            build("http://localhost.evil.example/token"),
            Err(ConfigError::InsecureUrl(_))
        ));
        assert!(matches!(
            build("ftp://auth.example/token"),
            Err(ConfigError::InvalidUrl(_))
        ));
        assert!(matches!(
            build("not a url"),
            Err(ConfigError::InvalidUrl(_))
        ));
        assert_eq!(
            build("https://u:p@auth.example/token").unwrap_err(),
            ConfigError::CredentialsInUrl
        );
        let insecure = TokenEndpoint::builder(
            "http://10.0.0.1/t",
            ClientId::new("id"),
            ClientSecret::new("s"),
        )
        .http_client(Never)
        .allow_insecure_http(true)
        .build();
        assert!(insecure.is_ok());
    }

    #[test]
    fn basic_credentials_are_form_encoded_before_base64() {
        let endpoint = TokenEndpoint::builder(
            "https://a/t",
            ClientId::new("my client"),
            ClientSecret::new("p@ss:w/rd"),
        )
        .http_client(Never)
        .build()
        .unwrap();
        let header = endpoint.authorization.as_ref().unwrap().value();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my+client:p%40ss%3Aw%2Frd"
        );
    }

    #[test]
    fn debug_hides_the_secret_and_shows_the_client_id() {
        for auth in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
            let builder = TokenEndpoint::builder(
                "https://a/t",
                ClientId::new("id-abc"),
                ClientSecret::new("pw-xyz"),
            )
            .auth_method(auth)
            .http_client(Never);
            let builder_debug = format!("{builder:?}");
            let endpoint = builder.build().unwrap();
            let debug = format!(
                "{builder_debug} {endpoint:?} {:?} {:?}",
                endpoint.authorization,
                endpoint
                    .http_request(endpoint.encode_form(&[("grant_type", "client_credentials")]))
            );
            assert!(!debug.contains("xyz"), "{debug}");
            // The Basic value (base64 of "id-abc:pw-xyz") must not show either.
            assert!(!debug.contains("aWQtYWJjOnB3LXh5"), "{debug}");
            assert!(debug.contains("id-abc"), "{debug}");
        }
    }
}
