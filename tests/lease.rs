//! The refresh lease's rules in the cache chain, on virtual time, each in
//! the narrow window where breaking it costs a second authority request:
//!
//! - The lease holder reads the cache again once it has the lease, and takes
//!   a token another process wrote after its first read instead of asking
//!   the authority again.
//! - The lease is given back only after the new token is in every cache: a
//!   process that gets the lease next must find that token.
//! - The lease is the last cache's that has one, not a cache's after it
//!   that cannot coordinate.
//!
//! Fleets sharing a cache (tests/cache.rs, tests/cooperation.rs) rarely
//! open these windows: a process waiting for the lease reads the cache just
//! before each try, so the token another process wrote is almost always
//! found by that read. Here the window is opened on purpose. The same
//! re-read runs across real processes in tests/cooperation.rs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_lite::future::block_on;
use tokenkeeper::cache::{CacheError, CacheKey, Chain, Lease, MemoryCache, TokenCache};
use tokenkeeper::{
    AccessToken, BoxFuture, Clock, FetchContext, LifetimePolicy, ManualClock, Token, TokenSource,
};

/// The key of chains whose source has none, as the scripted source.
const UNKEYED: CacheKey = CacheKey::unkeyed();

fn cx(clock: &ManualClock) -> FetchContext {
    FetchContext::new(clock.clone(), LifetimePolicy::default())
}

fn token(value: &str, issued_ms: u64, lifetime: Duration) -> Token {
    Token::new_ms(
        AccessToken::new(value),
        issued_ms,
        lifetime,
        &LifetimePolicy::default(),
    )
}

/// What happened to the caches, in order: `"<name>: <operation>"`.
type Log = Arc<Mutex<Vec<String>>>;

/// A cache that logs its writes, the taking of its lease and the giving
/// back, under `name`. With `write_takes`, a write lands that long (in
/// virtual time) after it starts, as a write to a slow disk or a remote
/// cache does. With `written_before_lease`, that token is written to the
/// cache just before the first lease is taken: another process finishing
/// its refresh between our read and our lease.
struct Logged {
    name: &'static str,
    inner: MemoryCache,
    log: Log,
    clock: ManualClock,
    write_takes: Duration,
    written_before_lease: Mutex<Option<Token>>,
}

impl Logged {
    fn new(name: &'static str, inner: MemoryCache, log: &Log, clock: &ManualClock) -> Logged {
        Logged {
            name,
            inner,
            log: Arc::clone(log),
            clock: clock.clone(),
            write_takes: Duration::ZERO,
            written_before_lease: Mutex::new(None),
        }
    }

    fn note(&self, what: &str) {
        note(&self.log, self.name, what);
    }
}

fn note(log: &Log, name: &str, what: &str) {
    log.lock().unwrap().push(format!("{name}: {what}"));
}

impl TokenCache for Logged {
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        self.inner.read(key)
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            if !self.write_takes.is_zero() {
                let until = self.clock.now() + self.write_takes;
                self.clock.sleep_until(until).await;
            }
            self.note(&format!("write {}", token.access_token().secret()));
            self.inner.write(key, token).await
        })
    }

    fn try_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        Box::pin(async move {
            let theirs = self.written_before_lease.lock().unwrap().take();
            if let Some(theirs) = theirs {
                self.inner.write(UNKEYED, &theirs).await?;
            }
            let Some(lease) = self.inner.try_lease(ttl).await? else {
                self.note("lease held by another");
                return Ok(None);
            };
            self.note("take the lease");
            let (log, name) = (Arc::clone(&self.log), self.name);
            Ok(Some(Lease::new(move || {
                Box::pin(async move {
                    note(&log, name, "give the lease back");
                    lease.release().await;
                })
            })))
        })
    }

    fn has_lease(&self) -> bool {
        self.inner.has_lease()
    }

    fn describe(&self) -> String {
        self.name.to_owned()
    }
}

