mod health;

use std::fmt;
use std::time::Duration;

use futures_lite::future;

use crate::cache::{CacheError, CacheKey, Lease, TokenCache};
use crate::error::SourceError;
use crate::source::{FetchContext, TokenSource};
use crate::time::{duration_ms, from_ms};
use crate::token::Token;
use crate::BoxFuture;
use health::Health;

const LOG: &str = "tokenkeeper::cache";

/// Caches in front of a source: the chain of [the design](crate::cache).
///
/// A fetch reads the caches in order and takes the first token that is
/// newer than the manager's current one and valid for at least the minimum
/// validity (by default 60 s, but never more than half the token's
/// lifetime); it writes that token back to the caches before it. Without
/// one, it takes the refresh lease of the last cache that has one (the most
/// widely shared, as caches go from near to far), reads
/// that cache again (another process may have just refreshed), and only then
/// asks the source, writing the new token to every cache before giving the
/// lease back. While another process holds the lease, it waits a short,
/// jittered time ([`lease_poll`](Self::lease_poll)) and reads the cache
/// again; where the cache tells of writes
/// ([`TokenCache::next_write`], as Redis does through pub/sub) it waits for
/// that notice instead and reads only every two to four polls, as a
/// fallback, so the reads of many waiting processes do not add up at every
/// refresh.
///
/// # A lease is an optimisation, never a dependency
///
/// A neighbour that holds the lease and never lets go (hung, stopped with
/// SIGSTOP, or a plain `flock` on the lock file) costs cooperation, never
/// the token:
///
/// - The lease is waited for at most [`lease_wait`](Self::lease_wait), **2 s
///   by default**; then the chain asks the source itself, without the lease,
///   and logs that (info, target `tokenkeeper::cache`).
/// - Every cache operation (read, write, taking and giving back the lease)
///   has a deadline, [`cache_timeout`](Self::cache_timeout), **1 s by
///   default**, but never more than half the time the fetch has left. A
///   cache that misses it is skipped for the rest of the fetch: a read is a
///   miss, a write is dropped, a lease counts as not available.
/// - A cache that failed or missed a deadline is left alone for a cool-down,
///   [`cache_cooldown`](Self::cache_cooldown), **30 s by default**, doubled
///   after each failed try that follows one (up to 8 times), instead of being
///   asked again on every refresh. Its going and coming back are each logged
///   once (a warning, then info).
/// - Before the source is asked, the caches and the lease wait take at most
///   half the time the manager gives a fetch (its
///   [request timeout](crate::TokenManagerBuilder::request_timeout)), so the
///   source always gets the other half: with the CLI's 5 s request timeout,
///   a run whose lock file another process holds forever prints a token
///   after the 2 s lease wait and one exchange.
///
/// A lease that was taken is always given back: when its cache is cooling
/// down or does not answer in time, the lease is dropped, which unlocks a
/// file lock at once and lets a Redis lease run out by its TTL.
///
/// Tokens are cached under the source's [`CacheKey`]
/// ([`TokenSource::cache_key`], or one set with
/// [`cache_key`](Chain::cache_key)): a cached token written under another
/// key is a miss, so chains for different clients, grants or scopes may
/// share a cache. Without either, the chain uses [`CacheKey::unkeyed`]: it
/// reads only what other chains without a key wrote.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::cache::{Chain, MemoryCache};
/// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
///
/// let shared = MemoryCache::new();
/// let chain = Chain::new(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60)))
///     .cache(shared.clone())
///     .min_validity(Duration::from_secs(30));
/// let (handle, driver) = TokenManager::builder(chain).build();
/// # drop((handle, driver));
/// ```
pub struct Chain {
    links: Links,
    source: Box<dyn TokenSource>,
}

/// The caches and their settings: everything but the source, so it can be
/// shared across awaits while the source is borrowed mutably.
struct Links {
    caches: Vec<Box<dyn TokenCache>>,
    /// The source's key, or the one set by hand.
    key: Option<CacheKey>,
    /// How each of `caches` has been doing, by the same index.
    health: Vec<Health>,
    min_validity: Duration,
    lease_ttl: Duration,
    lease_poll: Duration,
    lease_wait: Duration,
    cache_timeout: Duration,
    cache_cooldown: Duration,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let links = &self.links;
        let caches: Vec<String> = links.caches.iter().map(|c| c.describe()).collect();
        f.debug_struct("Chain")
            .field("caches", &caches)
            .field("min_validity", &links.min_validity)
            .field("lease_ttl", &links.lease_ttl)
            .field("lease_poll", &links.lease_poll)
            .field("lease_wait", &links.lease_wait)
            .field("cache_timeout", &links.cache_timeout)
            .field("cache_cooldown", &links.cache_cooldown)
            .finish()
    }
}

