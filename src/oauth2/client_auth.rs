//! How a client proves who it is to the token endpoint: a shared secret
//! (RFC 6749 §2.3.1), a signed assertion (RFC 7523 §2.2, OpenID Connect
//! Core §9), an assertion a platform writes to a file, or nothing (a public
//! client).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::SourceError;
use crate::oauth2::scrub::Scrubber;
use crate::source::{jwt_claims, numeric_date_ms, read_token, FetchContext};
use crate::source::{TokenFileError, TokenFileProblem};
use crate::token::{ClientId, ClientSecret};

#[cfg(feature = "jwt")]
use crate::oauth2::jwt::{AssertionClaims, JwtSigner, PrivateKey};

/// The `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The name of a client authentication method, as the OAuth2 registries
/// (`token_endpoint_auth_method`, and the `token_endpoint_auth_methods_supported`
/// of a discovery document) spell it: see [`as_str`](Self::as_str).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// HTTP Basic with the form-urlencoded id and secret. The method every
    /// server must support.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client secret (HS256).
    ClientSecretJwt,
    /// A JWT signed with the client's private key, or an assertion a
    /// platform issued for the workload (read from a file).
    PrivateKeyJwt,
    /// No authentication: a public client sends its `client_id` alone.
    None,
}

impl AuthMethod {
    /// The registered name: `client_secret_basic`, `client_secret_post`,
    /// `client_secret_jwt`, `private_key_jwt` or `none`.
    ///
    /// ```
    /// use tokenkeeper::oauth2::AuthMethod;
    /// assert_eq!(AuthMethod::PrivateKeyJwt.as_str(), "private_key_jwt");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretJwt => "client_secret_jwt",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::None => "none",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = UnknownAuthMethod;

    /// Parses a registered name ([`as_str`](Self::as_str)).
    fn from_str(s: &str) -> Result<AuthMethod, UnknownAuthMethod> {
        [
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
            AuthMethod::ClientSecretJwt,
            AuthMethod::PrivateKeyJwt,
            AuthMethod::None,
        ]
        .into_iter()
        .find(|method| method.as_str() == s)
        .ok_or(UnknownAuthMethod)
    }
}

/// A name that is not a client authentication method
/// ([`AuthMethod::from_str`](std::str::FromStr::from_str)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownAuthMethod;

impl fmt::Display for UnknownAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "unknown client authentication method; expected client_secret_basic, \
             client_secret_post, client_secret_jwt, private_key_jwt or none",
        )
    }
}

impl std::error::Error for UnknownAuthMethod {}

/// How the client authenticates to the token endpoint, for every grant.
/// Given to [`TokenEndpointBuilder::client_auth`](crate::oauth2::TokenEndpointBuilder::client_auth),
/// or through its shortcuts (`client_secret`, `private_key_jwt`, ...).
///
/// The assertion methods send `client_id`,
/// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
/// and a `client_assertion` made for that one request: a signed JWT whose
/// `iss` and `sub` are the client id, whose `aud` is the token URL (see
/// [`assertion_audience`](crate::oauth2::TokenEndpointBuilder::assertion_audience)),
/// with a random `jti`, `iat` and `nbf` now and `exp` a minute later; or the
/// content of a file as it is when the request is made.
///
/// Secrets and keys never print: `Debug` shows the method and, for a
/// file, its path.
///
/// ```
/// use tokenkeeper::oauth2::{AuthMethod, ClientAuth, TokenEndpoint};
/// use tokenkeeper::ClientSecret;
///
/// // Chosen at run time, e.g. from configuration.
/// let auth = match std::env::var("AZURE_FEDERATED_TOKEN_FILE") {
///     Ok(path) => ClientAuth::ClientAssertionFile(path.into()),
///     Err(_) => ClientAuth::ClientSecretPost(ClientSecret::new("s")),
/// };
/// let endpoint = TokenEndpoint::builder("https://auth.example.com/token", "svc")
///     .client_auth(auth)
///     .build()
///     .unwrap();
/// assert!(matches!(endpoint.auth_method(), AuthMethod::ClientSecretPost | AuthMethod::PrivateKeyJwt));
/// assert!(!format!("{endpoint:?}").contains("\"s\""));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: the id and secret in HTTP Basic (RFC 6749
    /// §2.3.1, form-urlencoded before base64).
    ClientSecretBasic(ClientSecret),
    /// `client_secret_post`: `client_id` and `client_secret` in the body.
    ClientSecretPost(ClientSecret),
    /// `client_secret_jwt`: an assertion signed HS256 with the secret's
    /// octets; the secret itself is never sent.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    ClientSecretJwt(ClientSecret),
    /// `private_key_jwt`: an assertion signed with the key.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    PrivateKeyJwt(PrivateKey),
    /// An assertion another party issues for this workload, read from the
    /// file at this path for every request: a Kubernetes projected
    /// service-account token, the file `AZURE_FEDERATED_TOKEN_FILE` names,
    /// a CI job's OIDC token. Platforms replace the file before the token
    /// in it expires, so it is never cached. A missing or empty file, or a
    /// JWT in it whose `exp` has passed, fails the fetch with a transient
    /// error whose cause is a [`TokenFileError`] naming the path.
    ClientAssertionFile(PathBuf),
    /// No authentication (`none`): a public client, such as a native app
    /// redeeming a refresh token, sends its `client_id` alone; with an
    /// empty client id nothing is sent, for a grant whose assertion says
    /// who the client is (a JWT bearer grant at Google).
    None,
}