/// Runs `chain`'s fetch to its end on virtual time.
fn fetch(chain: &mut Chain, clock: &ManualClock) -> Token {
    let ex = smol::LocalExecutor::new();
    let task = ex.spawn(chain.fetch(cx(clock)));
    for _ in 0..1000 {
        while ex.try_tick() {}
        if task.is_finished() {
            return finished(task).expect("the fetch succeeds");
        }
        clock.advance(ms(10));
    }
    panic!("the fetch did not end within 10 virtual seconds");
}

#[test]
fn the_lease_holder_takes_a_token_written_after_its_first_read() {
    let clock = ManualClock::at_ms(START_MS);
    let log = Log::default();
    let shared = MemoryCache::new();
    // The cache holds an expired token, so the first read finds nothing
    // usable; then another process writes a fresh one before we get the
    // lease.
    block_on(shared.write(UNKEYED, &token("old", START_MS - 7_200_000, secs(3600)))).unwrap();
    let cache = Logged::new("shared", shared.clone(), &log, &clock);
    *cache.written_before_lease.lock().unwrap() =
        Some(token("theirs", START_MS - 1_000, secs(3600)));
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone()).cache(cache);

    let got = fetch(&mut chain, &clock);
    assert_eq!(got.access_token().secret(), "theirs");
    assert_eq!(source.calls(), 0, "asked the authority for a token it had");
    assert_eq!(
        *log.lock().unwrap(),
        ["shared: take the lease", "shared: give the lease back"]
    );
}

#[test]
fn the_lease_is_given_back_only_after_the_token_is_in_every_cache() {
    let clock = ManualClock::at_ms(START_MS);
    let log = Log::default();
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(Logged::new("near", MemoryCache::new(), &log, &clock))
        .cache(Logged::new("shared", MemoryCache::new(), &log, &clock));

    let got = fetch(&mut chain, &clock);
    assert_eq!(got.access_token().secret(), "token-1");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "shared: take the lease",
            "near: write token-1",
            "shared: write token-1",
            "shared: give the lease back",
        ]
    );
}

/// Two instances share a cache whose writes take 500 ms: the second waits
/// for the lease while the first asks the source and writes. Had the first
/// given the lease back before its write, the second would take it (it
/// tries every 50 to 150 ms), read the cache before the write landed and
/// ask the source again.
#[test]
fn an_instance_waiting_for_the_lease_gets_the_token_not_a_second_request() {
    let clock = ManualClock::at_ms(START_MS);
    let log = Log::default();
    let shared = MemoryCache::new();
    let source = ScriptedSource::new(secs(3600));
    source.set_latency(ms(200));
    let instance = |name: &'static str| {
        let mut cache = Logged::new(name, shared.clone(), &log, &clock);
        cache.write_takes = ms(500);
        Chain::new(source.clone()).cache(cache).lease_poll(ms(100))
    };
    let (mut first, mut second) = (instance("first"), instance("second"));

    let ex = smol::LocalExecutor::new();
    let first = ex.spawn(first.fetch(cx(&clock)));
    while ex.try_tick() {}
    assert_eq!(source.calls(), 1, "the first instance asks the source");
    let second = ex.spawn(second.fetch(cx(&clock)));
    while ex.try_tick() {}
    // Well inside the 2 s lease wait: the source answers at 200 ms and the
    // write lands at 700 ms.
    for _ in 0..150 {
        clock.advance(ms(10));
        while ex.try_tick() {}
    }
    let (first, second) = (finished(first).unwrap(), finished(second).unwrap());
    assert_eq!(
        source.calls(),
        1,
        "a second request: {:?}",
        log.lock().unwrap()
    );
    assert_eq!(first.access_token().secret(), "token-1");
    assert_eq!(second.access_token().secret(), "token-1");
    let log = log.lock().unwrap();
    assert_eq!(log[0], "first: take the lease");
    assert!(
        log.contains(&"second: lease held by another".to_owned()),
        "the second instance never waited for the lease: {log:?}"
    );
    assert!(
        !log.contains(&"second: take the lease".to_owned()),
        "{log:?}"
    );
}

