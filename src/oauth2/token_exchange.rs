//! The token exchange grant (RFC 8693): a token for another token, the
//! subject's, given as a value, read from a file for every request, or
//! taken from another manager.

use std::fmt;
use std::path::PathBuf;

use crate::cache::CacheKey;
use crate::error::{Error, ErrorKind, SourceError};
use crate::manager::TokenHandle;
use crate::oauth2::client_auth::read_credential_file;
use crate::oauth2::endpoint::TokenEndpoint;
use crate::oauth2::grant::{credential_values, key_builder};
use crate::source::{FetchContext, TokenSource};
use crate::token::Token;
use crate::BoxFuture;

/// The `grant_type` of token exchange.
const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// Parameters the grant or the endpoint sets itself; given with
/// [`TokenExchange::param`] they are ignored.
const RESERVED: [&str; 14] = [
    "grant_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "audience",
    "resource",
    "scope",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "assertion",
];

/// The token type identifiers of RFC 8693 §3, for
/// [`PresentedToken::token_type`] and
/// [`TokenExchange::requested_token_type`], and what
/// [`Token::issued_token_type`] reports.
pub mod token_type {
    /// An OAuth 2.0 access token.
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    /// An OAuth 2.0 refresh token.
    pub const REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
    /// An OpenID Connect ID token.
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// A JWT (RFC 7519), such as a Kubernetes service-account token or a
    /// CI job's OIDC token.
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    /// A base64url-encoded SAML 1.1 assertion.
    pub const SAML1: &str = "urn:ietf:params:oauth:token-type:saml1";
    /// A base64url-encoded SAML 2.0 assertion.
    pub const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";
}

/// A token a [`TokenExchange`] presents, as the subject (whom the new
/// token is for) or as the actor (who acts for the subject), and its type
/// identifier.
///
/// - [`value`](Self::value): a token you hold; type `access_token` unless
///   said otherwise.
/// - [`file`](Self::file): the token in a file, read again for every
///   request, as platforms rotate it (a Kubernetes projected
///   service-account token, a CI job's OIDC token); type `jwt` unless said
///   otherwise. A missing or empty file, or a JWT in it that has expired,
///   fails the fetch with a transient error whose cause is a
///   [`TokenFileError`](crate::source::TokenFileError) naming the path.
/// - [`handle`](Self::handle): the current access token of another
///   [`TokenManager`](crate::TokenManager), which keeps it fresh; type
///   `access_token` unless said otherwise. Each fetch takes the token the
///   manager holds then (waiting for one as
///   [`TokenHandle::token`] does), so after it refreshes, the next
///   exchange presents the new one.
///
/// The token never prints: `Debug` shows where it comes from and its type.
///
/// ```
/// use tokenkeeper::oauth2::{token_type, PresentedToken};
///
/// let subject = PresentedToken::file("/var/run/secrets/tokens/sts-token");
/// assert_eq!(subject.token_type_uri(), token_type::JWT);
/// let actor = PresentedToken::value("eyJhbGciOi...").token_type(token_type::ID_TOKEN);
/// assert!(!format!("{actor:?}").contains("eyJ"));
/// ```
#[derive(Clone)]
pub struct PresentedToken {
    from: Origin,
    token_type: String,
}

#[derive(Clone)]
enum Origin {
    Value(String),
    File(PathBuf),
    Handle(TokenHandle),
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("PresentedToken");
        match &self.from {
            Origin::Value(_) => out.field("value", &format_args!("<redacted>")),
            Origin::File(path) => out.field("file", path),
            Origin::Handle(_) => out.field("handle", &format_args!("TokenHandle")),
        };
        out.field("token_type", &self.token_type).finish()
    }
}

impl PresentedToken {
    /// The token `value`, of type
    /// [`access_token`](token_type::ACCESS_TOKEN) unless
    /// [`token_type`](Self::token_type) says otherwise.
    pub fn value(value: impl Into<String>) -> PresentedToken {
        PresentedToken {
            from: Origin::Value(value.into()),
            token_type: token_type::ACCESS_TOKEN.to_owned(),
        }
    }

