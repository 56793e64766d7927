//! Keeps OAuth2 access tokens fresh in the background, on any executor.
//!
//! ```text
//!  worker ── TokenHandle::current() ──▶ per-thread copy of the token (no lock, no message)
//!     │ token() when none is valid, refresh_rejected(), shutdown()
//!     └────────── wake-up ──────────▶ TokenManager (one future: timer, jitter, backoff)
//!  subscriber ◀── Subscription, Events ◀┘        │
//!                                      cache::Chain: memory ▸ file ▸ Redis ▸ OAuth2 authority
//! ```
//!
//! A service needs a valid access token for every outgoing call. tokenkeeper
//! moves "does the token need refreshing?" off the request path: a
//! [`TokenManager`] actor fetches a token, refreshes it in the background
//! when it turns stale, and publishes each new one; workers hold cheap
//! [`TokenHandle`]s and read the current token without waiting.
//!
//! ```text
//!  issued            stale            expiry
//!    |---- Fresh -----|---- Stale -----|---- Expired
//!               ^ refresh here, moved earlier by jitter
//!                     (old token still served: the grace period)
//! ```
//!
//! - **Stale**: a token turns stale at 75% of its lifetime (with a stale
//!   window of at least `min(30 s, lifetime / 2)`); see [`LifetimePolicy`].
//! - **Jitter**: each instance refreshes at a random instant shortly before
//!   stale, so a fleet does not stampede the authority; see [`jitter`].
//! - **Grace**: while refreshes fail, the old token is served until it
//!   expires, and failures are retried with [`Backoff`].
//! - **Compare-and-invalidate**: after a 401, [`TokenHandle::refresh_rejected`]
//!   replaces the token once, however many callers report it.
//! - **Lease**: instances that share a cache ([`cache::Chain`] with a
//!   [`cache::FileCache`] or a Redis cache) take a refresh lease before
//!   asking the authority, read the cache again, and ask only if nobody
//!   else just did, so a fleet makes about one request per token lifetime:
//!
//! ```text
//!  instance A: stale ─▶ lease ✓ ─▶ re-read: old ─▶ authority ─▶ write cache ─▶ release
//!  instance B: stale ─▶ lease ✗ ─▶ wait ~200 ms ─▶ re-read: new token from A ✓
//! ```
//!
//! A lease is an optimisation, never a dependency: one held elsewhere is
//! waited for at most 2 s, every cache operation has a 1 s deadline, and a
//! cache that fails is skipped for a cool-down (see [`cache::Chain`]), so a
//! stalled neighbour never keeps an instance from its token.
//!
//! - **Reads**: [`TokenHandle::with_current`] and [`TokenHandle::current`]
//!   read this thread's copy of the token. Until the token's refresh
//!   instant (it has its whole stale window left) a read skips the clock;
//!   from that instant every read checks expiry. Only a driver that misses
//!   the whole stale window (a starved executor, a machine asleep) lets a
//!   thread see an expired token, on at most 15 reads (each thread looks
//!   at the clock at least every 15th read).
//!   [`TokenHandle::token`] (and [`TokenHandle::refresh_rejected`]) never
//!   return an expired token: they check expiry on the clock on every call
//!   and, when the token has expired, wait for the refresh.
//! - **Runtime-neutral**: the manager is a plain future ([`Driver`]) that you
//!   spawn on smol, async-std or any executor; timers come from `async-io`,
//!   and nothing depends on tokio.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tokenkeeper::{source, AccessToken, FetchContext, SourceError, TokenManager};
//!
//! // Any async function can be a source; the OAuth2 sources plug in the same way.
//! let source = source::from_fn(|cx: FetchContext| async move {
//!     Ok::<_, SourceError>(cx.token(AccessToken::new("token-from-somewhere"), Some(Duration::from_secs(3600))))
//! });
//! let (handle, driver) = TokenManager::builder(source).build();
//!
//! smol::block_on(async {
//!     smol::spawn(driver).detach();
//!     let worker = handle.clone(); // cheap: clone one into each worker
//!     let token = worker.token().await.expect("a token");
//!     assert_eq!(token.access_token().secret(), "token-from-somewhere");
//!     // Its instants are `SystemTime`s, the time left a `Duration`.
//!     assert!(token.expires_in() <= Duration::from_secs(3600));
//!     // On the hot path: no message, no wait.
//!     assert!(worker.current().is_some());
//! });
//! ```
//!
//! # Observing it
//!
//! [`TokenHandle::state`] gives a snapshot with counters (fetches, tokens
//! published, failures, rejections) and the latest error.
//! [`TokenHandle::events`] is a stream of what the manager does, for a
//! metrics exporter or a health check to wait on rather than poll: each
//! token published (its expiry and next refresh), each failed fetch (the
//! error, the failures in a row, the retry delay), a token withdrawn after a
//! rejection, the stop; see [`ManagerEvent`]. [`TokenHandle::subscribe`]
//! yields the tokens themselves, and [`TokenHandle::watch`] calls a
//! function on each.
//!
//! ```
//! use std::time::Duration;
//! use tokenkeeper::{AccessToken, FixedSource, ManagerEvent, TokenManager};
//!
//! let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(3600));
//! let (handle, driver) = TokenManager::builder(source).build();
//! let mut events = handle.events();
//! let health = async move {
//!     while let Some(event) = events.next().await {
//!         match event {
//!             ManagerEvent::Published { expires_at, .. } => println!("healthy until {expires_at:?}"),
//!             ManagerEvent::FetchFailed { error, retry_in, .. } => println!("{error}; retry in {retry_in:?}"),
//!             _ => {}
//!         }
//!     }
//! };
//! futures_lite::future::block_on(futures_lite::future::zip(
//!     futures_lite::future::zip(driver, health),
//!     async {
//!         handle.token().await.unwrap();
//!         handle.shutdown().await;
//!     },
//! ));
//! ```
//!
//! Log records (the `log` crate; no secret is ever in one) use stable
//! targets:
//!
//! | target | level | what |
//! |---|---|---|
//! | `tokenkeeper::manager` | info | a token was published (expiry, next refresh); a token was withdrawn after a rejection |
//! | `tokenkeeper::manager` | warn | a fetch failed, with the error, the failure count and the backoff delay |
//! | `tokenkeeper::manager` | debug | start, stop, each fetch and its reason |
//! | `tokenkeeper::cache` | debug | cache hit, cache miss, lease taken, lease held elsewhere, token refreshed by another process |
//! | `tokenkeeper::cache` | info | a lease held elsewhere not obtained within the lease wait; a cache answering again after its cool-down |
//! | `tokenkeeper::cache` | warn | a cache failed or missed its deadline and is skipped for a cool-down (once), a corrupt entry (once), Redis unreachable (once) |
//! | `tokenkeeper::oauth2` | debug / warn | each token request, a DPoP nonce challenge answered; a token type other than Bearer (or DPoP, when asked for), a DPoP request answered with an unbound token that is allowed |
//! | `tokenkeeper::oauth2` | info | a DPoP key file created (its path and thumbprint) |
//! | `tokenkeeper::middleware` | info / warn | a 401 that rejected the token, and the refresh after it |
//!
//! # Features
//!
//! - `ureq` (default): `UreqClient` in [`oauth2`], the default HTTP client: a
//!   blocking `ureq` agent with rustls, run on the `blocking` thread pool.
//!   It compiles no tokio and needs no runtime.
//! - `jwt` (default): `PrivateKey` in [`oauth2`] and the client
//!   authentications that sign assertions (`private_key_jwt`,
//!   `client_secret_jwt`), and DPoP (RFC 9449): `DpopKey` in [`oauth2`],
//!   the endpoint builder's `dpop`, tokens bound to the key and proofs for
//!   resource requests from [`TokenHandle::authorization`] (see the
//!   [`oauth2`] module's DPoP section). On the ring and rustls-pki-types
//!   that the `ureq` client's rustls builds anyway: one crypto stack. An
//!   assertion read from a file needs no feature.
//! - `surf`: `SurfClient` in [`oauth2`], for a `surf::Client` you
//!   configure, and the `middleware` module's `BearerAuth`, which adds the
//!   token to surf requests and refreshes it after a 401. surf
//!   is unmaintained upstream and pulls in async-std; pick its `curl-client`
//!   backend, which compiles no tokio (its `h1-client*` backends compile
//!   tokio through deadpool).
//! - `redis`: `RedisCache` in [`cache`]. The `redis` crate compiles tokio's
//!   `sync` module (channels only: no runtime, timers or I/O are started),
//!   and runs its connection task on smol's global executor.
//! - `smol`: `spawn_smol` on [`TokenManagerBuilder`].
//! - `async-std`: `spawn_async_std` on [`TokenManagerBuilder`]. async-std is
//!   discontinued upstream in favour of smol; tokenkeeper runs on both.
//!
//! Items of a feature are named here without a link, so that these docs
//! build without a broken link whatever features are on.
//!
//! With the default features, `cargo tree -e normal -i tokio` prints nothing.

#![forbid(unsafe_code)]
// On docs.rs (nightly), every feature-gated item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations)]

pub mod backoff;
pub mod cache;
pub mod clock;
pub mod error;
pub mod jitter;
pub mod manager;
#[cfg(feature = "surf")]
#[cfg_attr(docsrs, doc(cfg(feature = "surf")))]
pub mod middleware;
pub mod oauth2;
pub mod source;
mod time;
pub mod token;

use std::future::Future;
use std::pin::Pin;

pub use backoff::Backoff;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DpopError, Error, ErrorKind, RequestTimedOut, SourceError};
pub use jitter::{Jitter, NoJitter, RandomEarlyJitter};
pub use manager::{
    Authorization, Driver, Events, ManagerEvent, ManagerState, Subscription, TokenHandle,
    TokenManager, TokenManagerBuilder,
};
pub use source::{FetchContext, FetchReason, FixedSource, TokenSource};
pub use token::{
    AccessToken, ClientId, ClientSecret, IdToken, InvalidToken, LifetimePolicy, RefreshToken,
    Token, TokenStatus,
};

/// A boxed, sendable future, as returned by the object-safe async traits
/// here ([`TokenSource`], [`Clock`], [`cache::TokenCache`], the HTTP client).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