impl ClientAuth {
    /// The secret-based `method` with `secret`: `client_secret_basic`,
    /// `client_secret_post` or `client_secret_jwt` (feature `jwt`); `None`
    /// for a method that takes no secret. For a method chosen at run time,
    /// from configuration or from what the authority supports.
    ///
    /// ```
    /// use tokenkeeper::oauth2::{AuthMethod, ClientAuth};
    ///
    /// let method: AuthMethod = "client_secret_post".parse().unwrap();
    /// let auth = ClientAuth::with_secret(method, "s3cret").unwrap();
    /// assert_eq!(auth.method(), AuthMethod::ClientSecretPost);
    /// assert!(ClientAuth::with_secret(AuthMethod::PrivateKeyJwt, "s3cret").is_none());
    /// ```
    pub fn with_secret(method: AuthMethod, secret: impl Into<ClientSecret>) -> Option<ClientAuth> {
        let secret = secret.into();
        match method {
            AuthMethod::ClientSecretBasic => Some(ClientAuth::ClientSecretBasic(secret)),
            AuthMethod::ClientSecretPost => Some(ClientAuth::ClientSecretPost(secret)),
            #[cfg(feature = "jwt")]
            AuthMethod::ClientSecretJwt => Some(ClientAuth::ClientSecretJwt(secret)),
            _ => None,
        }
    }

    /// The method's registered name.
    ///
    /// ```
    /// use tokenkeeper::oauth2::{AuthMethod, ClientAuth};
    /// let auth = ClientAuth::ClientAssertionFile("/var/run/secrets/token".into());
    /// assert_eq!(auth.method(), AuthMethod::PrivateKeyJwt);
    /// ```
    pub fn method(&self) -> AuthMethod {
        match self {
            ClientAuth::ClientSecretBasic(_) => AuthMethod::ClientSecretBasic,
            ClientAuth::ClientSecretPost(_) => AuthMethod::ClientSecretPost,
            #[cfg(feature = "jwt")]
            ClientAuth::ClientSecretJwt(_) => AuthMethod::ClientSecretJwt,
            #[cfg(feature = "jwt")]
            ClientAuth::PrivateKeyJwt(_) => AuthMethod::PrivateKeyJwt,
            ClientAuth::ClientAssertionFile(_) => AuthMethod::PrivateKeyJwt,
            ClientAuth::None => AuthMethod::None,
        }
    }
}

/// An endpoint's client authentication, ready for requests: what never
/// changes made once, what must be new for each request made then.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    auth: ClientAuth,
    /// The `Authorization` header of `client_secret_basic`.
    basic: Option<BasicAuthorization>,
    /// What signs the assertion of `client_secret_jwt` and `private_key_jwt`.
    #[cfg(feature = "jwt")]
    signer: Option<JwtSigner>,
    /// The `aud` of signed assertions.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    audience: String,
}

impl Credentials {
    pub(crate) fn new(client_id: &ClientId, auth: ClientAuth, audience: String) -> Credentials {
        let basic = match &auth {
            ClientAuth::ClientSecretBasic(secret) => {
                Some(BasicAuthorization::new(client_id, secret))
            }
            _ => None,
        };
        #[cfg(feature = "jwt")]
        let signer = match &auth {
            ClientAuth::ClientSecretJwt(secret) => Some(JwtSigner::hs256(secret.secret())),
            ClientAuth::PrivateKeyJwt(key) => Some(JwtSigner::Key(key.clone())),
            _ => None,
        };
        Credentials {
            auth,
            basic,
            #[cfg(feature = "jwt")]
            signer,
            audience,
        }
    }

    pub(crate) fn auth(&self) -> &ClientAuth {
        &self.auth
    }

    /// Adds the secrets this authentication holds to `scrubber`: the
    /// client secret in every form either secret method sends it (a proxy
    /// or a misconfigured server may build the other one), and the HMAC key
    /// of `client_secret_jwt`, which is never sent but must never come back
    /// either.
    pub(crate) fn add_secrets(&self, client_id: &ClientId, scrubber: &mut Scrubber) {
        match &self.auth {
            ClientAuth::ClientSecretBasic(secret) | ClientAuth::ClientSecretPost(secret) => {
                scrubber.add_client_secret(client_id.as_str(), secret.secret());
            }
            #[cfg(feature = "jwt")]
            ClientAuth::ClientSecretJwt(secret) => {
                scrubber.add_client_secret(client_id.as_str(), secret.secret());
            }
            _ => {}
        }
    }

    /// The `Authorization` header value, if the credentials travel in it.
    pub(crate) fn authorization(&self) -> Option<&str> {
        self.basic.as_ref().map(BasicAuthorization::value)
    }