    /// The token in the file at `path`, read for every request, of type
    /// [`jwt`](token_type::JWT) unless [`token_type`](Self::token_type)
    /// says otherwise.
    pub fn file(path: impl Into<PathBuf>) -> PresentedToken {
        PresentedToken {
            from: Origin::File(path.into()),
            token_type: token_type::JWT.to_owned(),
        }
    }

    /// The current access token of the manager behind `handle`, of type
    /// [`access_token`](token_type::ACCESS_TOKEN) unless
    /// [`token_type`](Self::token_type) says otherwise.
    ///
    /// A fetch waits for that manager's token as [`TokenHandle::token`]
    /// does. If it has none, the fetch fails with its error: permanent
    /// when that manager failed permanently or has stopped, transient
    /// otherwise.
    pub fn handle(handle: TokenHandle) -> PresentedToken {
        PresentedToken {
            from: Origin::Handle(handle),
            token_type: token_type::ACCESS_TOKEN.to_owned(),
        }
    }

    /// Sets the token type identifier sent with the token (see
    /// [`token_type`]).
    pub fn token_type(mut self, uri: impl Into<String>) -> PresentedToken {
        self.token_type = uri.into();
        self
    }

    /// The token type identifier sent with the token.
    pub fn token_type_uri(&self) -> &str {
        &self.token_type
    }

    /// The token as it is now. `role` names it in errors.
    async fn current(&self, cx: &FetchContext, role: Role) -> Result<String, SourceError> {
        match &self.from {
            Origin::Value(value) => Ok(value.clone()),
            Origin::File(path) => read_credential_file(path, cx.now_ms(), role.file()).await,
            Origin::Handle(handle) => match handle.token().await {
                Ok(token) => Ok(token.access_token().secret().to_owned()),
                Err(error) => {
                    let kind = match &error {
                        Error::Stopped => ErrorKind::Permanent,
                        Error::Source(e) => e.kind(),
                        _ => ErrorKind::Transient,
                    };
                    let message = format!("no {} from the upstream manager: {error}", role.name());
                    Err(SourceError::new(kind, message).with_cause(error))
                }
            },
        }
    }

    /// Adds where the token comes from to a cache key: the value (in the
    /// digest only), the file's path, or the cache key of the manager's
    /// source. `None` when that manager's source has no key.
    fn key(
        &self,
        key: crate::cache::CacheKeyBuilder,
        role: Role,
    ) -> Option<crate::cache::CacheKeyBuilder> {
        let key = match &self.from {
            Origin::Value(value) => key.field(role.param(), value),
            Origin::File(path) => key.field(role.file(), path.as_os_str().as_encoded_bytes()),
            Origin::Handle(handle) => key.field(role.upstream(), handle.source_key()?.to_string()),
        };
        Some(key.field(role.type_param(), &self.token_type))
    }
}

/// Which token of the exchange.
#[derive(Clone, Copy)]
enum Role {
    Subject,
    Actor,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Subject => "subject token",
            Role::Actor => "actor token",
        }
    }

    fn param(self) -> &'static str {
        match self {
            Role::Subject => "subject_token",
            Role::Actor => "actor_token",
        }
    }

    fn type_param(self) -> &'static str {
        match self {
            Role::Subject => "subject_token_type",
            Role::Actor => "actor_token_type",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Role::Subject => "subject token file",
            Role::Actor => "actor token file",
        }
    }

    fn upstream(self) -> &'static str {
        match self {
            Role::Subject => "subject_upstream",
            Role::Actor => "actor_upstream",
        }
    }
}