impl Chain {
    /// A chain with no caches yet in front of `source`.
    pub fn new(source: impl TokenSource) -> Chain {
        Chain {
            links: Links {
                caches: Vec::new(),
                key: source.cache_key(),
                health: Vec::new(),
                min_validity: Duration::from_secs(60),
                lease_ttl: Duration::from_secs(30),
                lease_poll: Duration::from_millis(200),
                lease_wait: Duration::from_secs(2),
                cache_timeout: Duration::from_secs(1),
                cache_cooldown: Duration::from_secs(30),
            },
            source: Box::new(source),
        }
    }

    /// Adds a cache after the ones already added.
    pub fn cache(mut self, cache: impl TokenCache) -> Self {
        self.links.caches.push(Box::new(cache));
        self.links.health.push(Health::default());
        self
    }

    /// Sets the key tokens are cached under, for a source that has none
    /// (or to override the source's own): give each client, grant and
    /// scope its own key.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::cache::{CacheKey, Chain, MemoryCache};
    /// use tokenkeeper::{AccessToken, FixedSource};
    ///
    /// let key = CacheKey::builder().field("api_key_name", "billing").build();
    /// let chain = Chain::new(FixedSource::new(AccessToken::new("k"), Duration::from_secs(3600)))
    ///     .cache(MemoryCache::new())
    ///     .cache_key(key);
    /// # drop(chain);
    /// ```
    pub fn cache_key(mut self, key: CacheKey) -> Self {
        self.links.key = Some(key);
        self
    }

    /// How long a cached token must still be valid to be used; capped at
    /// half the token's lifetime so short-lived tokens are usable. 60 s by
    /// default.
    pub fn min_validity(mut self, min_validity: Duration) -> Self {
        self.links.min_validity = min_validity;
        self
    }

    /// How long a lease lasts if its holder never gives it back (where the
    /// cache enforces it, as Redis does). 30 s by default: longer than a
    /// request may take.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.links.lease_ttl = ttl;
        self
    }

    /// About how long to wait before reading the cache again while another
    /// process holds the lease (each wait is drawn between half and one and
    /// a half times this). 200 ms by default. A cache that gives notices of
    /// writes ([`TokenCache::next_write`]) is read between two and four
    /// times this apart instead, as the notice comes first.
    pub fn lease_poll(mut self, poll: Duration) -> Self {
        self.links.lease_poll = poll;
        self
    }

    /// The longest a fetch waits for a lease that another process holds
    /// before it asks the source without it. 2 s by default: some ten looks
    /// at the cache at the default [`lease_poll`](Self::lease_poll), more
    /// than a healthy holder's exchange takes (tens to hundreds of ms), yet
    /// short enough that a holder that never lets go costs one short delay,
    /// and well inside a 5 s request timeout. The wait is also cut to half
    /// the time the fetch has left (see [`Chain`]), and runs on the
    /// manager's clock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::cache::{Chain, FileCache};
    /// use tokenkeeper::{AccessToken, FixedSource};
    ///
    /// let chain = Chain::new(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60)))
    ///     .cache(FileCache::new("/tmp/tokenkeeper-doc/token.json"))
    ///     .lease_wait(Duration::from_millis(500));
    /// # drop(chain);
    /// ```
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.links.lease_wait = wait;
        self
    }

    /// The deadline of each cache operation: a read, a write, taking or
    /// giving back the lease. 1 s by default: a file or a Redis server
    /// nearby answers in well under 10 ms, so a cache that takes a second is
    /// stalled rather than slow, and a second is what one stalled cache costs
    /// a fetch before it is skipped for its [cool-down](Self::cache_cooldown).
    /// It is shorter than a `RedisCache`'s own 2 s operation timeout, so the
    /// chain notices first (keep it so).
    ///
    /// An operation never gets more than half the time its fetch has left
    /// before the manager's request timeout, so a write after the source
    /// answered never runs into that timeout and loses the token.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::cache::{Chain, MemoryCache};
    /// use tokenkeeper::{AccessToken, FixedSource};
    ///
    /// let chain = Chain::new(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60)))
    ///     .cache(MemoryCache::new())
    ///     .cache_timeout(Duration::from_millis(250));
    /// # drop(chain);
    /// ```
    pub fn cache_timeout(mut self, timeout: Duration) -> Self {
        self.links.cache_timeout = timeout;
        self
    }

    /// How long a cache that failed or missed its deadline is left alone
    /// (reads are misses, writes and its lease are skipped) before it is
    /// tried again; each failed try after a cool-down doubles it, up to 8
    /// times this. 30 s by default: a stalled cache then costs at most one
    /// [cache timeout](Self::cache_timeout) every 30 s or more.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::cache::{Chain, MemoryCache};
    /// use tokenkeeper::{AccessToken, FixedSource};
    ///
    /// let chain = Chain::new(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60)))
    ///     .cache(MemoryCache::new())
    ///     .cache_cooldown(Duration::from_secs(60));
    /// # drop(chain);
    /// ```
    pub fn cache_cooldown(mut self, cooldown: Duration) -> Self {
        self.links.cache_cooldown = cooldown;
        self
    }
}

