//! Places a token can be kept between fetches: memory, a file, Redis.
//!
//! A [`TokenCache`] reads and writes one token, and may offer a refresh
//! lease: an exclusive right, across every process sharing the cache, to
//! ask the authority for the next token. Caches are put in front of a
//! source with a [`Chain`], which reads them in order,
//! writes a token found further down back to the earlier ones, and takes the
//! lease before calling the authority, so a fleet sharing a cache makes about
//! one authority request per token lifetime.
//!
//! Every entry records whom it is for, a [`CacheKey`]: a read with another
//! key is a miss, so clients that share a cache never serve each other's
//! token.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tokenkeeper::cache::{CacheKey, MemoryCache, TokenCache};
//! use tokenkeeper::{AccessToken, LifetimePolicy, Token};
//!
//! futures_lite::future::block_on(async {
//!     let cache = MemoryCache::new();
//!     let key = CacheKey::builder().field("client_id", "svc").build();
//!     assert!(cache.read(key).await.unwrap().is_none());
//!     let token = Token::new(AccessToken::new("t"), SystemTime::now(), Duration::from_secs(60), &LifetimePolicy::default());
//!     cache.write(key, &token).await.unwrap();
//!     assert_eq!(cache.read(key).await.unwrap(), Some(token));
//!     assert!(cache.read(CacheKey::unkeyed()).await.unwrap().is_none());
//! });
//! ```

mod chain;
mod entry;
mod file;
mod key;
mod memory;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod trust;

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
pub use self::redis::RedisCache;
pub use chain::Chain;
pub use file::FileCache;
pub use key::{CacheKey, CacheKeyBuilder};
pub use memory::MemoryCache;

use crate::token::Token;
use crate::BoxFuture;

/// A place a token can be read from and written to.
///
/// Implementations must be safe to share between tasks; every method may be
/// called while another is in flight on another handle.
///
/// A cache keeps the [`CacheKey`] a token was written with and gives the
/// token back only to a read with the same key: an entry for another key is
/// a miss (worth a debug log, once, not one per read), and the next write
/// replaces it. The key is a small `Copy` value, passed by value so that a
/// cache can move it into a blocking task or a command without borrowing.
pub trait TokenCache: Send + Sync + 'static {
    /// Reads the token cached for `key`; `Ok(None)` is a miss. A corrupt
    /// entry, or one for another key, is a miss too, reported by the cache
    /// itself.
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>>;

    /// Replaces the cached entry (whatever its key) with `token` for `key`.
    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Tries to take the refresh lease for at most `ttl`: `Ok(Some(lease))`
    /// when taken, `Ok(None)` when someone else holds it. Caches that cannot
    /// coordinate return `Ok(Some)` always (the default), which makes the
    /// lease a no-op.
    fn try_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        let _ = ttl;
        Box::pin(async { Ok(Some(Lease::none())) })
    }

    /// Whether [`try_lease`](Self::try_lease) coordinates anything.
    fn has_lease(&self) -> bool {
        false
    }

    /// A notice of the next token written to this cache by any process,
    /// where the cache can give one (a `RedisCache` does, through pub/sub);
    /// `None` (the default) where it cannot, or cannot right now.
    ///
    /// The [`Chain`] asks for it before it tries to take the lease, and while
    /// another process holds the lease it waits for the notice instead of
    /// reading the cache every [`lease_poll`](Chain::lease_poll), so the
    /// reads of a fleet's waiters do not grow with how long the holder takes.
    /// The future must notice writes made from the moment this method
    /// returns, not only from its first poll (or a write that lands between
    /// this call and the wait is missed). It resolves to the token written
    /// for `key` when the notice carries it (then the chain does not read
    /// the cache again), or to `None` when it only says that something was
    /// written (then the chain reads). It may never resolve: the chain
    /// still reads the cache now and then, more slowly.
    ///
    /// ```
    /// use tokenkeeper::cache::{CacheKey, MemoryCache, TokenCache};
    ///
    /// // A memory cache gives no notices: the chain polls it.
    /// assert!(MemoryCache::new().next_write(CacheKey::unkeyed()).is_none());
    /// ```
    fn next_write(&self, key: CacheKey) -> Option<BoxFuture<'static, Option<Token>>> {
        let _ = key;
        None
    }

    /// A short description for logs, without secrets (say, `file
    /// /var/cache/app/token.json`).
    fn describe(&self) -> String;
}

impl<C: TokenCache + ?Sized> TokenCache for Arc<C> {
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        (**self).read(key)
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        (**self).write(key, token)
    }

    fn try_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        (**self).try_lease(ttl)
    }

    fn has_lease(&self) -> bool {
        (**self).has_lease()
    }

    fn next_write(&self, key: CacheKey) -> Option<BoxFuture<'static, Option<Token>>> {
        (**self).next_write(key)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Parses the bytes of a file-cache or Redis entry into its key and token,
/// checking the format only (not the key, not the time). Not part of the
/// API: it exists for the fuzz targets (`fuzz/`) and this crate's tests
/// (feature `test-support`), and may change at any time.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub fn decode_entry(bytes: &[u8]) -> Result<(CacheKey, Token), CacheError> {
    entry::decode(bytes)
}

/// A held refresh lease. [`release`](Lease::release) gives it back; a lease
/// that is dropped instead is given back as well as the cache can without
/// waiting (a file lock is unlocked; a Redis lease runs out by its TTL).
pub struct Lease {
    release: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("held", &self.release.is_some())
            .finish()
    }
}

impl Lease {
    /// A lease that runs `release` when given back.
    ///
    /// ```
    /// use tokenkeeper::cache::Lease;
    /// let lease = Lease::new(|| Box::pin(async { /* unlock */ }));
    /// futures_lite::future::block_on(lease.release());
    /// ```
    pub fn new(release: impl FnOnce() -> BoxFuture<'static, ()> + Send + 'static) -> Lease {
        Lease {
            release: Some(Box::new(release)),
        }
    }

    /// A lease that coordinates nothing.
    pub fn none() -> Lease {
        Lease { release: None }
    }

    /// Gives the lease back.
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            release().await;
        }
    }
}

/// A cache that failed: unreachable, unwritable, or refusing a request.
///
/// A message and, through [`source`](StdError::source), the underlying
/// error. It is not a [`SourceError`](crate::SourceError): a cache's
/// failure never fails a fetch, so it carries no [`ErrorKind`](crate::ErrorKind)
/// or retry hint; the [`Chain`] logs it and skips the cache for a
/// cool-down. Nor is it an [`HttpError`](crate::oauth2::HttpError), whose
/// kind names what failed in an HTTP exchange.
///
/// ```
/// let e = tokenkeeper::cache::CacheError::new("redis: connection refused");
/// assert_eq!(e.to_string(), "redis: connection refused");
/// ```
#[derive(Debug)]
pub struct CacheError {
    message: String,
    cause: Option<Box<dyn StdError + Send + Sync>>,
}

impl CacheError {
    /// An error described by `message`.
    pub fn new(message: impl Into<String>) -> CacheError {
        CacheError {
            message: message.into(),
            cause: None,
        }
    }

    /// Adds the underlying error.
    pub fn with_cause(mut self, cause: impl StdError + Send + Sync + 'static) -> CacheError {
        self.cause = Some(Box::new(cause));
        self
    }
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CacheError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}