    /// The body parameters that are the same for every request. An
    /// assertion comes after them, made per request by
    /// [`assertion`](Self::assertion).
    pub(crate) fn body_params<'a>(&'a self, client_id: &'a ClientId) -> Vec<(&'a str, &'a str)> {
        let id = ("client_id", client_id.as_str());
        match &self.auth {
            ClientAuth::ClientSecretBasic(_) => Vec::new(),
            ClientAuth::ClientSecretPost(secret) => {
                vec![id, ("client_secret", secret.secret())]
            }
            // A grant whose assertion names the client (Google's) has no
            // client id to send.
            ClientAuth::None if client_id.as_str().is_empty() => Vec::new(),
            ClientAuth::None => vec![id],
            _ => vec![id, ("client_assertion_type", JWT_BEARER_ASSERTION)],
        }
    }

    /// The `client_assertion` for one request, if this method sends one: a
    /// JWT signed now, or the assertion file's content now.
    pub(crate) async fn assertion(
        &self,
        client_id: &ClientId,
        cx: &FetchContext,
    ) -> Result<Option<Assertion>, SourceError> {
        #[cfg(feature = "jwt")]
        if let Some(signer) = &self.signer {
            return self.sign(signer, client_id, cx).map(Some);
        }
        #[cfg(not(feature = "jwt"))]
        let _ = client_id;
        match &self.auth {
            ClientAuth::ClientAssertionFile(path) => {
                read_assertion_file(path, cx.now_ms()).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A fresh client assertion (RFC 7523 §2.2): the client is its issuer
    /// and subject.
    #[cfg(feature = "jwt")]
    fn sign(
        &self,
        signer: &JwtSigner,
        client_id: &ClientId,
        cx: &FetchContext,
    ) -> Result<Assertion, SourceError> {
        let claims = AssertionClaims {
            issuer: client_id.as_str(),
            subject: Some(client_id.as_str()),
            audience: &self.audience,
            now_ms: cx.now_ms(),
        };
        claims
            .sign(signer, [])
            .map(Assertion)
            .map_err(|e| SourceError::transient(e.to_string()).with_cause(e))
    }
}

/// The assertion in the file at `path`, as it is now.
async fn read_assertion_file(path: &Path, now_ms: u64) -> Result<Assertion, SourceError> {
    read_credential_file(path, now_ms, "client assertion file")
        .await
        .map(Assertion)
}

/// The credential (an assertion, a subject token) in the file at `path`,
/// as it is now, without blocking the executor; `what` names the file in
/// errors. A JWT that has expired is not sent: the authority would refuse
/// it as a permanent error (`invalid_client`, `invalid_grant`) when the
/// platform is only late to replace the file.
pub(crate) async fn read_credential_file(
    path: &Path,
    now_ms: u64,
    what: &'static str,
) -> Result<String, SourceError> {
    let owned = path.to_owned();
    let read = blocking::unblock(move || read_token(&owned)).await;
    let checked = read.and_then(|value| {
        let exp = jwt_claims(&value).and_then(|claims| claims.get("exp").and_then(numeric_date_ms));
        match exp {
            Some(exp) if exp <= now_ms => Err(TokenFileProblem::Expired),
            _ => Ok(value),
        }
    });
    checked.map_err(|problem| {
        let error = TokenFileError::new(what, path.to_owned(), problem);
        SourceError::transient(error.to_string()).with_cause(error)
    })
}

/// One request's `client_assertion`. It is a credential: it never
/// prints, and server text is scrubbed of it.
pub(crate) struct Assertion(String);

impl Assertion {
    /// The assertion. Take care where it goes.
    pub(crate) fn value(&self) -> &str {
        &self.0
    }

    /// What to scrub from server text: the assertion, and its signature
    /// alone (a server that reports a bad signature may quote just that).
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &str> {
        let signature = self
            .0
            .rsplit_once('.')
            .map(|(_, signature)| signature)
            .filter(|signature| signature.len() >= 16);
        std::iter::once(self.0.as_str()).chain(signature)
    }
}

impl fmt::Debug for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Assertion(<redacted>)")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_before_base64() {
        let credentials = Credentials::new(
            &ClientId::new("my client"),
            ClientAuth::ClientSecretBasic(ClientSecret::new("p@ss:w/rd")),
            String::new(),
        );
        let header = credentials.authorization().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my+client:p%40ss%3Aw%2Frd"
        );
        assert_eq!(
            format!("{credentials:?}").matches("<redacted>").count(),
            2,
            "{credentials:?}"
        );
    }

    #[test]
    fn an_assertion_and_its_signature_are_secrets() {
        let assertion = Assertion("aGVhZGVy.cGF5bG9hZA.c2lnbmF0dXJlLXNpZ25hdHVyZQ".into());
        assert_eq!(
            assertion.secrets().collect::<Vec<_>>(),
            [assertion.value(), "c2lnbmF0dXJlLXNpZ25hdHVyZQ"]
        );
        // Not a JWT: the whole value only.
        let opaque = Assertion("opaque-assertion".into());
        assert_eq!(opaque.secrets().count(), 1);
        assert_eq!(format!("{opaque:?}"), "Assertion(<redacted>)");
    }
}
