use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::clock::{Clock, SystemClock};
use crate::jitter::{Jitter, RandomEarlyJitter};
use crate::manager::shared::Shared;
use crate::manager::{Driver, TokenHandle, TokenManager};
use crate::source::{FetchReason, TokenSource};
use crate::token::LifetimePolicy;

/// Configures a [`TokenManager`]; made by [`TokenManager::builder`].
///
/// Defaults: [`SystemClock`], [`RandomEarlyJitter`] of up to 10 s
/// ([coordinated](RandomEarlyJitter::coordinated) when the source takes a
/// refresh lease, [independent](RandomEarlyJitter::new) otherwise),
/// [`Backoff::default`] (500 ms, ×2, 60 s cap), [`LifetimePolicy::default`],
/// a 20 s request timeout, a 30 s wait timeout and at most one forced
/// refresh per 5 s.
///
/// Whatever the settings and the tokens say, the manager never fetches in
/// a loop:
///
/// - a scheduled refresh comes no sooner after the previous fetch ended
///   than 5 % of the token's lifetime or 1 s, whichever is longer. That
///   spacing is capped at a quarter of the lifetime (a token living under
///   4 s is refreshed at least that often anyway) and at half the time the
///   token has left (a token from a cache close to its expiry is asked for
///   again before it expires), and is never below 100 ms. So a 1-hour token
///   that is stale at issue (a 0 % [stale policy](LifetimePolicy::stale_percent),
///   or a cache returning an already-stale token) is refreshed every
///   3 minutes, not at once and again;
/// - a retry after a failure waits the [backoff](Self::backoff)'s delay,
///   and at least 100 ms;
/// - forced refreshes are spaced by the
///   [forced-refresh interval](Self::forced_refresh_interval);
/// - the driver yields to the executor after every fetch, so a source
///   whose future is ready at once cannot keep it inside one poll.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{AccessToken, Backoff, FixedSource, LifetimePolicy, ManualClock, RandomEarlyJitter, TokenManager};
///
/// let (handle, driver) = TokenManager::builder(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60)))
///     .clock(ManualClock::default())
///     .jitter(RandomEarlyJitter::new(Duration::from_secs(5)))
///     .backoff(Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(30)))
///     .lifetime(LifetimePolicy::default().stale_percent(80))
///     .request_timeout(Duration::from_secs(10))
///     .wait_timeout(Duration::from_secs(15))
///     .forced_refresh_interval(Duration::from_secs(2))
///     .build();
/// # drop((handle, driver));
/// ```
pub struct TokenManagerBuilder {
    source: Box<dyn TokenSource>,
    clock: Arc<dyn Clock>,
    /// `None`: the default, picked at `build` from the source.
    jitter: Option<Box<dyn Jitter>>,
    backoff: Backoff,
    policy: LifetimePolicy,
    request_timeout: Duration,
    wait_timeout: Duration,
    forced_refresh_interval: Duration,
}

impl fmt::Debug for TokenManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("backoff", &self.backoff)
            .field("policy", &self.policy)
            .field("request_timeout", &self.request_timeout)
            .field("wait_timeout", &self.wait_timeout)
            .field("forced_refresh_interval", &self.forced_refresh_interval)
            .finish()
    }
}

impl TokenManagerBuilder {
    pub(crate) fn new(source: Box<dyn TokenSource>) -> TokenManagerBuilder {
        TokenManagerBuilder {
            source,
            clock: Arc::new(SystemClock),
            jitter: None,
            backoff: Backoff::default(),
            policy: LifetimePolicy::default(),
            request_timeout: Duration::from_secs(20),
            wait_timeout: Duration::from_secs(30),
            forced_refresh_interval: Duration::from_secs(5),
        }
    }

    /// The clock for expiry, timers and timeouts.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How far before the stale instant to refresh.
    pub fn jitter(mut self, jitter: impl Jitter) -> Self {
        self.jitter = Some(Box::new(jitter));
        self
    }

