//! The token endpoint: its URL, the client's authentication, and the HTTP
//! client that carries the requests.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::{Host, Url};

use crate::error::SourceError;
use crate::oauth2::client_auth::{AuthMethod, ClientAuth, Credentials};
use crate::oauth2::discovery::{Discovery, DiscoveryError, ServerMetadata};
use crate::oauth2::error::TokenRequestError;
use crate::oauth2::http::{HttpClient, HttpRequest};
use crate::oauth2::response::{parse, retry_after};
use crate::oauth2::scrub::{Scrubber, Secrets};
use crate::source::FetchContext;
use crate::token::{ClientId, ClientSecret, Token};

#[cfg(feature = "jwt")]
use crate::oauth2::dpop::{DpopKey, EndpointDpop};
#[cfg(feature = "jwt")]
use crate::oauth2::jwt::PrivateKey;

const LOG: &str = "tokenkeeper::oauth2";

/// The default cap on a token response body: 64 KiB.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

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
    /// No client authentication was chosen: see
    /// [`TokenEndpointBuilder::client_auth`].
    NoClientAuth,
    /// The authority's metadata ([`TokenEndpoint::from_metadata`]) does not
    /// list the client authentication chosen in
    /// `token_endpoint_auth_methods_supported`.
    AuthMethodNotSupported {
        /// The method chosen.
        method: AuthMethod,
        /// The methods the authority lists.
        supported: Vec<String>,
    },
    /// The authority's metadata does not list the algorithm that signs
    /// the client's assertions in
    /// `token_endpoint_auth_signing_alg_values_supported`.
    SigningAlgorithmNotSupported {
        /// The JWS algorithm of the key (`HS256` for `client_secret_jwt`).
        algorithm: String,
        /// The algorithms the authority lists.
        supported: Vec<String>,
    },
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
            ConfigError::NoClientAuth => f.write_str(
                "no client authentication: give a client_secret(), a private_key_jwt(), a \
                 client_assertion_file(), or client_auth(ClientAuth::None) for a public client",
            ),
            ConfigError::AuthMethodNotSupported { method, supported } => write!(
                f,
                "the authority does not support client authentication {method}; its \
                 token_endpoint_auth_methods_supported lists {}",
                supported.join(", ")
            ),
            ConfigError::SigningAlgorithmNotSupported {
                algorithm,
                supported,
            } => write!(
                f,
                "the authority does not accept client assertions signed {algorithm}; its \
                 token_endpoint_auth_signing_alg_values_supported lists {}",
                supported.join(", ")
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
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", ClientId::new("svc"))
///     .client_secret(ClientSecret::new("s"))
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
    /// strings), for authorities that accept nothing else. The client's
    /// credentials that travel in the body (`client_id`, `client_secret`,
    /// `client_assertion`, ...) are members too.
    Json,
}

