//! The grants: token sources that ask a [`TokenEndpoint`] for tokens.

use std::fmt;

use crate::cache::{CacheKey, CacheKeyBuilder};
use crate::error::SourceError;
use crate::oauth2::endpoint::TokenEndpoint;
use crate::oauth2::error::ErrorCode;
use crate::source::{FetchContext, TokenSource};
use crate::token::{RefreshToken, Token};
use crate::BoxFuture;

const LOG: &str = "tokenkeeper::oauth2";

/// Form fields a grant sets itself; extra parameters with these names are
/// ignored.
const RESERVED: [&str; 5] = [
    "grant_type",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
];

/// Form fields that carry a credential when given as extra parameters
/// (RFC 7521 assertions, RFC 8693 token exchange, and the like): their
/// values are scrubbed from server text as the client secret is.
pub(super) const CREDENTIAL_PARAMS: [&str; 8] = [
    "client_assertion",
    "assertion",
    "subject_token",
    "actor_token",
    "password",
    "code",
    "code_verifier",
    "device_code",
];

/// The values of the extra parameters that carry a credential.
pub(super) fn credential_values(params: &[(String, String)]) -> Vec<&str> {
    params
        .iter()
        .filter(|(name, _)| CREDENTIAL_PARAMS.contains(&name.as_str()))
        .map(|(_, value)| value.as_str())
        .collect()
}

/// The client-credentials grant (RFC 6749 §4.4): the service asks for a
/// token in its own name.
///
/// ```no_run
/// use std::time::Duration;
/// use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
/// use tokenkeeper::{ClientId, ClientSecret, TokenManager};
///
/// let secret = ClientSecret::new(std::env::var("CLIENT_SECRET").unwrap());
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/oauth/token", ClientId::new("svc"))
///     .client_secret(secret)
///     .build()
///     .unwrap();
/// let source = ClientCredentials::new(endpoint)
///     .scope("orders:read")
///     .audience("https://api.example.com")
///     .resource("https://api.example.com/orders");
/// let (handle, driver) = TokenManager::builder(source).build();
/// smol::spawn(driver).detach(); // or any executor
/// # let _ = handle;
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    endpoint: TokenEndpoint,
    scope: Option<String>,
    audience: Option<String>,
    resources: Vec<String>,
    params: Vec<(String, String)>,
    /// The form, encoded at the first fetch: it never changes after. It
    /// may carry the client secret.
    encoded: Option<Vec<u8>>,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ClientCredentials")
            .field("endpoint", &self.endpoint)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .field("resources", &self.resources)
            .field("params", &names)
            .finish()
    }
}

impl ClientCredentials {
    /// A client-credentials source on `endpoint`.
    pub fn new(endpoint: TokenEndpoint) -> ClientCredentials {
        ClientCredentials {
            endpoint,
            scope: None,
            audience: None,
            resources: Vec::new(),
            params: Vec::new(),
            encoded: None,
        }
    }

    /// Asks for `scope` (space-separated scope tokens).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Sends `audience` (used by Auth0 and others).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Adds a `resource` indicator (RFC 8707); may be repeated.
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Adds any other form parameter. Names the grant sets itself
    /// (`grant_type`, `client_id`, `client_secret`, `refresh_token`,
    /// `scope`) are ignored here. The values of parameters that carry a
    /// credential (`client_assertion`, `assertion`, `subject_token`,
    /// `actor_token`, `password`, `code`, `code_verifier`, `device_code`)
    /// are scrubbed from server text, in every encoding, as the client
    /// secret is.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    fn form(&self) -> Vec<(&str, &str)> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        for resource in &self.resources {
            form.push(("resource", resource));
        }
        push_extra(&mut form, &self.params);
        form
    }
}

/// The fields every grant's cache key starts with: where and as whom the
/// token is asked for, and how.
/// With DPoP on, the key's thumbprint too: a bound token is of use only
/// to holders of its key.
pub(super) fn key_builder(endpoint: &TokenEndpoint, grant_type: &str) -> CacheKeyBuilder {
    let key = CacheKey::builder()
        .field("token_url", endpoint.url().as_str())
        .field("client_id", endpoint.client_id().as_str())
        .field("grant_type", grant_type);
    #[cfg(feature = "jwt")]
    if let Some(dpop) = endpoint.dpop_key() {
        return key.field("jkt", dpop.thumbprint());
    }
    key
}

