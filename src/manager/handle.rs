use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_lite::future;

use crate::error::{DpopError, Error};
use crate::manager::authorization::Authorization;
use crate::manager::events::Events;
use crate::manager::shared::{Published, Shared};
use crate::manager::state::ManagerState;
use crate::manager::subscription::Subscription;
use crate::manager::thread_copy;
use crate::time::{duration_ms, from_ms};
use crate::token::Token;

/// A cheap, cloneable handle to a running [`TokenManager`](crate::TokenManager).
///
/// Clone it into every worker. Reading the current token
/// ([`current`](Self::current)) sends no message and never waits; only
/// waiting for a token, reporting a rejected one and shutting down talk to
/// the manager. The manager stops when the last handle is dropped.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
///
/// let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(3600));
/// let (handle, driver) = TokenManager::builder(source).build();
/// futures_lite::future::block_on(futures_lite::future::or(driver, async move {
///     let token = handle.token().await.unwrap();
///     assert_eq!(token.access_token().secret(), "t");
///     assert!(handle.current().is_some());
///     handle.shutdown().await;
/// }));
/// ```
pub struct TokenHandle {
    pub(crate) shared: Arc<Shared>,
}

impl Clone for TokenHandle {
    fn clone(&self) -> TokenHandle {
        self.shared.add_handle();
        TokenHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for TokenHandle {
    fn drop(&mut self) {
        self.shared.remove_handle();
    }
}

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenHandle")
            .field("state", &self.shared.state())
            .finish()
    }
}

impl TokenHandle {
    /// The current token if it is valid (fresh or stale), without waiting and
    /// without sending a message. Never returns a withdrawn token, nor any
    /// token once the manager has stopped.
    ///
    /// This is the read path: it sends nothing, takes no lock and writes
    /// nothing shared. Each thread reads its own copy of the token,
    /// revalidated with one atomic load. Expiry is checked on a coarse clock
    /// that is never behind, on every read from the token's refresh instant
    /// on; before it, while the token has at least its stale window left, a
    /// thread looks at the clock at least every 15th read. So an expired
    /// token is returned only if the driver did not run for the whole stale
    /// window (a starved executor, a machine asleep), and then on at most 15
    /// reads per thread. [`token`](Self::token) checks
    /// the clock on every call and never returns an expired token.
    ///
    /// It returns an `Arc` you may keep; [`with_current`](Self::with_current)
    /// only lends the token and is cheaper still.
    pub fn current(&self) -> Option<Arc<Token>> {
        thread_copy::with_valid_token(&self.shared, |token| token.cloned())
    }

    /// Runs `f` on the current token if it is valid, without cloning an
    /// `Arc`: the fastest read, for code that only needs to look (say, to
    /// format an `Authorization` header). Which token is valid is decided
    /// as in [`current`](Self::current).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
    ///
    /// let (handle, driver) = TokenManager::builder(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60))).build();
    /// futures_lite::future::block_on(futures_lite::future::or(driver, async move {
    ///     handle.token().await.unwrap();
    ///     let header = handle.with_current(|t| format!("Bearer {}", t.access_token().secret()));
    ///     assert_eq!(header.as_deref(), Some("Bearer t"));
    ///     handle.shutdown().await;
    /// }));
    /// ```
    pub fn with_current<R>(&self, f: impl FnOnce(&Token) -> R) -> Option<R> {
        thread_copy::with_valid_token(&self.shared, |token| token.map(|t| f(t)))
    }

    /// A valid token: the current one at once if there is one; otherwise the
    /// next one the manager publishes, waiting at most the manager's wait
    /// timeout. Callers waiting together share one fetch.
    ///
    /// It never returns an expired token. Unlike [`current`](Self::current),
    /// it checks expiry on the clock on every call, so after a suspend (or
    /// a starved driver) it waits for the refresh rather than trusting this
    /// thread's copy of the token.
    ///
    /// # Errors
    ///
    /// [`Error::Source`] at once when there is no valid token and the latest
    /// fetch failed with a permanent error (bad credentials: waiting would
    /// not help); [`Error::Timeout`] with the last source error when no
    /// token came in time; [`Error::Stopped`] when the manager stopped.
    pub async fn token(&self) -> Result<Arc<Token>, Error> {
        if self.shared.is_stopped() {
            return Err(Error::Stopped);
        }
        if let Some(token) = thread_copy::with_checked_token(&self.shared, |t| t.cloned()) {
            return Ok(token);
        }
        let deadline_ms = self.wait_deadline_ms();
        // The manager may not have noticed yet that the token expired (after
        // a suspend, say); a nudge makes it look at the clock, and at this
        // caller's deadline, now.
        self.shared.register_wait(deadline_ms);
        self.shared.nudge();
        self.wait_for(None, deadline_ms).await
    }

