//! The cost of a refresh over HTTP next to the same POST made directly with
//! the HTTP client, against `local-authority` on loopback (no added
//! latency).
//!
//! ```sh
//! cargo bench --bench http
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench http
//! ```
//!
//! Four ways to get a token from the same authority, each awaited with
//! `block_on` on the benchmark thread, over one keep-alive connection:
//!
//! - `direct POST`: `UreqClient::post` with the form, headers and timeout
//!   that `ClientCredentials` sends (the floor);
//! - `ClientCredentials::fetch`: the source alone: builds the request,
//!   parses the JSON answer, makes the `Token`;
//! - `manager refresh`: `TokenHandle::refresh_rejected` on the current token,
//!   answered by a manager whose driver runs on its own thread: the message
//!   to the actor, the fetch, the publish and the wake-up of the caller;
//! - `manager refresh, driver on the caller's thread`: the same with the
//!   driver on a `LocalExecutor` that the caller runs, so that the only
//!   wake-ups crossing threads are the HTTP client's, as for the direct POST.
//!
//! Criterion measures each in turn; then an interleaved pass (rounds of each
//! in rotating order, every request timed) gives the medians that the
//! ≤ 5 % target is checked against, so that drifts of a shared machine hit
//! all three alike.

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_lite::future::block_on;
use local_authority::LocalAuthority;
use smol::LocalExecutor;
use tokenkeeper::oauth2::{
    ClientCredentials, HttpClient, HttpRequest, TokenEndpoint, UreqClient, DEFAULT_MAX_BODY,
};
use tokenkeeper::{
    ClientId, ClientSecret, Clock, FetchContext, LifetimePolicy, ManualClock, SystemClock,
    TokenManager, TokenSource,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// One way of getting a token: the authority it talks to (kept alive) and a
/// function doing one request.
struct Variant {
    name: &'static str,
    request: Box<dyn FnMut()>,
}

fn endpoint(authority: &LocalAuthority, http: UreqClient) -> TokenEndpoint {
    TokenEndpoint::builder(
        authority.token_url(),
        ClientId::new("client-a"),
        ClientSecret::new("secret-a"),
    )
    .http_client(http)
    .build()
    .expect("a loopback endpoint")
}

/// The POST `ClientCredentials` makes, built by hand: same form, headers
/// (in the same order) and per-request timeout (the endpoint's: the time
/// left before the manager's deadline, less a 10 % margin).
fn direct(authority: &LocalAuthority) -> Variant {
    let http = UreqClient::new();
    let basic = base64::engine::general_purpose::STANDARD.encode("client-a:secret-a");
    let request = HttpRequest::form_post(
        authority.token_url().parse().expect("a URL"),
        b"grant_type=client_credentials".to_vec(),
    )
    .header("Authorization", format!("Basic {basic}"))
    .with_timeout(REQUEST_TIMEOUT - REQUEST_TIMEOUT / 10);
    Variant {
        name: "direct POST (UreqClient::post)",
        request: Box::new(move || {
            let response = block_on(http.post(request.clone(), DEFAULT_MAX_BODY)).expect("POST");
            assert_eq!(response.status(), 200);
        }),
    }
}

fn source(authority: &LocalAuthority) -> Variant {
    let mut grant = ClientCredentials::new(endpoint(authority, UreqClient::new()));
    Variant {
        name: "ClientCredentials::fetch",
        request: Box::new(move || {
            let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
            let deadline = cx.now_ms() + REQUEST_TIMEOUT.as_millis() as u64;
            let cx = cx.with_deadline_ms(deadline);
            block_on(grant.fetch(cx)).expect("a token");
        }),
    }
}

fn manager(authority: &LocalAuthority) -> Variant {
    let grant = ClientCredentials::new(endpoint(authority, UreqClient::new()));
    let (handle, driver) = TokenManager::builder(grant)
        .request_timeout(REQUEST_TIMEOUT)
        .forced_refresh_interval(Duration::ZERO)
        .build();
    std::thread::Builder::new()
        .name("tokenkeeper-driver".into())
        .spawn(move || block_on(driver))
        .expect("spawn the driver thread");
    block_on(handle.token()).expect("first token");
    Variant {
        name: "manager refresh (refresh_rejected)",
        request: Box::new(move || {
            let current = handle.current().expect("a current token");
            let next = block_on(handle.refresh_rejected(&current)).expect("a new token");
            assert_ne!(next, current);
        }),
    }
}

/// The same manager with its driver on the caller's thread: a
/// `LocalExecutor` runs both, so no wake-up crosses threads but those of
/// the HTTP client's blocking pool, as with the direct POST.
fn manager_same_thread(authority: &LocalAuthority) -> Variant {
    let grant = ClientCredentials::new(endpoint(authority, UreqClient::new()));
    let (handle, driver) = TokenManager::builder(grant)
        .request_timeout(REQUEST_TIMEOUT)
        .forced_refresh_interval(Duration::ZERO)
        .build();
    let ex = LocalExecutor::new();
    ex.spawn(driver).detach();
    block_on(ex.run(handle.token())).expect("first token");
    Variant {
        name: "manager refresh, driver on the caller's thread",
        request: Box::new(move || {
            let current = handle.current().expect("a current token");
            let next = block_on(ex.run(handle.refresh_rejected(&current))).expect("a new token");
            assert_ne!(next, current);
        }),
    }
}

/// Diagnostic: the same-thread manager on a `ManualClock` that never
/// moves, so that it arms no async-io timer (request timeout, next
/// refresh): what is left is the actor's own work.
fn manager_no_timers(authority: &LocalAuthority) -> Variant {
    let grant = ClientCredentials::new(endpoint(authority, UreqClient::new()));
    let (handle, driver) = TokenManager::builder(grant)
        .clock(ManualClock::new(SystemClock.now_ms()))
        .request_timeout(REQUEST_TIMEOUT)
        .forced_refresh_interval(Duration::ZERO)
        .build();
    let ex = LocalExecutor::new();
    ex.spawn(driver).detach();
    block_on(ex.run(handle.token())).expect("first token");
    Variant {
        name: "manager refresh, caller's thread, no timers (ManualClock)",
        request: Box::new(move || {
            let current = handle.current().expect("a current token");
            let next = block_on(ex.run(handle.refresh_rejected(&current))).expect("a new token");
            assert_ne!(next, current);
        }),
    }
}

fn main() {
    // One authority for all, so that its state (it records every request)
    // grows alike under each; every variant has its own connection.
    let authority = LocalAuthority::start().expect("start the authority");
    let mut variants = [
        direct(&authority),
        source(&authority),
        manager(&authority),
        manager_same_thread(&authority),
        manager_no_timers(&authority),
    ];
    for v in &mut variants {
        (v.request)(); // connect and warm up
    }

    let mut c = support::criterion();
    {
        let mut g = c.benchmark_group("http refresh");
        for v in &mut variants {
            g.bench_function(v.name, |b| b.iter(&mut v.request));
        }
        g.finish();
    }
    c.final_summary();

    interleaved(&mut variants);
}

/// Rounds of `per_round` requests of each variant, in rotating order; the
/// median of every variant's requests.
fn interleaved(variants: &mut [Variant]) {
    let (rounds, per_round) = if support::quick() {
        (20, 100)
    } else {
        (60, 200)
    };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // CPU time (every thread of this process: the caller, the driver, the
    // blocking pool, async-io's and the authority's threads) and context
    // switches, per variant.
    let mut cpu = vec![0u64; variants.len()];
    let mut switches = vec![0u64; variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let (cpu0, switches0) = (support::cpu_ns(), support::context_switches());
            for _ in 0..per_round {
                let start = Instant::now();
                (variants[i].request)();
                samples[i].push(start.elapsed().as_secs_f64() * 1e6);
            }
            cpu[i] += support::cpu_ns() - cpu0;
            switches[i] += support::context_switches() - switches0;
        }
    }
    let summaries: Vec<support::Summary> = samples.into_iter().map(support::Summary::new).collect();
    println!(
        "\n== HTTP refresh, interleaved: {rounds} rounds × {per_round} requests of each, µs per request ({}) ==",
        support::machine()
    );
    let requests = (rounds * per_round) as f64;
    for (i, (v, s)) in variants.iter().zip(&summaries).enumerate() {
        println!("{}: {}", v.name, s.line("µs"));
        println!(
            "    per request: {:.1} µs of CPU (all threads), {:.1} context switches",
            cpu[i] as f64 / requests / 1e3,
            switches[i] as f64 / requests
        );
    }
    let base = summaries[0].median();
    for (v, s) in variants.iter().zip(&summaries).skip(1) {
        let ratio = s.median() / base;
        support::verdict(
            ratio <= 1.05,
            &format!("{} vs direct POST, medians", v.name),
            &format!(
                "{:.1} µs vs {base:.1} µs = {:+.1} %",
                s.median(),
                (ratio - 1.0) * 100.0
            ),
            "≤ +5 %",
        );
    }
}