/// Where and how to ask for tokens: the token URL, the client and how it
/// authenticates ([`ClientAuth`]), and the HTTP client. Made by
/// [`TokenEndpoint::builder`]; used by the grant sources.
///
/// ```
/// use tokenkeeper::oauth2::{AuthMethod, TokenEndpoint};
/// use tokenkeeper::{ClientId, ClientSecret};
/// # use tokenkeeper::oauth2::{HttpClient, HttpError, HttpRequest, HttpResponse};
/// # struct MyClient;
/// # impl HttpClient for MyClient {
/// #     fn post(&self, _: HttpRequest, _: usize) -> tokenkeeper::BoxFuture<'_, Result<HttpResponse, HttpError>> { unimplemented!() }
/// # }
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/oauth/token", ClientId::new("svc"))
///     .client_secret_post(ClientSecret::new("s"))
///     .http_client(MyClient)
///     .build()
///     .unwrap();
/// assert_eq!(endpoint.url().as_str(), "https://auth.example.com/oauth/token");
/// assert_eq!(endpoint.auth_method(), AuthMethod::ClientSecretPost);
///
/// // Plain http is refused except to loopback.
/// let err = TokenEndpoint::builder("http://auth.example.com/token", "svc")
///     .client_secret(ClientSecret::new("s"))
///     .http_client(MyClient)
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("not loopback"));
/// ```
///
/// Without a secret, signing each request with a private key
/// (`private_key_jwt`, feature `jwt`, on by default):
///
/// ```
/// use tokenkeeper::oauth2::{PrivateKey, TokenEndpoint};
///
/// # let pem = include_str!("../../tests/keys/test-es256.pem");
/// # let key_file = std::env::temp_dir().join(format!("tokenkeeper-doc-key-{}.pem", std::process::id()));
/// # std::fs::write(&key_file, pem).unwrap();
/// let key = PrivateKey::from_file(&key_file)?.with_key_id("2024-01"); // ES256, from the key
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/oauth/token", "svc")
///     .private_key_jwt(key)
///     .build()
///     .unwrap();
/// # std::fs::remove_file(&key_file).unwrap();
/// assert_eq!(endpoint.auth_method().as_str(), "private_key_jwt");
/// # Ok::<(), tokenkeeper::oauth2::KeyError>(())
/// ```
#[derive(Clone)]
pub struct TokenEndpoint {
    url: Url,
    /// The issuer identifier, when the endpoint was discovered.
    issuer: Option<String>,
    client_id: ClientId,
    /// The client authentication, made once, shared by clones: it may
    /// hold a key.
    credentials: Arc<Credentials>,
    body: RequestBody,
    http: Arc<dyn HttpClient>,
    max_body: usize,
    /// Finds the client secret in every form it is sent in, in server
    /// text; made once, shared by clones.
    scrubber: Arc<Scrubber>,
    /// The DPoP key and the authority's latest nonce, shared by clones.
    #[cfg(feature = "jwt")]
    dpop: Option<Arc<EndpointDpop>>,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TokenEndpoint");
        debug
            .field("url", &self.url.as_str())
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("auth", self.credentials.auth())
            .field("body", &self.body)
            .field("max_body", &self.max_body);
        #[cfg(feature = "jwt")]
        debug.field("dpop", &self.dpop);
        debug.finish()
    }
}

/// Configures a [`TokenEndpoint`].
pub struct TokenEndpointBuilder {
    url: String,
    client_id: ClientId,
    auth: Option<ClientAuth>,
    assertion_audience: Option<String>,
    body: RequestBody,
    http: Option<Arc<dyn HttpClient>>,
    allow_insecure_http: bool,
    max_body: usize,
    /// The authority's metadata, when discovered: its issuer and what its
    /// token endpoint supports.
    metadata: Option<Arc<ServerMetadata>>,
    #[cfg(feature = "jwt")]
    dpop: Option<DpopKey>,
    #[cfg(feature = "jwt")]
    dpop_allow_bearer: bool,
}

impl fmt::Debug for TokenEndpointBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TokenEndpointBuilder");
        debug
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("auth", &self.auth)
            .field("assertion_audience", &self.assertion_audience)
            .field("body", &self.body)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("max_body", &self.max_body)
            .field("metadata", &self.metadata);
        #[cfg(feature = "jwt")]
        debug
            .field("dpop", &self.dpop)
            .field("dpop_allow_bearer", &self.dpop_allow_bearer);
        debug.finish()
    }
}

impl TokenEndpoint {
    /// Starts configuring the endpoint at `url` for the client `client_id`.
    /// How the client authenticates comes next:
    /// [`client_secret`](TokenEndpointBuilder::client_secret),
    /// [`private_key_jwt`](TokenEndpointBuilder::private_key_jwt),
    /// [`client_assertion_file`](TokenEndpointBuilder::client_assertion_file),
    /// or any [`ClientAuth`] with
    /// [`client_auth`](TokenEndpointBuilder::client_auth).
    pub fn builder(url: impl Into<String>, client_id: impl Into<ClientId>) -> TokenEndpointBuilder {
        TokenEndpointBuilder {
            url: url.into(),
            client_id: client_id.into(),
            auth: None,
            assertion_audience: None,
            body: RequestBody::default(),
            http: None,
            allow_insecure_http: false,
            max_body: DEFAULT_MAX_BODY,
            metadata: None,
            #[cfg(feature = "jwt")]
            dpop: None,
            #[cfg(feature = "jwt")]
            dpop_allow_bearer: false,
        }
    }

