//! The JWT bearer grant (RFC 7523 §2.1): a token for an assertion the
//! service signs, and Google service-account keys, which use it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cache::CacheKey;
use crate::error::SourceError;
use crate::oauth2::client_auth::ClientAuth;
use crate::oauth2::endpoint::{TokenEndpoint, TokenEndpointBuilder};
use crate::oauth2::grant::{credential_values, key_builder};
use crate::oauth2::jwt::{AssertionClaims, JwtSigner, KeyError, PrivateKey};
use crate::source::{FetchContext, TokenSource};
use crate::token::Token;
use crate::BoxFuture;

/// The `grant_type` of the JWT bearer grant.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Parameters the grant or the endpoint sets itself; given with
/// [`JwtBearerGrant::param`] they are ignored.
const RESERVED: [&str; 7] = [
    "grant_type",
    "assertion",
    "scope",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

/// The JWT bearer grant (RFC 7523 §2.1): each fetch signs a new assertion
/// with the key (issuer, optional subject, audience, a random `jti`, a
/// one-minute `exp`) and redeems it for a token.
///
/// The assertion is the credential; the endpoint's client authentication
/// is sent as well (RFC 7523 makes it optional: use
/// [`ClientAuth::None`](crate::oauth2::ClientAuth::None) where the
/// authority wants none). The `aud` is the token URL unless
/// [`audience`](Self::audience) says otherwise. For Google, see
/// [`google`](Self::google).
///
/// ```
/// use tokenkeeper::oauth2::{ClientAuth, JwtBearerGrant, PrivateKey, TokenEndpoint};
/// use tokenkeeper::TokenSource;
///
/// let key = PrivateKey::from_pem(include_str!("../../tests/keys/test-es256.pem"))?; // test-only
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", "svc")
///     .client_auth(ClientAuth::None)
///     .build()
///     .unwrap();
/// let grant = JwtBearerGrant::new(endpoint, key, "https://issuer.example.com")
///     .subject("user-42")
///     .scope("orders:read");
/// assert!(grant.cache_key().is_some());
/// # Ok::<(), tokenkeeper::oauth2::KeyError>(())
/// ```
#[derive(Clone)]
pub struct JwtBearerGrant {
    endpoint: TokenEndpoint,
    signer: JwtSigner,
    issuer: String,
    subject: Option<String>,
    audience: Option<String>,
    scope: Option<String>,
    /// Whether the scope travels as a claim rather than a parameter.
    scope_claim: bool,
    claims: Vec<(String, String)>,
    params: Vec<(String, String)>,
}

impl fmt::Debug for JwtBearerGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let claims: Vec<&str> = self.claims.iter().map(|(n, _)| n.as_str()).collect();
        let params: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("JwtBearerGrant")
            .field("endpoint", &self.endpoint)
            .field("key", &self.signer)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .field("claims", &claims)
            .field("params", &params)
            .finish()
    }
}

impl JwtBearerGrant {
    /// A source that signs assertions issued by `issuer` with `key` and
    /// redeems them at `endpoint`.
    pub fn new(endpoint: TokenEndpoint, key: PrivateKey, issuer: impl Into<String>) -> Self {
        JwtBearerGrant {
            endpoint,
            signer: JwtSigner::Key(key),
            issuer: issuer.into(),
            subject: None,
            audience: None,
            scope: None,
            scope_claim: false,
            claims: Vec::new(),
            params: Vec::new(),
        }
    }

