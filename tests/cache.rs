//! Caches and the cache chain: order, write-back, start-up from a cache,
//! the file cache's durability and permissions, and cooperation through a
//! shared cache's lease on virtual time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_lite::future::block_on;
use tokenkeeper::cache::{CacheError, CacheKey, Chain, FileCache, Lease, MemoryCache, TokenCache};
use tokenkeeper::{
    AccessToken, BoxFuture, Clock, FetchContext, LifetimePolicy, ManualClock, RandomEarlyJitter,
    RefreshToken, Token, TokenManager, TokenSource,
};

fn token(value: &str, issued_ms: u64, lifetime: Duration) -> Token {
    Token::new_ms(
        AccessToken::new(value),
        issued_ms,
        lifetime,
        &LifetimePolicy::default(),
    )
}

fn cx(clock: &ManualClock) -> FetchContext {
    FetchContext::new(clock.clone(), LifetimePolicy::default())
}

/// The key of chains whose source has none, as the scripted source.
const UNKEYED: CacheKey = CacheKey::unkeyed();

fn read(cache: &impl TokenCache) -> Option<Token> {
    block_on(cache.read(UNKEYED)).unwrap()
}

#[test]
fn a_token_found_at_link_i_is_written_to_every_earlier_link_only() {
    let clock = ManualClock::at_ms(START_MS);
    let caches = [MemoryCache::new(), MemoryCache::new(), MemoryCache::new()];
    let cached = token("from-third", START_MS, secs(3600));
    block_on(caches[2].write(UNKEYED, &cached)).unwrap();
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(caches[0].clone())
        .cache(caches[1].clone())
        .cache(caches[2].clone());
    let got = block_on(chain.fetch(cx(&clock))).unwrap();
    assert_eq!(got, cached);
    assert_eq!(source.calls(), 0);
    assert_eq!(read(&caches[0]), Some(cached.clone()));
    assert_eq!(read(&caches[1]), Some(cached.clone()));

    // A token from the second link reaches the first, not the third.
    let second = token("from-second", START_MS + 1, secs(3600));
    let caches2 = [MemoryCache::new(), MemoryCache::new(), MemoryCache::new()];
    block_on(caches2[1].write(UNKEYED, &second)).unwrap();
    let mut chain = Chain::new(source.clone())
        .cache(caches2[0].clone())
        .cache(caches2[1].clone())
        .cache(caches2[2].clone());
    assert_eq!(block_on(chain.fetch(cx(&clock))).unwrap(), second);
    assert_eq!(read(&caches2[0]), Some(second));
    assert_eq!(read(&caches2[2]), None);
}

#[test]
fn a_token_from_the_source_is_written_to_all_links() {
    let clock = ManualClock::at_ms(START_MS);
    let caches = [MemoryCache::new(), MemoryCache::new(), MemoryCache::new()];
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(caches[0].clone())
        .cache(caches[1].clone())
        .cache(caches[2].clone());
    let got = block_on(chain.fetch(cx(&clock))).unwrap();
    assert_eq!(source.calls(), 1);
    for cache in &caches {
        assert_eq!(read(cache), Some(got.clone()));
    }
}

#[test]
fn a_chain_with_a_lease_gets_coordinated_jitter_by_default() {
    // The refresh instant each of four managers plans for its first token,
    // with the builder's default jitter.
    fn plans<S: TokenSource>(make: impl Fn() -> S) -> Vec<u64> {
        (0..4)
            .map(|_| {
                let (handle, driver) = TokenManager::builder(make())
                    .clock(ManualClock::at_ms(START_MS))
                    .build();
                let ex = smol::LocalExecutor::new();
                ex.spawn(driver).detach();
                while ex.try_tick() {}
                handle.state().next_refresh_ms().unwrap()
            })
            .collect()
    }
    let shared = MemoryCache::new();
    block_on(shared.write(UNKEYED, &token("cached", START_MS, secs(3600)))).unwrap();
    let with_lease = plans(|| Chain::new(ScriptedSource::new(secs(3600))).cache(shared.clone()));
    assert!(
        with_lease.windows(2).all(|w| w[0] == w[1]),
        "{with_lease:?}"
    );
    // Without a lease (here: the same token from a fixed source), each
    // instance draws its own instant.
    let without = plans(|| tokenkeeper::FixedSource::new(AccessToken::new("t"), secs(3600)));
    assert!(without.windows(2).any(|w| w[0] != w[1]), "{without:?}");
}