    /// How long to wait after failures; never less than 100 ms per retry,
    /// even if `backoff` says 0.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Where the stale instant falls, and the lifetime of tokens that come
    /// without one. A token stale at issue (say, under
    /// [`stale_percent(0)`](LifetimePolicy::stale_percent)) is still
    /// refreshed no more often than the spacing described on
    /// [`TokenManagerBuilder`].
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use futures_lite::future::{block_on, poll_once};
    /// use tokenkeeper::{AccessToken, FixedSource, LifetimePolicy, ManualClock, NoJitter, TokenManager};
    ///
    /// let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(3600));
    /// let (handle, mut driver) = TokenManager::builder(source)
    ///     .clock(ManualClock::new(SystemTime::now()))
    ///     .jitter(NoJitter)
    ///     .lifetime(LifetimePolicy::default().stale_percent(0))
    ///     .build();
    /// assert!(block_on(poll_once(&mut driver)).is_none());
    /// let token = handle.current().unwrap();
    /// assert_eq!(token.stale_at(), token.issued_at()); // stale at issue
    /// // The next refresh comes 5 % of an hour later, not at once.
    /// assert_eq!(handle.state().next_refresh_at, Some(token.issued_at() + Duration::from_secs(180)));
    /// assert_eq!(handle.state().source_requests, 1);
    /// ```
    pub fn lifetime(mut self, policy: LifetimePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The longest one fetch may take before it counts as failed.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The longest [`TokenHandle::token`] (or
    /// [`TokenHandle::refresh_rejected`]) waits when no valid token exists;
    /// 30 s by default. The driver's timer keeps these deadlines, so waiting
    /// callers arm no timer of their own once the driver runs.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// The shortest time between two fetches forced by
    /// [`TokenHandle::refresh_rejected`].
    pub fn forced_refresh_interval(mut self, interval: Duration) -> Self {
        self.forced_refresh_interval = interval;
        self
    }

    /// Makes the manager: a handle, and the driver future to spawn on any
    /// executor. Nothing is fetched until the driver runs.
    pub fn build(self) -> (TokenHandle, Driver) {
        let mut shared = Shared::new(Arc::clone(&self.clock), self.wait_timeout);
        shared.source_key = self.source.cache_key();
        #[cfg(feature = "jwt")]
        {
            shared.dpop_key = self.source.dpop_key();
        }
        let shared = Arc::new(shared);
        let jitter = self.jitter.unwrap_or_else(|| {
            let max = Duration::from_secs(10);
            if self.source.coordinates_refreshes() {
                Box::new(RandomEarlyJitter::coordinated(max))
            } else {
                Box::new(RandomEarlyJitter::new(max))
            }
        });
        let manager = TokenManager {
            shared: Arc::clone(&shared),
            source: Some(self.source),
            fetch: None,
            clock: self.clock,
            jitter,
            backoff: self.backoff,
            policy: self.policy,
            request_timeout: self.request_timeout,
            forced_refresh_interval: self.forced_refresh_interval,
            current: None,
            version: 0,
            rejected: 0,
            withdrawn: false,
            next_attempt_ms: 0,
            next_reason: FetchReason::Initial,
            last_forced_ms: None,
            heartbeat_ms: 0,
            timer: None,
            fetch_deadline_ms: u64::MAX,
            fetched_in_this_poll: false,
            cancel: Arc::default(),
        };
        let driver = Driver {
            inner: Box::pin(Box::new(manager).run()),
        };
        (TokenHandle { shared }, driver)
    }

    /// Builds the manager and spawns its driver on smol's global executor.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
    ///
    /// let handle = TokenManager::builder(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60))).spawn_smol();
    /// let token = smol::block_on(handle.token()).unwrap();
    /// assert_eq!(token.access_token().secret(), "t");
    /// ```
    #[cfg(feature = "smol")]
    #[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
    pub fn spawn_smol(self) -> TokenHandle {
        let (handle, driver) = self.build();
        smol::spawn(driver).detach();
        handle
    }

    /// Builds the manager and spawns its driver on async-std's global
    /// executor.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
    ///
    /// let handle = TokenManager::builder(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60))).spawn_async_std();
    /// let token = async_std::task::block_on(handle.token()).unwrap();
    /// assert_eq!(token.access_token().secret(), "t");
    /// ```
    #[cfg(feature = "async-std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
    pub fn spawn_async_std(self) -> TokenHandle {
        let (handle, driver) = self.build();
        // Dropping the JoinHandle detaches the task.
        drop(async_std::task::spawn(driver));
        handle
    }
}
