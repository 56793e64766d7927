use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cache::entry::OtherKeyNotice;
use crate::cache::{CacheError, CacheKey, Lease, TokenCache};
use crate::token::Token;
use crate::BoxFuture;

/// A cache in memory. Clones share the token and the lease, so managers in
/// one process can cooperate through it (and tests can model a fleet).
///
/// It holds one token and the [`CacheKey`] it was written with; a read with
/// another key is a miss (logged once at debug level) and a write replaces
/// it, so two chains for different clients sharing it never get each
/// other's token.
///
/// The lease expires after its TTL on the monotonic clock, as a Redis lease
/// would.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::cache::{MemoryCache, TokenCache};
///
/// futures_lite::future::block_on(async {
///     let cache = MemoryCache::new();
///     let lease = cache.try_lease(Duration::from_secs(5)).await.unwrap().unwrap();
///     assert!(cache.clone().try_lease(Duration::from_secs(5)).await.unwrap().is_none());
///     lease.release().await;
///     assert!(cache.try_lease(Duration::from_secs(5)).await.unwrap().is_some());
/// });
/// ```
#[derive(Clone, Default)]
pub struct MemoryCache {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Default)]
struct MemoryInner {
    entry: Option<(CacheKey, Token)>,
    other_key: OtherKeyNotice,
    /// The holder's number and when its lease runs out.
    lease: Option<(u64, Instant)>,
    next_lease: u64,
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("MemoryCache")
            .field("token", &inner.entry.as_ref().map(|(_, t)| t))
            .field("leased", &inner.lease.is_some())
            .finish()
    }
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> MemoryCache {
        MemoryCache::default()
    }
}

impl TokenCache for MemoryCache {
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let token = match &inner.entry {
            Some((stored, token)) if *stored == key => {
                inner.other_key.clear();
                Some(token.clone())
            }
            Some(_) => {
                inner.other_key.found(|| "the memory cache".to_owned());
                None
            }
            None => None,
        };
        Box::pin(async move { Ok(token) })
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry = Some((key, token.clone()));
        Box::pin(async { Ok(()) })
    }

    fn try_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let lease = match inner.lease {
            Some((_, until)) if until > now => None,
            _ => {
                let id = inner.next_lease;
                inner.next_lease += 1;
                inner.lease = Some((
                    id,
                    now.checked_add(ttl)
                        .unwrap_or(now + Duration::from_secs(86_400 * 365)),
                ));
                let shared = Arc::clone(&self.inner);
                Some(Lease::new(move || {
                    let mut inner = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    // Only the holder may give it back, not a late one whose
                    // lease ran out and was taken by someone else.
                    if inner.lease.is_some_and(|(held, _)| held == id) {
                        inner.lease = None;
                    }
                    Box::pin(async {})
                }))
            }
        };
        Box::pin(async move { Ok(lease) })
    }

    fn has_lease(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