/// A cache that keeps nothing and has no lease, as a cache that cannot
/// coordinate (the trait's default `try_lease`).
struct Forgetful;

impl TokenCache for Forgetful {
    fn read(&self, _: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        Box::pin(async { Ok(None) })
    }

    fn write<'a>(&'a self, _: CacheKey, _: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "forgetful".to_owned()
    }
}

/// The lease is the last cache's that has one, even when a cache without
/// one comes after it: that cache's `try_lease` always succeeds and
/// coordinates nothing, so taking it instead would let both instances ask
/// the source.
#[test]
fn the_lease_is_taken_from_the_last_cache_that_has_one() {
    let clock = ManualClock::at_ms(START_MS);
    let log = Log::default();
    let shared = MemoryCache::new();
    let source = ScriptedSource::new(secs(3600));
    source.set_latency(ms(200));
    let instance = |name: &'static str| {
        Chain::new(source.clone())
            .cache(Logged::new(name, shared.clone(), &log, &clock))
            .cache(Forgetful)
            .lease_poll(ms(100))
    };
    let (mut first, mut second) = (instance("first"), instance("second"));

    let ex = smol::LocalExecutor::new();
    let first = ex.spawn(first.fetch(cx(&clock)));
    while ex.try_tick() {}
    let second = ex.spawn(second.fetch(cx(&clock)));
    while ex.try_tick() {}
    for _ in 0..100 {
        clock.advance(ms(10));
        while ex.try_tick() {}
    }
    let (first, second) = (finished(first).unwrap(), finished(second).unwrap());
    assert_eq!(source.calls(), 1, "{:?}", log.lock().unwrap());
    assert_eq!(first.access_token().secret(), "token-1");
    assert_eq!(second.access_token().secret(), "token-1");
    assert!(
        log.lock()
            .unwrap()
            .contains(&"second: lease held by another".to_owned()),
        "{:?}",
        log.lock().unwrap()
    );
}

/// A file cache's lease is its lock file: while another process holds the
/// lock, the chain waits (up to the lease wait) before it asks the source
/// itself, rather than asking at once as a chain without a lease would.
#[cfg(unix)]
#[test]
fn a_file_cache_lock_held_elsewhere_is_waited_for_before_the_source_is_asked() {
    let dir = std::env::temp_dir().join(format!(
        "tokenkeeper-lease-file-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token.json");
    // Another process's lock, as `flock` takes it: a lock on its own open
    // file description conflicts with the cache's.
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("token.json.lock"))
        .unwrap();
    std::fs::set_permissions(
        dir.join("token.json.lock"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    held.try_lock().expect("hold the lock");

    let clock = ManualClock::at_ms(START_MS);
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(tokenkeeper::cache::FileCache::new(&path))
        .lease_wait(secs(2));
    let cx = cx(&clock);
    let (done, fetched) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(block_on(chain.fetch(cx)).map(|t| t.access_token().secret().to_owned()));
    });
    // Frozen virtual time: the chain is waiting for the lease, not asking.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        source.calls(),
        0,
        "asked the source while the lease was held"
    );
    // Once the lease wait has passed, it asks the source itself, once.
    clock.advance(secs(3));
    let token = fetched
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the fetch ends after the lease wait")
        .expect("a token");
    assert_eq!(source.calls(), 1);
    assert!(!token.is_empty());
    drop(held);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A shared memory cache that gives notices of writes, as a Redis cache
/// does through pub/sub: [`announce`](Noticing::announce) writes a token
/// and sends it to every waiter that asked before. Reads are recorded at
/// their virtual time.
#[derive(Clone)]
struct Noticing {
    inner: MemoryCache,
    clock: ManualClock,
    waiters: Arc<Mutex<Vec<async_channel::Sender<Token>>>>,
    reads: Arc<Mutex<Vec<u64>>>,
}

impl Noticing {
    fn new(clock: &ManualClock) -> Noticing {
        Noticing {
            inner: MemoryCache::new(),
            clock: clock.clone(),
            waiters: Arc::default(),
            reads: Arc::default(),
        }
    }