/// What waiting for a refresh lease came to.
enum LeaseWait {
    Taken(Lease),
    /// Another process refreshed meanwhile: its token, from the cache.
    Found(Token),
    /// No lease: held by another process past the wait, or the cache failed.
    Without,
}

impl Links {
    /// Whether `token` may be used instead of a fetch.
    fn usable(&self, token: &Token, cx: &FetchContext) -> bool {
        let now = cx.now_ms();
        let lifetime = token.expiry_ms().saturating_sub(token.issued_ms());
        let needed = duration_ms(self.min_validity).min(lifetime / 2);
        let newer = cx
            .current()
            .is_none_or(|current| token.issued_ms() > current.issued_ms());
        newer && token.expiry_ms().saturating_sub(now) >= needed.max(1)
    }

    fn key(&self) -> CacheKey {
        self.key.unwrap_or_else(CacheKey::unkeyed)
    }

    /// Runs one operation `op` (named for logs) on cache `index`, bounded
    /// by its own deadline (the cache timeout, but never more than half the
    /// time the fetch has left) and by `until_ms`. `None` when the cache is
    /// cooling down (it is not called, and `call` is dropped), failed, or
    /// did not answer in time; failures and missed own deadlines are logged
    /// and start a cool-down, while an operation cut short by `until_ms`
    /// only ends.
    async fn guarded<'a, T>(
        &'a self,
        index: usize,
        op: &str,
        until_ms: u64,
        cx: &FetchContext,
        call: impl FnOnce(&'a dyn TokenCache) -> BoxFuture<'a, Result<T, CacheError>>,
    ) -> Option<T> {
        let cache = &*self.caches[index];
        let health = &self.health[index];
        let now = cx.now_ms();
        if health.cooling(now) {
            log::trace!(target: LOG, "{op}: skipped, cache {} is cooling down", cache.describe());
            return None;
        }
        let left = cx.deadline_ms().map_or(u64::MAX, |d| d.saturating_sub(now));
        let own_deadline = now.saturating_add(duration_ms(self.cache_timeout).min(left / 2));
        let deadline = own_deadline.min(until_ms);
        if deadline <= now {
            log::debug!(target: LOG, "{op}: skipped, no time left for cache {}", cache.describe());
            return None;
        }
        let clock = cx.clock().clone();
        let answer = future::or(async { Some(call(cache).await) }, async move {
            clock.sleep_until(from_ms(deadline)).await;
            None
        })
        .await;
        let failure = match answer {
            Some(Ok(value)) => {
                if health.answered() {
                    log::info!(target: LOG, "token cache {} answers again", cache.describe());
                }
                return Some(value);
            }
            Some(Err(e)) => format!("{op} failed: {e}"),
            None if deadline == own_deadline => format!(
                "{op}: no answer within {:?}",
                Duration::from_millis(deadline - now)
            ),
            None => {
                // The fetch's own time ran out, not the cache's.
                log::debug!(target: LOG, "{op}: cut short, cache {} had no time left", cache.describe());
                return None;
            }
        };
        let cool_down = health.failed(cx.now_ms(), self.cache_cooldown);
        if cool_down.first {
            log::warn!(
                target: LOG,
                "token cache {}: {failure}; skipping it for {:?}",
                cache.describe(),
                cool_down.length
            );
        } else {
            log::debug!(
                target: LOG,
                "token cache {} still failing ({failure}); skipping it for {:?}",
                cache.describe(),
                cool_down.length
            );
        }
        None
    }