    /// Starts configuring the token endpoint that `metadata` (from
    /// [`Discovery`]) names, for the client `client_id`. Then, as with
    /// [`builder`](Self::builder), how the client authenticates; and
    /// `build` checks it against the authority's lists:
    /// a method it does not name in `token_endpoint_auth_methods_supported`
    /// (which means `client_secret_basic` alone when the document omits it),
    /// or a key whose algorithm it does not name in
    /// `token_endpoint_auth_signing_alg_values_supported`, is a
    /// [`ConfigError`]. Signed assertions are for the issuer (their `aud`)
    /// unless [`assertion_audience`](TokenEndpointBuilder::assertion_audience)
    /// says otherwise.
    ///
    /// ```
    /// use tokenkeeper::oauth2::{ConfigError, ServerMetadata, TokenEndpoint};
    /// use tokenkeeper::ClientSecret;
    ///
    /// let metadata = ServerMetadata::from_json("https://auth.example.com", br#"{
    ///     "issuer": "https://auth.example.com",
    ///     "token_endpoint": "https://auth.example.com/token",
    ///     "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"]
    /// }"#)?;
    /// let endpoint = TokenEndpoint::from_metadata(&metadata, "svc")
    ///     .client_secret(ClientSecret::new("s"))
    ///     .build()?;
    /// assert_eq!(endpoint.url().as_str(), "https://auth.example.com/token");
    /// assert_eq!(endpoint.issuer(), Some("https://auth.example.com"));
    ///
    /// let err = TokenEndpoint::from_metadata(&metadata, "svc")
    ///     .client_secret_post(ClientSecret::new("s"))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(err, ConfigError::AuthMethodNotSupported { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_metadata(
        metadata: &ServerMetadata,
        client_id: impl Into<ClientId>,
    ) -> TokenEndpointBuilder {
        let mut builder = TokenEndpoint::builder(metadata.token_endpoint(), client_id);
        builder.metadata = Some(Arc::new(metadata.clone()));
        builder
    }

    /// Discovers the authority whose issuer identifier is `issuer` (see
    /// [`Discovery`], with its defaults: the `ureq` client, retries until
    /// the document comes or cannot) and starts configuring its token
    /// endpoint for `client_id`, as [`from_metadata`](Self::from_metadata)
    /// does. The document is fetched here, once: not for every token.
    ///
    /// ```no_run
    /// use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
    /// use tokenkeeper::{ClientSecret, TokenManager};
    ///
    /// # smol::block_on(async {
    /// let endpoint = TokenEndpoint::discover("https://auth.example.com", "svc")
    ///     .await?
    ///     .client_secret(ClientSecret::new(std::env::var("CLIENT_SECRET")?))
    ///     .build()?;
    /// let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
    /// smol::spawn(driver).detach(); // or any executor
    /// # let _ = handle;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Discovery::fetch`].
    pub async fn discover(
        issuer: impl Into<String>,
        client_id: impl Into<ClientId>,
    ) -> Result<TokenEndpointBuilder, DiscoveryError> {
        let metadata = Discovery::new(issuer).fetch().await?;
        Ok(TokenEndpoint::from_metadata(&metadata, client_id))
    }

    /// The authority's issuer identifier, when the endpoint was made from
    /// its metadata ([`from_metadata`](Self::from_metadata)).
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The token URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The client identifier.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// How the client authenticates.
    pub fn auth_method(&self) -> AuthMethod {
        self.credentials.auth().method()
    }

    /// The key its tokens are bound to, when DPoP is on
    /// ([`TokenEndpointBuilder::dpop`]).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_key(&self) -> Option<&DpopKey> {
        self.dpop.as_deref().map(|dpop| &dpop.key)
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
    /// the client's credentials that travel in the body and are the same
    /// for every request (an assertion is added per request). It may carry
    /// secrets.
    pub(crate) fn encode_form(&self, params: &[(&str, &str)]) -> Vec<u8> {
        let credentials = self.credentials.body_params(&self.client_id);
        let all = params.iter().copied().chain(credentials);
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
        match self.credentials.authorization() {
            Some(authorization) => request.header("Authorization", authorization),
            None => request,
        }
    }

    /// `body` with `name=value` added: a form pair, or a JSON member.
    fn append_param(&self, mut body: Vec<u8>, name: &str, value: &str) -> Vec<u8> {
        match self.body {
            RequestBody::Form => {
                if !body.is_empty() {
                    body.push(b'&');
                }
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair(name, value);
                body.extend_from_slice(form.finish().as_bytes());
            }
            RequestBody::Json => {
                // `encode_form` wrote one object: its closing brace goes
                // after the new member.
                if body.last() == Some(&b'}') {
                    body.pop();
                }
                if body.len() > 1 {
                    body.push(b',');
                }
                for text in [name, value] {
                    let quoted = serde_json::Value::from(text).to_string();
                    body.extend_from_slice(quoted.as_bytes());
                    body.push(b':');
                }
                body.pop();
                body.push(b'}');
            }
        }
        body
    }

    /// Posts a form made by [`encode_form`](Self::encode_form) for `grant`.
    ///
    /// `secrets` are the credentials the form carries besides the client's
    /// (a refresh token, a subject token): they are scrubbed, in every
    /// encoding, from server text, as the client secret is. The client
    /// assertion, made here for this request, is added to the form and to
    /// them. `scope` is the scope the form asks for: a granted scope equal
    /// to it is kept without a look.
    ///
    /// With DPoP on, every request carries a new proof; an authority's
    /// `use_dpop_nonce` challenge that brings a new nonce is answered once
    /// with it (a second one is the error).
    pub(crate) async fn request_form(
        &self,
        grant: &str,
        form: Vec<u8>,
        secrets: &[&str],
        scope: Option<&str>,
        cx: &FetchContext,
    ) -> Result<Token, SourceError> {
        #[cfg(feature = "jwt")]
        if let Some(dpop) = &self.dpop {
            let sent = dpop.nonce();
            return match self.exchange(grant, form.clone(), secrets, scope, cx).await {
                Err(e) if demands_nonce(&e) && dpop.nonce() != sent => {
                    log::debug!(
                        target: LOG,
                        "the authority demands a DPoP nonce: asking again with the one it sent"
                    );
                    self.exchange(grant, form, secrets, scope, cx).await
                }
                other => other,
            };
        }
        self.exchange(grant, form, secrets, scope, cx).await
    }

    /// One token request: [`request_form`](Self::request_form) without
    /// the nonce challenge's second try.
    async fn exchange(
        &self,
        grant: &str,
        form: Vec<u8>,
        secrets: &[&str],
        scope: Option<&str>,
        cx: &FetchContext,
    ) -> Result<Token, SourceError> {
        let assertion = self.credentials.assertion(&self.client_id, cx).await?;
        let with_assertion: Vec<&str>;
        let (form, secrets) = match &assertion {
            None => (form, secrets),
            Some(assertion) => {
                with_assertion = secrets.iter().copied().chain(assertion.secrets()).collect();
                let form = self.append_param(form, "client_assertion", assertion.value());
                (form, &with_assertion[..])
            }
        };
        let mut request = self.http_request(form);
        #[cfg(feature = "jwt")]
        if let Some(dpop) = &self.dpop {
            let proof = dpop
                .proof(cx.now_ms(), dpop.nonce().as_deref())
                .map_err(|e| SourceError::transient(e.to_string()).with_cause(e))?;
            request = request.header("DPoP", proof);
        }
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
        #[cfg(feature = "jwt")]
        if let Some(dpop) = &self.dpop {
            dpop.remember(response.header("dpop-nonce"));
        }
        let parsed = parse(response.status(), response.body(), &secrets, scope).map_err(|e| {
            let hint = response
                .header("retry-after")
                .and_then(|v| retry_after(v, cx.now_ms()));
            into_source_error(e, hint)
        })?;
        #[cfg(feature = "jwt")]
        if let Some(dpop) = &self.dpop {
            if !parsed.token_type.eq_ignore_ascii_case("DPoP") {
                if !dpop.allow_bearer {
                    return Err(into_source_error(
                        TokenRequestError::NotDpopBound {
                            token_type: parsed.token_type,
                        },
                        None,
                    ));
                }
                log::warn!(
                    target: LOG,
                    "the authority answered a DPoP request with a token of type {:?}: it is not \
                     bound to the key (allowed by dpop_allow_bearer)",
                    parsed.token_type
                );
            }
        }
        if !parsed.token_type.eq_ignore_ascii_case("bearer")
            && !self.is_dpop_answer(&parsed.token_type)
        {
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
        if let Some(issued) = parsed.issued_token_type {
            token = token.with_issued_token_type(issued);
        }
        Ok(token)
    }
}

