//! A smol app: worker tasks build `Authorization` headers from the current
//! token with `with_current` (no `Arc` clone per read), and a subscriber task
//! prints each background refresh. About 5 s:
//!
//! ```sh
//! cargo run --example smol_app --features smol
//! ```
//!
//! What it shows:
//!
//! - `TokenManager::builder(source).spawn_smol()` (feature `smol`) builds the
//!   manager and spawns its driver on smol's global executor. Without the
//!   feature, the same is `let (handle, driver) = ...build();
//!   smol::spawn(driver).detach();`.
//! - The source is the client-credentials grant against an embedded OAuth2
//!   authority on 127.0.0.1 (the workspace's `local-authority` crate) that
//!   hands out 4 s tokens; the manager refreshes each one in the background
//!   shortly before it turns stale (after 2 s).
//! - Three worker tasks each own a clone of the handle and, every 100 ms,
//!   write `Bearer <token>` into a reused `String` inside
//!   `handle.with_current(|token| ...)`: the fastest read, borrowing the
//!   token without cloning an `Arc` and without allocating. Only when there
//!   is no valid token (at start-up) does a worker wait with `token().await`.
//!   Each header is checked against the authority, as the resource server
//!   would check it.
//! - A subscriber task (`subscribe()`) prints each published token; its
//!   stream ends when `shutdown()` stops the manager.
//!
//! Token values are secrets: the output names tokens by number and shows
//! only their length.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use local_authority::LocalAuthority;
use smol::Timer;
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{ClientId, ClientSecret, RandomEarlyJitter, TokenHandle, TokenManager};

/// How long each token lives (stale after half of it).
const LIFETIME: Duration = Duration::from_secs(4);
const JITTER: Duration = Duration::from_millis(300);
const RUN_FOR: Duration = Duration::from_secs(5);
const WORKERS: usize = 3;
const READ_EVERY: Duration = Duration::from_millis(100);

fn main() {
    smol::block_on(app());
}

async fn app() {
    at();
    let authority = Arc::new(LocalAuthority::start().expect("start the local authority"));
    authority.set_expires_in(Some(serde_json::json!(LIFETIME.as_secs())));
    println!(
        "smol app: {WORKERS} workers and a subscriber, {}s tokens, running {}s",
        LIFETIME.as_secs(),
        RUN_FOR.as_secs()
    );
    println!("authority: {}", authority.token_url());

    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .expect("a loopback token URL");
    // The driver runs on smol's global executor from here on.
    let handle = TokenManager::builder(ClientCredentials::new(endpoint))
        .jitter(RandomEarlyJitter::new(JITTER))
        .spawn_smol();

    let subscriber = smol::spawn(subscriber(handle.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| {
            let worker = worker(handle.clone(), Arc::clone(&authority), Arc::clone(&stop));
            (id, smol::spawn(worker))
        })
        .collect();

    Timer::after(RUN_FOR).await;
    stop.store(true, Ordering::SeqCst);
    let mut all = Calls::default();
    for (id, worker) in workers {
        let calls = worker.await;
        println!(
            "{} worker {id}: {} headers built with with_current(), waited for a token {} time(s), \
             {} rejected, {} distinct tokens used",
            at(),
            calls.headers,
            calls.waits,
            calls.rejected,
            calls.tokens.len()
        );
        all.headers += calls.headers;
        all.waits += calls.waits;
        all.rejected += calls.rejected;
    }
    handle.shutdown().await;
    subscriber.await;

    let state = handle.state();
    println!("\nsummary");
    println!(
        "  authority requests  {:>4}  (tokens published: {}, failed fetches: {})",
        authority.token_requests(),
        state.refreshes,
        state.failures
    );
    println!(
        "  headers built       {:>4}  (waits for a token: {})",
        all.headers, all.waits
    );
    println!(
        "  rejected headers    {:>4}  (tokens the authority no longer accepted)",
        all.rejected
    );
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
struct Calls {
    headers: u64,
    waits: u64,
    rejected: u64,
    /// Issue times of the tokens used.
    tokens: BTreeSet<SystemTime>,
}

/// Builds the header of an outgoing call every `READ_EVERY`.
async fn worker(
    handle: TokenHandle,
    authority: Arc<LocalAuthority>,
    stop: Arc<AtomicBool>,
) -> Calls {
    let mut calls = Calls::default();
    // One buffer for every header this worker builds.
    let mut header = String::with_capacity(64);
    while !stop.load(Ordering::SeqCst) {
        let issued = handle.with_current(|token| {
            header.clear();
            header.push_str("Bearer ");
            header.push_str(token.access_token().secret());
            token.issued_at()
        });
        let Some(issued) = issued else {
            // No valid token yet: wait for one (the workers share one
            // authority request), then build the header again.
            calls.waits += 1;
            if let Err(error) = handle.token().await {
                println!("{} worker: no token: {error}", at());
                Timer::after(READ_EVERY).await;
            }
            continue;
        };
        calls.headers += 1;
        calls.tokens.insert(issued);
        // "Send" the call: the check the resource server would make.
        let token = header.strip_prefix("Bearer ").unwrap_or_default();
        if !authority.is_valid_access_token(token) {
            calls.rejected += 1;
        }
        Timer::after(READ_EVERY).await;
    }
    calls
}