    fn announce(&self, token: &Token) {
        block_on(self.inner.write(UNKEYED, token)).unwrap();
        for waiter in self.waiters.lock().unwrap().drain(..) {
            let _ = waiter.try_send(token.clone());
        }
    }
}

impl TokenCache for Noticing {
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        self.reads.lock().unwrap().push(self.clock.now_ms());
        self.inner.read(key)
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        self.inner.write(key, token)
    }

    fn try_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        self.inner.try_lease(ttl)
    }

    fn has_lease(&self) -> bool {
        true
    }

    fn next_write(&self, _: CacheKey) -> Option<BoxFuture<'static, Option<Token>>> {
        let (send, receive) = async_channel::bounded(1);
        self.waiters.lock().unwrap().push(send);
        Some(Box::pin(async move {
            match receive.recv().await {
                Ok(token) => Some(token),
                Err(_) => std::future::pending().await,
            }
        }))
    }

    fn describe(&self) -> String {
        "noticing".to_owned()
    }
}

/// A waiter takes the holder's token from the notice the moment it comes,
/// with no read of the cache after the one before the lease and no wait
/// for its next poll.
#[test]
fn a_waiter_takes_the_token_from_the_notice_at_once_without_reading_again() {
    let clock = ManualClock::at_ms(START_MS);
    let shared = Noticing::new(&clock);
    let holder = block_on(shared.try_lease(secs(30))).unwrap().unwrap();
    let source = ScriptedSource::new(secs(3600));
    let mut chain = Chain::new(source.clone())
        .cache(shared.clone())
        .lease_poll(ms(200));
    let ex = smol::LocalExecutor::new();
    let task = ex.spawn(chain.fetch(cx(&clock)));
    while ex.try_tick() {}
    assert!(!task.is_finished());
    assert_eq!(shared.reads.lock().unwrap().len(), 1);

    // Virtual time stands still: only the notice can end the wait.
    shared.announce(&token("by-holder", START_MS, secs(3600)));
    while ex.try_tick() {}
    let got = finished(task).unwrap();
    assert_eq!(got.access_token().secret(), "by-holder");
    assert_eq!(source.calls(), 0);
    assert_eq!(*shared.reads.lock().unwrap(), [START_MS], "read again");
    drop(holder);
}

/// With notices, the cache is still read, as a fallback for a lost notice,
/// but two to four polls apart rather than every poll: a fleet's waiters
/// then add few reads at each refresh, however long the holder takes.
#[test]
fn with_notices_the_cache_is_read_two_to_four_polls_apart() {
    fastrand::seed(11);
    let clock = ManualClock::at_ms(START_MS);
    let shared = Noticing::new(&clock);
    let _held = block_on(shared.try_lease(secs(600))).unwrap().unwrap();
    let source = ScriptedSource::new(secs(60));
    let mut chain = Chain::new(source.clone())
        .cache(shared.clone())
        .lease_poll(ms(200))
        .lease_wait(secs(20));
    let cx = cx(&clock).with_deadline_ms(START_MS + 60_000);
    let ex = smol::LocalExecutor::new();
    let task = ex.spawn(chain.fetch(cx));
    for _ in 0..2_100 {
        while ex.try_tick() {}
        clock.advance(ms(10));
    }
    while ex.try_tick() {}
    finished(task).unwrap();
    assert_eq!(source.calls(), 1, "asked without the lease after 20 s");
    let reads = shared.reads.lock().unwrap().clone();
    // The first read is the one before the lease; the last poll is cut
    // short by the end of the wait.
    let gaps: Vec<u64> = reads[1..reads.len() - 1]
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(gaps.len() >= 20, "{reads:?}");
    assert!(gaps.iter().all(|g| (400..820).contains(g)), "{gaps:?}");
    assert!(gaps.iter().any(|&g| g < 500), "{gaps:?}");
    assert!(gaps.iter().any(|&g| g > 700), "{gaps:?}");
}
