//! Where tokens come from.
//!
//! A [`TokenSource`] fetches one token when the manager asks. It is
//! object-safe (the manager keeps a `Box<dyn TokenSource>`, and a
//! [`cache::Chain`](crate::cache::Chain) of caches in front of another source
//! is one too), it reports failures as
//! [`SourceError`]s that say whether retrying can help, and it never needs to
//! know about timers, jitter or backoff: the manager owns those.
//!
//! Three sources come ready-made: [`FixedSource`] hands out one access token
//! (an API key, or a test), [`TokenFile`] reads one that another program
//! keeps fresh in a file, and [`from_fn`] turns an async closure into a
//! source, so anything can be plugged in today.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tokenkeeper::{source, AccessToken, FetchContext, SourceError};
//!
//! let source = source::from_fn(|cx: FetchContext| async move {
//!     // Call your authority here.
//!     Ok::<_, SourceError>(cx.token(AccessToken::new("from-my-authority"), Some(Duration::from_secs(60))))
//! });
//! # let _ = source;
//! ```

mod fixed;
mod from_fn;
mod token_file;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use fixed::FixedSource;
pub use from_fn::{from_fn, FnSource};
pub use token_file::{TokenFile, TokenFileError, TokenFileProblem, MAX_TOKEN_FILE_BYTES};
// A client assertion file is read as a token file is.
pub(crate) use token_file::{jwt_claims, numeric_date_ms, read_token};

use crate::cache::CacheKey;
use crate::clock::Clock;
use crate::error::SourceError;
use crate::time::{from_ms, test_support, utc_opt, Utc};
use crate::token::{AccessToken, LifetimePolicy, Token};
use crate::BoxFuture;

/// Fetches a token on the manager's request.
///
/// The manager calls [`fetch`](TokenSource::fetch) at most once at a time
/// and bounds each call by its request timeout, dropping the future when
/// the time is up.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{AccessToken, BoxFuture, FetchContext, SourceError, Token, TokenSource};
///
/// struct Counter(u32);
///
/// impl TokenSource for Counter {
///     fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
///         self.0 += 1;
///         let n = self.0;
///         Box::pin(async move { Ok(cx.token(AccessToken::new(format!("t{n}")), Some(Duration::from_secs(60)))) })
///     }
/// }
/// # let _ = Counter(0);
/// ```
pub trait TokenSource: Send + 'static {
    /// Fetches a new token.
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>>;

    /// Whether instances sharing this source's tokens take a refresh lease
    /// before asking the authority, as a [`Chain`](crate::cache::Chain) with a lease-capable cache
    /// does. The manager's default jitter is then
    /// [`coordinated`](crate::RandomEarlyJitter::coordinated). `false` by
    /// default.
    fn coordinates_refreshes(&self) -> bool {
        false
    }

    /// Whom this source's tokens are for, as a digest of what it asks with
    /// (token URL, client id, grant and its parameters; never a secret in
    /// the clear): a [`Chain`](crate::cache::Chain) records it with every cached token and reads
    /// back only tokens cached with the same key, so sources for different
    /// clients can share a cache without serving each other's tokens.
    ///
    /// `None` (the default) when the source cannot tell; the chain then
    /// uses [`CacheKey::unkeyed`] unless it is given a key with
    /// [`Chain::cache_key`](crate::cache::Chain::cache_key). A chain reads this once, when it is built; it
    /// must not change afterwards.
    ///
    /// ```
    /// use tokenkeeper::cache::CacheKey;
    /// use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
    /// use tokenkeeper::{ClientId, ClientSecret, TokenSource};
    ///
    /// let endpoint = |id: &str| {
    ///     TokenEndpoint::builder("https://auth.example.com/token", ClientId::new(id))
    ///         .client_secret(ClientSecret::new("s"))
    ///         .build()
    ///         .unwrap()
    /// };
    /// let a = ClientCredentials::new(endpoint("a")).cache_key();
    /// let b = ClientCredentials::new(endpoint("b")).cache_key();
    /// assert!(a.is_some() && a != b);
    /// ```
    fn cache_key(&self) -> Option<CacheKey> {
        None
    }

    /// The DPoP key this source's tokens are bound to (RFC 9449), if it
    /// binds them: the manager makes the proofs of resource requests with
    /// it ([`TokenHandle::authorization`](crate::TokenHandle::authorization)).
    /// The grants return their endpoint's
    /// ([`TokenEndpointBuilder::dpop`](crate::oauth2::TokenEndpointBuilder::dpop)),
    /// a [`Chain`](crate::cache::Chain) its source's. `None` by default. The
    /// manager reads it once, when it is built: one key per manager.
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
    /// let chain = tokenkeeper::cache::Chain::new(ClientCredentials::new(endpoint));
    /// assert_eq!(chain.dpop_key().unwrap().thumbprint(), key.thumbprint());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        None
    }
}

impl<S: TokenSource + ?Sized> TokenSource for Box<S> {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        (**self).fetch(cx)
    }

    fn coordinates_refreshes(&self) -> bool {
        (**self).coordinates_refreshes()
    }

    fn cache_key(&self) -> Option<CacheKey> {
        (**self).cache_key()
    }

    #[cfg(feature = "jwt")]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        (**self).dpop_key()
    }
}

