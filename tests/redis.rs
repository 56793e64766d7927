//! `RedisCache` against real `redis-server` processes, one per test, each on
//! its own free loopback port and killed when the test ends.
//!
//! Without `redis-server` installed the tests that need it are reported as
//! ignored, with the reason, except under CI (`CI=true`), where that is a
//! failure (the harness is `common::harness`; the `redis` feature is
//! required in Cargo.toml).

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::harness::{add_tests, Harness, Needs};
use common::process::RedisServer;
use redis::Commands;
use tokenkeeper::cache::{CacheKey, Chain, RedisCache, TokenCache};
use tokenkeeper::source;
use tokenkeeper::{
    AccessToken, FetchContext, LifetimePolicy, RefreshToken, SourceError, Token, TokenHandle,
    TokenManager,
};

/// The key of chains without one, as the sources here.
const KEY: CacheKey = CacheKey::unkeyed();

/// What these tests use a server for.
impl RedisServer {
    /// The URL the caches get: database 0 named, as the log lines the
    /// tests look for name it.
    fn db0_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cache(&self) -> RedisCache {
        RedisCache::new(&self.db0_url()).unwrap()
    }

    /// A direct, blocking connection for looking at what the cache stored.
    fn inspect(&self) -> redis::Connection {
        redis::Client::open(self.db0_url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

fn main() {
    let redis_server = Needs::redis_server();
    let mut harness = Harness::from_args();
    add_tests!(harness needing redis_server;
        round_trip_with_refresh_token,
        works_under_async_std_and_a_bare_block_on,
        entry_lives_until_the_token_expires,
        an_entry_for_another_cache_key_or_implausible_times_is_a_miss,
        key_prefixes_keep_caches_apart,
        corrupt_entry_is_a_miss_reported_once,
        lease_is_exclusive_until_its_holder_releases_it,
        lease_expires_and_a_stale_holder_cannot_free_the_next_one,
        token_survives_a_restart_through_redis,
        redis_stopped_and_restarted_mid_run,
        a_stopped_server_costs_one_cache_timeout_per_cool_down_not_one_per_refresh,
        a_long_lived_token_lives_in_redis_as_long_up_to_ten_years,
        a_server_error_other_than_wrongtype_on_read_is_an_error,
        a_connection_broken_since_its_last_use_is_replaced_within_the_operation,
        a_waiter_takes_the_holders_token_from_its_message_without_reading,
        a_foreign_prefix_keeps_its_own_hash_tag,
        notices_come_again_after_the_server_restarts,
        #[cfg(feature = "redis-cluster")]
        a_cluster_serves_each_prefix_from_its_slot_with_the_lease_beside_the_token,
        #[cfg(feature = "redis-sentinel")]
        a_sentinel_failover_costs_no_reader_its_token_and_the_cache_comes_back,
        #[cfg(feature = "redis-cluster")]
        a_cluster_subscription_tries_the_seed_nodes_in_turn,
    );
    // These talk to no server, or to a listener of their own.
    add_tests!(harness;
        unanswering_server_costs_at_most_the_op_timeout,
        password_never_shows,
        bad_urls_are_errors,
        an_empty_brace_pair_is_no_hash_tag,
        the_server_is_named_by_an_address_that_reads_back,
    );
    harness.run()
}

/// Records every log line, so tests can count the ones about their server.
struct Recorder(Mutex<Vec<String>>);

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        self.0.lock().unwrap().push(line);
    }

    fn flush(&self) {}
}

fn init_log() {
    if log::set_logger(&RECORDER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Log lines so far that contain `needle`.
fn logged(needle: &str) -> Vec<String> {
    let lines = RECORDER.0.lock().unwrap();
    lines
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn token(name: &str, lifetime: Duration) -> Token {
    Token::new_ms(
        AccessToken::new(name),
        now_ms(),
        lifetime,
        &LifetimePolicy::default(),
    )
}

fn round_trip_with_refresh_token() {
    let server = RedisServer::spawn();
    let cache = server.cache();
    smol::block_on(async {
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        let t = token("a1", Duration::from_secs(60)).with_refresh_token(RefreshToken::new("r1"));
        cache.write(KEY, &t).await.unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), Some(t.clone()));
        // A second handle, as another process would have.
        let other = server.cache();
        let read = other.read(KEY).await.unwrap().unwrap();
        assert_eq!(read.refresh_token().map(|r| r.secret()), Some("r1"));
        // The same versioned envelope as the file cache.
        let raw: String = server.inspect().get("{tokenkeeper:}token").unwrap();
        let start = format!(r#"{{"version":2,"key":"{KEY}","token":{{"#);
        assert!(raw.starts_with(&start), "{raw}");
        // A newer token replaces it.
        let t2 = token("a2", Duration::from_secs(60));
        cache.write(KEY, &t2).await.unwrap();
        assert_eq!(other.read(KEY).await.unwrap(), Some(t2));
    });
}

/// No smol executor needed: the same calls under async-std and under a bare
/// `block_on` (no tokio runtime anywhere).
fn works_under_async_std_and_a_bare_block_on() {
    let server = RedisServer::spawn();
    let cache = server.cache().key_prefix("elsewhere:");
    let t = token("a", Duration::from_secs(60));
    async_std::task::block_on(async {
        cache.write(KEY, &t).await.unwrap();
        let lease = cache.try_lease(Duration::from_secs(5)).await.unwrap();
        lease.unwrap().release().await;
    });
    let read = futures_lite::future::block_on(async {
        let lease = cache.try_lease(Duration::from_secs(5)).await.unwrap();
        lease.unwrap().release().await;
        cache.read(KEY).await.unwrap()
    });
    assert_eq!(read, Some(t));
}

fn entry_lives_until_the_token_expires() {
    let server = RedisServer::spawn();
    let cache = server.cache();
    let mut redis = server.inspect();
    smol::block_on(async {
        let t = token("a", Duration::from_secs(30));
        cache.write(KEY, &t).await.unwrap();
        let pttl: i64 = redis.pttl("{tokenkeeper:}token").unwrap();
        let left = t.expiry_ms() as i64 - now_ms() as i64;
        assert!(pttl > 0 && pttl <= 30_000, "PTTL {pttl}");
        assert!(
            (pttl - left).abs() < 1_000,
            "PTTL {pttl}, token expires in {left} ms"
        );

        // An expired token is not written, and the entry before it stays.
        let expired = Token::new_ms(
            AccessToken::new("old"),
            now_ms() - 120_000,
            Duration::from_secs(60),
            &LifetimePolicy::default(),
        );
        cache.write(KEY, &expired).await.unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), Some(t));

        // A short-lived entry is gone once the token expires.
        let short = token("s", Duration::from_millis(150));
        cache.write(KEY, &short).await.unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), Some(short));
        smol::Timer::after(Duration::from_millis(250)).await;
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        let exists: bool = redis.exists("{tokenkeeper:}token").unwrap();
        assert!(!exists);
    });
}

