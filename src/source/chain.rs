use std::fmt;
use std::time::Duration;

use crate::cache::{CacheKey, Lease, TokenCache};
use crate::clock::BoxFuture;
use crate::error::SourceError;
use crate::source::{FetchContext, TokenSource};
use crate::token::{duration_ms, Token};

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
/// jittered time and reads the cache again. A failing cache is logged and
/// skipped, never fatal.
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
/// use tokenkeeper::cache::MemoryCache;
/// use tokenkeeper::source::Chain;
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
    min_validity: Duration,
    lease_ttl: Duration,
    lease_poll: Duration,
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
                min_validity: Duration::from_secs(60),
                lease_ttl: Duration::from_secs(30),
                lease_poll: Duration::from_millis(200),
            },
            source: Box::new(source),
        }
    }

    /// Adds a cache after the ones already added.
    pub fn cache(mut self, cache: impl TokenCache) -> Self {
        self.links.caches.push(Box::new(cache));
        self
    }

    /// Sets the key tokens are cached under, for a source that has none
    /// (or to override the source's own): give each client, grant and
    /// scope its own key.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::cache::{CacheKey, MemoryCache};
    /// use tokenkeeper::source::Chain;
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
    /// a half times this). 200 ms by default.
    pub fn lease_poll(mut self, poll: Duration) -> Self {
        self.links.lease_poll = poll;
        self
    }
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

    async fn read(&self, index: usize) -> Option<Token> {
        let cache = &self.caches[index];
        match cache.read(self.key()).await {
            Ok(token) => token,
            Err(e) => {
                log::warn!(target: LOG, "reading the token cache ({}) failed: {e}", cache.describe());
                None
            }
        }
    }

    async fn write_to(&self, caches: &[Box<dyn TokenCache>], token: &Token) {
        for cache in caches {
            if let Err(e) = cache.write(self.key(), token).await {
                log::warn!(target: LOG, "writing the token cache ({}) failed: {e}", cache.describe());
            }
        }
    }

    async fn fetch(
        &self,
        source: &mut dyn TokenSource,
        cx: FetchContext,
    ) -> Result<Token, SourceError> {
        for index in 0..self.caches.len() {
            if let Some(token) = self.read(index).await.filter(|t| self.usable(t, &cx)) {
                log::debug!(target: LOG, "token found in cache {}", self.caches[index].describe());
                self.write_to(&self.caches[..index], &token).await;
                cx.record_cache_hit();
                return Ok(token);
            }
        }
        // The last cache with a lease is the most widely shared one.
        if !self.caches.is_empty() {
            log::debug!(target: LOG, "cache miss: no usable token in {} cache(s)", self.caches.len());
        }
        let Some(leased) = self.caches.iter().rposition(|c| c.has_lease()) else {
            return self.fetch_and_store(source, cx, None).await;
        };
        loop {
            let attempt = self.caches[leased].try_lease(self.lease_ttl).await;
            match attempt {
                Ok(Some(lease)) => {
                    log::debug!(target: LOG, "took the refresh lease ({})", self.caches[leased].describe());
                    // Someone may have refreshed between our read and the lease.
                    let latest = self.read(leased).await;
                    if let Some(token) = latest.as_ref().filter(|t| self.usable(t, &cx)) {
                        log::debug!(target: LOG, "token refreshed by another process");
                        self.write_to(&self.caches[..leased], token).await;
                        lease.release().await;
                        cx.record_cache_hit();
                        return Ok(token.clone());
                    }
                    // An unusable cached token may still carry the newest
                    // refresh token (rotated by the last lease holder).
                    let newer = latest
                        .filter(|t| cx.current().is_none_or(|c| t.issued_ms() > c.issued_ms()));
                    let cx = match newer {
                        Some(token) => cx.with_current(token),
                        None => cx,
                    };
                    return self.fetch_and_store(source, cx, Some(lease)).await;
                }
                Ok(None) => {
                    log::debug!(target: LOG, "another process holds the refresh lease; waiting");
                    let poll = duration_ms(self.lease_poll);
                    let wait = fastrand::u64(poll / 2..=poll.saturating_add(poll / 2));
                    let clock = cx.clock().clone();
                    clock.sleep_until(clock.now_ms().saturating_add(wait)).await;
                    if let Some(token) = self.read(leased).await.filter(|t| self.usable(t, &cx)) {
                        self.write_to(&self.caches[..leased], &token).await;
                        cx.record_cache_hit();
                        return Ok(token);
                    }
                }
                Err(e) => {
                    log::warn!(
                        target: LOG,
                        "taking the refresh lease ({}) failed: {e}; fetching without it",
                        self.caches[leased].describe()
                    );
                    return self.fetch_and_store(source, cx, None).await;
                }
            }
        }
    }

    async fn fetch_and_store(
        &self,
        source: &mut dyn TokenSource,
        cx: FetchContext,
        lease: Option<Lease>,
    ) -> Result<Token, SourceError> {
        let result = source.fetch(cx).await;
        if let Ok(token) = &result {
            // Persist before the lease goes: a rotated refresh token must
            // reach the next holder.
            self.write_to(&self.caches, token).await;
        }
        if let Some(lease) = lease {
            lease.release().await;
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
}