/// Why the manager is fetching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FetchReason {
    /// The manager has no token yet.
    Initial,
    /// The current token reached its (jittered) refresh instant.
    Scheduled,
    /// An earlier attempt failed and this is a retry.
    Retry,
    /// A server rejected the current token.
    Rejected,
}

/// What a source gets with each fetch: the clock, the lifetime policy, the
/// current token (a refresh-token grant needs it) and the reason.
#[derive(Clone)]
pub struct FetchContext {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: LifetimePolicy,
    pub(crate) current: Option<Arc<Token>>,
    pub(crate) reason: FetchReason,
    pub(crate) deadline_ms: Option<u64>,
    pub(crate) cache_hits: Option<Arc<AtomicU64>>,
}

impl fmt::Debug for FetchContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchContext")
            .field("now", &Utc(self.now()))
            .field("policy", &self.policy)
            .field("current", &self.current)
            .field("reason", &self.reason)
            .field("deadline", &utc_opt(self.deadline()))
            .finish()
    }
}

impl FetchContext {
    /// A context on `clock` with `policy`, for calling a source outside a
    /// manager (tests, tools).
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use tokenkeeper::{FetchContext, LifetimePolicy, ManualClock};
    ///
    /// let cx = FetchContext::new(ManualClock::new(SystemTime::UNIX_EPOCH), LifetimePolicy::default());
    /// assert_eq!(cx.now(), SystemTime::UNIX_EPOCH);
    /// assert_eq!(cx.deadline(), None); // no manager to abandon it
    /// ```
    pub fn new(clock: impl Clock, policy: LifetimePolicy) -> FetchContext {
        FetchContext {
            clock: Arc::new(clock),
            policy,
            current: None,
            reason: FetchReason::Initial,
            deadline_ms: None,
            cache_hits: None,
        }
    }

    /// Counts this fetch as answered from a cache, in the manager's
    /// [`ManagerState::cache_hits`](crate::ManagerState::cache_hits). Sources
    /// that keep tokens (like [`Chain`](crate::cache::Chain)) call it.
    pub fn record_cache_hit(&self) {
        if let Some(hits) = &self.cache_hits {
            hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// When the manager will abandon this fetch, on its clock, if it will
    /// (its request timeout after the fetch started). A source that talks
    /// to a server should give up on its own a little before, so that an
    /// answer that arrives is never thrown away (a rotated refresh token in
    /// it would be lost).
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline_ms.map(from_ms)
    }

    /// The manager's wall clock now.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    test_support! {
        /// Sets the instant the fetch is abandoned (ms since the Unix
        /// epoch), as the manager does from its request timeout.
        fn with_deadline_ms(mut self, deadline_ms: u64) -> FetchContext {
            self.deadline_ms = Some(deadline_ms);
            self
        }

        /// [`FetchContext::deadline`] in ms since the Unix epoch.
        fn deadline_ms(&self) -> Option<u64> {
            self.deadline_ms
        }

        /// Sets the current token, as the manager does before each fetch.
        fn with_current(mut self, token: Token) -> FetchContext {
            self.current = Some(Arc::new(token));
            self
        }

        /// [`FetchContext::now`] in ms since the Unix epoch.
        fn now_ms(&self) -> u64 {
            self.clock.now_ms()
        }
    }

    /// The manager's clock, for sources that keep their own deadlines.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The lifetime policy that places the stale instant.
    pub fn policy(&self) -> &LifetimePolicy {
        &self.policy
    }

    /// The token the manager holds now, valid or not.
    pub fn current(&self) -> Option<&Arc<Token>> {
        self.current.as_ref()
    }

    /// Why this fetch happens.
    pub fn reason(&self) -> FetchReason {
        self.reason
    }

    /// Makes a token issued now that lives `expires_in`, or the policy's
    /// default lifetime when the authority gave none.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokenkeeper::{AccessToken, FetchContext, LifetimePolicy, ManualClock};
    ///
    /// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let cx = FetchContext::new(ManualClock::new(start), LifetimePolicy::default());
    /// let token = cx.token(AccessToken::new("a"), None);
    /// assert_eq!(token.issued_at(), start);
    /// assert_eq!(token.lifetime(), Duration::from_secs(300)); // the policy's default
    /// ```
    pub fn token(&self, access_token: AccessToken, expires_in: Option<Duration>) -> Token {
        let lifetime = expires_in.unwrap_or(self.policy.default_lifetime_value());
        Token::new_ms(access_token, self.now_ms(), lifetime, &self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn instants_are_typed_and_debug_prints_them_in_utc() {
        let cx = FetchContext::new(
            ManualClock::at_ms(1_796_649_969_123),
            LifetimePolicy::default(),
        );
        assert_eq!(cx.now(), crate::time::from_ms(1_796_649_969_123));
        assert_eq!(cx.deadline(), None);
        let debug = format!("{cx:?}");
        assert!(debug.contains("now: 2026-12-07T13:26:09.123Z"), "{debug}");
        assert!(debug.contains("deadline: None"), "{debug}");

        let cx = cx.with_deadline_ms(1_796_649_999_123);
        assert_eq!(cx.deadline(), Some(crate::time::from_ms(1_796_649_999_123)));
        let debug = format!("{cx:?}");
        assert!(
            debug.contains("deadline: Some(2026-12-07T13:26:39.123Z)"),
            "{debug}"
        );
        assert!(!debug.contains("_ms"), "{debug}");
    }
}
