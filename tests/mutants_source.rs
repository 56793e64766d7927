//! Rules of the cache and source traits and of the simple sources that
//! mutation testing (MUTANTS.md) found unchecked: each test here fails with
//! a mutant that the rest of the suite let through.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future::block_on;
use tokenkeeper::cache::{CacheError, CacheKey, FileCache, MemoryCache, TokenCache};
use tokenkeeper::{BoxFuture, Token};

/// A cache with the trait's defaults: no lease of its own.
struct Leaseless;

impl TokenCache for Leaseless {
    fn read(&self, _: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        Box::pin(async { Ok(None) })
    }

    fn write<'a>(&'a self, _: CacheKey, _: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "leaseless".to_owned()
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "tokenkeeper-mutants-source-{name}-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// A cache shared behind an `Arc` (as a `dyn TokenCache` or to keep a
/// handle on it) is the cache itself: its lease, its description, its
/// entries.
#[test]
fn a_cache_behind_an_arc_forwards_everything() {
    let dir = scratch("arc");
    let file = FileCache::new(dir.join("token.json"));
    let shared: Arc<dyn TokenCache> = Arc::new(file.clone());
    assert!(shared.has_lease());
    assert_eq!(shared.describe(), file.describe());
    let memory = MemoryCache::new();
    let shared_memory = Arc::new(memory.clone());
    assert_eq!(shared_memory.has_lease(), memory.has_lease());
    assert_eq!(shared_memory.describe(), memory.describe());
    let leaseless = Arc::new(Leaseless);
    assert!(!leaseless.has_lease());
    assert_eq!(leaseless.describe(), "leaseless");

    let key = CacheKey::builder().field("client_id", "arc").build();
    let token = tokenkeeper::Token::new_ms(
        tokenkeeper::AccessToken::new("through-the-arc"),
        1_000,
        Duration::from_secs(60),
        &tokenkeeper::LifetimePolicy::default(),
    );
    block_on(async {
        shared.write(key, &token).await.unwrap();
        assert_eq!(file.read(key).await.unwrap(), Some(token.clone()));
        let lease = shared.try_lease(Duration::from_secs(5)).await.unwrap();
        assert!(lease.is_some());
        // Held through the Arc: the file's own lock is taken.
        assert!(file
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        lease.unwrap().release().await;
        assert!(file
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_some());
    });
    std::fs::remove_dir_all(dir).unwrap();
}

/// A cache error names the error it comes from.
#[test]
fn a_cache_error_keeps_its_cause() {
    use std::error::Error as _;
    let dir = scratch("cause");
    std::fs::create_dir_all(&dir).unwrap();
    // A file where the cache's folder should be: the write cannot succeed.
    std::fs::write(dir.join("not-a-folder"), b"").unwrap();
    let cache = FileCache::new(dir.join("not-a-folder").join("token.json"));
    let key = CacheKey::builder().field("client_id", "cause").build();
    let token = Token::new_ms(
        tokenkeeper::AccessToken::new("t"),
        1_000,
        Duration::from_secs(60),
        &tokenkeeper::LifetimePolicy::default(),
    );
    let e = block_on(cache.write(key, &token)).unwrap_err();
    let cause = e.source().expect("the I/O error is kept");
    assert!(
        cause.downcast_ref::<std::io::Error>().is_some(),
        "{cause:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A cache whose notices carry a token named after the key they were asked
/// for, as soon as they are polled.
struct Announcing;

impl TokenCache for Announcing {
    fn read(&self, _: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        Box::pin(async { Ok(None) })
    }

    fn write<'a>(&'a self, _: CacheKey, _: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Ok(()) })
    }

    fn next_write(&self, key: CacheKey) -> Option<BoxFuture<'static, Option<Token>>> {
        let name = if key == CacheKey::unkeyed() {
            "unkeyed"
        } else {
            "keyed"
        };
        let token = Token::new_ms(
            tokenkeeper::AccessToken::new(name),
            1_000,
            Duration::from_secs(60),
            &tokenkeeper::LifetimePolicy::default(),
        );
        Some(Box::pin(async move { Some(token) }))
    }

    fn describe(&self) -> String {
        "announcing".to_owned()
    }
}

/// A cache behind an `Arc` gives the cache's own notices of writes, for
/// the key asked: a chain waiting for the lease on a shared `RedisCache`
/// then takes the holder's token from the message instead of polling.
#[test]
fn a_cache_behind_an_arc_forwards_its_notices() {
    let shared: Arc<dyn TokenCache> = Arc::new(Announcing);
    let key = CacheKey::builder().field("client_id", "arc").build();
    let notice = shared.next_write(key).expect("the cache's notice");
    let token = block_on(notice).expect("the token it carries");
    assert_eq!(token.access_token().secret(), "keyed");
    let notice = shared.next_write(CacheKey::unkeyed()).unwrap();
    assert_eq!(block_on(notice).unwrap().access_token().secret(), "unkeyed");
    assert!(Arc::new(MemoryCache::new()).next_write(key).is_none());
}