    async fn read(&self, index: usize, until_ms: u64, cx: &FetchContext) -> Option<Token> {
        let key = self.key();
        self.guarded(index, "read", until_ms, cx, |c| c.read(key))
            .await
            .flatten()
    }

    async fn write_to(
        &self,
        caches: std::ops::Range<usize>,
        token: &Token,
        until_ms: u64,
        cx: &FetchContext,
    ) {
        let key = self.key();
        for index in caches {
            self.guarded(index, "write", until_ms, cx, |c| c.write(key, token))
                .await;
        }
    }

    /// Gives `lease` back to cache `index`. Never skipped in a way that
    /// keeps it: when the cache is cooling down or out of time, the lease
    /// is dropped, which unlocks a file lock at once (a Redis lease runs
    /// out by its TTL).
    async fn give_back(&self, index: usize, lease: Lease, until_ms: u64, cx: &FetchContext) {
        let release = move |_: &dyn TokenCache| -> BoxFuture<'_, Result<(), CacheError>> {
            Box::pin(async move {
                lease.release().await;
                Ok(())
            })
        };
        self.guarded(index, "give the lease back", until_ms, cx, release)
            .await;
    }

    async fn fetch(
        &self,
        source: &mut dyn TokenSource,
        cx: FetchContext,
    ) -> Result<Token, SourceError> {
        let start = cx.now_ms();
        let deadline = cx.deadline_ms().unwrap_or(u64::MAX);
        // The caches and the lease get at most half of the fetch's time;
        // the source always gets the rest.
        let prep_end = start.saturating_add(deadline.saturating_sub(start) / 2);
        for index in 0..self.caches.len() {
            let found = self.read(index, prep_end, &cx).await;
            if let Some(token) = found.filter(|t| self.usable(t, &cx)) {
                log::debug!(target: LOG, "token found in cache {}", self.caches[index].describe());
                self.write_to(0..index, &token, deadline, &cx).await;
                cx.record_cache_hit();
                return Ok(token);
            }
        }
        if !self.caches.is_empty() {
            log::debug!(target: LOG, "cache miss: no usable token in {} cache(s)", self.caches.len());
        }
        // The last cache with a lease is the most widely shared one; one
        // that is cooling down cannot give it.
        let now = cx.now_ms();
        let Some(leased) = self
            .caches
            .iter()
            .zip(&self.health)
            .rposition(|(c, h)| c.has_lease() && !h.cooling(now))
        else {
            return self.fetch_and_store(source, cx, None, deadline).await;
        };
        let lease = match self.wait_for_lease(leased, prep_end, &cx).await {
            LeaseWait::Taken(lease) => lease,
            LeaseWait::Found(token) => {
                self.write_to(0..leased, &token, deadline, &cx).await;
                cx.record_cache_hit();
                return Ok(token);
            }
            LeaseWait::Without => return self.fetch_and_store(source, cx, None, deadline).await,
        };
        log::debug!(target: LOG, "took the refresh lease ({})", self.caches[leased].describe());
        // Someone may have refreshed between our read and the lease.
        let latest = self.read(leased, prep_end, &cx).await;
        if let Some(token) = latest.as_ref().filter(|t| self.usable(t, &cx)) {
            log::debug!(target: LOG, "token refreshed by another process");
            self.write_to(0..leased, token, deadline, &cx).await;
            self.give_back(leased, lease, deadline, &cx).await;
            cx.record_cache_hit();
            return Ok(token.clone());
        }
        // An unusable cached token may still carry the newest refresh token
        // (rotated by the last lease holder).
        let newer = latest.filter(|t| cx.current().is_none_or(|c| t.issued_ms() > c.issued_ms()));
        let cx = match newer {
            Some(token) => cx.with_current(token),
            None => cx,
        };
        self.fetch_and_store(source, cx, Some((leased, lease)), deadline)
            .await
    }

    /// Tries to take the lease of cache `leased`; while another process
    /// holds it, waits for the cache's notice of a write, if it gives
    /// them, and reads that cache every [`lease_poll`](Chain::lease_poll)
    /// or so (two to four times that with notices), for at most
    /// [`lease_wait`](Chain::lease_wait) and never past `prep_end`.
    async fn wait_for_lease(&self, leased: usize, prep_end: u64, cx: &FetchContext) -> LeaseWait {
        let describe = || self.caches[leased].describe();
        let started = cx.now_ms();
        let wait_end = started
            .saturating_add(duration_ms(self.lease_wait))
            .min(prep_end);
        let key = self.key();
        let mut first = true;
        loop {
            // Asked for before the lease: a write that lands between the
            // two is then not missed.
            let notice = self.caches[leased].next_write(key);
            let attempt = self
                .guarded(leased, "take the lease", prep_end, cx, |c| {
                    c.try_lease(self.lease_ttl)
                })
                .await;
            let now = cx.now_ms();
            match attempt {
                Some(Some(lease)) => return LeaseWait::Taken(lease),
                // Failed, timed out or cooling down: logged already.
                None => {
                    log::debug!(target: LOG, "no refresh lease from {}; asking the source without it", describe());
                    return LeaseWait::Without;
                }
                Some(None) if now >= wait_end => {
                    log::info!(
                        target: LOG,
                        "refresh lease ({}) held by another process, not obtained within {:?}; \
                         asking the source without it",
                        describe(),
                        Duration::from_millis(now.saturating_sub(started))
                    );
                    return LeaseWait::Without;
                }
                Some(None) if first => {
                    log::debug!(target: LOG, "another process holds the refresh lease ({}); waiting", describe());
                }
                Some(None) => {}
            }
            first = false;
            let poll = duration_ms(self.lease_poll);
            // With notices, a look at the cache is only the fallback for a
            // lost one (or a holder that gave up without writing): seldom,
            // so a fleet's waiters do not read the cache in step.
            let (low, high) = match notice {
                Some(_) => (poll.saturating_mul(2), poll.saturating_mul(4)),
                None => (poll / 2, poll.saturating_add(poll / 2)),
            };
            let pause = fastrand::u64(low..=high);
            let clock = cx.clock().clone();
            let wake = from_ms(now.saturating_add(pause).min(wait_end));
            let noticed = match notice {
                Some(notice) => {
                    future::or(async { Some(notice.await) }, async {
                        clock.sleep_until(wake).await;
                        None
                    })
                    .await
                }
                None => {
                    clock.sleep_until(wake).await;
                    None
                }
            };
            if let Some(token) = noticed.flatten().filter(|t| self.usable(t, cx)) {
                log::debug!(target: LOG, "token written by the lease holder, seen through {}", describe());
                return LeaseWait::Found(token);
            }
            let found = self.read(leased, prep_end, cx).await;
            if let Some(token) = found.filter(|t| self.usable(t, cx)) {
                return LeaseWait::Found(token);
            }
        }
    }

    /// Asks the source, writes its token to every cache, then gives the
    /// lease (of cache `.0`) back.
    async fn fetch_and_store(
        &self,
        source: &mut dyn TokenSource,
        cx: FetchContext,
        lease: Option<(usize, Lease)>,
        deadline: u64,
    ) -> Result<Token, SourceError> {
        let result = source.fetch(cx.clone()).await;
        if let Ok(token) = &result {
            // Persist before the lease goes: a rotated refresh token must
            // reach the next holder.
            self.write_to(0..self.caches.len(), token, deadline, &cx)
                .await;
        }
        if let Some((index, lease)) = lease {
            self.give_back(index, lease, deadline, &cx).await;
        }
        result
    }
}

impl TokenSource for Chain {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        Box::pin(self.links.fetch(&mut *self.source, cx))
    }

    fn coordinates_refreshes(&self) -> bool {
        self.links.caches.iter().any(|c| c.has_lease())
    }

    fn cache_key(&self) -> Option<CacheKey> {
        self.links.key
    }

    #[cfg(feature = "jwt")]
    fn dpop_key(&self) -> Option<crate::oauth2::DpopKey> {
        self.source.dpop_key()
    }
}