    /// A Google service account's grant (Google's "OAuth 2.0 for
    /// server-to-server applications"): its `client_email` issues the
    /// assertion, signed RS256 with its key under its `private_key_id`, and
    /// the [scope](Self::scope) travels as a claim, as Google wants.
    /// `endpoint` is the account's [`token_endpoint`](GoogleServiceAccount::token_endpoint),
    /// built. [`subject`](Self::subject) is the user to act for, with
    /// domain-wide delegation.
    ///
    /// ```no_run
    /// use tokenkeeper::oauth2::{GoogleServiceAccount, JwtBearerGrant};
    /// use tokenkeeper::TokenManager;
    ///
    /// let account = GoogleServiceAccount::from_file("/etc/my-service/service-account.json")?;
    /// let grant = JwtBearerGrant::google(account.token_endpoint().build()?, &account)
    ///     .scope("https://www.googleapis.com/auth/cloud-platform");
    /// let (handle, driver) = TokenManager::builder(grant).build();
    /// smol::spawn(driver).detach(); // or any executor
    /// # let _ = handle;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn google(endpoint: TokenEndpoint, account: &GoogleServiceAccount) -> Self {
        let mut grant = JwtBearerGrant::new(endpoint, account.key.clone(), &account.client_email);
        grant.scope_claim = true;
        grant
    }

    /// The `sub` claim: the principal the token is for, when not the
    /// issuer itself.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The `aud` claim, when the authority wants another than the token
    /// URL (its issuer identifier, say).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Asks for `scope` (space-separated scope tokens): a `scope`
    /// parameter, or a `scope` claim for [Google](Self::google).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Adds a string claim to the assertion (Google's `target_audience`,
    /// say). The claims the grant sets (`iss`, `sub`, `aud`, `jti`, `iat`,
    /// `nbf`, `exp`) cannot be replaced.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.claims.push((name.into(), value.into()));
        self
    }

    /// Adds a form parameter. The names the grant and the endpoint set
    /// themselves (`grant_type`, `assertion`, `scope`, `client_id`,
    /// `client_secret`, `client_assertion`, `client_assertion_type`) are
    /// ignored; credentials are scrubbed from server text, as in
    /// [`ClientCredentials::param`](crate::oauth2::ClientCredentials::param).
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        if !RESERVED.contains(&name.as_str()) {
            self.params.push((name, value.into()));
        }
        self
    }

    /// A new assertion, signed now.
    fn assertion(&self, cx: &FetchContext) -> Result<String, SourceError> {
        const FIXED: [&str; 7] = ["iss", "sub", "aud", "jti", "iat", "nbf", "exp"];
        let claims = AssertionClaims {
            issuer: &self.issuer,
            subject: self.subject.as_deref(),
            audience: self
                .audience
                .as_deref()
                .unwrap_or(self.endpoint.url().as_str()),
            now_ms: cx.now_ms(),
        };
        let scope = self
            .scope
            .as_ref()
            .filter(|_| self.scope_claim)
            .map(|scope| ("scope".to_owned(), Value::from(scope.as_str())));
        let extra = self
            .claims
            .iter()
            .filter(|(name, _)| !FIXED.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), Value::from(value.as_str())));
        claims
            .sign(&self.signer, extra.chain(scope))
            .map_err(|e| SourceError::transient(e.to_string()).with_cause(e))
    }
}

impl TokenSource for JwtBearerGrant {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        let this = &*self;
        Box::pin(async move {
            let assertion = this.assertion(&cx)?;
            let mut form = vec![("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)];
            if let Some(scope) = this.scope.as_deref().filter(|_| !this.scope_claim) {
                form.push(("scope", scope));
            }
            form.extend(this.params.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            let mut secrets = credential_values(&this.params);
            secrets.push(&assertion);
            secrets.extend(assertion.rsplit('.').next());
            this.endpoint.request(&form, &secrets, &cx).await
        })
    }

    #[cfg(feature = "jwt")]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        self.endpoint.dpop_key().cloned()
    }

    /// A digest of the token URL, the client id, the grant type, the
    /// issuer, subject and audience, the scope, the claims and the
    /// parameters; not of the key, so a rotated key keeps the cached token.
    fn cache_key(&self) -> Option<CacheKey> {
        let mut key = key_builder(&self.endpoint, JWT_BEARER_GRANT).field("issuer", &self.issuer);
        for (name, value) in [
            ("subject", &self.subject),
            ("audience", &self.audience),
            ("scope", &self.scope),
        ] {
            if let Some(value) = value {
                key = key.field(name, value);
            }
        }
        for (name, value) in &self.claims {
            key = key.field("claim_name", name).field("claim_value", value);
        }
        for (name, value) in &self.params {
            key = key.field("param_name", name).field("param_value", value);
        }
        Some(key.build())
    }
}

/// A Google service-account key file (the JSON the Cloud console
/// downloads): whom the account is (`client_email`), its key
/// (`private_key`, `private_key_id`) and where its tokens come from
/// (`token_uri`). Used with [`JwtBearerGrant::google`], it fetches Google
/// access tokens without a Google SDK.
///
/// The key never prints: `Debug` shows the account and the token URI.
///
/// ```
/// use tokenkeeper::oauth2::GoogleServiceAccount;
///
/// let json = serde_json::json!({
///     "type": "service_account",
///     "client_email": "reporter@my-project.iam.gserviceaccount.com",
///     "private_key_id": "1a2b3c",
///     "private_key": include_str!("../../tests/keys/test-rsa2048.pem"), // test-only
///     "token_uri": "https://oauth2.googleapis.com/token",
/// });
/// let account = GoogleServiceAccount::from_json(&json.to_string())?;
/// assert_eq!(account.client_email(), "reporter@my-project.iam.gserviceaccount.com");
/// assert!(!format!("{account:?}").contains("PRIVATE KEY"));
/// # Ok::<(), tokenkeeper::oauth2::GoogleServiceAccountError>(())
/// ```
#[derive(Clone)]
pub struct GoogleServiceAccount {
    client_email: String,
    token_uri: String,
    key: PrivateKey,
}

impl fmt::Debug for GoogleServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("key", &self.key)
            .finish()
    }
}

