//! tokenkeeper's main job, live, in about 15 seconds: `cargo run --example demo`.
//!
//! What it shows:
//!
//! - A built-in authority (a `tokenkeeper::source::from_fn` closure) hands out
//!   short-lived tokens: 6 s each, so one turns stale after 3 s.
//! - The manager runs on smol with the system clock and a small random
//!   jitter; it refreshes every token in the background shortly before it
//!   turns stale.
//! - Four workers clone the handle and use the token every 50 ms, on the hot
//!   path (`current()`, no waiting, no message) and the waiting path
//!   (`token().await`). They never refresh anything themselves.
//! - A subscriber prints each refresh as it is published.
//! - An injected outage: the authority fails for 2 s, starting when token #3
//!   is due for refresh. Refreshes fail and are retried with backoff (read
//!   from `handle.state()`), while the workers keep getting token #3, which
//!   is stale but still valid: the grace period. Then the authority
//!   recovers and the next refresh succeeds before token #3 expires.
//! - A closing summary: source requests, reads, refreshes, failed reads, and
//!   the oldest token any worker used.
//!
//! Token values are secrets and are never printed: the output names tokens
//! by number ("token #3") and shows only their length.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use smol::Timer;
use tokenkeeper::{
    source, AccessToken, Backoff, Clock, FetchContext, RandomEarlyJitter, SourceError, SystemClock,
    Token, TokenHandle, TokenManager,
};

/// How long each token lives. Stale after half of it (the default policy's
/// stale window is min(30 s, lifetime / 2)).
const LIFETIME: Duration = Duration::from_secs(6);
/// Refresh up to this much before the stale instant.
const JITTER: Duration = Duration::from_millis(300);
/// How long the authority is down.
const OUTAGE: Duration = Duration::from_secs(2);
/// The outage begins with the first request after this token was issued.
const OUTAGE_AFTER_TOKEN: u64 = 3;
/// The demo ends shortly after this many tokens were published.
const TOKENS: u64 = 5;
const WORKERS: usize = 4;
const READ_EVERY: Duration = Duration::from_millis(50);
/// What a request to the authority takes.
const LATENCY: Duration = Duration::from_millis(40);

fn main() {
    smol::block_on(demo());
}

/// Seconds since the demo started, as a log prefix.
fn at() -> String {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    format!("[{:5.2}s]", start.elapsed().as_secs_f64())
}

/// Milliseconds from now until `ms` (negative when it has passed), in seconds.
fn secs_until(ms: u64) -> f64 {
    (ms as f64 - SystemClock.now_ms() as f64) / 1000.0
}

/// The demo's token authority. It keeps a ledger of what it issued (by
/// issue time), so the output can name tokens without printing them.
#[derive(Default)]
struct Authority {
    requests: AtomicU64,
    issued: AtomicU64,
    ledger: Mutex<BTreeMap<u64, u64>>,
    outage: Mutex<Outage>,
}

#[derive(Default)]
enum Outage {
    #[default]
    Pending,
    Since(Instant),
    Over,
}

impl Authority {
    /// Whether the authority is down right now; starts and ends the outage.
    fn down(&self) -> bool {
        let mut outage = self.outage.lock().unwrap();
        match *outage {
            Outage::Pending if self.issued.load(Ordering::SeqCst) >= OUTAGE_AFTER_TOKEN => {
                println!(
                    "{} authority: !! outage begins: every request fails for {:.1} s",
                    at(),
                    OUTAGE.as_secs_f64()
                );
                *outage = Outage::Since(Instant::now());
                true
            }
            Outage::Since(since) if since.elapsed() < OUTAGE => true,
            Outage::Since(_) => {
                println!("{} authority: outage over, serving tokens again", at());
                *outage = Outage::Over;
                false
            }
            _ => false,
        }
    }

