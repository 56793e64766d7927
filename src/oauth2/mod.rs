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
//!
//! # DPoP: sender-constrained tokens (feature `jwt`)
//!
//! A bearer token that leaks can be replayed by anyone; a DPoP-bound token
//! is useless without the private key it is bound to. The client proves
//! it holds the key with a *proof*, a short JWT signed with it, on every
//! token request and on every resource request.
//!
//! One call turns it on: [`TokenEndpointBuilder::dpop`] with a
//! [`DpopKey`]. Then every token request through that endpoint (every
//! grant) carries a fresh proof in a `DPoP` header; an authority's
//! `use_dpop_nonce` challenge is answered once with the nonce it gave, and
//! the latest `DPoP-Nonce` it sent is kept for the next request; an answer
//! that is not a DPoP-bound token is an error unless
//! [`dpop_allow_bearer`](TokenEndpointBuilder::dpop_allow_bearer) allows it;
//! and the grant's [cache key](crate::TokenSource::cache_key) covers the
//! key's thumbprint, so a cache shares a bound token only with holders of
//! the same key.
//!
//! For resource requests, [`TokenHandle::authorization`](crate::TokenHandle::authorization)
//! returns both header values for a method and URL: `Authorization: DPoP
//! <token>` and a proof carrying `ath` (the hash of the token) and the
//! resource server's nonce, when it gave one
//! ([`TokenHandle::remember_dpop_nonce`](crate::TokenHandle::remember_dpop_nonce)).
//!
//! ```
//! use std::time::Duration;
//! use tokenkeeper::oauth2::{ClientCredentials, DpopKey, TokenEndpoint};
//! use tokenkeeper::{ClientSecret, TokenManager};
//! # let authority = local_authority::LocalAuthority::start().unwrap();
//! # authority.push_fault(local_authority::Fault::json(200,
//! #     r#"{"access_token":"bound-token","token_type":"DPoP","expires_in":3600}"#));
//! # let token_url = authority.token_url();
//!
//! let key = DpopKey::generate()?; // ES256; or DpopKey::load_or_create(path) to keep it
//! let endpoint = TokenEndpoint::builder(token_url, "client-a")
//!     .client_secret(ClientSecret::new("secret-a"))
//!     .dpop(key.clone())
//!     .build()?;
//! let (handle, driver) = TokenManager::builder(ClientCredentials::new(endpoint)).build();
//! futures_lite::future::block_on(futures_lite::future::or(driver, async move {
//!     // Both headers of a request, made anew for each request.
//!     let headers = handle.authorization("GET", "https://api.example.com/orders?page=2").await.unwrap();
//!     assert!(headers.is_dpop());
//!     assert_eq!(headers.authorization(), "DPoP bound-token");
//!     let proof = headers.dpop().unwrap(); // the `DPoP` header's value
//!     assert_eq!(proof.split('.').count(), 3);
//!     handle.shutdown().await;
//! }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
