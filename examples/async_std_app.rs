//! An async-std app: worker tasks share one token manager, and a subscriber
//! task prints each background refresh. About 5 s:
//!
//! ```sh
//! cargo run --example async_std_app --features async-std
//! ```
//!
//! What it shows:
//!
//! - `TokenManager::builder(source).spawn_async_std()` (feature `async-std`)
//!   builds the manager and spawns its driver on async-std's global
//!   executor; the app keeps only the `TokenHandle`.
//! - The source is the client-credentials grant (`ClientCredentials` on a
//!   `TokenEndpoint`, default HTTP client) against an embedded OAuth2
//!   authority on 127.0.0.1 (the workspace's `local-authority` crate) that
//!   hands out 4 s tokens, so each turns stale after 2 s and the manager
//!   refreshes it in the background, up to 300 ms early (jitter).
//! - Three worker tasks each own a clone of the handle and read the token
//!   every 100 ms, alternating `current()` (the hot path: no waiting, no
//!   message) and `token().await` (returns at once while a valid token
//!   exists; waits only at start-up). They never refresh anything.
//! - A subscriber task (`subscribe()`) prints each token as it is published;
//!   its stream ends when `shutdown()` stops the manager.
//!
//! Token values are secrets: the output names tokens by number and shows
//! only their length.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use async_std::task;
use local_authority::LocalAuthority;
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{ClientId, ClientSecret, RandomEarlyJitter, TokenHandle, TokenManager};

/// How long each token lives (stale after half of it).
const LIFETIME: Duration = Duration::from_secs(4);
const JITTER: Duration = Duration::from_millis(300);
const RUN_FOR: Duration = Duration::from_secs(5);
const WORKERS: usize = 3;
const READ_EVERY: Duration = Duration::from_millis(100);

#[async_std::main]
async fn main() {
    at();
    let authority = Arc::new(LocalAuthority::start().expect("start the local authority"));
    authority.set_expires_in(Some(serde_json::json!(LIFETIME.as_secs())));
    println!(
        "async-std app: {WORKERS} workers and a subscriber, {}s tokens, running {}s",
        LIFETIME.as_secs(),
        RUN_FOR.as_secs()
    );
    println!("authority: {}", authority.token_url());

    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .expect("a loopback token URL");
    // The driver runs on async-std's global executor from here on.
    let handle = TokenManager::builder(ClientCredentials::new(endpoint))
        .jitter(RandomEarlyJitter::new(JITTER))
        .spawn_async_std();

    let subscriber = task::spawn(subscriber(handle.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let worker = worker(handle.clone(), Arc::clone(&authority), Arc::clone(&stop));
            (id, task::spawn(worker))
        })
        .collect();

    task::sleep(RUN_FOR).await;
    stop.store(true, Ordering::SeqCst);
    let mut all_reads = 0;
    let mut all_failed = 0;
    let mut all_rejected = 0;
    for (id, worker) in workers {
        let reads = worker.await;
        println!(
            "{} worker {id}: {} reads ({} current(), {} token().await), {} failed, {} distinct tokens used",
            at(),
            reads.hot + reads.waiting,
            reads.hot,
            reads.waiting,
            reads.failed,
            reads.tokens.len()
        );
        all_reads += reads.hot + reads.waiting;
        all_failed += reads.failed;
        all_rejected += reads.rejected;
    }
    handle.shutdown().await;
    subscriber.await;

    let state = handle.state();
    println!("\nsummary");
    println!(
        "  authority requests  {:>4}  (tokens published: {})",
        authority.token_requests(),
        state.refreshes
    );
    println!("  reads               {all_reads:>4}  (failed: {all_failed})");
    println!("  rejected reads      {all_rejected:>4}  (tokens the authority no longer accepted)");
}

/// Seconds since the app started, as a log prefix.
fn at() -> String {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    format!("[{:5.2}s]", start.elapsed().as_secs_f64())
}

/// Prints each published token; the stream ends when the manager stops.
async fn subscriber(handle: TokenHandle) {
    let mut tokens = handle.subscribe();
    let mut n = 0;
    while let Some(token) = tokens.next().await {
        n += 1;
        println!(
            "{} subscriber: token #{n} published ({} chars, {}), stale in {:.1} s, expires in {:.1} s",
            at(),
            token.access_token().secret().len(),
            token.token_type(),
            token.stale_in().as_secs_f64(),
            token.expires_in().as_secs_f64(),
        );
    }
    println!("{} subscriber: stream ended (manager stopped)", at());
}

/// What one worker did.
#[derive(Default)]
struct Reads {
    hot: u64,
    waiting: u64,
    failed: u64,
    rejected: u64,
    /// Issue times of the tokens used.
    tokens: BTreeSet<SystemTime>,
}

/// Reads the token every `READ_EVERY`, as a service would per outgoing call.
async fn worker(
    handle: TokenHandle,
    authority: Arc<LocalAuthority>,
    stop: Arc<AtomicBool>,
) -> Reads {
    let mut reads = Reads::default();
    // At start-up there is no token yet: wait for it (the workers share one
    // authority request).
    let _ = handle.token().await;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let token = if i.is_multiple_of(2) {
            reads.hot += 1;
            handle.current()
        } else {
            reads.waiting += 1;
            handle.token().await.ok()
        };
        match token {
            Some(token) => {
                // What the resource server would check.
                if !authority.is_valid_access_token(token.access_token().secret()) {
                    reads.rejected += 1;
                }
                reads.tokens.insert(token.issued_at());
            }
            None => reads.failed += 1,
        }
        i += 1;
        task::sleep(READ_EVERY).await;
    }
    reads
}