impl GoogleServiceAccount {
    /// Reads a service-account key from its JSON.
    ///
    /// # Errors
    ///
    /// A [`GoogleServiceAccountError`] for JSON that is not a service
    /// account's key (another `type`, a missing member) or a key that
    /// cannot sign RS256.
    pub fn from_json(json: &str) -> Result<Self, GoogleServiceAccountError> {
        // Parsed as a value first: serde's typed errors would quote a
        // member's value, and one of them is the key.
        let value: Value = serde_json::from_str(json)
            .map_err(|e| GoogleServiceAccountError::Json(e.to_string()))?;
        let member = |name: &'static str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
                .ok_or(GoogleServiceAccountError::Missing(name))
        };
        match value.get("type").and_then(Value::as_str) {
            Some("service_account") => {}
            other => {
                return Err(GoogleServiceAccountError::NotServiceAccount(
                    other.unwrap_or("").to_owned(),
                ))
            }
        }
        let key =
            PrivateKey::from_pem(member("private_key")?).map_err(GoogleServiceAccountError::Key)?;
        let key = match value.get("private_key_id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => key.with_key_id(id),
            _ => key,
        };
        if key.algorithm() != crate::oauth2::SigningAlgorithm::Rs256 {
            return Err(GoogleServiceAccountError::Key(KeyError::Unsupported(
                "a service-account key that is not RSA".to_owned(),
            )));
        }
        Ok(GoogleServiceAccount {
            client_email: member("client_email")?.to_owned(),
            token_uri: member("token_uri")?.to_owned(),
            key,
        })
    }

    /// Reads a service-account key file.
    ///
    /// # Errors
    ///
    /// [`GoogleServiceAccountError::Read`] when the file cannot be read;
    /// otherwise as [`from_json`](Self::from_json).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, GoogleServiceAccountError> {
        let path = path.as_ref();
        let json = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|error| {
            GoogleServiceAccountError::Read {
                path: path.to_owned(),
                error,
            }
        })?);
        GoogleServiceAccount::from_json(&json)
    }

    /// The account, which issues the assertions.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// Where the account's tokens come from.
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The token endpoint of this account: its `token_uri`, without
    /// client authentication (the assertion is the credential) or a client
    /// id. Set an HTTP client or timeouts on it before `build`.
    pub fn token_endpoint(&self) -> TokenEndpointBuilder {
        TokenEndpoint::builder(self.token_uri.as_str(), "").client_auth(ClientAuth::None)
    }
}

/// A Google service-account key that cannot be used. It never quotes the
/// key.
#[derive(Debug)]
#[non_exhaustive]
pub enum GoogleServiceAccountError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Not JSON: where the parser stopped.
    Json(String),
    /// JSON of another `type` than `service_account` (an
    /// `authorized_user`'s or an `external_account`'s, say): the type.
    NotServiceAccount(String),
    /// A member it must have is missing or empty.
    Missing(&'static str),
    /// The key cannot sign RS256.
    Key(KeyError),
}

impl fmt::Display for GoogleServiceAccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoogleServiceAccountError::Read { path, error } => write!(
                f,
                "cannot read the service-account key file {}: {error}",
                path.display()
            ),
            GoogleServiceAccountError::Json(why) => {
                write!(f, "the service-account key is not JSON: {why}")
            }
            GoogleServiceAccountError::NotServiceAccount(kind) => write!(
                f,
                "not a service-account key: its type is {kind:?}, not \"service_account\""
            ),
            GoogleServiceAccountError::Missing(name) => {
                write!(f, "the service-account key has no {name}")
            }
            GoogleServiceAccountError::Key(e) => write!(f, "the service-account key: {e}"),
        }
    }
}

impl std::error::Error for GoogleServiceAccountError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GoogleServiceAccountError::Read { error, .. } => Some(error),
            GoogleServiceAccountError::Key(e) => Some(e),
            _ => None,
        }
    }
}