impl TokenEndpoint {
    /// Whether `token_type` is what a DPoP request expects.
    fn is_dpop_answer(&self, token_type: &str) -> bool {
        #[cfg(feature = "jwt")]
        let dpop = self.dpop.is_some();
        #[cfg(not(feature = "jwt"))]
        let dpop = false;
        dpop && token_type.eq_ignore_ascii_case("DPoP")
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

/// Whether `e` is an authority's `use_dpop_nonce` challenge (RFC 9449 §8).
#[cfg(feature = "jwt")]
fn demands_nonce(e: &SourceError) -> bool {
    e.request_error().is_some_and(|e| match e {
        TokenRequestError::OAuth2(e) => {
            e.code().as_str() == "use_dpop_nonce" && matches!(e.status(), 400 | 401)
        }
        _ => false,
    })
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
    /// How the client authenticates, for every grant (see [`ClientAuth`]).
    /// Each call replaces the one before, as the shortcuts below do.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Authenticates with `secret` in HTTP Basic (`client_secret_basic`),
    /// the method every authority supports.
    pub fn client_secret(self, secret: impl Into<ClientSecret>) -> Self {
        self.client_auth(ClientAuth::ClientSecretBasic(secret.into()))
    }

    /// Authenticates with `client_id` and `secret` in the body
    /// (`client_secret_post`).
    pub fn client_secret_post(self, secret: impl Into<ClientSecret>) -> Self {
        self.client_auth(ClientAuth::ClientSecretPost(secret.into()))
    }

    /// Authenticates with an assertion signed HS256 with `secret`
    /// (`client_secret_jwt`): the secret never leaves the process.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn client_secret_jwt(self, secret: impl Into<ClientSecret>) -> Self {
        self.client_auth(ClientAuth::ClientSecretJwt(secret.into()))
    }

    /// Authenticates with an assertion signed by `key`
    /// (`private_key_jwt`), new for every request. No secret is shared
    /// with the authority: it holds the public key.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn private_key_jwt(self, key: PrivateKey) -> Self {
        self.client_auth(ClientAuth::PrivateKeyJwt(key))
    }

