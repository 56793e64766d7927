//! A stalled neighbour costs cooperation, never availability: caches that
//! never answer, fail, or whose refresh lease another process holds
//! forever, in front of a source (issue 14, item 4).
//!
//! Timing is checked on virtual time: the chain's lease wait and cache
//! deadlines run on the fetch's clock. The tests with a real lock file and
//! a real authority on 127.0.0.1 run in real time and assert counts, with
//! only a generous bound on time.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokenkeeper::cache::{CacheError, CacheKey, Chain, Lease, TokenCache};
use tokenkeeper::{BoxFuture, Token};

/// What a [`Stalled`] cache does when asked for its lease.
#[derive(Clone, Copy, PartialEq)]
enum LeaseMode {
    /// Another process holds it, forever: `Ok(None)`.
    HeldElsewhere,
    /// Hands it out at once.
    Granted,
    /// Never answers.
    Hang,
}

#[derive(Default)]
struct Calls {
    reads: AtomicU64,
    writes: AtomicU64,
    leases: AtomicU64,
    /// Leases given back, by release or by drop.
    returned: AtomicU64,
}

/// A cache shared with a neighbour that stalls: reads and writes that
/// never answer (or answer a miss at once), and a lease as `lease` says.
/// Every call is counted.
#[derive(Clone)]
struct Stalled {
    /// Reads from this one on (counting from 1) never answer.
    hang_reads_from: u64,
    hang_writes: bool,
    fail: bool,
    lease: LeaseMode,
    calls: Arc<Calls>,
}

impl Stalled {
    /// Every operation hangs forever.
    fn hung() -> Stalled {
        Stalled {
            hang_reads_from: 1,
            hang_writes: true,
            fail: false,
            lease: LeaseMode::Hang,
            calls: Arc::default(),
        }
    }

    /// Reads are misses and writes succeed, but the lease is always taken.
    fn lease_held_elsewhere() -> Stalled {
        Stalled {
            hang_reads_from: u64::MAX,
            hang_writes: false,
            fail: false,
            lease: LeaseMode::HeldElsewhere,
            calls: Arc::default(),
        }
    }

    /// Every operation fails at once.
    fn failing() -> Stalled {
        Stalled {
            fail: true,
            ..Stalled::lease_held_elsewhere()
        }
    }

    fn reads(&self) -> u64 {
        self.calls.reads.load(Ordering::SeqCst)
    }

    fn writes(&self) -> u64 {
        self.calls.writes.load(Ordering::SeqCst)
    }

    fn leases(&self) -> u64 {
        self.calls.leases.load(Ordering::SeqCst)
    }

    fn all_calls(&self) -> u64 {
        self.reads() + self.writes() + self.leases()
    }

    fn returned(&self) -> u64 {
        self.calls.returned.load(Ordering::SeqCst)
    }
}

/// Counts the lease as given back when dropped, released or not.
struct Returned(Arc<Calls>);

impl Drop for Returned {
    fn drop(&mut self) {
        self.0.returned.fetch_add(1, Ordering::SeqCst);
    }
}

impl TokenCache for Stalled {
    fn read(&self, _: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        let n = self.calls.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let (hang, fail) = (n >= self.hang_reads_from, self.fail);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err(CacheError::new("disk on fire"));
            }
            Ok(None)
        })
    }

    fn write<'a>(&'a self, _: CacheKey, _: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        self.calls.writes.fetch_add(1, Ordering::SeqCst);
        let (hang, fail) = (self.hang_writes, self.fail);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err(CacheError::new("disk on fire"));
            }
            Ok(())
        })
    }

    fn try_lease(&self, _: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        self.calls.leases.fetch_add(1, Ordering::SeqCst);
        let (mode, fail) = (self.lease, self.fail);
        let returned = Returned(Arc::clone(&self.calls));
        Box::pin(async move {
            if fail {
                return Err(CacheError::new("disk on fire"));
            }
            match mode {
                LeaseMode::HeldElsewhere => Ok(None),
                LeaseMode::Granted => Ok(Some(Lease::new(move || {
                    drop(returned);
                    Box::pin(async {})
                }))),
                LeaseMode::Hang => std::future::pending().await,
            }
        })
    }

    fn has_lease(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "stalled".into()
    }
}

/// A manager on virtual time over `Chain::new(source).cache(cache)`, the
/// chain's settings left at their defaults.
fn bench(lifetime: Duration, cache: &Stalled) -> Bench {
    bench_with(lifetime, cache, |m| m)
}

fn bench_with(
    lifetime: Duration,
    cache: &Stalled,
    configure: impl FnOnce(tokenkeeper::TokenManagerBuilder) -> tokenkeeper::TokenManagerBuilder,
) -> Bench {
    let cache = cache.clone();
    Bench::with_source(ScriptedSource::new(lifetime), configure, move |s| {
        Chain::new(s).cache(cache)
    })
}