/// One prefix, two clients: an entry is read only with the cache key it was
/// written with; an implausible entry (issued in the future, or living for
/// years) is a miss as in the file cache.
fn an_entry_for_another_cache_key_or_implausible_times_is_a_miss() {
    let server = RedisServer::spawn();
    let cache = server.cache();
    let mine = CacheKey::builder().field("client_id", "mine").build();
    let theirs = CacheKey::builder().field("client_id", "theirs").build();
    smol::block_on(async {
        let t = token("theirs", Duration::from_secs(60));
        cache.write(theirs, &t).await.unwrap();
        assert_eq!(cache.read(mine).await.unwrap(), None);
        assert_eq!(cache.read(theirs).await.unwrap(), Some(t));
        let future = Token::new_ms(
            AccessToken::new("future"),
            now_ms() + 3_600_000,
            Duration::from_secs(60),
            &LifetimePolicy::default(),
        );
        cache.write(mine, &future).await.unwrap();
        assert_eq!(cache.read(mine).await.unwrap(), None);
        let years = token("years", Duration::from_secs(3 * 366 * 86_400));
        cache.write(mine, &years).await.unwrap();
        assert_eq!(cache.read(mine).await.unwrap(), None);
    });
}

fn key_prefixes_keep_caches_apart() {
    let server = RedisServer::spawn();
    let a = server.cache().key_prefix("svc-a:");
    let b = server.cache().key_prefix("svc-b:");
    assert_eq!(
        (a.token_key(), a.lease_key()),
        ("{svc-a:}token", "{svc-a:}lease")
    );
    smol::block_on(async {
        let ta = token("for-a", Duration::from_secs(60));
        a.write(KEY, &ta).await.unwrap();
        assert_eq!(b.read(KEY).await.unwrap(), None);
        assert_eq!(server.cache().read(KEY).await.unwrap(), None);
        let tb = token("for-b", Duration::from_secs(60));
        b.write(KEY, &tb).await.unwrap();
        assert_eq!(a.read(KEY).await.unwrap(), Some(ta));
        assert_eq!(b.read(KEY).await.unwrap(), Some(tb));
        let _lease = a.try_lease(Duration::from_secs(5)).await.unwrap().unwrap();
        assert!(b.try_lease(Duration::from_secs(5)).await.unwrap().is_some());
    });
    let mut keys: Vec<String> = server.inspect().keys("*").unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "{svc-a:}lease",
            "{svc-a:}token",
            "{svc-b:}lease",
            "{svc-b:}token"
        ]
    );
}

fn corrupt_entry_is_a_miss_reported_once() {
    init_log();
    let server = RedisServer::spawn();
    let prefix = format!("corrupt-{}:", server.port);
    let key = format!("{{{prefix}}}token");
    let cache = server.cache().key_prefix(prefix);
    let mut redis = server.inspect();
    smol::block_on(async {
        let _: () = redis.set(&key, "{\"version\":1,\"tok").unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        assert_eq!(logged(&key).len(), 1, "{:?}", logged(&key));

        // Replaced by the next write.
        let t = token("a", Duration::from_secs(60));
        cache.write(KEY, &t).await.unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), Some(t.clone()));

        // Another format version, a broken invariant, another Redis type.
        let json = serde_json::to_string(&t).unwrap();
        let _: () = redis
            .set(&key, format!("{{\"version\":3,\"token\":{json}}}"))
            .unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        let _: () = redis
            .set(
                &key,
                r#"{"version":2,"key":"6c62272e07bb014262b821756295c58d","token":{"access_token":"t","issued_ms":10,"stale_ms":5,"expiry_ms":20}}"#,
            )
            .unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        let _: () = redis.del(&key).unwrap();
        let _: () = redis.hset(&key, "field", "value").unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        assert_eq!(logged(&key).len(), 2, "{:?}", logged(&key));
        cache.write(KEY, &t).await.unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), Some(t));
    });
}