    /// Authenticates with the assertion in the file at `path`, read for
    /// every request (workload identity: see
    /// [`ClientAuth::ClientAssertionFile`]).
    pub fn client_assertion_file(self, path: impl Into<PathBuf>) -> Self {
        self.client_auth(ClientAuth::ClientAssertionFile(path.into()))
    }

    /// The `aud` of the assertions this library signs
    /// (`private_key_jwt`, `client_secret_jwt`): by default the issuer
    /// identifier when the endpoint comes from the authority's metadata
    /// ([`TokenEndpoint::from_metadata`]), else the token URL, as RFC 7523
    /// suggests; some authorities want their issuer identifier even so.
    pub fn assertion_audience(mut self, audience: impl Into<String>) -> Self {
        self.assertion_audience = Some(audience.into());
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

    /// Binds every token to `key` (DPoP, RFC 9449): each token request
    /// through this endpoint, whatever the grant, carries a new proof
    /// signed with it in a `DPoP` header; an authority's `use_dpop_nonce`
    /// challenge is answered once with its nonce, and the latest
    /// `DPoP-Nonce` it sent goes with the next request. A success whose
    /// `token_type` is not `DPoP` is an error
    /// ([`TokenRequestError::NotDpopBound`]) unless
    /// [`dpop_allow_bearer`](Self::dpop_allow_bearer) says otherwise. The
    /// grants' [cache keys](crate::TokenSource::cache_key) cover the key's
    /// thumbprint, and a manager on them makes resource proofs with it
    /// ([`TokenHandle::authorization`](crate::TokenHandle::authorization)).
    ///
    /// ```
    /// use tokenkeeper::oauth2::{ClientCredentials, DpopKey, TokenEndpoint};
    /// use tokenkeeper::{ClientSecret, TokenSource};
    ///
    /// let key = DpopKey::generate()?;
    /// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", "svc")
    ///     .client_secret(ClientSecret::new("s"))
    ///     .dpop(key.clone())
    ///     .build()?;
    /// assert_eq!(endpoint.dpop_key().map(|k| k.thumbprint()), Some(key.thumbprint()));
    /// let source = ClientCredentials::new(endpoint);
    /// assert_eq!(source.dpop_key().map(|k| k.thumbprint().to_owned()), Some(key.thumbprint().to_owned()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop(mut self, key: DpopKey) -> Self {
        self.dpop = Some(key);
        self
    }

