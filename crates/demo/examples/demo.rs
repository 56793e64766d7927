//! tokenkeeper's main job, live, in about 15 seconds: `cargo run --example demo`.
//!
//! What it shows:
//!
//! - A real OAuth2 token endpoint: the demo starts an embedded authority
//!   (the workspace's `local-authority` crate) on 127.0.0.1 that hands out
//!   short-lived tokens, 6 s each, so one turns stale after 3 s.
//! - The manager asks it for tokens with the client-credentials grant
//!   (`ClientCredentials` on a `TokenEndpoint`), over real HTTP with the
//!   default client (ureq, run on a thread pool). It runs on smol with the
//!   system clock and a small random jitter, and refreshes every token in
//!   the background shortly before it turns stale.
//! - Four workers clone the handle and use the token every 50 ms, on the hot
//!   path (`current()`, no waiting, no message) and the waiting path
//!   (`token().await`). They never refresh anything themselves. Each read is
//!   checked against the authority, as a resource server would.
//! - A subscriber prints each refresh as it is published.
//! - An injected outage: just before token #3 is due for refresh, the
//!   authority answers every request with HTTP 503 `temporarily_unavailable`
//!   for 2 s (`LocalAuthority::set_outage`). Refreshes fail and are retried
//!   with backoff (read from `handle.state()`), while the workers keep
//!   getting token #3, which is stale but still valid: the grace period.
//!   Then the authority recovers and the next refresh succeeds before
//!   token #3 expires.
//! - A closing summary: requests the authority received, reads, refreshes,
//!   failed reads, and the oldest token any worker used.
//!
//! Token values are secrets and are never printed: the output names tokens
//! by number ("token #3", in order of publication) and shows only their
//! length.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use local_authority::{Fault, LocalAuthority};
use smol::Timer;
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{
    Backoff, ClientId, ClientSecret, RandomEarlyJitter, Token, TokenHandle, TokenManager,
};

/// How long each token lives. Stale after half of it (the default policy's
/// stale window is min(30 s, lifetime / 2)).
const LIFETIME: Duration = Duration::from_secs(6);
/// Refresh up to this much before the stale instant.
const JITTER: Duration = Duration::from_millis(300);
/// How long the authority is down.
const OUTAGE: Duration = Duration::from_secs(2);
/// The outage begins just before the refresh of this token is due.
const OUTAGE_AT_TOKEN: u64 = 3;
/// The demo ends shortly after this many tokens were published.
const TOKENS: u64 = 5;
const WORKERS: usize = 4;
const READ_EVERY: Duration = Duration::from_millis(50);
/// What the authority takes to answer, on top of the loopback round trip.
const LATENCY: Duration = Duration::from_millis(40);
/// The authority's built-in client.
const CLIENT_ID: &str = "client-a";
const CLIENT_SECRET: &str = "secret-a";

fn main() {
    smol::block_on(demo());
}

/// Seconds since the demo started, as a log prefix.
fn at() -> String {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    format!("[{:5.2}s]", start.elapsed().as_secs_f64())
}

/// Seconds from now until `t` (zero once it has passed).
fn secs_until(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs_f64()
}

/// Names tokens by number without printing them: the n-th token seen
/// (tokens are told apart by their issue time).
#[derive(Default)]
struct Labels(Mutex<BTreeMap<SystemTime, u64>>);

impl Labels {
    fn label(&self, token: &Token) -> String {
        let mut labels = self.0.lock().unwrap();
        let next = labels.len() as u64 + 1;
        let n = *labels.entry(token.issued_at()).or_insert(next);
        format!("token #{n}")
    }
}

/// What the workers did, together.
#[derive(Default)]
struct Usage {
    reads: AtomicU64,
    failed_reads: AtomicU64,
    /// Reads of a token the authority no longer accepts (never, we hope).
    rejected_reads: AtomicU64,
    max_age_ms: AtomicU64,
    /// Issue times of the tokens the workers used.
    seen: Mutex<BTreeSet<SystemTime>>,
}