#[test]
fn cached_tokens_must_be_newer_and_valid_long_enough() {
    let clock = ManualClock::at_ms(START_MS);
    let cache = MemoryCache::new();
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(cache.clone())
        .min_validity(secs(60));

    // 59 s of validity left on an hour token: too little.
    block_on(cache.write(UNKEYED, &token("old", START_MS - 3_541_000, secs(3600)))).unwrap();
    let got = block_on(chain.fetch(cx(&clock))).unwrap();
    assert_eq!(got.access_token().secret(), "token-1");

    // For a 4 s token the bar is half its lifetime: 2 s.
    block_on(cache.write(UNKEYED, &token("short", START_MS, secs(4)))).unwrap();
    clock.advance(ms(1_999));
    assert_eq!(
        block_on(chain.fetch(cx(&clock)))
            .unwrap()
            .access_token()
            .secret(),
        "short"
    );
    clock.advance(ms(2));
    assert_eq!(
        block_on(chain.fetch(cx(&clock)))
            .unwrap()
            .access_token()
            .secret(),
        "token-2"
    );

    // Not newer than the manager's current token: ignored.
    let current = token("current", clock.now_ms(), secs(3600));
    block_on(cache.write(UNKEYED, &current)).unwrap();
    let got = block_on(chain.fetch(cx(&clock).with_current(current.clone()))).unwrap();
    assert_eq!(got.access_token().secret(), "token-3");
    assert_eq!(source.calls(), 3);
}

/// A cache that fails every call.
struct Broken;

impl TokenCache for Broken {
    fn read(&self, _: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        Box::pin(async { Err(CacheError::new("disk on fire")) })
    }
    fn write<'a>(&'a self, _: CacheKey, _: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Err(CacheError::new("disk on fire")) })
    }
    fn try_lease(&self, _: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        Box::pin(async { Err(CacheError::new("disk on fire")) })
    }
    fn has_lease(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        "broken".into()
    }
}

#[test]
fn a_failing_cache_is_skipped_not_fatal() {
    let clock = ManualClock::at_ms(START_MS);
    let after = MemoryCache::new();
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(Broken)
        .cache(after.clone());
    let got = block_on(chain.fetch(cx(&clock))).unwrap();
    assert_eq!(source.calls(), 1);
    assert_eq!(read(&after), Some(got));
}

#[test]
fn start_up_from_a_cache_makes_no_source_request() {
    let cache = MemoryCache::new();
    block_on(cache.write(UNKEYED, &token("cached", START_MS - 1_000, secs(3600)))).unwrap();
    let source = ScriptedSource::new(secs(3600));
    let b = Bench::with_source(
        source.clone(),
        |m| m,
        |s| Chain::new(s).cache(cache.clone()),
    );
    assert_eq!(source.calls(), 0);
    assert_eq!(b.current_value().as_deref(), Some("cached"));
    let state = b.handle.state();
    assert_eq!((state.source_requests, state.cache_hits), (1, 1));
    // The refresh follows the cached token's own schedule.
    let stale = b.handle.current().unwrap().stale_ms();
    b.advance_to(stale);
    assert_eq!(source.calls(), 1);
    assert_eq!(read(&cache).unwrap().access_token().secret(), "token-1");
}