    /// The headers of a request of `method` to `url` with a valid token,
    /// got as [`token`](Self::token) gets it (waiting when there is none).
    ///
    /// For a DPoP-bound token (its `token_type` is `DPoP`, from an endpoint
    /// with [`dpop`](crate::oauth2::TokenEndpointBuilder::dpop)):
    /// `Authorization: DPoP <token>` and a new `DPoP` proof for this
    /// method and URL, with `ath` (the token's hash), `iat` on the
    /// manager's clock, and the nonce the URL's origin gave last
    /// ([`remember_dpop_nonce`](Self::remember_dpop_nonce)). For any other
    /// token: `Authorization: Bearer <token>` alone. A proof costs one
    /// signature (see BENCHMARKS.md): make one for every request, never
    /// reuse one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
    ///
    /// let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(3600));
    /// let (handle, driver) = TokenManager::builder(source).build();
    /// futures_lite::future::block_on(futures_lite::future::or(driver, async move {
    ///     let headers = handle.authorization("GET", "https://api.example.com/orders").await.unwrap();
    ///     assert_eq!(headers.authorization(), "Bearer t");
    ///     assert_eq!(headers.dpop(), None); // not DPoP-bound: no proof
    ///     handle.shutdown().await;
    /// }));
    /// ```
    ///
    /// A resource server that answers `401` with `WWW-Authenticate: DPoP
    /// error="use_dpop_nonce"` and a `DPoP-Nonce` header: remember the
    /// nonce, then ask again for the headers of the retry (the middleware
    /// does this once per request).
    ///
    /// ```no_run
    /// # async fn send(_: &tokenkeeper::Authorization) -> (u16, Option<String>) { unimplemented!() }
    /// # async fn run(handle: tokenkeeper::TokenHandle) -> Result<(), tokenkeeper::Error> {
    /// let url = "https://api.example.com/orders";
    /// let mut headers = handle.authorization("GET", url).await?;
    /// let (status, nonce) = send(&headers).await; // the `DPoP-Nonce` header, if any
    /// if let Some(nonce) = nonce {
    ///     handle.remember_dpop_nonce(url, &nonce)?;
    ///     if status == 401 && headers.is_dpop() {
    ///         headers = handle.authorization("GET", url).await?;
    ///         send(&headers).await;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`token`](Self::token); and, for a DPoP-bound token,
    /// [`Error::Dpop`] when `url` is not an absolute `http(s)` URL, when the
    /// manager's source has no DPoP key
    /// ([`TokenSource::dpop_key`](crate::TokenSource::dpop_key)), or when
    /// the system gives no randomness.
    pub async fn authorization(&self, method: &str, url: &str) -> Result<Authorization, Error> {
        let token = self.token().await?;
        self.authorization_for(token, method, url)
    }

    /// The headers of a request of `method` to `url` with `token`, as
    /// [`authorization`](Self::authorization) makes them, for a token in
    /// hand (one [`refresh_rejected`](Self::refresh_rejected) returned).
    /// It does not wait, nor check that the token is still valid.
    ///
    /// # Errors
    ///
    /// [`Error::Dpop`], as [`authorization`](Self::authorization).
    pub fn authorization_for(
        &self,
        token: Arc<Token>,
        method: &str,
        url: &str,
    ) -> Result<Authorization, Error> {
        if !token.token_type().eq_ignore_ascii_case("DPoP") {
            return Ok(Authorization::bearer(token));
        }
        #[cfg(feature = "jwt")]
        {
            let key = self.shared.dpop_key.as_ref().ok_or(DpopError::NoKey)?;
            let htu = crate::oauth2::dpop::htu(url)?;
            let nonce = self
                .shared
                .resource_nonces
                .get(&htu.origin().ascii_serialization());
            let proof = key.proof_at(
                self.shared.clock.now_ms(),
                method,
                htu.as_str(),
                Some(token.access_token()),
                nonce.as_deref(),
            )?;
            Ok(Authorization::bound(token, proof))
        }
        #[cfg(not(feature = "jwt"))]
        {
            let _ = (method, url);
            Err(DpopError::NoKey.into())
        }
    }

