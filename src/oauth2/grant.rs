//! The grants: token sources that ask a [`TokenEndpoint`] for tokens.

use std::fmt;

use crate::clock::BoxFuture;
use crate::error::SourceError;
use crate::oauth2::endpoint::TokenEndpoint;
use crate::source::{FetchContext, TokenSource};
use crate::token::{RefreshToken, Token};

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
const CREDENTIAL_PARAMS: [&str; 8] = [
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
fn credential_values(params: &[(String, String)]) -> Vec<&str> {
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
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/oauth/token", ClientId::new("svc"), secret)
///     .build()
///     .unwrap();
/// let source = ClientCredentials::new(endpoint)
///     .scope("orders:read")
///     .audience("https://api.example.com")
///     .resource("https://api.example.com/orders");
/// let handle = TokenManager::builder(source).spawn_smol();
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
}

/// The refresh-token grant (RFC 6749 §6): redeems a refresh token for a new
/// access token.
///
/// When the authority rotates refresh tokens, the new one replaces the old
/// one here and travels with the published [`Token`], so a cache can
/// persist it. When it does not, the old one is kept on the new token.
///
/// ```no_run
/// use tokenkeeper::oauth2::{RefreshTokenGrant, TokenEndpoint};
/// use tokenkeeper::{ClientId, ClientSecret, RefreshToken, TokenManager};
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", ClientId::new("app"), ClientSecret::new("s"))
///     .build()
///     .unwrap();
/// let refresh = RefreshToken::new(std::fs::read_to_string("/run/secrets/refresh_token").unwrap());
/// let handle = TokenManager::builder(RefreshTokenGrant::new(endpoint, refresh)).spawn_smol();
/// # let _ = handle;
/// ```
#[derive(Clone)]
pub struct RefreshTokenGrant {
    endpoint: TokenEndpoint,
    refresh_token: RefreshToken,
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
            refresh_token,
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

impl TokenSource for RefreshTokenGrant {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        Box::pin(async move {
            // The current token carries the newest refresh token when
            // another instance rotated it (through a shared cache).
            if let Some(newer) = cx.current().and_then(|t| t.refresh_token()) {
                self.refresh_token = newer.clone();
            }
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", self.refresh_token.secret()),
            ];
            if let Some(scope) = &self.scope {
                form.push(("scope", scope));
            }
            push_extra(&mut form, &self.params);
            let mut secrets = credential_values(&self.params);
            secrets.push(self.refresh_token.secret());
            let token = self.endpoint.request(&form, &secrets, &cx).await?;
            let token = match token.refresh_token() {
                Some(rotated) => {
                    self.refresh_token = rotated.clone();
                    token
                }
                None => token.with_refresh_token(self.refresh_token.clone()),
            };
            Ok(token)
        })
    }
}