async fn demo() {
    at();
    let authority = Arc::new(LocalAuthority::start().expect("start the local authority"));
    authority.set_expires_in(Some(serde_json::json!(LIFETIME.as_secs())));
    authority.set_latency(LATENCY);
    println!(
        "tokenkeeper demo: {WORKERS} workers, {}s tokens (stale after {}s), jitter up to {} ms, \
         an authority outage of {}s",
        LIFETIME.as_secs(),
        LIFETIME.as_secs() / 2,
        JITTER.as_millis(),
        OUTAGE.as_secs()
    );
    println!(
        "authority: OAuth2 token endpoint at {} (client credentials, client_secret_basic)",
        authority.token_url()
    );
    println!("token values are secrets: tokens are named by number, never printed\n");

    // The client-credentials grant over HTTP, with the default client (ureq).
    // Plain http is accepted because the URL is loopback.
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new(CLIENT_ID))
        .client_secret(ClientSecret::new(CLIENT_SECRET))
        .build()
        .expect("a loopback token URL");
    let source = ClientCredentials::new(endpoint).scope("orders:read");
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

    let labels = Arc::new(Labels::default());
    let subscriber = smol::spawn(subscriber(handle.clone(), Arc::clone(&labels)));
    let stop = Arc::new(AtomicBool::new(false));
    let usage = Arc::new(Usage::default());
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            smol::spawn(worker(
                id,
                handle.clone(),
                Arc::clone(&authority),
                Arc::clone(&usage),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let monitor = smol::spawn(monitor(
        handle.clone(),
        Arc::clone(&labels),
        Arc::clone(&usage),
    ));
    let outage = smol::spawn(outage(handle.clone(), Arc::clone(&authority)));

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
    outage.cancel().await;

    let state = handle.state();
    let reads = usage.reads.load(Ordering::SeqCst);
    let failed = usage.failed_reads.load(Ordering::SeqCst);
    println!("\nsummary");
    println!(
        "  authority requests     {:>6}  ({} tokens issued; the manager counted {} requests)",
        authority.token_requests(),
        authority.tokens_issued(),
        state.source_requests
    );
    println!(
        "  refreshes (published)  {:>6}  (failed attempts: {})",
        state.refreshes,
        state.source_requests.saturating_sub(state.refreshes)
    );
    println!(
        "  reads by {WORKERS} workers     {:>6}  (failed: {failed}; {:.0} reads per authority request)",
        reads,
        reads as f64 / authority.token_requests().max(1) as f64
    );
    println!(
        "  rejected by authority  {:>6}  (reads of a token the authority no longer accepts)",
        usage.rejected_reads.load(Ordering::SeqCst)
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
async fn subscriber(handle: TokenHandle, labels: Arc<Labels>) {
    let mut tokens = handle.subscribe();
    while let Some(token) = tokens.next().await {
        println!(
            "{} refresh: {} published ({} chars, {}, scope {:?}), stale in {:.1} s, expires in {:.1} s",
            at(),
            labels.label(&token),
            token.access_token().secret().len(),
            token.token_type(),
            token.scope().unwrap_or("-"),
            token.stale_in().as_secs_f64(),
            token.expires_in().as_secs_f64(),
        );
    }
    println!("{} subscriber: stream ended (manager stopped)", at());
}

/// Uses the token every `READ_EVERY`, as a service would per outgoing call.
async fn worker(
    id: usize,
    handle: TokenHandle,
    authority: Arc<LocalAuthority>,
    usage: Arc<Usage>,
    stop: Arc<AtomicBool>,
) {
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
                // "Use" it: the header an outgoing request would carry, and
                // the check the resource server would make.
                let header = format!("Bearer {}", token.access_token().secret());
                std::hint::black_box(header);
                if !authority.is_valid_access_token(token.access_token().secret()) {
                    usage.rejected_reads.fetch_add(1, Ordering::Relaxed);
                }
                let age = token.issued_at().elapsed().unwrap_or_default();
                usage.reads.fetch_add(1, Ordering::Relaxed);
                usage
                    .max_age_ms
                    .fetch_max(age.as_millis() as u64, Ordering::Relaxed);
                usage.seen.lock().unwrap().insert(token.issued_at());
            }
            None => {
                usage.failed_reads.fetch_add(1, Ordering::Relaxed);
            }
        }
        i += 1;
        Timer::after(READ_EVERY).await;
    }
}

/// Takes the authority down for `OUTAGE`, starting just before the refresh
/// of token #`OUTAGE_AT_TOKEN` is due.
async fn outage(handle: TokenHandle, authority: Arc<LocalAuthority>) {
    let due = loop {
        let state = handle.state();
        if state.refreshes >= OUTAGE_AT_TOKEN {
            if let Some(due) = state.next_refresh_at {
                break due;
            }
        }
        Timer::after(Duration::from_millis(20)).await;
    };
    let lead = Duration::from_millis(100);
    let wait = due
        .duration_since(SystemTime::now() + lead)
        .unwrap_or_default();
    Timer::after(wait).await;
    authority.set_outage(Some(Fault::oauth_error(
        503,
        "temporarily_unavailable",
        "injected outage",
    )));
    println!(
        "{} authority: !! outage begins: every request gets HTTP 503 for {:.1} s",
        at(),
        OUTAGE.as_secs_f64()
    );
    Timer::after(OUTAGE).await;
    authority.set_outage(None);
    println!("{} authority: outage over, serving tokens again", at());
}

/// Watches `handle.state()`: prints each failed refresh and its backoff, the
/// recovery, and once a second what the workers are using.
async fn monitor(handle: TokenHandle, labels: Arc<Labels>, usage: Arc<Usage>) {
    let mut failures = 0;
    let mut next_report = Instant::now() + Duration::from_secs(1);
    while !handle.is_stopped() {
        let state = handle.state();
        let serving = match handle.current() {
            Some(token) => format!(
                "{} ({:?}, age {:.1} s, expires in {:.1} s)",
                labels.label(&token),
                token.status(),
                token
                    .issued_at()
                    .elapsed()
                    .unwrap_or_default()
                    .as_secs_f64(),
                token.expires_in().as_secs_f64()
            ),
            None => "no valid token".to_owned(),
        };
        if state.consecutive_failures > failures {
            let error = state
                .last_error
                .as_ref()
                .map_or_else(String::new, ToString::to_string);
            let retry = state.next_refresh_at.map_or_else(
                || "now".to_owned(),
                |t| format!("in {:.2} s", secs_until(t)),
            );
            println!(
                "{} refresh failed ({} in a row): {error}; backoff: retry {retry}",
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
