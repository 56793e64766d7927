//! The caches' and the chain's decisions that the rest of the suite left
//! unchecked: each test here fails with a mutant that `cargo mutants` found
//! alive (see MUTANTS.md, which names the mutant next to each test).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_lite::future::block_on;
use tokenkeeper::cache::{CacheError, CacheKey, Chain, Lease, MemoryCache, TokenCache};
use tokenkeeper::{
    BoxFuture, Clock, FetchContext, LifetimePolicy, ManualClock, NoJitter, Token, TokenManager,
    TokenSource,
};

#[test]
fn a_memory_lease_runs_out_after_its_ttl_and_only_its_holder_gives_it_back() {
    let cache = MemoryCache::new();
    let first = block_on(cache.try_lease(Duration::ZERO))
        .unwrap()
        .expect("a free lease");
    // A zero TTL has run out at once: the lease may be taken again.
    let second = block_on(cache.try_lease(secs(60)))
        .unwrap()
        .expect("the first lease ran out");
    // The first holder's late release frees nothing.
    block_on(first.release());
    assert!(block_on(cache.try_lease(secs(60))).unwrap().is_none());
    block_on(second.release());
    assert!(block_on(cache.try_lease(secs(60))).unwrap().is_some());
}

/// A cache whose reads answer a miss after `read_delay` of virtual time,
/// or never (`None`); it counts writes.
#[derive(Clone)]
struct SlowCache {
    clock: ManualClock,
    read_delay: Option<Duration>,
    writes: Arc<AtomicUsize>,
}