/// Advances 1 ms at a time, so every timer fires at its own instant.
fn advance_by_ms(b: &Bench, total_ms: u64) {
    b.advance_in_steps(ms(total_ms), ms(1));
}

#[test]
fn a_cache_that_never_answers_costs_one_cache_timeout_then_is_skipped_for_the_cool_down() {
    let cache = Stalled::hung();
    // Stale after 20 s: the first refresh comes within the 30 s cool-down.
    let b = bench(secs(40), &cache);
    assert_eq!((cache.reads(), b.source.calls()), (1, 0));

    // The read has 1 s (the default cache timeout), then the source is
    // asked; the cache is not asked for its lease or a write meanwhile.
    advance_by_ms(&b, 999);
    assert_eq!(
        b.source.calls(),
        0,
        "the source was asked before the read's deadline"
    );
    b.advance(ms(1));
    assert_eq!(
        b.source.calls(),
        1,
        "the source was not asked at the read's deadline"
    );
    assert_eq!(b.current_value().as_deref(), Some("token-1"));
    assert_eq!(cache.all_calls(), 1, "a cache in cool-down was called");
    assert!(b.handle.state().last_error.is_none());

    // The refresh 20 s later, inside the cool-down, goes straight to the
    // source without touching the cache.
    let issued = b.handle.current().unwrap().issued_ms();
    b.advance_to(issued + 20_000);
    assert_eq!(b.source.calls(), 2);
    assert_eq!(b.current_value().as_deref(), Some("token-2"));
    assert_eq!(
        cache.all_calls(),
        1,
        "the hung cache was called within its cool-down"
    );

    // The next refresh comes after the cool-down: the cache is tried once
    // more (one read, bounded again), then skipped for a longer cool-down.
    let issued = b.handle.current().unwrap().issued_ms();
    b.advance_to(issued + 20_000);
    assert_eq!((cache.reads(), b.source.calls()), (2, 2));
    b.advance(secs(1));
    assert_eq!(b.source.calls(), 3);
    assert_eq!(cache.all_calls(), 2);
    let issued = b.handle.current().unwrap().issued_ms();
    b.advance_to(issued + 20_000);
    assert_eq!((cache.all_calls(), b.source.calls()), (2, 4));
    // That second cool-down lasts twice as long: 60 s from the failed try.
    let failed_again = issued;
    let issued = b.handle.current().unwrap().issued_ms();
    b.advance_to(issued + 20_000);
    assert_eq!((cache.all_calls(), b.source.calls()), (2, 5));
    assert!(b.now() < failed_again + 60_000);
    b.advance_to(failed_again + 60_000);
    let issued = b.handle.current().unwrap().issued_ms();
    b.advance_to(issued + 20_000);
    assert_eq!(
        cache.reads(),
        3,
        "not tried again after the longer cool-down"
    );
}

#[test]
fn a_short_request_timeout_shortens_the_cache_deadline_to_half_of_it() {
    let cache = Stalled::hung();
    let b = bench_with(secs(40), &cache, |m| m.request_timeout(secs(1)));
    // Half of the 1 s request timeout, not the 1 s cache timeout.
    advance_by_ms(&b, 499);
    assert_eq!(b.source.calls(), 0);
    b.advance(ms(1));
    assert_eq!(b.source.calls(), 1);
    assert_eq!(b.current_value().as_deref(), Some("token-1"));
    // It missed its deadline: skipped on the next refresh.
    let issued = b.handle.current().unwrap().issued_ms();
    b.advance_to(issued + 20_000);
    assert_eq!((cache.all_calls(), b.source.calls()), (1, 2));
}

#[test]
fn a_lease_held_elsewhere_forever_costs_the_lease_wait_then_the_source_is_asked() {
    let cache = Stalled::lease_held_elsewhere();
    let b = bench(secs(3600), &cache);
    assert_eq!(cache.leases(), 1);
    // 2 s by default: the cache is read again while waiting.
    advance_by_ms(&b, 1_999);
    assert_eq!(b.source.calls(), 0, "the lease wait ended early");
    assert!(cache.reads() > 2, "{} reads while waiting", cache.reads());
    b.advance(ms(1));
    assert_eq!(
        b.source.calls(),
        1,
        "the source was not asked after the lease wait"
    );
    assert_eq!(b.current_value().as_deref(), Some("token-1"));
    // The new token is written to the cache all the same.
    assert_eq!(cache.writes(), 1);
    assert!(b.handle.state().last_error.is_none());
}