/// The token exchange grant (RFC 8693): presents a subject token (and
/// optionally an actor token) and receives a token for the
/// [`audience`](Self::audience), [`resource`](Self::resource) or
/// [`scope`](Self::scope) asked for, of the
/// [`requested_token_type`](Self::requested_token_type) if one is asked
/// for. The answer's `issued_token_type` is kept on the token
/// ([`Token::issued_token_type`]); a token without `expires_in` lives the
/// manager's default lifetime ([`LifetimePolicy`](crate::LifetimePolicy)).
///
/// The endpoint's client authentication is sent as with every grant (any
/// [`ClientAuth`](crate::oauth2::ClientAuth)); a security token service
/// that wants none, and no client id, takes
/// `TokenEndpoint::builder(url, "").client_auth(ClientAuth::None)`.
///
/// Subject and actor tokens are credentials: they never print, and they
/// are scrubbed, in every encoding, from whatever the server sends back.
///
/// Exchanging a workload's identity token, read from its file for every
/// request, for an access token:
///
/// ```no_run
/// use tokenkeeper::oauth2::{ClientAuth, PresentedToken, TokenEndpoint, TokenExchange};
/// use tokenkeeper::TokenManager;
///
/// let sts = TokenEndpoint::builder("https://sts.example.com/v1/token", "")
///     .client_auth(ClientAuth::None)
///     .build()?;
/// let grant = TokenExchange::new(sts, PresentedToken::file("/var/run/secrets/tokens/sts-token"))
///     .audience("//iam.example.com/pools/prod/providers/k8s")
///     .scope("https://www.example.com/auth/cloud-platform");
/// let (handle, driver) = TokenManager::builder(grant).build();
/// smol::spawn(driver).detach(); // or any executor
/// # let _ = handle;
/// # Ok::<(), tokenkeeper::oauth2::ConfigError>(())
/// ```
///
/// Chaining two managers: the first keeps the service's own token fresh,
/// the second exchanges the current one for a token for another API,
/// presenting the new one after each refresh of the first:
///
/// ```no_run
/// use tokenkeeper::oauth2::{ClientCredentials, PresentedToken, TokenEndpoint, TokenExchange};
/// use tokenkeeper::{ClientSecret, TokenManager};
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", "svc")
///     .client_secret(ClientSecret::new(std::env::var("CLIENT_SECRET").unwrap()))
///     .build()?;
/// let (own, driver) = TokenManager::builder(ClientCredentials::new(endpoint.clone())).build();
/// smol::spawn(driver).detach(); // or any executor
/// let exchange = TokenExchange::new(endpoint, PresentedToken::handle(own.clone()))
///     .audience("https://orders.example.com");
/// let (orders, driver) = TokenManager::builder(exchange).build();
/// smol::spawn(driver).detach();
/// # let _ = orders;
/// # Ok::<(), tokenkeeper::oauth2::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct TokenExchange {
    endpoint: TokenEndpoint,
    subject: PresentedToken,
    actor: Option<PresentedToken>,
    requested_token_type: Option<String>,
    audiences: Vec<String>,
    resources: Vec<String>,
    scope: Option<String>,
    params: Vec<(String, String)>,
}

impl fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("TokenExchange")
            .field("endpoint", &self.endpoint)
            .field("subject", &self.subject)
            .field("actor", &self.actor)
            .field("requested_token_type", &self.requested_token_type)
            .field("audiences", &self.audiences)
            .field("resources", &self.resources)
            .field("scope", &self.scope)
            .field("params", &params)
            .finish()
    }
}

impl TokenExchange {
    /// A source that exchanges `subject` at `endpoint`.
    pub fn new(endpoint: TokenEndpoint, subject: PresentedToken) -> TokenExchange {
        TokenExchange {
            endpoint,
            subject,
            actor: None,
            requested_token_type: None,
            audiences: Vec::new(),
            resources: Vec::new(),
            scope: None,
            params: Vec::new(),
        }
    }

    /// Presents `actor` as the `actor_token` (delegation, RFC 8693 §1.1):
    /// the party that acts for the subject.
    pub fn actor(mut self, actor: PresentedToken) -> Self {
        self.actor = Some(actor);
        self
    }