    /// Accepts a token that is not DPoP-bound (`token_type` `Bearer`) from
    /// an authority asked for a bound one ([`dpop`](Self::dpop)), for an
    /// authority that binds tokens only for some clients: such a token is
    /// used as a bearer token, without proofs. `false` by default: the
    /// answer is then an error, as the token would not be bound.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_allow_bearer(mut self, allow: bool) -> Self {
        self.dpop_allow_bearer = allow;
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
    /// credentials, when there is no HTTP client, when no client
    /// authentication was chosen, or, for an endpoint from the
    /// authority's metadata, when it does not support that one.
    pub fn build(self) -> Result<TokenEndpoint, ConfigError> {
        let auth = self.auth.ok_or(ConfigError::NoClientAuth)?;
        if let Some(metadata) = &self.metadata {
            check_supported(metadata, &auth)?;
        }
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
        let issuer = self.metadata.map(|m| m.issuer().to_owned());
        let audience = self
            .assertion_audience
            .or_else(|| issuer.clone())
            .unwrap_or_else(|| url.as_str().to_owned());
        let credentials = Credentials::new(&self.client_id, auth, audience);
        let mut scrubber = Scrubber::default();
        credentials.add_secrets(&self.client_id, &mut scrubber);
        #[cfg(feature = "jwt")]
        let dpop = self
            .dpop
            .map(|key| Arc::new(EndpointDpop::new(key, self.dpop_allow_bearer, &url)));
        Ok(TokenEndpoint {
            #[cfg(feature = "jwt")]
            dpop,
            url,
            issuer,
            client_id: self.client_id,
            credentials: Arc::new(credentials),
            body: self.body,
            http,
            max_body: self.max_body,
            scrubber: Arc::new(scrubber),
        })
    }
}

