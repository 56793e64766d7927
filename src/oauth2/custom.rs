//! A grant the library does not know by name, on a [`TokenEndpoint`].

use std::fmt;

use crate::cache::CacheKey;
use crate::error::SourceError;
use crate::oauth2::endpoint::TokenEndpoint;
use crate::oauth2::grant::{key_builder, CREDENTIAL_PARAMS};
use crate::source::{FetchContext, TokenSource};
use crate::token::Token;
use crate::BoxFuture;

/// Parameters the grant or the endpoint sets itself; given with
/// [`CustomGrant::param`] they are ignored.
const RESERVED: [&str; 4] = ["grant_type", "client_id", "client_secret", "scope"];

/// Any grant type, sent to a [`TokenEndpoint`] with the parameters you
/// give: an extension grant (the device code of RFC 8628, a JWT bearer
/// assertion of RFC 7523, token exchange of RFC 8693) or an authority's own.
///
/// Everything else is the endpoint's, as for
/// [`ClientCredentials`](crate::oauth2::ClientCredentials): the client
/// authentication, the body format ([`RequestBody`](crate::oauth2::RequestBody)),
/// timeouts, the parsing of the answer and its errors, and the scrubbing
/// of credentials from whatever the server sends back. The parameters are
/// fixed when the grant is made; a credential that must change with each
/// request (a freshly signed assertion) needs a source of its own
/// ([`from_fn`](crate::source::from_fn)).
///
/// ```
/// use tokenkeeper::oauth2::{CustomGrant, TokenEndpoint};
/// use tokenkeeper::{ClientId, ClientSecret, TokenSource};
///
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", ClientId::new("tv-app"))
///     .client_secret(ClientSecret::new("s"))
///     .build()
///     .unwrap();
/// let grant = CustomGrant::new(endpoint, "urn:ietf:params:oauth:grant-type:device_code")
///     .secret_param("device_code", "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS")
///     .scope("tv:watch");
/// // The credential never prints; the grant's cache key is its own.
/// assert!(!format!("{grant:?}").contains("GmRhmhcx"));
/// assert!(grant.cache_key().is_some());
/// ```
#[derive(Clone)]
pub struct CustomGrant {
    endpoint: TokenEndpoint,
    grant_type: String,
    scope: Option<String>,
    params: Vec<Param>,
    /// The body, encoded at the first fetch: it never changes after. It
    /// may carry credentials.
    encoded: Option<Vec<u8>>,
}

/// One parameter the grant sends.
#[derive(Clone)]
struct Param {
    name: String,
    value: String,
    /// Whether the value is a credential, scrubbed from server text.
    secret: bool,
}

impl fmt::Debug for CustomGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        f.debug_struct("CustomGrant")
            .field("endpoint", &self.endpoint)
            .field("grant_type", &self.grant_type)
            .field("scope", &self.scope)
            .field("params", &names)
            .finish()
    }
}

impl CustomGrant {
    /// A source that asks `endpoint` for tokens with `grant_type`.
    pub fn new(endpoint: TokenEndpoint, grant_type: impl Into<String>) -> CustomGrant {
        CustomGrant {
            endpoint,
            grant_type: grant_type.into(),
            scope: None,
            params: Vec::new(),
            encoded: None,
        }
    }

    /// Asks for `scope` (space-separated scope tokens).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a parameter; may be repeated. The names the grant and the
    /// endpoint set themselves (`grant_type`, `client_id`,
    /// `client_secret`, `scope`) are ignored. A value under a name that
    /// carries a credential (`assertion`, `client_assertion`,
    /// `subject_token`, `actor_token`, `password`, `code`, `code_verifier`,
    /// `device_code`) is scrubbed as with
    /// [`secret_param`](Self::secret_param); any other is sent and shown
    /// as it is.
    pub fn param(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        let secret = CREDENTIAL_PARAMS.contains(&name.as_str());
        self.push(name, value.into(), secret)
    }

    /// Adds a parameter whose value is a credential: it is never printed,
    /// and it is scrubbed, in every encoding, from whatever the server
    /// sends back (error descriptions, echoed requests), as the client
    /// secret is. Reserved names are ignored as in [`param`](Self::param).
    pub fn secret_param(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(name.into(), value.into(), true)
    }

    fn push(mut self, name: String, value: String, secret: bool) -> Self {
        if !RESERVED.contains(&name.as_str()) {
            self.params.push(Param {
                name,
                value,
                secret,
            });
            self.encoded = None;
        }
        self
    }

    /// The grant type sent.
    pub fn grant_type(&self) -> &str {
        &self.grant_type
    }

    fn form(&self) -> Vec<(&str, &str)> {
        let mut form = vec![("grant_type", self.grant_type.as_str())];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        for param in &self.params {
            form.push((&param.name, &param.value));
        }
        form
    }
}

impl TokenSource for CustomGrant {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        let body = match &self.encoded {
            Some(body) => body.clone(),
            None => self
                .encoded
                .insert(self.endpoint.encode_form(&self.form()))
                .clone(),
        };
        let this = &*self;
        let secrets: Vec<&str> = this
            .params
            .iter()
            .filter(|p| p.secret)
            .map(|p| p.value.as_str())
            .collect();
        Box::pin(async move {
            this.endpoint
                .request_form(&this.grant_type, body, &secrets, this.scope.as_deref(), &cx)
                .await
        })
    }

    #[cfg(feature = "jwt")]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        self.endpoint.dpop_key().cloned()
    }

    /// A digest of the token URL, the client id, the grant type, the scope
    /// and the parameters, credentials included (as the refresh-token
    /// grant's key covers its refresh token: a new device code is a new
    /// grant); not of the client secret.
    fn cache_key(&self) -> Option<CacheKey> {
        let mut key = key_builder(&self.endpoint, &self.grant_type);
        if let Some(scope) = &self.scope {
            key = key.field("scope", scope);
        }
        for param in &self.params {
            key = key
                .field("param_name", &param.name)
                .field("param_value", &param.value);
        }
        Some(key.build())
    }
}