    async fn fetch(&self, cx: FetchContext) -> Result<Token, SourceError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Timer::after(LATENCY).await;
        if self.down() {
            return Err(SourceError::transient(
                "authority unavailable (HTTP 503, injected outage)",
            ));
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        // A realistic-looking opaque value; it stays inside the token.
        let value = format!("tok-{n}-{:032x}", fastrand::u128(..));
        let token = cx.token(AccessToken::new(value), Some(LIFETIME));
        self.ledger.lock().unwrap().insert(token.issued_ms(), n);
        Ok(token)
    }

    /// The number the authority gave `token`.
    fn label(&self, token: &Token) -> String {
        match self.ledger.lock().unwrap().get(&token.issued_ms()) {
            Some(n) => format!("token #{n}"),
            None => "an unknown token".to_owned(),
        }
    }
}

/// What the workers did, together.
#[derive(Default)]
struct Usage {
    reads: AtomicU64,
    failed_reads: AtomicU64,
    max_age_ms: AtomicU64,
    /// Issue times of the tokens the workers used.
    seen: Mutex<BTreeSet<u64>>,
}

async fn demo() {
    at();
    println!(
        "tokenkeeper demo: {WORKERS} workers, {}s tokens (stale after {}s), jitter up to {} ms, \
         an authority outage of {}s",
        LIFETIME.as_secs(),
        LIFETIME.as_secs() / 2,
        JITTER.as_millis(),
        OUTAGE.as_secs()
    );
    println!("token values are secrets: tokens are named by number, never printed\n");

    let authority = Arc::new(Authority::default());
    let source = source::from_fn({
        let authority = Arc::clone(&authority);
        move |cx: FetchContext| {
            let authority = Arc::clone(&authority);
            async move { authority.fetch(cx).await }
        }
    });
    // SystemClock is the default clock.
    let (handle, driver) = TokenManager::builder(source)
        .jitter(RandomEarlyJitter::new(JITTER))
        .backoff(Backoff::new(
            Duration::from_millis(200),
            2.0,
            Duration::from_millis(600),
        ))
        .request_timeout(Duration::from_secs(2))
        .wait_timeout(Duration::from_secs(1))
        .build();
    // The library spawns nothing: the driver is a plain future, spawned here.
    let driver = smol::spawn(driver);

    let subscriber = smol::spawn(subscriber(handle.clone(), Arc::clone(&authority)));
    let stop = Arc::new(AtomicBool::new(false));
    let usage = Arc::new(Usage::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            smol::spawn(worker(
                id,
                handle.clone(),
                Arc::clone(&usage),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let monitor = smol::spawn(monitor(
        handle.clone(),
        Arc::clone(&authority),
        Arc::clone(&usage),
    ));

    // Run until the last token of the story is out, then a little longer.
    let give_up = Instant::now() + Duration::from_secs(25);
    while handle.state().refreshes < TOKENS && Instant::now() < give_up {
        Timer::after(Duration::from_millis(20)).await;
    }
    Timer::after(Duration::from_millis(500)).await;

    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await;
    }
    println!("\n{} workers stopped; shutting the manager down", at());
    handle.shutdown().await;
    driver.await;
    subscriber.await;
    monitor.await;

    let state = handle.state();
    let reads = usage.reads.load(Ordering::SeqCst);
    let failed = usage.failed_reads.load(Ordering::SeqCst);
    println!("\nsummary");
    println!(
        "  source requests        {:>6}  (the manager counted {})",
        authority.requests.load(Ordering::SeqCst),
        state.source_requests
    );
    println!(
        "  refreshes (published)  {:>6}  (failed attempts: {})",
        state.refreshes,
        state.source_requests.saturating_sub(state.refreshes)
    );
    println!(
        "  reads by {WORKERS} workers     {:>6}  (failed: {failed}; {:.0} reads per source request)",
        reads,
        reads as f64 / state.source_requests.max(1) as f64
    );
    println!(
        "  distinct tokens used   {:>6}",
        usage.seen.lock().unwrap().len()
    );
    println!(
        "  max token age seen     {:>6.2} s  (lifetime {} s: never an expired token)",
        usage.max_age_ms.load(Ordering::SeqCst) as f64 / 1000.0,
        LIFETIME.as_secs()
    );
    if let Some(error) = &state.last_error {
        println!("  last error             {error} (kept in state after recovery)");
    }
}

/// Prints each refresh; the stream ends when the manager stops.
async fn subscriber(handle: TokenHandle, authority: Arc<Authority>) {
    let mut tokens = handle.subscribe();
    while let Some(token) = tokens.next().await {
        println!(
            "{} refresh: {} published ({} chars), stale in {:.1} s, expires in {:.1} s",
            at(),
            authority.label(&token),
            token.access_token().secret().len(),
            secs_until(token.stale_ms()),
            secs_until(token.expiry_ms()),
        );
    }
    println!("{} subscriber: stream ended (manager stopped)", at());
}

/// Uses the token every `READ_EVERY`, as a service would per outgoing call.
async fn worker(id: usize, handle: TokenHandle, usage: Arc<Usage>, stop: Arc<AtomicBool>) {
    // At start-up, wait for the first token (all workers share one request).
    if let Err(error) = handle.token().await {
        println!("{} worker {id}: no token at start: {error}", at());
    }
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        // Alternate the hot path (never waits) and the waiting path (returns
        // at once while a valid token exists).
        let token = if (i + id as u64).is_multiple_of(2) {
            handle.current()
        } else {
            handle.token().await.ok()
        };
        match token {
            Some(token) => {
                // "Use" it: build the header an outgoing request would carry.
                let header = format!("Bearer {}", token.access_token().secret());
                std::hint::black_box(header);
                let age = SystemClock.now_ms().saturating_sub(token.issued_ms());
                usage.reads.fetch_add(1, Ordering::Relaxed);
                usage.max_age_ms.fetch_max(age, Ordering::Relaxed);
                usage.seen.lock().unwrap().insert(token.issued_ms());
            }
            None => {
                usage.failed_reads.fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
        Timer::after(READ_EVERY).await;
    }
}

/// Watches `handle.state()`: prints each failed refresh and its backoff, the
/// recovery, and once a second what the workers are using.
async fn monitor(handle: TokenHandle, authority: Arc<Authority>, usage: Arc<Usage>) {
    let mut failures = 0;
    let mut next_report = Instant::now() + Duration::from_secs(1);
    while !handle.is_stopped() {
        let state = handle.state();
        let serving = match handle.current() {
            Some(token) => {
                let now = SystemClock.now_ms();
                format!(
                    "{} ({:?}, age {:.1} s, expires in {:.1} s)",
                    authority.label(&token),
                    token.status(now),
                    now.saturating_sub(token.issued_ms()) as f64 / 1000.0,
                    secs_until(token.expiry_ms())
                )
            }
            None => "no valid token".to_owned(),
        };
        if state.consecutive_failures > failures {
            let error = state
                .last_error
                .as_ref()
                .map_or_else(String::new, ToString::to_string);
            let retry = state
                .next_refresh_ms
                .map_or_else(|| "?".to_owned(), |ms| format!("{:.2} s", secs_until(ms)));
            println!(
                "{} refresh failed ({} in a row): {error}; backoff: retry in {retry}",
                at(),
                state.consecutive_failures
            );
            println!("{}   grace period: workers still get {serving}", at());
        } else if state.consecutive_failures == 0 && failures > 0 {
            println!(
                "{} recovered after {failures} failed attempts; workers get {serving}",
                at()
            );
        }
        failures = state.consecutive_failures;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            println!(
                "{} workers: {:>4} reads so far, {} failed; using {serving}",
                at(),
                usage.reads.load(Ordering::Relaxed),
                usage.failed_reads.load(Ordering::Relaxed)
            );
        }
        Timer::after(Duration::from_millis(10)).await;
    }
}