    /// Asks for a token of this type (see [`token_type`]); without it, the
    /// authority chooses, usually an access token.
    pub fn requested_token_type(mut self, uri: impl Into<String>) -> Self {
        self.requested_token_type = Some(uri.into());
        self
    }

    /// Adds an `audience`: the logical name of a service where the token
    /// will be used. May be repeated.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Adds a `resource`: the URI of a service where the token will be
    /// used (RFC 8707). May be repeated.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Asks for `scope` (space-separated scope tokens).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds any other form parameter. The names the grant and the
    /// endpoint set themselves (`grant_type`, `subject_token`,
    /// `subject_token_type`, `actor_token`, `actor_token_type`,
    /// `requested_token_type`, `audience`, `resource`, `scope`,
    /// `client_id`, `client_secret`, `client_assertion`,
    /// `client_assertion_type`, `assertion`) are ignored; credentials are
    /// scrubbed from server text, as in
    /// [`ClientCredentials::param`](crate::oauth2::ClientCredentials::param).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        if !RESERVED.contains(&name.as_str()) {
            self.params.push((name, value.into()));
        }
        self
    }
}

impl TokenSource for TokenExchange {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        let this = &*self;
        Box::pin(async move {
            let subject = this.subject.current(&cx, Role::Subject).await?;
            let actor = match &this.actor {
                Some(actor) => Some((actor, actor.current(&cx, Role::Actor).await?)),
                None => None,
            };
            let mut form = vec![
                ("grant_type", TOKEN_EXCHANGE_GRANT),
                ("subject_token", subject.as_str()),
                ("subject_token_type", this.subject.token_type.as_str()),
            ];
            if let Some((actor, value)) = &actor {
                form.push(("actor_token", value));
                form.push(("actor_token_type", &actor.token_type));
            }
            if let Some(requested) = &this.requested_token_type {
                form.push(("requested_token_type", requested));
            }
            form.extend(this.audiences.iter().map(|a| ("audience", a.as_str())));
            form.extend(this.resources.iter().map(|r| ("resource", r.as_str())));
            if let Some(scope) = &this.scope {
                form.push(("scope", scope));
            }
            form.extend(this.params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let mut secrets = credential_values(&this.params);
            secrets.push(&subject);
            if let Some((_, value)) = &actor {
                secrets.push(value);
            }
            this.endpoint.request(&form, &secrets, &cx).await
        })
    }

    #[cfg(feature = "jwt")]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        self.endpoint.dpop_key().cloned()
    }

    /// A digest of the token URL, the client id, the grant type, where the
    /// subject and actor tokens come from (a value itself, a file's path,
    /// or the cache key of the manager a handle belongs to) and their
    /// types, the requested token type, the audiences, resources, scope
    /// and extra parameters; not of the client's credentials.
    ///
    /// `None` when a token comes from a manager whose source has no cache
    /// key: whom it is for cannot be told. Give that manager a keyed
    /// source, or give the chain a key with
    /// [`Chain::cache_key`](crate::cache::Chain::cache_key).
    fn cache_key(&self) -> Option<CacheKey> {
        let mut key = key_builder(&self.endpoint, TOKEN_EXCHANGE_GRANT);
        key = self.subject.key(key, Role::Subject)?;
        if let Some(actor) = &self.actor {
            key = actor.key(key, Role::Actor)?;
        }
        if let Some(requested) = &self.requested_token_type {
            key = key.field("requested_token_type", requested);
        }
        for audience in &self.audiences {
            key = key.field("audience", audience);
        }
        for resource in &self.resources {
            key = key.field("resource", resource);
        }
        if let Some(scope) = &self.scope {
            key = key.field("scope", scope);
        }
        for (name, value) in &self.params {
            key = key.field("param_name", name).field("param_value", value);
        }
        Some(key.build())
    }
}