impl SlowCache {
    fn new(clock: &ManualClock, read_delay: Option<Duration>) -> SlowCache {
        SlowCache {
            clock: clock.clone(),
            read_delay,
            writes: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

impl TokenCache for SlowCache {
    fn read(&self, _: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        let delay = self.read_delay;
        let clock = self.clock.clone();
        Box::pin(async move {
            match delay {
                Some(delay) => {
                    clock.sleep_until(clock.now() + delay).await;
                    Ok(None)
                }
                None => std::future::pending().await,
            }
        })
    }

    fn write<'a>(&'a self, _: CacheKey, _: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "slow".into()
    }
}

#[test]
fn a_cache_read_cut_short_by_the_fetchs_own_time_is_no_failure_of_the_cache() {
    let clock = ManualClock::at_ms(START_MS);
    // The first cache takes 1 s to miss; the second never answers a read,
    // and has 10 s of its own: the fetch's preparation time (half of its
    // 4 s) ends first, at 2 s.
    let slow = SlowCache::new(&clock, Some(secs(1)));
    let silent = SlowCache::new(&clock, None);
    let source = ScriptedSource::new(secs(60));
    let chain = Chain::new(source.clone())
        .cache(slow.clone())
        .cache(silent.clone())
        .cache_timeout(secs(10));
    let (handle, driver) = TokenManager::builder(chain)
        .clock(clock.clone())
        .jitter(NoJitter)
        .request_timeout(secs(4))
        .build();
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    let settle = || while ex.try_tick() {};
    settle();
    clock.advance(secs(1));
    settle();
    assert_eq!(source.calls(), 0, "the second cache is still being read");
    clock.advance(secs(1));
    settle();
    assert_eq!(source.calls(), 1);
    assert!(handle.current().is_some());
    // The second cache was not at fault: it is not cooling down, so it gets
    // the new token like the first.
    assert_eq!((slow.writes(), silent.writes()), (1, 1));
}

#[test]
fn the_lease_is_taken_from_a_cache_that_has_one_not_from_the_last_cache() {
    let clock = ManualClock::at_ms(START_MS);
    // The shared cache has a lease, held by another process; the cache
    // after it has none.
    let shared = MemoryCache::new();
    let _held = block_on(shared.try_lease(secs(600))).unwrap().unwrap();
    let plain = SlowCache::new(&clock, Some(Duration::ZERO));
    let source = ScriptedSource::new(secs(60));
    let chain = Chain::new(source.clone())
        .cache(shared.clone())
        .cache(plain)
        .lease_wait(secs(2));
    let (handle, driver) = TokenManager::builder(chain)
        .clock(clock.clone())
        .jitter(NoJitter)
        .build();
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    let settle = || while ex.try_tick() {};
    settle();
    assert_eq!(source.calls(), 0, "waiting for the shared cache's lease");
    clock.advance(ms(1_999));
    settle();
    assert_eq!(source.calls(), 0);
    clock.advance(ms(1));
    settle();
    assert_eq!(source.calls(), 1, "asked without the lease after the wait");
    assert!(handle.current().is_some());
}

/// A memory cache that records when it is read.
#[derive(Clone)]
struct WatchedCache {
    inner: MemoryCache,
    clock: ManualClock,
    reads: Arc<Mutex<Vec<u64>>>,
}

impl TokenCache for WatchedCache {
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

    fn describe(&self) -> String {
        "watched".into()
    }
}

#[test]
fn while_another_process_holds_the_lease_the_cache_is_read_every_half_to_one_and_a_half_polls() {
    fastrand::seed(7);
    let clock = ManualClock::at_ms(START_MS);
    let shared = WatchedCache {
        inner: MemoryCache::new(),
        clock: clock.clone(),
        reads: Arc::default(),
    };
    let _held = block_on(shared.try_lease(secs(600))).unwrap().unwrap();
    let source = ScriptedSource::new(secs(60));
    let chain = Chain::new(source.clone())
        .cache(shared.clone())
        .lease_poll(ms(200))
        .lease_wait(secs(10));
    let (_handle, driver) = TokenManager::builder(chain)
        .clock(clock.clone())
        .jitter(NoJitter)
        .request_timeout(secs(60))
        .build();
    let ex = smol::LocalExecutor::new();
    ex.spawn(driver).detach();
    for _ in 0..1_000 {
        while ex.try_tick() {}
        clock.advance(ms(10));
    }
    while ex.try_tick() {}
    assert_eq!(source.calls(), 1, "asked without the lease after 10 s");
    let reads = shared.reads.lock().unwrap().clone();
    // The polls, 10 ms steps of the clock late at most; the last one is cut
    // short by the end of the wait.
    let gaps: Vec<u64> = reads[..reads.len() - 1]
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(gaps.len() >= 30, "{reads:?}");
    assert!(gaps.iter().all(|g| (100..310).contains(g)), "{gaps:?}");
    assert!(gaps.iter().any(|&g| g < 150), "{gaps:?}");
    assert!(gaps.iter().any(|&g| g > 250), "{gaps:?}");
}

#[test]
fn a_chain_whose_caches_have_no_lease_does_not_coordinate_its_jitter() {
    // The refresh instant each of four managers plans for its first token,
    // with the builder's default jitter: drawn by each, as nothing shares
    // the refreshes.
    let plans: Vec<u64> = (0..4)
        .map(|_| {
            let clock = ManualClock::at_ms(START_MS);
            let chain = Chain::new(ScriptedSource::new(secs(3600)))
                .cache(SlowCache::new(&clock, Some(Duration::ZERO)));
            let (handle, driver) = TokenManager::builder(chain).clock(clock).build();
            let ex = smol::LocalExecutor::new();
            ex.spawn(driver).detach();
            while ex.try_tick() {}
            handle.state().next_refresh_ms().unwrap()
        })
        .collect();
    assert!(plans.windows(2).any(|w| w[0] != w[1]), "{plans:?}");
}

#[test]
fn a_chain_tells_the_key_it_caches_under() {
    let key = CacheKey::builder().field("client_id", "billing").build();
    let chain = Chain::new(ScriptedSource::new(secs(60)))
        .cache(MemoryCache::new())
        .cache_key(key);
    assert_eq!(TokenSource::cache_key(&chain), Some(key));
    // A chain in front of it reads and writes under the same key.
    let outer = Chain::new(chain).cache(MemoryCache::new());
    assert_eq!(TokenSource::cache_key(&outer), Some(key));
}

/// A cache that fails every call until told to work (a miss, a write that
/// succeeds), and counts the calls.
#[derive(Clone, Default)]
struct Failing {
    calls: Arc<AtomicUsize>,
    working: Arc<AtomicBool>,
}

impl Failing {
    fn answer<T: Send + 'static>(&self, ok: T) -> BoxFuture<'static, Result<T, CacheError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let working = self.working.load(Ordering::SeqCst);
        Box::pin(async move {
            if working {
                Ok(ok)
            } else {
                Err(CacheError::new("disk on fire"))
            }
        })
    }
}

impl TokenCache for Failing {
    fn read(&self, _: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        self.answer(None)
    }

