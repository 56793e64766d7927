//! The cost of a refresh over HTTP next to the same POST made directly with
//! the HTTP client, against `local-authority` on loopback (no added
//! latency).
//!
//! ```sh
//! cargo bench --bench http
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench http
//! ```
//!
//! Ways to get a token from the same authority, all through one
//! `UreqClient`, so over one keep-alive connection (the requests never
//! overlap): a connection of its own per variant made the variants differ
//! by a few per cent whatever they did.
//!
//! - `direct POST`: `UreqClient::post` with the form, headers and timeout
//!   that `ClientCredentials` sends (the floor);
//! - `direct POST again`: the same, a second time in each round: a control
//!   that shows how far two identical variants differ in one run;
//! - `ClientCredentials::fetch`: the source alone: builds the request,
//!   parses the JSON answer, makes the `Token`;
//! - `manager refresh`: `TokenHandle::refresh_rejected` on the current
//!   token, answered by a manager whose driver is spawned on the caller's
//!   executor, as an application does (`smol::spawn(driver)`): the message
//!   to the actor, the fetch, the publish and the wake-up of the caller;
//! - `manager refresh on its own schedule`: the refresh the manager makes
//!   when a token turns stale, with nobody waiting for it: the actor's
//!   turn around the POST (starting the fetch with its deadline, the
//!   fetch, publishing, planning the next refresh), one refresh per
//!   request (see [`scheduled_refresh`]);
//! - `least actor`: a diagnostic, the least an actor that owns the source
//!   adds: a task woken by a flag and an `AtomicWaker` runs the same fetch
//!   and hands the token over through an `Event`, with none of the
//!   manager's bookkeeping (`manager refresh` minus this is that
//!   bookkeeping; this minus the fetch is the two task hops);
//! - `manager refresh, driver on a thread of its own`: the same with the
//!   driver run by `block_on` on a dedicated thread, so a refresh crosses
//!   threads twice more than the direct POST (caller → driver → caller);
//! - `manager refresh, no timers`: a diagnostic, the manager on a
//!   `ManualClock` that arms no async-io timer.
//!
//! Every request is awaited inside the executor that runs the caller, so
//! the harness costs every variant the same. Two passes, each with its own
//! direct POST as the floor: a single-threaded application (a
//! `LocalExecutor` on the benchmark thread; criterion measures each variant,
//! then the interleaved pass) and a two-thread application (`smol::Executor`
//! run by two threads; the interleaved pass). Between them, the first
//! five variants again with 1 ms of latency at the authority, a tenth of
//! the requests. The interleaved pass runs
//! rounds of each variant in rotating order and times every request, so
//! that drifts of a shared machine hit all variants alike; its medians are
//! checked against the targets: ≤ +5 % for the fetch and the refresh on the
//! manager's own schedule; for a forced refresh that a caller waits for,
//! ≤ +10 % on loopback and ≤ +1 % with 1 ms of latency at the authority.
//!
//! Last, when valgrind is installed and not in quick mode, the instructions
//! per request of the direct POST, the fetch, the least actor, the forced
//! refresh and the scheduled refresh (the last two on a `ManualClock`:
//! valgrind cannot follow `SystemClock`'s vDSO lookup),
//! counted by callgrind in child runs of this binary over every thread of
//! the process. The count does not depend on what else the machine does
//! (it moves by 1–3 k per request between runs, with how the threads
//! interleave), so it shows what the manager adds where timings drift.

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atomic_waker::AtomicWaker;
use base64::Engine as _;
use futures_lite::future::{self, block_on};
use local_authority::LocalAuthority;
use smol::{Executor, LocalExecutor};
use tokenkeeper::manager::Driver;
use tokenkeeper::oauth2::{
    ClientCredentials, HttpClient, HttpRequest, TokenEndpoint, UreqClient, DEFAULT_MAX_BODY,
};
use tokenkeeper::{
    BoxFuture, ClientId, ClientSecret, Clock, FetchContext, LifetimePolicy, ManualClock, NoJitter,
    SourceError, SystemClock, Token, TokenHandle, TokenManager, TokenSource,
};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How far each request of [`scheduled_refresh`] moves the manager's clock
/// on: past its next refresh (planned at the stale instant, 30 s into
/// `local-authority`'s 60 s tokens, no jitter), within the token's life.
const SCHEDULE_SKIP: Duration = Duration::from_secs(45);
const DIRECT: &str = "direct POST (UreqClient::post)";
const DIRECT_AGAIN: &str = "direct POST again (control)";
const MANAGER: &str = "manager refresh (refresh_rejected)";
const MANAGER_NO_TIMERS: &str = "manager refresh, no timers (ManualClock)";
const LEAST_ACTOR: &str = "least actor (a task that fetches when woken)";
const SCHEDULED: &str = "manager refresh on its own schedule, nobody waiting";
/// Set for a child run under callgrind: `<variant name>:<requests>`.
const COUNT_ENV: &str = "TOKENKEEPER_BENCH_HTTP_COUNT";