    /// Keeps `nonce`, which a resource server sent in a `DPoP-Nonce`
    /// header with its answer to a request to `url`: the proofs of the
    /// next requests to the same origin (scheme, host and port) carry it.
    /// A server may send one with any answer, a `use_dpop_nonce` challenge
    /// or a success; the latest wins.
    ///
    /// # Errors
    ///
    /// [`DpopError::InvalidUrl`] when `url` is not an absolute `http(s)`
    /// URL.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn remember_dpop_nonce(&self, url: &str, nonce: &str) -> Result<(), DpopError> {
        let htu = crate::oauth2::dpop::htu(url)?;
        if !nonce.is_empty() {
            self.shared
                .resource_nonces
                .set(htu.origin().ascii_serialization(), nonce);
        }
        Ok(())
    }

    /// The DPoP key the manager's tokens are bound to, if its source binds
    /// them ([`TokenSource::dpop_key`](crate::TokenSource::dpop_key)).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_key(&self) -> Option<&crate::oauth2::DpopKey> {
        self.shared.dpop_key.as_ref()
    }

    /// The cache key of the manager's source
    /// ([`TokenSource::cache_key`](crate::TokenSource::cache_key)): whom
    /// its tokens are for, as a source that uses them (a token exchange)
    /// keys its own.
    pub(crate) fn source_key(&self) -> Option<crate::cache::CacheKey> {
        self.shared.source_key
    }

    /// When a caller starting to wait now gives up.
    fn wait_deadline_ms(&self) -> u64 {
        let timeout = duration_ms(self.shared.wait_timeout);
        // The coarse clock: a deadline some milliseconds late is no harm.
        self.shared.clock.now_ms_fast().saturating_add(timeout)
    }

    /// Reports that a server rejected `token` (say, with HTTP 401) and returns
    /// a different valid token, checked on the clock as in
    /// [`token`](Self::token): never an expired one.
    ///
    /// Compare-and-invalidate: if `token` is still the current one, the
    /// manager withdraws it and fetches a new one; if it was already
    /// replaced, the replacement is returned at once. A burst of calls for
    /// the same token causes one fetch, and forced fetches are spaced by the
    /// manager's forced-refresh interval.
    ///
    /// # Errors
    ///
    /// As [`token`](Self::token).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::{source, AccessToken, FetchContext, SourceError, TokenManager};
    ///
    /// let mut n = 0;
    /// let source = source::from_fn(move |cx: FetchContext| {
    ///     n += 1;
    ///     let token = cx.token(AccessToken::new(format!("t{n}")), Some(Duration::from_secs(3600)));
    ///     async move { Ok::<_, SourceError>(token) }
    /// });
    /// let (handle, driver) = TokenManager::builder(source).build();
    /// futures_lite::future::block_on(futures_lite::future::or(driver, async move {
    ///     let first = handle.token().await.unwrap();
    ///     let second = handle.refresh_rejected(&first).await.unwrap();
    ///     assert_eq!(second.access_token().secret(), "t2");
    ///     // Already replaced: no new fetch.
    ///     let again = handle.refresh_rejected(&first).await.unwrap();
    ///     assert_eq!(again.access_token().secret(), "t2");
    ///     handle.shutdown().await;
    /// }));
    /// ```
    pub async fn refresh_rejected(&self, token: &Token) -> Result<Arc<Token>, Error> {
        if self.shared.is_stopped() {
            return Err(Error::Stopped);
        }
        let deadline_ms = self.wait_deadline_ms();
        let version = match self.shared.published(token) {
            Published::This(version) => version,
            Published::Other(replacement) => return Ok(replacement),
            // Withdrawn, or expired and being replaced: no report needed,
            // the replacement is on its way.
            Published::Neither => return self.wait_for(Some(token), deadline_ms).await,
        };
        // Both recorded before the nudge, which makes the actor read them.
        // The report is state: it stands even if this call is dropped right
        // after, and a thousand reports of one token wake the actor once.
        self.shared.register_wait(deadline_ms);
        self.shared.report_rejection(version);
        self.shared.nudge();
        self.wait_for(Some(token), deadline_ms).await
    }

    /// Waits for a valid token other than `not`, until `deadline_ms`; valid
    /// as checked on the clock.
    ///
    /// The actor's timer ends the wait at the deadline (see
    /// `Shared::register_wait`): arming a timer per waiting caller would
    /// cost the reactor a wake-up each. Until the driver has started,
    /// nothing else keeps time, so the caller arms its own.
    async fn wait_for(&self, not: Option<&Token>, deadline_ms: u64) -> Result<Arc<Token>, Error> {
        let shared = &self.shared;
        let wanted = || {
            thread_copy::with_checked_token(shared, |token| {
                token.filter(|t| not.is_none_or(|n| ***t != *n)).cloned()
            })
        };
        let timed_out = || Error::Timeout {
            waited: shared.wait_timeout,
            last_error: shared.state().last_error,
        };
        let mut own_timer =
            (!shared.is_driven()).then(|| shared.clock.sleep_until(from_ms(deadline_ms)));
        // Callers looked for a token just before, so the first turn starts
        // by listening.
        loop {
            // Listen first: a publish, or the actor forgetting the recorded
            // deadlines, after `listen` wakes this listener.
            let listener = shared.changed.listen();
            if shared.register_wait(deadline_ms) {
                self.shared.nudge();
            }
            if let Some(token) = wanted() {
                return Ok(token);
            }
            if let Some(error) = self.no_token_reason() {
                return Err(error);
            }
            if shared.clock.now_ms_fast() >= deadline_ms {
                return Err(timed_out());
            }
            match &mut own_timer {
                None => listener.await,
                Some(timer) => {
                    let fired = future::or(
                        async {
                            listener.await;
                            false
                        },
                        async {
                            timer.await;
                            true
                        },
                    )
                    .await;
                    if fired {
                        return Err(timed_out());
                    }
                }
            }
            // The usual way out, without a new listener.
            if let Some(token) = wanted() {
                return Ok(token);
            }
        }
    }

    /// Why waiting for a token is pointless, if it is.
    fn no_token_reason(&self) -> Option<Error> {
        if self.shared.is_stopped() {
            return Some(Error::Stopped);
        }
        self.shared.permanent_failure().map(Error::Source)
    }

    /// A stream of tokens: the current one (if valid), then each new one.
    /// See [`Subscription`].
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(Arc::clone(&self.shared))
    }

    /// Calls `f` on each token as [`subscribe`](Self::subscribe) yields it
    /// (the current one if valid, then each new one), waiting for each
    /// call's future before the next, until the manager stops.
    ///
    /// Nothing runs until you spawn or await the returned future, on any
    /// executor; drop it to stop watching. Like a subscription, it does not
    /// keep the manager alive. A callback slower than the refreshes skips
    /// to the newest token.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
    ///
    /// let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(3600));
    /// let (handle, driver) = TokenManager::builder(source).build();
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&seen);
    /// let watch = handle.watch(move |token| {
    ///     log.lock().unwrap().push(token.access_token().secret().to_owned());
    ///     async {}
    /// });
    /// futures_lite::future::block_on(async {
    ///     let watcher = async {
    ///         watch.await;
    ///         assert_eq!(*seen.lock().unwrap(), ["t"]);
    ///     };
    ///     futures_lite::future::zip(driver, futures_lite::future::zip(watcher, async {
    ///         handle.token().await.unwrap();
    ///         handle.shutdown().await;
    ///     }))
    ///     .await;
    /// });
    /// ```
    pub fn watch<F, Fut>(&self, mut f: F) -> impl Future<Output = ()>
    where
        F: FnMut(Arc<Token>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut tokens = self.subscribe();
        async move {
            while let Some(token) = tokens.next().await {
                f(token).await;
            }
        }
    }

    /// A stream of what the manager does (token published, fetch failed,
    /// token withdrawn, manager stopped), for metrics and health checks.
    /// See [`Events`].
    pub fn events(&self) -> Events {
        Events::new(Arc::clone(&self.shared))
    }

    /// A snapshot of the manager's state: last success and error, failures,
    /// next refresh, counters.
    pub fn state(&self) -> ManagerState {
        self.shared.state()
    }

    /// Whether the manager has stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    /// Stops the manager (for every handle) and waits until it has stopped.
    /// Waiting callers get [`Error::Stopped`]; subscriptions end.
    ///
    /// If the driver is not running, this returns once the driver is dropped.
    pub async fn shutdown(&self) {
        self.shared.close();
        loop {
            if self.shared.is_stopped() {
                return;
            }
            let listener = self.shared.changed.listen();
            if self.shared.is_stopped() {
                return;
            }
            listener.await;
        }
    }
}