#[test]
fn the_lease_wait_leaves_the_source_half_of_the_request_timeout() {
    let cache = Stalled::lease_held_elsewhere();
    // A 3 s request timeout: caches and the lease get at most 1.5 s of it.
    let b = bench_with(secs(3600), &cache, |m| m.request_timeout(secs(3)));
    advance_by_ms(&b, 1_499);
    assert_eq!(b.source.calls(), 0);
    b.advance(ms(1));
    assert_eq!(b.source.calls(), 1);
    assert_eq!(b.current_value().as_deref(), Some("token-1"));
}

#[test]
fn the_lease_wait_and_cache_timeout_are_configurable() {
    let held = Stalled::lease_held_elsewhere();
    let hung = Stalled::hung();
    let source = ScriptedSource::new(secs(3600));
    let (first, second) = (hung.clone(), held.clone());
    let b = Bench::with_source(
        source,
        |m| m,
        move |s| {
            Chain::new(s)
                .cache(first)
                .cache(second)
                .cache_timeout(ms(300))
                .lease_wait(ms(500))
        },
    );
    // 300 ms for the hung read, then 500 ms waiting for the lease.
    advance_by_ms(&b, 799);
    assert_eq!(b.source.calls(), 0);
    b.advance(ms(1));
    assert_eq!(b.source.calls(), 1);
    assert_eq!(hung.all_calls(), 1);
    assert!(held.leases() > 1, "{} lease attempts", held.leases());
}

#[test]
fn a_failing_cache_is_skipped_for_a_cool_down_not_retried_on_every_refresh() {
    let cache = Stalled::failing();
    let b = bench(secs(8), &cache);
    assert_eq!(b.source.calls(), 1);
    let after_first = cache.all_calls();
    assert!(after_first >= 1);
    // 4 s tokens refreshed every 4 s: seven refreshes inside the 30 s
    // cool-down never call the cache.
    for n in 2..=8 {
        let issued = b.handle.current().unwrap().issued_ms();
        b.advance_to(issued + 4_000);
        assert_eq!(b.source.calls(), n);
    }
    assert_eq!(
        cache.all_calls(),
        after_first,
        "the failing cache was retried in its cool-down"
    );
}

#[test]
fn a_lease_holder_whose_cache_stalls_still_gives_the_lease_back() {
    // A miss, the lease, then the re-read under the lease never answers.
    let cache = Stalled {
        hang_reads_from: 2,
        lease: LeaseMode::Granted,
        ..Stalled::lease_held_elsewhere()
    };
    let b = bench(secs(3600), &cache);
    assert_eq!((cache.reads(), cache.leases()), (2, 1));
    b.advance(secs(1));
    assert_eq!(b.source.calls(), 1);
    assert_eq!(b.current_value().as_deref(), Some("token-1"));
    assert_eq!(cache.returned(), 1, "the lease was never given back");
    // In cool-down: not written to.
    assert_eq!(cache.writes(), 0);
}

/// Opens `<dir>/token.json.lock` and holds an exclusive lock on it until
/// the returned file is dropped, as a hung neighbour (or `flock`) would.
#[cfg(feature = "ureq")]
fn hold_lock_file(dir: &std::path::Path) -> std::fs::File {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(dir.join("token.json.lock")).unwrap();
    file.try_lock().expect("lock the lock file");
    file
}

#[cfg(feature = "ureq")]
#[test]
fn a_lock_file_held_forever_costs_the_lease_wait_not_the_token() {
    use std::time::Instant;

    use common::process::TempDir;
    use local_authority::LocalAuthority;
    use tokenkeeper::cache::FileCache;
    use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
    use tokenkeeper::{ClientId, ClientSecret, TokenManager};

    let authority = LocalAuthority::start().unwrap();
    let dir = TempDir::new("held-lock");
    let path = dir.path().join("token.json");
    let _held = hold_lock_file(dir.path());
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .unwrap();
    let chain = Chain::new(ClientCredentials::new(endpoint)).cache(FileCache::new(&path));
    // Shorter than the 20 s request timeout: a chain that kept polling the
    // lock until the request timeout ended its fetch fails this caller.
    let (handle, driver) = TokenManager::builder(chain).wait_timeout(secs(10)).build();
    let started = Instant::now();
    let got = smol::block_on(async {
        let driver = smol::spawn(driver);
        let got = handle.token().await;
        handle.shutdown().await;
        driver.await;
        got
    });
    let took = started.elapsed();
    eprintln!("with the lock file held: a token after {took:?}");
    let token = got.expect("no token while another process holds the lock");
    assert!(authority.is_valid_access_token(token.access_token().secret()));
    assert_eq!(authority.token_requests(), 1);
    // The file is written without the lease: the next process starts from it.
    let cached = std::fs::read_to_string(&path).expect("the token was not written");
    assert!(cached.contains(token.access_token().secret()));
    assert!(took < secs(8), "took {took:?}");
}