fn lease_is_exclusive_until_its_holder_releases_it() {
    let server = RedisServer::spawn();
    let cache = server.cache();
    let other = server.cache();
    assert!(cache.has_lease());
    let mut redis = server.inspect();
    smol::block_on(async {
        let lease = cache.try_lease(Duration::from_secs(5)).await.unwrap();
        let lease = lease.expect("a free lease is taken");
        assert!(cache
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        assert!(other
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        let pttl: i64 = redis.pttl("{tokenkeeper:}lease").unwrap();
        assert!(pttl > 4_000 && pttl <= 5_000, "PTTL {pttl}");
        lease.release().await;
        let exists: bool = redis.exists("{tokenkeeper:}lease").unwrap();
        assert!(!exists);
        let again = other.try_lease(Duration::from_secs(5)).await.unwrap();
        assert!(again.is_some());
    });
}

fn lease_expires_and_a_stale_holder_cannot_free_the_next_one() {
    let server = RedisServer::spawn();
    let first = server.cache();
    let second = server.cache();
    let mut redis = server.inspect();
    smol::block_on(async {
        let stale = first.try_lease(Duration::from_millis(200)).await.unwrap();
        let stale = stale.unwrap();
        assert!(second
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        smol::Timer::after(Duration::from_millis(300)).await;
        // The holder died (or hung): its lease ran out by its TTL.
        let current = second.try_lease(Duration::from_secs(5)).await.unwrap();
        let current = current.expect("an expired lease is free");
        let held: String = redis.get("{tokenkeeper:}lease").unwrap();

        // The late holder gives back what it no longer holds: nothing happens.
        stale.release().await;
        let still: String = redis.get("{tokenkeeper:}lease").unwrap();
        assert_eq!(still, held);
        assert!(first
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());

        current.release().await;
        let exists: bool = redis.exists("{tokenkeeper:}lease").unwrap();
        assert!(!exists);

        // A dropped lease is not released at once, but runs out by its TTL.
        drop(first.try_lease(Duration::from_millis(200)).await.unwrap());
        assert!(second
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_none());
        smol::Timer::after(Duration::from_millis(300)).await;
        assert!(second
            .try_lease(Duration::from_secs(5))
            .await
            .unwrap()
            .is_some());
    });
}

/// A source that counts its fetches and hands out `lifetime` tokens named
/// `<name>-<n>`.
fn counting_source(
    name: &'static str,
    lifetime: Duration,
) -> (impl tokenkeeper::TokenSource, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let source = source::from_fn(move |cx: FetchContext| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let token = cx
                .token(AccessToken::new(format!("{name}-{n}")), Some(lifetime))
                .with_refresh_token(RefreshToken::new(format!("refresh-{n}")));
            Ok::<_, SourceError>(token)
        }
    });
    (source, calls)
}

fn token_survives_a_restart_through_redis() {
    let server = RedisServer::spawn();
    smol::block_on(async {
        let (source, calls) = counting_source("first", Duration::from_secs(60));
        let (handle, driver) =
            TokenManager::builder(Chain::new(source).cache(server.cache())).build();
        let task = smol::spawn(driver);
        let token = handle.token().await.unwrap();
        assert_eq!(token.access_token().secret(), "first-1");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        handle.shutdown().await;
        task.await;

        // A new process: a new manager, a new connection, a new source.
        let (source, calls) = counting_source("second", Duration::from_secs(60));
        let (handle, driver) =
            TokenManager::builder(Chain::new(source).cache(server.cache())).build();
        let task = smol::spawn(driver);
        let restored = handle.token().await.unwrap();
        assert_eq!(restored.access_token().secret(), "first-1");
        assert_eq!(
            restored.refresh_token().map(|r| r.secret()),
            Some("refresh-1")
        );
        assert_eq!(*restored, *token);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no source request");
        handle.shutdown().await;
        task.await;
    });
}

/// Reads the token from `handle` every 20 ms for `period`, asserting that
/// each read succeeds with a valid token; returns early (`true`) once
/// `until` holds.
async fn keep_reading(
    handle: &TokenHandle,
    period: Duration,
    mut until: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        let current = handle.current().expect("a current token");
        assert!(current.is_valid_at_ms(now_ms()));
        let token = handle.token().await.expect("token() succeeds");
        assert!(token.is_valid_at_ms(now_ms()));
        if until() {
            return true;
        }
        smol::Timer::after(Duration::from_millis(20)).await;
    }
    false
}