#[test]
fn a_fleet_sharing_a_cache_makes_one_request_per_refresh() {
    let clock = ManualClock::at_ms(START_MS);
    let shared = MemoryCache::new();
    // For each authority request: the token the requester held.
    let replaced: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let ex = smol::LocalExecutor::new();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let replaced = replaced.clone();
        let authority = tokenkeeper::source::from_fn(move |cx: FetchContext| {
            let mut log = replaced.lock().unwrap();
            log.push(cx.current().map(|t| t.access_token().secret().to_owned()));
            let n = log.len();
            async move {
                // The authority takes 300 virtual ms to answer.
                let c = cx.clock().clone();
                c.sleep_until(c.now() + Duration::from_millis(300)).await;
                Ok(cx.token(AccessToken::new(format!("a{n}")), Some(secs(60))))
            }
        });
        let chain = Chain::new(authority)
            .cache(MemoryCache::new())
            .cache(shared.clone())
            .lease_poll(ms(100));
        let (handle, driver) = TokenManager::builder(chain)
            .clock(clock.clone())
            .jitter(RandomEarlyJitter::coordinated(secs(10)))
            .build();
        ex.spawn(driver).detach();
        handles.push(handle);
    }
    // Ten token lifetimes, cold start included.
    for _ in 0..(600 * 10) {
        clock.advance(ms(100));
        while ex.try_tick() {}
    }
    let replaced = replaced.lock().unwrap();
    // Every generation of the token is replaced exactly once: request n was
    // made by an instance holding token n - 1, never by a second instance.
    let expected: Vec<Option<String>> = (0..replaced.len())
        .map(|n| (n > 0).then(|| format!("a{n}")))
        .collect();
    assert_eq!(*replaced, expected);
    // Instances holding the same token draw the same instant (coordinated
    // jitter: one key for the fleet), and the lease makes one of them fetch
    // while the others read its token. A 60 s token is stale at 30 s and
    // refreshed up to 10 s before: every 20 to 30 s, so 600 s take 21 to 31
    // requests, cold start included; without sharing it would be about 8
    // times that.
    assert!(
        (21..=31).contains(&replaced.len()),
        "{} requests",
        replaced.len()
    );
    for h in &handles {
        assert!(h.current().is_some());
    }
    // Every fetch that did not reach the authority was answered by a cache.
    let fetches: u64 = handles.iter().map(|h| h.state().source_requests).sum();
    let hits: u64 = handles.iter().map(|h| h.state().cache_hits).sum();
    assert_eq!(fetches - hits, replaced.len() as u64);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-test-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn file_cache_creates_its_folder_and_survives_a_restart_with_the_refresh_token() {
    let dir = temp_dir("restart");
    let path = dir.join("nested/deeper/token.json");
    let t = token("at", START_MS, secs(3600)).with_refresh_token(RefreshToken::new("rt-1"));
    block_on(FileCache::new(&path).write(UNKEYED, &t)).unwrap();
    let again = read(&FileCache::new(&path)).unwrap();
    assert_eq!(again, t);
    assert_eq!(again.refresh_token().unwrap().secret(), "rt-1");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corrupt_truncated_and_empty_files_are_misses_then_replaced() {
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token.json");
    let cache = FileCache::new(&path);
    let good = serde_json::to_string(&serde_json::json!({
        "version": 2,
        "key": UNKEYED.to_string(),
        "token": token("at", START_MS, secs(60)),
    }))
    .unwrap();
    let bad_contents = [
        String::new(),
        good[..good.len() / 2].to_owned(),
        "not json at all".to_owned(),
        "\u{0}\u{1}binary".to_owned(),
        r#"{"version":1,"token":{"access_token":"x","issued_ms":5,"stale_ms":1,"expiry_ms":9}}"#
            .to_owned(),
        good.replace("\"version\":2", "\"version\":99"),
        // The format before cache keys: a miss, replaced by the next write.
        serde_json::json!({"version": 1, "token": token("at", START_MS, secs(60))}).to_string(),
    ];
    for contents in bad_contents {
        std::fs::write(&path, &contents).unwrap();
        assert_eq!(read(&cache), None, "{contents:?}");
    }
    let t = token("fresh", START_MS, secs(60));
    block_on(cache.write(UNKEYED, &t)).unwrap();
    assert_eq!(read(&cache), Some(t));
    std::fs::write(&path, &good).unwrap();
    // Whatever the umask: a file others may write is not trusted.
    #[cfg(unix)]
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert!(
        read(&cache).is_some(),
        "the envelope written by hand is readable"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn every_write_sets_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("mode");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token.json");
    std::fs::write(&path, "{}").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    block_on(FileCache::new(&path).write(UNKEYED, &token("at", START_MS, secs(60)))).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("token.json")]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unreadable_cache_path_is_a_miss_and_an_unwritable_one_an_error() {
    let dir = temp_dir("unreadable");
    std::fs::create_dir_all(dir.join("token.json")).unwrap(); // a folder where the file should be
    let cache = FileCache::new(dir.join("token.json"));
    assert_eq!(read(&cache), None);
    assert!(block_on(cache.write(UNKEYED, &token("at", START_MS, secs(60)))).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_file_lease_is_exclusive_across_handles() {
    let dir = temp_dir("lease");
    let a = FileCache::new(dir.join("token.json"));
    let b = FileCache::new(dir.join("token.json"));
    let lease = block_on(a.try_lease(secs(10)))
        .unwrap()
        .expect("first lease");
    assert!(
        block_on(b.try_lease(secs(10))).unwrap().is_none(),
        "held elsewhere"
    );
    block_on(lease.release());
    let lease = block_on(b.try_lease(secs(10)))
        .unwrap()
        .expect("free again");
    drop(lease); // dropping gives it back too
    assert!(block_on(a.try_lease(secs(10))).unwrap().is_some());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_lease_holder_rereads_the_cache_and_uses_the_newest_refresh_token() {
    let clock = ManualClock::at_ms(START_MS);
    let shared = MemoryCache::new();
    // Another process refreshed and rotated, but its token is now expired.
    let theirs = token("theirs", START_MS - 7_200_000, secs(3600))
        .with_refresh_token(RefreshToken::new("rt-newest"));
    block_on(shared.write(UNKEYED, &theirs)).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_in = seen.clone();
    let authority = tokenkeeper::source::from_fn(move |cx: FetchContext| {
        *seen_in.lock().unwrap() = cx
            .current()
            .and_then(|t| t.refresh_token().map(|r| r.secret().to_owned()));
        async move { Ok(cx.token(AccessToken::new("new"), Some(secs(3600)))) }
    });
    let mut chain = Chain::new(authority).cache(shared.clone());
    let mine = token("mine", START_MS - 7_300_000, secs(3600))
        .with_refresh_token(RefreshToken::new("rt-old"));
    block_on(chain.fetch(cx(&clock).with_current(mine))).unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("rt-newest"));
    assert_eq!(read(&shared).unwrap().access_token().secret(), "new");
}

#[test]
fn waiters_take_the_token_the_lease_holder_wrote() {
    let clock = ManualClock::at_ms(START_MS);
    let shared = MemoryCache::new();
    let holder = block_on(shared.try_lease(secs(30))).unwrap().unwrap();
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(shared.clone())
        .lease_poll(ms(200));
    let ex = smol::LocalExecutor::new();
    let c = cx(&clock);
    let task = ex.spawn(async move { chain.fetch(c).await });
    while ex.try_tick() {}
    assert!(!task.is_finished());
    // The holder writes a fresh token; the waiter picks it up on its next look.
    block_on(shared.write(UNKEYED, &token("by-holder", START_MS, secs(3600)))).unwrap();
    clock.advance(ms(300));
    while ex.try_tick() {}
    let got = finished(task).unwrap();
    assert_eq!(got.access_token().secret(), "by-holder");
    assert_eq!(source.calls(), 0);
    drop(holder);
}