    fn write<'a>(&'a self, _: CacheKey, _: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        self.answer(())
    }

    fn describe(&self) -> String {
        "failing".into()
    }
}

#[test]
fn a_failed_cache_is_tried_again_exactly_when_its_cool_down_ends() {
    let clock = ManualClock::at_ms(START_MS);
    let failing = Failing::default();
    let calls = || failing.calls.load(Ordering::SeqCst);
    let mut chain = Chain::new(ScriptedSource::new(secs(3600)))
        .cache(failing.clone())
        .cache_cooldown(secs(30));
    let cx = || FetchContext::new(clock.clone(), LifetimePolicy::default());
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(
        calls(),
        1,
        "the failed read starts the cool-down; the write is skipped"
    );
    clock.advance(ms(29_999));
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 1, "still cooling down");
    clock.advance(ms(1));
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 2, "tried again at 30 s");
}

#[test]
fn a_cache_that_answers_again_starts_afresh_after_its_next_failure() {
    let clock = ManualClock::at_ms(START_MS);
    let failing = Failing::default();
    let calls = || failing.calls.load(Ordering::SeqCst);
    let mut chain = Chain::new(ScriptedSource::new(secs(3600)))
        .cache(failing.clone())
        .cache_cooldown(secs(30));
    let cx = || FetchContext::new(clock.clone(), LifetimePolicy::default());
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 1);
    // After the cool-down it answers (a miss, then the write)...
    clock.advance(secs(30));
    failing.working.store(true, Ordering::SeqCst);
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 3);
    // ...so its next failure is a first one again: 30 s, not doubled.
    clock.advance(secs(1));
    failing.working.store(false, Ordering::SeqCst);
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 4);
    clock.advance(secs(30));
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 5, "tried again after 30 s");
}

#[test]
fn a_memory_lease_with_a_ttl_beyond_the_clocks_range_is_held() {
    let cache = MemoryCache::new();
    let lease = block_on(cache.try_lease(Duration::MAX)).unwrap().unwrap();
    assert!(block_on(cache.try_lease(secs(1))).unwrap().is_none());
    block_on(lease.release());
    assert!(block_on(cache.try_lease(secs(1))).unwrap().is_some());
}

#[test]
fn a_cache_that_answered_is_not_cooling_down_after_the_wall_clock_steps_back() {
    let clock = ManualClock::at_ms(START_MS);
    let failing = Failing::default();
    let calls = || failing.calls.load(Ordering::SeqCst);
    let mut chain = Chain::new(ScriptedSource::new(secs(3600)))
        .cache(failing.clone())
        .cache_cooldown(secs(30));
    let cx = || FetchContext::new(clock.clone(), LifetimePolicy::default());
    block_on(chain.fetch(cx())).unwrap();
    clock.advance(secs(30));
    failing.working.store(true, Ordering::SeqCst);
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 3);
    // An NTP step back into the old cool-down: the cache has answered since.
    clock.set_ms(START_MS + 10_000);
    block_on(chain.fetch(cx())).unwrap();
    assert_eq!(calls(), 5, "read and written as usual");
}