/// What a variant's median may add to the direct POST's.
#[derive(Clone, Copy)]
enum Target {
    /// A diagnostic: printed, not judged.
    None,
    /// ≤ +5 %: work nobody waits for (the fetch, the scheduled refresh).
    Unwaited,
    /// ≤ +10 % on loopback, ≤ +1 % with 1 ms of latency at the authority:
    /// a forced refresh adds two task hops a caller waits through, a
    /// constant that only a real authority's latency puts in proportion.
    Waited,
}

impl Target {
    /// The highest ratio to the direct POST allowed, and how it reads.
    fn limit(self, latency: bool) -> Option<(f64, &'static str)> {
        match (self, latency) {
            (Target::None, _) => None,
            (Target::Unwaited, _) => Some((1.05, "≤ +5 %")),
            (Target::Waited, false) => Some((1.10, "≤ +10 %")),
            (Target::Waited, true) => Some((1.01, "≤ +1 % with latency")),
        }
    }
}

type Request = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// One way of getting a token: a function returning one request.
struct Variant {
    name: &'static str,
    /// The target it is held to, if any; the others are diagnostics.
    target: Target,
    request: Request,
}

fn endpoint(authority: &LocalAuthority, http: &UreqClient) -> TokenEndpoint {
    TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .http_client(http.clone())
        .build()
        .expect("a loopback endpoint")
}

/// The POST `ClientCredentials` makes, built by hand: same form, headers
/// (in the same order) and per-request timeout (the endpoint's: the time
/// left before the manager's deadline, less a 10 % margin).
fn direct(name: &'static str, authority: &LocalAuthority, http: &UreqClient) -> Variant {
    let http = Arc::new(http.clone());
    let basic = base64::engine::general_purpose::STANDARD.encode("client-a:secret-a");
    let request = HttpRequest::form_post(
        authority.token_url().parse().expect("a URL"),
        b"grant_type=client_credentials".to_vec(),
    )
    .header("Authorization", format!("Basic {basic}"))
    .with_timeout(REQUEST_TIMEOUT - REQUEST_TIMEOUT / 10);
    Variant {
        name,
        target: Target::None,
        request: Box::new(move || {
            let (http, request) = (Arc::clone(&http), request.clone());
            Box::pin(async move {
                let response = http.post(request, DEFAULT_MAX_BODY).await.expect("POST");
                assert_eq!(response.status(), 200);
            })
        }),
    }
}

fn source(authority: &LocalAuthority, http: &UreqClient) -> Variant {
    let grant = ClientCredentials::new(endpoint(authority, http));
    let grant = Arc::new(std::sync::Mutex::new(Some(grant)));
    Variant {
        name: "ClientCredentials::fetch",
        target: Target::Unwaited,
        request: Box::new(move || {
            let slot = Arc::clone(&grant);
            Box::pin(async move {
                // One request at a time: taken out for the fetch, put back.
                let mut grant = slot.lock().unwrap().take().expect("the grant");
                let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
                let deadline = cx.now_ms() + REQUEST_TIMEOUT.as_millis() as u64;
                grant
                    .fetch(cx.with_deadline_ms(deadline))
                    .await
                    .expect("a token");
                *slot.lock().unwrap() = Some(grant);
            })
        }),
    }
}