/// Whether the authority's `metadata` lists the method of `auth` and, for
/// a signed assertion, its algorithm.
fn check_supported(metadata: &ServerMetadata, auth: &ClientAuth) -> Result<(), ConfigError> {
    let method = auth.method();
    if !metadata.supports_auth_method(method) {
        return Err(ConfigError::AuthMethodNotSupported {
            method,
            supported: owned(metadata.token_endpoint_auth_methods_supported()),
        });
    }
    let algorithm = match auth {
        #[cfg(feature = "jwt")]
        ClientAuth::PrivateKeyJwt(key) => Some(key.algorithm().as_str()),
        #[cfg(feature = "jwt")]
        ClientAuth::ClientSecretJwt(_) => Some("HS256"),
        // A platform's assertion: its algorithm is the platform's.
        _ => None,
    };
    if let (Some(algorithm), Some(supported)) = (
        algorithm,
        metadata.token_endpoint_auth_signing_alg_values_supported(),
    ) {
        if !supported.contains(&algorithm) {
            return Err(ConfigError::SigningAlgorithmNotSupported {
                algorithm: algorithm.to_owned(),
                supported: owned(supported),
            });
        }
    }
    Ok(())
}

fn owned(items: Vec<&str>) -> Vec<String> {
    items.into_iter().map(str::to_owned).collect()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(crate) fn default_client() -> Option<Arc<dyn HttpClient>> {
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
        TokenEndpoint::builder(url, ClientId::new("id"))
            .client_secret(ClientSecret::new("secret"))
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
        let insecure = TokenEndpoint::builder("http://10.0.0.1/t", ClientId::new("id"))
            .client_secret(ClientSecret::new("s"))
            .http_client(Never)
            .allow_insecure_http(true)
            .build();
        assert!(insecure.is_ok());
    }

    #[test]
    fn without_a_client_authentication_nothing_is_built() {
        let err = TokenEndpoint::builder("https://a/t", "id")
            .http_client(Never)
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::NoClientAuth);
        assert!(err.to_string().contains("client_secret()"), "{err}");
        let public = TokenEndpoint::builder("https://a/t", "id")
            .client_auth(ClientAuth::None)
            .http_client(Never)
            .build()
            .unwrap();
        assert_eq!(public.auth_method(), AuthMethod::None);
        assert_eq!(
            String::from_utf8(public.encode_form(&[("grant_type", "refresh_token")])).unwrap(),
            "grant_type=refresh_token&client_id=id"
        );
    }

    #[test]
    fn a_per_request_parameter_goes_last_in_a_form_or_a_json_object() {
        for (body, expected) in [
            (
                RequestBody::Form,
                "grant_type=x&client_id=id&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a%2Bb+%22c%22",
            ),
            (
                RequestBody::Json,
                r#"{"client_assertion_type":"urn:ietf:params:oauth:client-assertion-type:jwt-bearer","client_id":"id","grant_type":"x","client_assertion":"a+b \"c\""}"#,
            ),
        ] {
            let endpoint = TokenEndpoint::builder("https://a/t", "id")
                .client_assertion_file("/nonexistent")
                .request_body(body)
                .http_client(Never)
                .build()
                .unwrap();
            let form = endpoint.encode_form(&[("grant_type", "x")]);
            let form = endpoint.append_param(form, "client_assertion", "a+b \"c\"");
            let text = String::from_utf8(form).unwrap();
            assert_eq!(text, expected);
            if body == RequestBody::Json {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["client_assertion"], "a+b \"c\"");
            }
        }
    }

    #[test]
    fn debug_hides_the_secret_and_shows_the_client_id() {
        for auth in [
            ClientAuth::ClientSecretBasic(ClientSecret::new("pw-xyz")),
            ClientAuth::ClientSecretPost(ClientSecret::new("pw-xyz")),
            #[cfg(feature = "jwt")]
            ClientAuth::ClientSecretJwt(ClientSecret::new("pw-xyz")),
        ] {
            let builder = TokenEndpoint::builder("https://a/t", ClientId::new("id-abc"))
                .client_auth(auth)
                .http_client(Never);
            let builder_debug = format!("{builder:?}");
            let endpoint = builder.build().unwrap();
            let debug = format!(
                "{builder_debug} {endpoint:?} {:?} {:?}",
                endpoint.credentials,
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