/// Adds the extra parameters the grant sends (not the ignored ones).
fn key_params(mut key: CacheKeyBuilder, params: &[(String, String)]) -> CacheKeyBuilder {
    for (name, value) in params {
        if !RESERVED.contains(&name.as_str()) {
            key = key.field("param_name", name).field("param_value", value);
        }
    }
    key
}

fn push_extra<'a>(form: &mut Vec<(&'a str, &'a str)>, params: &'a [(String, String)]) {
    for (name, value) in params {
        if !RESERVED.contains(&name.as_str()) {
            form.push((name, value));
        }
    }
}

impl TokenSource for ClientCredentials {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        let form = match &self.encoded {
            Some(form) => form.clone(),
            None => self
                .encoded
                .insert(self.endpoint.encode_form(&self.form()))
                .clone(),
        };
        let endpoint = &self.endpoint;
        let scope = self.scope.as_deref();
        let secrets = credential_values(&self.params);
        Box::pin(async move {
            endpoint
                .request_form("client_credentials", form, &secrets, scope, &cx)
                .await
        })
    }

    #[cfg(feature = "jwt")]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        self.endpoint.dpop_key().cloned()
    }

    /// A digest of the token URL, the client id, the grant type, the
    /// scope, the audience, the resources and the extra parameters; not of
    /// the client secret, so a rotated secret keeps the cached token.
    fn cache_key(&self) -> Option<CacheKey> {
        let mut key = key_builder(&self.endpoint, "client_credentials");
        if let Some(scope) = &self.scope {
            key = key.field("scope", scope);
        }
        if let Some(audience) = &self.audience {
            key = key.field("audience", audience);
        }
        for resource in &self.resources {
            key = key.field("resource", resource);
        }
        Some(key_params(key, &self.params).build())
    }
}

/// The refresh-token grant (RFC 6749 §6): redeems a refresh token for a new
/// access token.
///
/// When the authority rotates refresh tokens, the new one replaces the old
/// one here and travels with the published [`Token`], so a cache can
/// persist it. When it does not, the old one is kept on the new token. A
/// fetch redeems the refresh token of the manager's current token when it
/// has one (the newest: another process may have rotated it through a
/// shared cache), else the one this grant holds.
///
/// # Rotation needs a persistent cache
///
/// Against an authority that rotates refresh tokens, the token configured
/// here works once: after the first refresh only the rotated one is valid,
/// and it lives in memory. A service that restarts with the same configured
/// token is refused (`invalid_grant`) unless a persistent cache (a
/// [`FileCache`](crate::cache::FileCache) or Redis, behind a
/// [`Chain`](crate::cache::Chain), as below) kept the rotated one. Even
/// then, a process that dies after the authority rotated the token and
/// before the answer reached the cache loses the rotated token: only the
/// authority's grace period for the previous token (if it has one) lets the
/// next start redeem it again; without one, someone must log in anew.
///
/// # A new refresh token wins over the cache
///
/// The grant's [cache key](TokenSource::cache_key) covers a digest of the
/// refresh token configured here (besides the token URL, client id, scope
/// and extra parameters), so when an operator logs in again and restarts
/// the service with a new refresh token, the cache written for the old one
/// is a miss and the new token is sent. And when a refresh token taken from
/// the current (cached) token is refused with `invalid_grant`, the fetch
/// tries the configured one, once, unless this grant has already seen the
/// authority rotate it away.
///
/// ```no_run
/// use tokenkeeper::cache::{Chain, FileCache};
/// use tokenkeeper::oauth2::{RefreshTokenGrant, TokenEndpoint};
/// use tokenkeeper::{ClientId, ClientSecret, RefreshToken, TokenManager};
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", ClientId::new("app"))
///     .client_secret(ClientSecret::new("s"))
///     .build()
///     .unwrap();
/// let refresh = RefreshToken::new(std::fs::read_to_string("/run/secrets/refresh_token").unwrap());
/// // The cache keeps the rotated refresh token across restarts.
/// let source = Chain::new(RefreshTokenGrant::new(endpoint, refresh))
///     .cache(FileCache::new("/var/lib/my-service/token.json"));
/// let (handle, driver) = TokenManager::builder(source).build();
/// smol::spawn(driver).detach(); // or any executor
/// # let _ = handle;
/// ```
#[derive(Clone)]
pub struct RefreshTokenGrant {
    endpoint: TokenEndpoint,
    /// The refresh token given to [`new`](Self::new): the root of this
    /// grant's lineage and part of its cache key.
    configured: RefreshToken,
    /// The refresh token the next fetch redeems (without a newer one on
    /// the current token).
    refresh_token: RefreshToken,
    /// Whether the authority rotated the configured token away after this
    /// grant redeemed it: falling back to it would only be refused.
    configured_spent: bool,
    scope: Option<String>,
    params: Vec<(String, String)>,
}