/// A manager fetching from `authority` with `http`, on `clock`.
fn manager(
    authority: &LocalAuthority,
    http: &UreqClient,
    clock: impl Clock,
) -> (TokenHandle, Driver) {
    let grant = ClientCredentials::new(endpoint(authority, http));
    TokenManager::builder(grant)
        .clock(clock)
        .request_timeout(REQUEST_TIMEOUT)
        .forced_refresh_interval(Duration::ZERO)
        .build()
}

/// `refresh_rejected` of the current token: one forced refresh.
fn forced_refresh(name: &'static str, target: Target, handle: TokenHandle) -> Variant {
    Variant {
        name,
        target,
        request: Box::new(move || {
            let handle = handle.clone();
            Box::pin(async move {
                let current = match handle.current() {
                    Some(token) => token,
                    None => handle.token().await.expect("a first token"),
                };
                let next = handle
                    .refresh_rejected(&current)
                    .await
                    .expect("a new token");
                assert_ne!(next, current);
            })
        }),
    }
}

/// A refresh as the manager makes it on its own schedule, with nobody
/// waiting: each request lets one refresh through and returns once its
/// token is published.
///
/// The manager's clock is the given one moved on by what the requests
/// skip: each request skips [`SCHEDULE_SKIP`], past the manager's next
/// refresh, so the timer the actor armed for it is due when the request
/// polls the driver. Its source waits at a gate until a request allows one
/// more token, so that between requests the manager sends nothing. The
/// request polls the driver itself, as the driver's task would be polled:
/// the end of the POST wakes the task that polls the driver. What it times
/// is the actor's whole turn around the POST: the timer, starting the
/// fetch with its deadline, building the request, parsing the answer,
/// publishing, planning the next refresh.
fn scheduled_refresh(authority: &LocalAuthority, http: &UreqClient, clock: impl Clock) -> Variant {
    /// `ClientCredentials` behind a gate: it fetches while it has finished
    /// fewer tokens than it is allowed.
    struct Gated {
        grant: ClientCredentials,
        allowed: Arc<AtomicU64>,
        finished: Arc<AtomicU64>,
    }
    impl TokenSource for Gated {
        fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
            Box::pin(async move {
                // No waker: the request polls the driver right after it
                // raises the allowance.
                future::poll_fn(|_| {
                    let finished = self.finished.load(Ordering::SeqCst);
                    if finished < self.allowed.load(Ordering::SeqCst) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                let token = self.grant.fetch(cx).await.expect("a token");
                self.finished.fetch_add(1, Ordering::SeqCst);
                Ok(token)
            })
        }
    }
    let allowed = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let gated = Gated {
        grant: ClientCredentials::new(endpoint(authority, http)),
        allowed: Arc::clone(&allowed),
        finished: Arc::clone(&finished),
    };
    let clock = Skipping::new(clock);
    let (handle, driver) = TokenManager::builder(gated)
        .clock(clock.clone())
        .jitter(NoJitter)
        .request_timeout(REQUEST_TIMEOUT)
        .build();
    let driver = Arc::new(Mutex::new(Some(driver)));
    Variant {
        name: SCHEDULED,
        target: Target::Unwaited,
        request: Box::new(move || {
            // Held by the variant: every handle gone would stop the manager.
            let _alive = &handle;
            let (driver, allowed, finished, clock) = (
                Arc::clone(&driver),
                Arc::clone(&allowed),
                Arc::clone(&finished),
                clock.clone(),
            );
            Box::pin(async move {
                let before = finished.load(Ordering::SeqCst);
                allowed.store(before + 1, Ordering::SeqCst);
                clock.skip(SCHEDULE_SKIP);
                // One request at a time: taken out for it, put back.
                let mut taken = driver.lock().unwrap().take().expect("the driver");
                future::poll_fn(|cx| {
                    // The driver publishes in the poll in which the fetch
                    // ends, before it returns.
                    if Pin::new(&mut taken).poll(cx).is_ready() {
                        panic!("the manager stopped");
                    }
                    if finished.load(Ordering::SeqCst) > before {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                *driver.lock().unwrap() = Some(taken);
            })
        }),
    }
}

/// A clock moved on by what is skipped: `inner`'s time plus the skips.
/// Its timers are also due once the skipped time reaches them, when next
/// polled (whoever skips polls what sleeps on it).
struct Skipping<C> {
    inner: Arc<C>,
    skipped_ms: Arc<AtomicU64>,
}

// Not derived: that would ask `C: Clone`.
impl<C> Clone for Skipping<C> {
    fn clone(&self) -> Self {
        Skipping {
            inner: Arc::clone(&self.inner),
            skipped_ms: Arc::clone(&self.skipped_ms),
        }
    }
}

impl<C: Clock> Skipping<C> {
    fn new(inner: C) -> Skipping<C> {
        Skipping {
            inner: Arc::new(inner),
            skipped_ms: Arc::default(),
        }
    }

    fn skipped(&self) -> Duration {
        Duration::from_millis(self.skipped_ms.load(Ordering::SeqCst))
    }

    fn skip(&self, by: Duration) {
        self.skipped_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl<C: Clock> Clock for Skipping<C> {
    fn now(&self) -> SystemTime {
        self.inner.now() + self.skipped()
    }

    // The read path's coarse clock stays in the measurement.
    fn now_ms_fast(&self) -> u64 {
        self.inner.now_ms_fast() + self.skipped_ms.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, deadline: SystemTime) -> BoxFuture<'static, ()> {
        let inner_deadline = deadline.checked_sub(self.skipped()).unwrap_or(UNIX_EPOCH);
        let timer = self.inner.sleep_until(inner_deadline);
        let clock = self.clone();
        Box::pin(future::or(timer, async move {
            future::poll_fn(|_| {
                if clock.now() >= deadline {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        }))
    }
}

/// The least an actor that owns the source adds to a refresh a caller
/// waits for: a task that runs `ClientCredentials::fetch` when woken (a
/// flag and an `AtomicWaker`, as handles wake the manager) and hands the
/// token over through an `Event` (as the manager wakes its waiters). No
/// shared state, rejection, deadline, timer or per-thread copy: what is left
/// of the manager's cost once its bookkeeping is taken away.
fn least_actor(
    authority: &LocalAuthority,
    http: &UreqClient,
    spawn: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>),
) -> Variant {
    #[derive(Default)]
    struct Rendezvous {
        asked: AtomicBool,
        actor: AtomicWaker,
        token: Mutex<Option<Arc<Token>>>,
        answered: event_listener::Event,
    }
    let rendezvous = Arc::new(Rendezvous::default());
    let actor = Arc::clone(&rendezvous);
    let mut grant = ClientCredentials::new(endpoint(authority, http));
    spawn(Box::pin(async move {
        loop {
            future::poll_fn(|cx| {
                actor.actor.register(cx.waker());
                if actor.asked.swap(false, Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let cx = FetchContext::new(SystemClock, LifetimePolicy::default());
            let deadline = cx.now_ms() + REQUEST_TIMEOUT.as_millis() as u64;
            let token = grant
                .fetch(cx.with_deadline_ms(deadline))
                .await
                .expect("a token");
            *actor.token.lock().unwrap() = Some(Arc::new(token));
            actor.answered.notify(usize::MAX);
        }
    }));
    Variant {
        name: LEAST_ACTOR,
        target: Target::None,
        request: Box::new(move || {
            let rendezvous = Arc::clone(&rendezvous);
            Box::pin(async move {
                rendezvous.asked.store(true, Ordering::SeqCst);
                rendezvous.actor.wake();
                let take = || rendezvous.token.lock().unwrap().take();
                loop {
                    if take().is_some() {
                        return;
                    }
                    let listener = rendezvous.answered.listen();
                    if take().is_some() {
                        return;
                    }
                    listener.await;
                }
            })
        }),
    }
}

fn own_thread_driver(authority: &LocalAuthority, http: &UreqClient) -> Variant {
    let (handle, driver) = manager(authority, http, SystemClock);
    std::thread::Builder::new()
        .name("tokenkeeper-driver".into())
        .spawn(move || block_on(driver))
        .expect("spawn the driver thread");
    forced_refresh(
        "manager refresh, driver on a thread of its own",
        Target::None,
        handle,
    )
}

fn main() {
    if let Ok(spec) = std::env::var(COUNT_ENV) {
        count_child(&spec);
        return;
    }
    // One authority for all, so that its state (it records every request)
    // grows alike under each.
    let authority = LocalAuthority::start().expect("start the authority");

    // A single-threaded application: everything on this thread's executor
    // but the driver of the own-thread variant.
    let local = LocalExecutor::new();
    let spawn_local = |driver: Driver| local.spawn(driver).detach();
    let http = UreqClient::new();
    let (handle, driver) = manager(&authority, &http, SystemClock);
    spawn_local(driver);
    let (no_timers, no_timers_driver) =
        manager(&authority, &http, ManualClock::new(SystemTime::now()));
    spawn_local(no_timers_driver);
    let mut variants = vec![
        direct(DIRECT, &authority, &http),
        direct(DIRECT_AGAIN, &authority, &http),
        source(&authority, &http),
        forced_refresh(MANAGER, Target::Waited, handle),
        scheduled_refresh(&authority, &http, SystemClock),
        least_actor(&authority, &http, |actor| local.spawn(actor).detach()),
        own_thread_driver(&authority, &http),
        forced_refresh(MANAGER_NO_TIMERS, Target::None, no_timers),
    ];
    block_on(local.run(warm_up(&mut variants)));

    let mut c = support::criterion();
    {
        let mut g = c.benchmark_group("http refresh");
        for v in &mut variants {
            g.bench_function(v.name, |b| {
                b.iter_custom(|iters| {
                    block_on(local.run(async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            (v.request)().await;
                        }
                        start.elapsed()
                    }))
                })
            });
        }
        g.finish();
    }
    c.final_summary();
    let mut variants = block_on(local.run(interleaved(
        "one thread (LocalExecutor)",
        variants,
        Scale::Full,
        false,
    )));

    // The same with 1 ms of latency at the authority, nearer a real one:
    // what the manager adds is a constant, not a share of the POST.
    authority.set_latency(Duration::from_millis(1));
    variants.truncate(5);
    block_on(local.run(interleaved(
        "one thread, authority latency 1 ms",
        variants,
        Scale::Tenth,
        true,
    )));
    authority.set_latency(Duration::ZERO);

    // A two-thread application: the measuring task and the driver on one
    // `smol::Executor` run by two threads.
    let ex = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let runners: Vec<_> = (0..2)
        .map(|i| {
            let (ex, stopped) = (Arc::clone(&ex), stopped.clone());
            std::thread::Builder::new()
                .name(format!("executor-{i}"))
                .spawn(move || block_on(ex.run(stopped.recv())))
                .expect("spawn an executor thread")
        })
        .collect();
    let http = UreqClient::new();
    let (handle, driver) = manager(&authority, &http, SystemClock);
    ex.spawn(driver).detach();
    let mut variants = vec![
        direct(DIRECT, &authority, &http),
        direct(DIRECT_AGAIN, &authority, &http),
        source(&authority, &http),
        forced_refresh(MANAGER, Target::Waited, handle),
        scheduled_refresh(&authority, &http, SystemClock),
        least_actor(&authority, &http, |actor| ex.spawn(actor).detach()),
    ];
    block_on(ex.spawn(async move {
        warm_up(&mut variants).await;
        interleaved("two threads (smol::Executor)", variants, Scale::Full, false).await
    }));
    drop(stop);
    for runner in runners {
        let _closed = runner.join().expect("an executor thread");
    }

    instructions();
}

/// The variants whose instructions are counted, and the requests of the two
/// child runs per variant: their difference leaves out start-up and
/// warm-up. Each is run [`COUNT_REPEATS`] times and the least count kept:
/// threads that spin while they wait for one another only ever add.
const COUNTED: [&str; 5] = [
    DIRECT,
    "ClientCredentials::fetch",
    LEAST_ACTOR,
    MANAGER_NO_TIMERS,
    SCHEDULED,
];
const COUNT_RUNS: [u64; 2] = [1_000, 3_000];
const COUNT_REPEATS: usize = 3;

/// Prints the instructions per request of every [`COUNTED`] variant.
fn instructions() {
    println!("\n== instructions per request, callgrind, every thread of the process ==");
    if support::quick() {
        println!("skipped in quick mode");
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("skipped: valgrind is not installed");
        return;
    }
    let exe = std::env::current_exe().expect("this benchmark's path");
    let collected_once = |name: &str, requests: u64| -> Option<u64> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .env(COUNT_ENV, format!("{name}:{requests}"))
            .output()
            .ok()?;
        // callgrind's summary, on stderr: "==<pid>== Collected : <n>".
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find_map(|line| line.split("Collected :").nth(1)?.trim().parse().ok())
    };
    let collected = |name: &str, requests: u64| -> Option<u64> {
        (0..COUNT_REPEATS)
            .map(|_| collected_once(name, requests))
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .min()
    };
    let mut direct = None;
    for name in COUNTED {
        let [few, many] = COUNT_RUNS;
        let (Some(a), Some(b)) = (collected(name, few), collected(name, many)) else {
            println!("{name}: the child run failed");
            continue;
        };
        let per_request = b.saturating_sub(a) as f64 / (many - few) as f64;
        match direct {
            None => {
                direct = Some(per_request);
                println!("{name}: {:.1} k instructions", per_request / 1e3);
            }
            Some(base) => println!(
                "{name}: {:.1} k instructions = {:+.1} k ({:+.1} %) over the direct POST",
                per_request / 1e3,
                (per_request - base) / 1e3,
                (per_request / base - 1.0) * 100.0
            ),
        }
    }
}

/// A child run: `spec` names a [`COUNTED`] variant and how many requests
/// it makes, after one to warm up.
fn count_child(spec: &str) {
    let (name, requests) = spec.rsplit_once(':').expect("<variant>:<requests>");
    let requests: u64 = requests.parse().expect("a number of requests");
    let authority = LocalAuthority::start().expect("start the authority");
    let local = LocalExecutor::new();
    let http = UreqClient::new();
    let (handle, driver) = manager(&authority, &http, ManualClock::new(SystemTime::now()));
    local.spawn(driver).detach();
    let mut variants = [
        direct(DIRECT, &authority, &http),
        source(&authority, &http),
        least_actor(&authority, &http, |actor| local.spawn(actor).detach()),
        forced_refresh(MANAGER_NO_TIMERS, Target::None, handle),
        scheduled_refresh(&authority, &http, ManualClock::new(SystemTime::now())),
    ];
    let variant = variants
        .iter_mut()
        .find(|v| v.name == name)
        .expect("a counted variant");
    block_on(local.run(async {
        for _ in 0..=requests {
            (variant.request)().await;
        }
    }));
}

/// Connects every variant and fetches its first token.
async fn warm_up(variants: &mut [Variant]) {
    for v in variants {
        (v.request)().await;
    }
}

/// Rounds of `per_round` requests of each variant, in rotating order; the
/// median of every variant's requests.
/// How many requests an interleaved pass makes.
enum Scale {
    Full,
    /// A tenth: for requests that wait on purpose.
    Tenth,
}

async fn interleaved(
    pass: &str,
    mut variants: Vec<Variant>,
    scale: Scale,
    latency: bool,
) -> Vec<Variant> {
    let (rounds, per_round) = match (support::quick(), scale) {
        (true, Scale::Full) => (20, 100),
        (false, Scale::Full) => (60, 200),
        (true, Scale::Tenth) => (20, 10),
        (false, Scale::Tenth) => (60, 20),
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
            let before = support::ThreadTimes::now();
            for _ in 0..per_round {
                let start = Instant::now();
                (variants[i].request)().await;
                samples[i].push(start.elapsed().as_secs_f64() * 1e6);
            }
            let (cpu_ns, switched) = support::ThreadTimes::now().since(&before);
            cpu[i] += cpu_ns;
            switches[i] += switched;
        }
    }
    let summaries: Vec<support::Summary> = samples.into_iter().map(support::Summary::new).collect();
    println!(
        "\n== HTTP refresh, {pass}, interleaved: {rounds} rounds × {per_round} requests of each, µs per request ({}) ==",
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
        let what = format!("{pass}: {} vs direct POST, medians", v.name);
        let measured = format!(
            "{:.1} µs vs {base:.1} µs = {:+.1} %",
            s.median(),
            (ratio - 1.0) * 100.0
        );
        match v.target.limit(latency) {
            Some((limit, target)) => support::verdict(ratio <= limit, &what, &measured, target),
            None => println!("{what}: {measured}"),
        }
    }
    variants
}
