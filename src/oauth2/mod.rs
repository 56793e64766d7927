//! OAuth2 over HTTP: the token endpoint, the grants, and typed errors.
//!
//! A [`TokenEndpoint`] holds the token URL, the client and how it
//! authenticates ([`ClientAuth`]: a secret, a signed assertion, an
//! assertion file, or none) and an [`HttpClient`]. The grants
//! [`ClientCredentials`] and [`RefreshTokenGrant`] are
//! [`TokenSource`](crate::TokenSource)s on top of it, ready for the manager,
//! as is the JWT bearer grant (`JwtBearerGrant`, feature `jwt`, which also
//! reads Google service-account keys), and token exchange
//! ([`TokenExchange`], RFC 8693), whose subject token may come from another
//! manager; [`CustomGrant`] sends any other grant type through the same
//! endpoint.
//!
//! DPoP (RFC 9449, feature `jwt`): [`TokenEndpointBuilder::dpop`] binds
//! every token to a [`DpopKey`] the client holds; see the module `dpop`
//! below [`DpopKey`] for the whole story, resource requests included.
//!
//! [`Discovery`] reads an authority's metadata from its issuer identifier
//! (RFC 8414, then OpenID Connect Discovery), once, and
//! [`TokenEndpoint::from_metadata`] (or [`TokenEndpoint::discover`]) makes an
//! endpoint of it whose client authentication is checked against what the
//! authority supports.
//!
//! Requests are `application/x-www-form-urlencoded` POSTs, or JSON ones
//! for authorities that demand them ([`RequestBody`]). Responses are
//! parsed leniently where real servers differ from the RFC (`expires_in` as
//! a string, a missing `token_type`) and strictly where safety matters (a
//! missing `access_token` is an error): RFC 6749 errors become an
//! [`OAuth2Error`] inside a [`TokenRequestError`], which says whether
//! retrying can help; `Retry-After` becomes the backoff hint; bodies are
//! capped ([`DEFAULT_MAX_BODY`]). Token URLs must be `https`, except to
//! loopback addresses, unless [`TokenEndpointBuilder::allow_insecure_http`]
//! says otherwise. Request time is bounded by the manager's request timeout,
//! on the manager's clock.
//!
//! ```no_run
//! use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
//! use tokenkeeper::{ClientId, ClientSecret, TokenManager};
//!
//! let endpoint = TokenEndpoint::builder("https://auth.example.com/oauth/token", ClientId::new("my-service"))
//!     .client_secret(ClientSecret::new(std::env::var("CLIENT_SECRET").unwrap()))
//!     .build()?;
//! let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint).scope("read")).build();
//! smol::spawn(driver).detach(); // or any executor
//! # let _ = handle;
//! # Ok::<_, tokenkeeper::oauth2::ConfigError>(())
//! ```

mod client_auth;
mod custom;
mod discovery;
#[cfg(feature = "jwt")]
pub(crate) mod dpop;
mod endpoint;
mod error;
mod grant;
mod http;
#[cfg(feature = "jwt")]
mod jwt;
#[cfg(feature = "jwt")]
mod jwt_bearer;
#[cfg(not(feature = "test-support"))]
mod response;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod response;
mod scrub;
#[cfg(feature = "surf")]
mod surf;
mod token_exchange;
#[cfg(feature = "ureq")]
mod ureq;

pub use client_auth::{AuthMethod, ClientAuth, UnknownAuthMethod};
pub use custom::CustomGrant;
pub use discovery::{Discovery, DiscoveryError, ServerMetadata};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use dpop::DpopKey;
pub use endpoint::{
    ConfigError, RequestBody, TokenEndpoint, TokenEndpointBuilder, DEFAULT_MAX_BODY,
};
pub use error::{ErrorCode, OAuth2Error, TokenRequestError};
pub use grant::{ClientCredentials, RefreshTokenGrant};
pub use http::{HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt::{KeyError, PrivateKey, SigningAlgorithm};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt_bearer::{GoogleServiceAccount, GoogleServiceAccountError, JwtBearerGrant};
#[cfg(feature = "surf")]
pub use surf::SurfClient;
pub use token_exchange::{token_type, PresentedToken, TokenExchange};
#[cfg(feature = "ureq")]
pub use ureq::UreqClient;