impl fmt::Debug for RefreshTokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokenGrant")
            .field("endpoint", &self.endpoint)
            .field("refresh_token", &self.refresh_token)
            .field("scope", &self.scope)
            .finish()
    }
}

impl RefreshTokenGrant {
    /// A source that redeems `refresh_token` at `endpoint`.
    pub fn new(endpoint: TokenEndpoint, refresh_token: RefreshToken) -> RefreshTokenGrant {
        RefreshTokenGrant {
            endpoint,
            configured: refresh_token.clone(),
            refresh_token,
            configured_spent: false,
            scope: None,
            params: Vec::new(),
        }
    }

    /// Asks for `scope` (no broader than originally granted).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds any other form parameter; reserved names are ignored, and
    /// credentials scrubbed from server text, as in
    /// [`ClientCredentials::param`].
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// The refresh token the next fetch will redeem.
    pub fn refresh_token(&self) -> &RefreshToken {
        &self.refresh_token
    }
}

impl RefreshTokenGrant {
    /// Redeems `refresh` once; the token carries the refresh token to use
    /// next (the rotated one, or `refresh` again).
    async fn redeem(
        &self,
        refresh: &RefreshToken,
        cx: &FetchContext,
    ) -> Result<Token, SourceError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.secret()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        push_extra(&mut form, &self.params);
        let mut secrets = credential_values(&self.params);
        secrets.extend([refresh.secret(), self.configured.secret()]);
        let token = self.endpoint.request(&form, &secrets, cx).await?;
        Ok(match token.refresh_token() {
            Some(_) => token,
            None => token.with_refresh_token(refresh.clone()),
        })
    }

    /// Keeps what a successful redemption of `used` returned.
    fn redeemed(&mut self, used: &RefreshToken, token: &Token) {
        if let Some(next) = token.refresh_token() {
            if *used == self.configured && *next != self.configured {
                self.configured_spent = true;
            }
            self.refresh_token = next.clone();
        }
    }
}

/// Whether the authority refused the grant itself (`invalid_grant`): the
/// refresh token is unknown, spent or revoked.
fn is_invalid_grant(e: &SourceError) -> bool {
    e.oauth2_error()
        .is_some_and(|o| o.code() == &ErrorCode::InvalidGrant)
}

impl TokenSource for RefreshTokenGrant {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        Box::pin(async move {
            // The current token carries the newest refresh token when
            // another instance rotated it (through a shared cache).
            if let Some(newer) = cx.current().and_then(|t| t.refresh_token()) {
                self.refresh_token = newer.clone();
            }
            let used = self.refresh_token.clone();
            let result = match self.redeem(&used, &cx).await {
                Err(e)
                    if is_invalid_grant(&e)
                        && used != self.configured
                        && !self.configured_spent =>
                {
                    // The cached token may belong to a lineage the
                    // authority revoked (a new login): the configured
                    // token is the operator's latest word.
                    log::warn!(
                        target: LOG,
                        "the refresh token from the cache was refused (invalid_grant); \
                         trying the configured one"
                    );
                    self.refresh_token = self.configured.clone();
                    let configured = self.configured.clone();
                    let result = self.redeem(&configured, &cx).await;
                    if let Ok(token) = &result {
                        self.redeemed(&configured, token);
                    }
                    return result;
                }
                result => result,
            };
            if let Ok(token) = &result {
                self.redeemed(&used, token);
            }
            result
        })
    }

    #[cfg(feature = "jwt")]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        self.endpoint.dpop_key().cloned()
    }

    /// A digest of the token URL, the client id, the grant type, the scope,
    /// the extra parameters and the configured refresh token: a cache
    /// written for an older configured token is a miss.
    fn cache_key(&self) -> Option<CacheKey> {
        let mut key = key_builder(&self.endpoint, "refresh_token");
        if let Some(scope) = &self.scope {
            key = key.field("scope", scope);
        }
        let key = key_params(key, &self.params).field("refresh_token", self.configured.secret());
        Some(key.build())
    }
}