fn redis_stopped_and_restarted_mid_run() {
    init_log();
    let mut server = RedisServer::spawn();
    let port = server.port.to_string();
    let cache = server.cache().op_timeout(Duration::from_millis(500));
    let key = cache.token_key().to_owned();
    let (source, calls) = counting_source("t", Duration::from_millis(1_500));
    let chain = Chain::new(source)
        .cache(cache)
        .lease_poll(Duration::from_millis(50));
    let (handle, driver) = TokenManager::builder(chain).build();
    let mut redis = server.inspect();
    smol::block_on(async {
        let task = smol::spawn(driver);
        handle.token().await.unwrap();
        let exists: bool = redis.exists(&key).unwrap();
        assert!(exists, "the first token is cached");

        server.kill();
        let before = calls.load(Ordering::SeqCst);
        let started = Instant::now();
        keep_reading(&handle, Duration::from_millis(2_500), || false).await;
        assert!(
            calls.load(Ordering::SeqCst) >= before + 2,
            "tokens were refreshed while Redis was down"
        );
        let down = logged(&format!("127.0.0.1:{port}/0) is unreachable"));
        assert_eq!(down.len(), 1, "one log line while down: {down:?}");

        server.restart();
        let mut redis = server.inspect();
        let reappeared = keep_reading(&handle, Duration::from_secs(6), || {
            redis.exists::<_, bool>(&key).unwrap()
        })
        .await;
        assert!(
            reappeared,
            "the cache is written again after Redis came back"
        );
        let back = logged(&format!("127.0.0.1:{port}/0) is reachable again"));
        assert_eq!(back.len(), 1, "{back:?}");
        let cached: String = redis.get(&key).unwrap();
        assert!(cached.contains(r#""access_token":"t-"#), "{cached}");
        assert!(started.elapsed() < Duration::from_secs(10));
        handle.shutdown().await;
        task.await;
    });
}

/// A server that accepts connections and never answers: every operation
/// ends by the timeout, as a miss, with one log line.
fn unanswering_server_costs_at_most_the_op_timeout() {
    init_log();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cache = RedisCache::new(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .op_timeout(Duration::from_millis(200));
    smol::block_on(async {
        let started = Instant::now();
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        let first = started.elapsed();
        assert!(
            first >= Duration::from_millis(190) && first < Duration::from_secs(1),
            "{first:?}"
        );
        // Right after, operations fail fast.
        let started = Instant::now();
        cache
            .write(KEY, &token("a", Duration::from_secs(60)))
            .await
            .unwrap();
        let lease = cache.try_lease(Duration::from_secs(5)).await.unwrap();
        lease
            .expect("a no-op lease while Redis is down")
            .release()
            .await;
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        // Later a new attempt, bounded again.
        smol::Timer::after(Duration::from_millis(1_050)).await;
        let started = Instant::now();
        assert_eq!(cache.read(KEY).await.unwrap(), None);
        assert!(started.elapsed() < Duration::from_secs(1));
    });
    let lines = logged(&format!("127.0.0.1:{port}/0) is unreachable"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    drop(listener);
}

fn password_never_shows() {
    init_log();
    // Accepts connections and never answers: the read below times out and
    // the cache logs that the server is down.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = format!("127.0.0.1:{port}/3");
    let cache = RedisCache::new(&format!("redis://user:hunter2@{server}"))
        .unwrap()
        .key_prefix("app:");
    let shown = [
        format!("{cache:?}"),
        format!("{cache:#?}"),
        cache.describe(),
    ];
    for text in &shown {
        assert!(
            !text.contains("hunter2") && !text.contains("user"),
            "{text}"
        );
        assert!(text.contains(&server), "{text}");
    }
    assert_eq!(
        cache.describe(),
        format!("redis {server} key {{app:}}token")
    );
    // The down message names the server the same way.
    let cache = cache.op_timeout(Duration::from_millis(200));
    smol::block_on(async {
        assert_eq!(cache.read(KEY).await.unwrap(), None);
    });
    let down = logged(&format!("Redis ({server}) is unreachable"));
    assert_eq!(down.len(), 1, "the down message: {down:?}");
    let lines = logged(&format!("127.0.0.1:{port}"));
    assert!(!lines.is_empty());
    for line in lines {
        assert!(!line.contains("hunter2"), "{line}");
    }
    drop(listener);
}

fn bad_urls_are_errors() {
    for url in [
        "",
        "not a url",
        "http://127.0.0.1:6379",
        "rediss://127.0.0.1:6379",
    ] {
        let e = RedisCache::new(url).unwrap_err();
        assert!(e.to_string().contains("Redis URL"), "{url}: {e}");
    }
    let e = RedisCache::new("redis://:pa55word@127.0.0.1:6379/x").unwrap_err();
    assert!(!e.to_string().contains("pa55word"), "{e}");
}

/// A cache that counts the calls it passes on to `inner`.
struct Counting {
    inner: RedisCache,
    calls: Arc<AtomicU32>,
}

impl Counting {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl TokenCache for Counting {
    fn read(
        &self,
        key: CacheKey,
    ) -> tokenkeeper::BoxFuture<'_, Result<Option<Token>, tokenkeeper::cache::CacheError>> {
        self.count();
        self.inner.read(key)
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> tokenkeeper::BoxFuture<'a, Result<(), tokenkeeper::cache::CacheError>> {
        self.count();
        self.inner.write(key, token)
    }

    fn try_lease(
        &self,
        ttl: Duration,
    ) -> tokenkeeper::BoxFuture<
        '_,
        Result<Option<tokenkeeper::cache::Lease>, tokenkeeper::cache::CacheError>,
    > {
        self.count();
        self.inner.try_lease(ttl)
    }

    fn has_lease(&self) -> bool {
        self.inner.has_lease()
    }

    fn next_write(&self, key: CacheKey) -> Option<tokenkeeper::BoxFuture<'static, Option<Token>>> {
        self.inner.next_write(key)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Runs `ex` until `done` holds, in real time (Redis answers on its own
/// threads), for at most 10 s.
fn run_until(ex: &smol::LocalExecutor<'_>, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    loop {
        while ex.try_tick() {}
        if done() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A SIGSTOPped server answers nothing and keeps its connections open. On
/// virtual time (the chain's deadlines run on the manager's clock; the
/// cache's own 60 s operation timeout never comes): the first refresh after
/// the stop costs the chain's 1 s cache timeout, the refreshes within the
/// 30 s cool-down do not call Redis at all, and once the server runs again
/// the first try after the cool-down finds it back.
fn a_stopped_server_costs_one_cache_timeout_per_cool_down_not_one_per_refresh() {
    use tokenkeeper::Clock as _;
    init_log();
    let server = RedisServer::spawn();
    let clock = tokenkeeper::ManualClock::at_ms(now_ms());
    let cache = server.cache().op_timeout(Duration::from_secs(60));
    let describe = cache.describe();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Counting {
        inner: cache,
        calls: Arc::clone(&calls),
    };
    // 8 s tokens are refreshed every 4 s.
    let (source, fetched) = counting_source("t", Duration::from_secs(8));
    let (handle, driver) = TokenManager::builder(Chain::new(source).cache(counted))
        .clock(clock.clone())
        .jitter(tokenkeeper::NoJitter)
        .build();
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    run_until(&ex, "the first token", || handle.current().is_some());
    // A miss, the lease, a re-read, the write (the lease goes back
    // through the lease itself).
    run_until(&ex, "the first token's write", || {
        calls.load(Ordering::SeqCst) == 4
    });
    assert_eq!(fetched.load(Ordering::SeqCst), 1);

    server.pause();
    let refresh_at = |h: &TokenHandle| h.state().next_refresh_ms().expect("a refresh planned");
    clock.set_ms(refresh_at(&handle));
    run_until(&ex, "the read of the stopped server", || {
        calls.load(Ordering::SeqCst) == 5
    });
    assert_eq!(fetched.load(Ordering::SeqCst), 1);
    // The read's deadline: then the source, and nothing more for Redis.
    clock.advance(Duration::from_secs(1));
    run_until(&ex, "the source after the read's deadline", || {
        fetched.load(Ordering::SeqCst) == 2
    });
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let stalled_at = clock.now_ms();

    // Refreshes within the 30 s cool-down: no call to Redis, no delay.
    while refresh_at(&handle) < stalled_at + 30_000 {
        let before = fetched.load(Ordering::SeqCst);
        clock.set_ms(refresh_at(&handle));
        run_until(&ex, "a refresh in the cool-down", || {
            fetched.load(Ordering::SeqCst) == before + 1
        });
    }
    assert!(fetched.load(Ordering::SeqCst) >= 8, "{fetched:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "Redis was called in its cool-down"
    );
    let skipping = logged(&format!(
        "{describe}: read: no answer within 1s; skipping it for 30s"
    ));
    assert_eq!(skipping.len(), 1, "{skipping:?}");

    // Running again: the first refresh after the cool-down uses it.
    server.resume();
    clock.set_ms(refresh_at(&handle));
    let mut redis = server.inspect();
    let key = "{tokenkeeper:}token";
    run_until(&ex, "the token written to Redis again", || {
        redis
            .get::<_, Option<String>>(key)
            .unwrap()
            .is_some_and(|v| v.contains(handle.current().unwrap().access_token().secret()))
    });
    assert_eq!(
        logged(&format!("token cache {describe} answers again")).len(),
        1
    );
    drop(handle);
    run_until(&ex, "the driver to stop", || !ex.try_tick());
}

/// The entry's TTL is the token's time left, capped at ten years (Redis
/// refuses expiry times that overflow its clock).
fn a_long_lived_token_lives_in_redis_as_long_up_to_ten_years() {
    const DAY_MS: i64 = 86_400_000;
    let server = RedisServer::spawn();
    let cache = server.cache();
    let mut redis = server.inspect();
    smol::block_on(async {
        let t = token("a", Duration::from_secs(300 * 86_400));
        cache.write(KEY, &t).await.unwrap();
        let pttl: i64 = redis.pttl("{tokenkeeper:}token").unwrap();
        assert!(pttl > 299 * DAY_MS && pttl <= 300 * DAY_MS, "PTTL {pttl}");

        let t = token("b", Duration::from_secs(20 * 365 * 86_400));
        cache.write(KEY, &t).await.unwrap();
        let pttl: i64 = redis.pttl("{tokenkeeper:}token").unwrap();
        assert!(
            pttl > 10 * 365 * DAY_MS - 60_000 && pttl <= 10 * 365 * DAY_MS,
            "PTTL {pttl}"
        );
    });
}

/// Only a key of another Redis type is read as a miss: any other error the
/// server answers (here: the user may no longer run GET) is the caller's.
fn a_server_error_other_than_wrongtype_on_read_is_an_error() {
    let server = RedisServer::spawn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-get")
        .query(&mut server.inspect())
        .unwrap();
    let e = smol::block_on(server.cache().read(KEY)).unwrap_err();
    assert!(e.to_string().to_ascii_lowercase().contains("perm"), "{e}");
}

/// A server restarted between two operations breaks the cache's connection:
/// the next operation notices, connects again and succeeds, without the
/// server counting as down (which would skip it and the next ones for a
/// second).
fn a_connection_broken_since_its_last_use_is_replaced_within_the_operation() {
    init_log();
    let mut server = RedisServer::spawn();
    let port = server.port.to_string();
    let cache = server.cache();
    smol::block_on(async {
        cache
            .write(KEY, &token("before", Duration::from_secs(60)))
            .await
            .unwrap();
        server.kill();
        server.restart();
        let after = token("after", Duration::from_secs(60));
        cache.write(KEY, &after).await.unwrap();
        assert_eq!(cache.read(KEY).await.unwrap(), Some(after));
    });
    let down = logged(&format!("127.0.0.1:{port}/0) is unreachable"));
    assert!(down.is_empty(), "{down:?}");
}

/// Another process holds the lease and writes its token: the waiting
/// chain, on frozen virtual time, takes it from the published message at
/// once, without reading the key again (its next look at the cache is
/// seconds of virtual time away).
fn a_waiter_takes_the_holders_token_from_its_message_without_reading() {
    let server = RedisServer::spawn();
    let holder = server.cache();
    let calls = Arc::new(AtomicU32::new(0));
    let waiter = Counting {
        inner: server.cache(),
        calls: Arc::clone(&calls),
    };
    // The first ask starts the subscription; it gives notices once the
    // server has confirmed it.
    let started = Instant::now();
    while waiter.inner.next_write(KEY).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no subscription"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let lease = smol::block_on(holder.try_lease(Duration::from_secs(30)))
        .unwrap()
        .expect("the holder takes the lease");

    let clock = tokenkeeper::ManualClock::at_ms(now_ms());
    let (source, fetched) = counting_source("mine", Duration::from_secs(60));
    let mut chain = Chain::new(source).cache(waiter);
    let cx = FetchContext::new(clock.clone(), LifetimePolicy::default());
    let ex = smol::LocalExecutor::new();
    let task = ex.spawn(async move {
        use tokenkeeper::TokenSource as _;
        chain.fetch(cx).await
    });
    // A read (a miss), the lease (held): then it waits.
    run_until(&ex, "the chain to wait for the lease", || {
        calls.load(Ordering::SeqCst) == 2
    });
    let theirs = token("theirs", Duration::from_secs(60));
    smol::block_on(holder.write(KEY, &theirs)).unwrap();
    run_until(&ex, "the waiter to take the published token", || {
        task.is_finished()
    });
    let got = smol::block_on(task).unwrap();
    assert_eq!(got, theirs);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the key was read again");
    assert_eq!(fetched.load(Ordering::SeqCst), 0);
    smol::block_on(lease.release());
}

/// A prefix with a hash tag of its own keeps it: its keys and channel share
/// that tag's slot, and nothing else is added.
fn a_foreign_prefix_keeps_its_own_hash_tag() {
    let server = RedisServer::spawn();
    let cache = server.cache().key_prefix("app:{billing}:");
    assert_eq!(
        (cache.token_key(), cache.lease_key()),
        ("app:{billing}:token", "app:{billing}:lease")
    );
    smol::block_on(async {
        cache
            .write(KEY, &token("t", Duration::from_secs(60)))
            .await
            .unwrap();
        let _lease = cache.try_lease(Duration::from_secs(5)).await.unwrap();
    });
    let mut keys: Vec<String> = server.inspect().keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, ["app:{billing}:lease", "app:{billing}:token"]);
}

/// The hash slot of `key`, as the cluster node `connection` computes it.
#[cfg(feature = "redis-cluster")]
fn key_slot(connection: &mut redis::Connection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(connection)
        .unwrap()
}

/// Three masters formed into a cluster by `redis-cli --cluster create`,
/// each in a folder of its own (for its nodes.conf), killed on drop.
#[cfg(feature = "redis-cluster")]
struct Cluster {
    nodes: Vec<RedisServer>,
    _dir: common::process::TempDir,
}

#[cfg(feature = "redis-cluster")]
impl Cluster {
    fn start() -> Cluster {
        let dir = common::process::TempDir::new("cluster");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let port = common::process::free_port_pair();
                let node_dir = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                RedisServer::spawn_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--dir",
                        node_dir.to_str().unwrap(),
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        let started = Instant::now();
        for node in &nodes {
            let mut c = node.inspect();
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "{info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Cluster { nodes, _dir: dir }
    }
}

/// On a real three-node cluster: every prefix's token, lease and channel
/// share one slot; prefixes spread over the nodes, and the cluster cache
/// (given one node's URL) serves each from the node that owns it, where a
/// cache on that one node is turned away (`MOVED`). A waiter subscribed
/// through a seed node gets the notice of a write to another node's slot.
#[cfg(feature = "redis-cluster")]
fn a_cluster_serves_each_prefix_from_its_slot_with_the_lease_beside_the_token() {
    let cluster = Cluster::start();
    let seed = cluster.nodes[0].db0_url();
    let mut first = cluster.nodes[0].inspect();
    let mut moved = 0;
    for name in ["a", "b", "c", "d", "e", "f"] {
        let prefix = format!("svc-{name}:");
        let cache = RedisCache::cluster([seed.as_str()])
            .unwrap()
            .key_prefix(&prefix);
        let slot = key_slot(&mut first, cache.token_key());
        assert_eq!(key_slot(&mut first, cache.lease_key()), slot);
        assert_eq!(key_slot(&mut first, &format!("{{{prefix}}}written")), slot);
        let t = token(name, Duration::from_secs(60));
        smol::block_on(async {
            cache.write(KEY, &t).await.unwrap();
            assert_eq!(cache.read(KEY).await.unwrap(), Some(t.clone()));
            let lease = cache.try_lease(Duration::from_secs(5)).await.unwrap();
            let lease = lease.expect("the lease is free");
            assert!(cache
                .try_lease(Duration::from_secs(5))
                .await
                .unwrap()
                .is_none());
            lease.release().await;
            assert!(cache
                .try_lease(Duration::from_secs(5))
                .await
                .unwrap()
                .is_some());
        });
        let single = server_cache_on(&seed).key_prefix(&prefix);
        if smol::block_on(single.read(KEY)).is_err() {
            moved += 1;
        }
    }
    assert!(moved > 0, "every prefix landed on the seed node");

    let waiter = RedisCache::cluster([seed.as_str()])
        .unwrap()
        .key_prefix("svc-a:");
    let started = Instant::now();
    let notice = loop {
        if let Some(notice) = waiter.next_write(KEY) {
            break notice;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no subscription"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let other_seed = cluster.nodes[2].db0_url();
    let writer = RedisCache::cluster([other_seed.as_str()])
        .unwrap()
        .key_prefix("svc-a:");
    let t = token("noticed", Duration::from_secs(60));
    smol::block_on(writer.write(KEY, &t)).unwrap();
    let got = smol::block_on(futures_lite::future::or(notice, async {
        smol::Timer::after(Duration::from_secs(5)).await;
        None
    }));
    assert_eq!(got, Some(t));
}

#[cfg(feature = "redis-cluster")]
fn server_cache_on(url: &str) -> RedisCache {
    RedisCache::new(url)
        .unwrap()
        .op_timeout(Duration::from_millis(500))
}

/// A primary, its replica and one sentinel (quorum 1, a primary is down
/// after 500 ms). Readers keep reading while the primary is killed and the
/// sentinel promotes the replica: every read has a valid token, and the
/// cache then writes to the new primary.
#[cfg(feature = "redis-sentinel")]
fn a_sentinel_failover_costs_no_reader_its_token_and_the_cache_comes_back() {
    init_log();
    let mut primary = RedisServer::spawn();
    let replica_of = primary.port.to_string();
    let replica_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let replica = RedisServer::spawn_on(replica_port, &["--replicaof", "127.0.0.1", &replica_of]);
    let dir = common::process::TempDir::new("sentinel");
    let sentinel_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\n\
             sentinel monitor tokens 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds tokens 500\n\
             sentinel failover-timeout tokens 2000\n",
            primary.port
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new("redis-server");
    cmd.arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let sentinel = common::process::Running::spawn(cmd, "redis-server --sentinel");
    let sentinel_url = format!("redis://127.0.0.1:{sentinel_port}/0");
    // The sentinel must know the replica before it can promote it.
    let started = Instant::now();
    loop {
        let known = redis::Client::open(sentinel_url.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| {
                redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg("tokens")
                    .query::<Vec<redis::Value>>(&mut c)
            })
            .is_ok_and(|replicas| !replicas.is_empty());
        if known {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sentinel never saw the replica"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let cache = RedisCache::sentinel([sentinel_url.as_str()], "tokens")
        .unwrap()
        .op_timeout(Duration::from_millis(500));
    let key = cache.token_key().to_owned();
    let (source, calls) = counting_source("t", Duration::from_millis(1_500));
    let chain = Chain::new(source)
        .cache(cache)
        .lease_poll(Duration::from_millis(50));
    let (handle, driver) = TokenManager::builder(chain).build();
    smol::block_on(async {
        let task = smol::spawn(driver);
        handle.token().await.unwrap();
        let exists: bool = primary.inspect().exists(&key).unwrap();
        assert!(exists, "the first token is in the primary");

        primary.kill();
        let killed_ms = now_ms();
        let before = calls.load(Ordering::SeqCst);
        // A connection of its own each time: the promotion closes the
        // replica's client connections.
        let written_after_failover = keep_reading(&handle, Duration::from_secs(15), || {
            let Ok(mut promoted) = replica.connect() else {
                return false;
            };
            let role: Vec<redis::Value> =
                redis::cmd("ROLE").query(&mut promoted).unwrap_or_default();
            let is_primary =
                matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master");
            is_primary
                && promoted
                    .get::<_, Option<String>>(&key)
                    .ok()
                    .flatten()
                    .and_then(|v| tokenkeeper::cache::decode_entry(v.as_bytes()).ok())
                    .is_some_and(|(_, t)| t.issued_ms() > killed_ms)
        })
        .await;
        assert!(
            written_after_failover,
            "the cache wrote to the promoted replica"
        );
        assert!(calls.load(Ordering::SeqCst) > before);
        handle.shutdown().await;
        task.await;
    });
    sentinel.kill();
}

/// Waits (real time, at most 5 s) until `cache` gives notices: its
/// subscription is in place.
fn subscribed(cache: &RedisCache) -> tokenkeeper::BoxFuture<'static, Option<Token>> {
    let started = Instant::now();
    loop {
        if let Some(notice) = cache.next_write(KEY) {
            return notice;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no subscription"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The subscription is a connection of its own: when the server restarts
/// it is opened again, and a write after the restart is noticed.
fn notices_come_again_after_the_server_restarts() {
    let mut server = RedisServer::spawn();
    let waiter = server.cache();
    let writer = server.cache();
    drop(subscribed(&waiter));
    server.kill();
    server.restart();
    // The old subscription ends with the server; until the new one is in
    // place (a second later) the cache gives no notice: its waiters poll.
    let started = Instant::now();
    while waiter.next_write(KEY).is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the old subscription lives on"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let notice = subscribed(&waiter);
    let t = token("after-restart", Duration::from_secs(60));
    smol::block_on(writer.write(KEY, &t)).unwrap();
    let got = smol::block_on(futures_lite::future::or(notice, async {
        smol::Timer::after(Duration::from_secs(5)).await;
        None
    }));
    assert_eq!(got, Some(t));
}

/// The braces that keep a prefix's keys in one cluster slot are added
/// unless the prefix holds a non-empty `{...}` of its own. Redis hashes
/// what lies between the first `{` and the `}` after it, and the whole key
/// when that is empty: an empty `{}` is no hash tag, even before a
/// non-empty one.
fn an_empty_brace_pair_is_no_hash_tag() {
    let key = |prefix: &str| {
        RedisCache::new("redis://127.0.0.1/")
            .unwrap()
            .key_prefix(prefix)
            .token_key()
            .to_owned()
    };
    assert_eq!(key("{}:"), "{{}:}token");
    assert_eq!(key("a{}:"), "{a{}:}token");
    assert_eq!(key("}{}:"), "{tokenkeeper}}{}:token");
    assert_eq!(key("{app}:"), "{app}:token");
    assert_eq!(key("a:{}{b}:"), "{a:{}{b}:}token");
}

/// A cluster cache subscribes through its seed nodes in turn: when the
/// first one does not take the subscription, the next try (a second
/// later) goes to the next node, not to the same one again.
#[cfg(feature = "redis-cluster")]
fn a_cluster_subscription_tries_the_seed_nodes_in_turn() {
    let server = RedisServer::spawn();
    // A node that closes every connection at once, counting them.
    let closing = TcpListener::bind("127.0.0.1:0").unwrap();
    let closing_url = format!(
        "redis://127.0.0.1:{}/0",
        closing.local_addr().unwrap().port()
    );
    let tries = Arc::new(AtomicU32::new(0));
    {
        let tries = Arc::clone(&tries);
        std::thread::spawn(move || {
            for stream in closing.incoming() {
                tries.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
    }
    let cache = RedisCache::cluster([closing_url.as_str(), server.db0_url().as_str()]).unwrap();
    drop(subscribed(&cache));
    assert_eq!(
        tries.load(Ordering::SeqCst),
        1,
        "the closing node was tried again"
    );
}

/// Logs name the server as an address that can be read back: an IPv6
/// host in brackets, a socket by its path; an IPv4 host or a name as it is.
fn the_server_is_named_by_an_address_that_reads_back() {
    let describe = |url: &str| RedisCache::new(url).unwrap().describe();
    assert_eq!(
        describe("redis://[::1]:6380/2"),
        "redis [::1]:6380/2 key {tokenkeeper:}token"
    );
    assert_eq!(
        describe("redis://127.0.0.1:6380/2"),
        "redis 127.0.0.1:6380/2 key {tokenkeeper:}token"
    );
    assert_eq!(
        describe("redis+unix:///run/redis.sock?db=3"),
        "redis unix:/run/redis.sock?db=3 key {tokenkeeper:}token"
    );
}
