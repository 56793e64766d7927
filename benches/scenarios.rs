//! Crowds on a real executor and real time: single flight at cold start,
//! compare-and-invalidate, and the fan-out to subscribers.
//!
//! ```sh
//! cargo bench --bench scenarios
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench scenarios
//! ```
//!
//! Every scenario runs on smol's multi-threaded `Executor` with one thread
//! per CPU (`smol::block_on`, which also drives async-io's reactor), with
//! tokenkeeper's default HTTP client (ureq on the blocking pool) against
//! `local-authority` on loopback where an authority is involved. It prints
//! the distributions and a PASS/FAIL line per target; the counts of
//! authority requests are exact, the times are medians over several runs.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use local_authority::LocalAuthority;
use smol::{Executor, Task};
use support::Summary;
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{
    source, AccessToken, BoxFuture, ClientId, ClientSecret, FetchContext, SourceError, Token,
    TokenManager, TokenManagerBuilder, TokenSource,
};

/// smol's executor on one thread per CPU, stopped and joined on drop.
struct Pool {
    ex: Arc<Executor<'static>>,
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Pool {
    fn new() -> Pool {
        let ex = Arc::new(Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let n = thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|i| {
                let ex = Arc::clone(&ex);
                let stopped = stopped.clone();
                thread::Builder::new()
                    .name(format!("executor-{i}"))
                    .spawn(move || {
                        let _ = smol::block_on(ex.run(stopped.recv()));
                    })
                    .expect("spawn an executor thread")
            })
            .collect();
        Pool {
            ex,
            stop: Some(stop),
            threads,
        }
    }

    fn spawn<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Task<T> {
        self.ex.spawn(future)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn client_credentials(authority: &LocalAuthority) -> ClientCredentials {
    let endpoint = TokenEndpoint::builder(authority.token_url(), ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .expect("a loopback endpoint");
    ClientCredentials::new(endpoint)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// When each of a crowd of callers was served, in ms after a common start;
/// the last one to be served tells the waiting bench thread.
struct Served {
    at_ns: Vec<AtomicU64>,
    left: AtomicUsize,
    done: (async_channel::Sender<()>, async_channel::Receiver<()>),
}

impl Served {
    fn new(n: usize) -> Served {
        Served {
            at_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            left: AtomicUsize::new(n),
            done: async_channel::bounded(1),
        }
    }

    fn record(&self, i: usize, t0: Instant) {
        self.at_ns[i].store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.done.0.try_send(());
        }
    }

    /// Waits until every caller was served; their times in ms.
    fn wait(&self) -> Vec<f64> {
        smol::block_on(self.done.1.recv()).expect("all served");
        self.at_ns
            .iter()
            .map(|a| a.load(Ordering::Relaxed) as f64 / 1e6)
            .collect()
    }
}

/// A source that notes when each fetch starts and ends.
struct Timed<S> {
    inner: S,
    log: Arc<Mutex<Vec<(Instant, Instant)>>>,
}

impl<S: TokenSource> TokenSource for Timed<S> {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        let log = Arc::clone(&self.log);
        let start = Instant::now();
        let fetch = self.inner.fetch(cx);
        Box::pin(async move {
            let result = fetch.await;
            log.lock().unwrap().push((start, Instant::now()));
            result
        })
    }
}

/// Where row 4's callers come from.
#[derive(Clone, Copy)]
enum Arrival {
    /// Spawned by a task on the executor, as a server's accept loop spawns
    /// its requests.
    Task,
    /// Spawned by the benchmark's main thread, which then competes with
    /// the executor's threads for the two CPUs while it spawns.
    Thread,
}

impl Arrival {
    fn describe(self) -> &'static str {
        match self {
            Arrival::Task => "spawned by a task on the executor",
            Arrival::Thread => "spawned by a thread outside the executor",
        }
    }
}

/// Row 4: a cold manager and `callers` concurrent `token().await`s.
///
/// The authority's latency is the exchange as the source saw it, from the
/// fetch's start to its end: the in-process authority starts its delay when
/// it has read the request, and with the crowd on every CPU that can come
/// some milliseconds late. What the manager adds is the rest of the time to the last
/// caller: until the driver starts the fetch, and from the token's arrival
/// to the last caller served.
fn cold_start(runs: usize, callers: usize, latency: Duration, arrival: Arrival) {
    println!(
        "\n== cold start: {callers} concurrent token().await ({}), authority latency {} ms, {runs} runs ==",
        arrival.describe(),
        ms(latency)
    );
    let authority = LocalAuthority::start().expect("start the authority");
    authority.set_latency(latency);
    let pool = Pool::new();
    let (mut lasts, mut exchanges, mut added) = (Vec::new(), Vec::new(), Vec::new());
    let mut exact = true;
    for run in 0..runs {
        let before = authority.token_requests();
        let fetches = Arc::default();
        let source = Timed {
            inner: client_credentials(&authority),
            log: Arc::clone(&fetches),
        };
        let (handle, driver) = TokenManager::builder(source).build();
        let served = Arc::new(Served::new(callers));
        let t0 = Instant::now();
        pool.spawn(driver).detach();
        let spawn_callers = {
            let (ex, handle, served) = (Arc::clone(&pool.ex), handle.clone(), Arc::clone(&served));
            move || {
                for i in 0..callers {
                    let h = handle.clone();
                    let served = Arc::clone(&served);
                    ex.spawn(async move {
                        h.token().await.expect("a token");
                        served.record(i, t0);
                    })
                    .detach();
                }
                t0.elapsed()
            }
        };
        let spawned = match arrival {
            Arrival::Task => smol::block_on(pool.spawn(async move { spawn_callers() })),
            Arrival::Thread => spawn_callers(),
        };
        let served = served.wait();
        let requests = authority.token_requests() - before;
        exact &= requests == 1;
        let times = Summary::new(served);
        let (start, end) = fetches.lock().unwrap()[0];
        let exchange = ms(end.duration_since(start));
        let part = times.max() - exchange;
        println!(
            "run {run}: {requests} authority request(s); callers spawned in {:.2} ms; \
             fetch from +{:.2} ms to +{:.2} ms; served after {}; the manager's part {:.2} ms",
            ms(spawned),
            ms(start.duration_since(t0)),
            ms(end.duration_since(t0)),
            times.line("ms"),
            part
        );
        lasts.push(times.max());
        exchanges.push(exchange);
        added.push(part);
        smol::block_on(handle.shutdown());
    }
    let (lasts, exchanges, added) = (
        Summary::new(lasts),
        Summary::new(exchanges),
        Summary::new(added),
    );
    println!("last caller served, over runs: {}", lasts.line("ms"));
    println!(
        "the exchange (fetch start to end), over runs: {}",
        exchanges.line("ms")
    );
    println!(
        "against the configured latency: last caller at latency + {:.2} ms (median)",
        lasts.median() - ms(latency)
    );
    support::verdict(
        exact,
        "cold start: authority requests per run",
        if exact {
            "1 in every run"
        } else {
            "more than 1"
        },
        "exactly 1",
    );
    support::verdict(
        added.median() <= 5.0,
        &format!(
            "cold start (callers {}): last caller served after the exchange + (median over runs)",
            arrival.describe()
        ),
        &format!(
            "{:.2} ms (last caller {:.2} ms, exchange {:.2} ms; worst run + {:.2} ms)",
            added.median(),
            lasts.median(),
            exchanges.median(),
            added.max()
        ),
        "≤ + 5 ms",
    );
}

/// Row 5: `callers` concurrent `refresh_rejected` of one token.
fn compare_and_invalidate(runs: usize, callers: usize, latency: Duration) {
    println!(
        "\n== compare-and-invalidate: {callers} concurrent refresh_rejected(&same), authority latency {} ms, {runs} runs ==",
        ms(latency)
    );
    let authority = LocalAuthority::start().expect("start the authority");
    authority.set_latency(latency);
    let pool = Pool::new();
    let mut exact = true;
    let mut lasts = Vec::new();
    for run in 0..runs {
        let (handle, driver) = TokenManager::builder(client_credentials(&authority)).build();
        pool.spawn(driver).detach();
        let first = smol::block_on(handle.token()).expect("first token");
        let before = authority.token_requests();
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let h = handle.clone();
                let first = Arc::clone(&first);
                pool.spawn(async move {
                    let t = h.refresh_rejected(&first).await.expect("a new token");
                    (t, Instant::now())
                })
            })
            .collect();
        let results: Vec<_> = smol::block_on(async {
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await);
            }
            all
        });
        let requests = authority.token_requests() - before;
        let replacement = &results[0].0;
        let same = results.iter().all(|(t, _)| t == replacement && *t != first);
        exact &= requests == 1 && same;
        let times = Summary::new(results.iter().map(|(_, at)| ms(at.duration_since(t0))));
        println!(
            "run {run}: {requests} authority request(s); all got the same new token: {same}; served after {}",
            times.line("ms")
        );
        lasts.push(times.max());
        smol::block_on(handle.shutdown());
    }
    println!(
        "last caller served, over runs: {}",
        Summary::new(lasts).line("ms")
    );
    support::verdict(
        exact,
        "compare-and-invalidate: authority requests per burst",
        if exact {
            "1 in every run"
        } else {
            "more than 1"
        },
        "exactly 1",
    );
}

/// Row 6: `subscribers` subscriptions, `publishes` new tokens; the time
/// from each publish to each subscriber seeing it.
fn fan_out(subscribers: usize, publishes: usize) {
    println!("\n== fan-out: {subscribers} subscribers, {publishes} publishes ==");
    // A source that notes when it hands over token n (the manager
    // publishes it in the same poll, right after).
    let published: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let source = source::from_fn({
        let published = Arc::clone(&published);
        move |cx: FetchContext| {
            let published = Arc::clone(&published);
            async move {
                let mut published = published.lock().unwrap();
                let n = published.len();
                let token = cx.token(
                    AccessToken::new(n.to_string()),
                    Some(Duration::from_secs(3600)),
                );
                published.push(Instant::now());
                Ok::<_, SourceError>(token)
            }
        }
    });
    let builder: TokenManagerBuilder =
        TokenManager::builder(source).forced_refresh_interval(Duration::ZERO);
    let (handle, driver) = builder.build();
    let pool = Pool::new();
    pool.spawn(driver).detach();
    let mut current = smol::block_on(handle.token()).expect("first token");

    let seen = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<Task<Vec<(usize, Instant)>>> = (0..subscribers)
        .map(|_| {
            let mut tokens = handle.subscribe();
            let seen = Arc::clone(&seen);
            pool.spawn(async move {
                let mut log = Vec::new();
                while let Some(t) = tokens.next().await {
                    let n: usize = t.access_token().secret().parse().expect("a number");
                    log.push((n, Instant::now()));
                    seen.fetch_add(1, Ordering::Release);
                }
                log
            })
        })
        .collect();
    // Every subscriber first yields the current token.
    let wait_all = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.load(Ordering::Acquire) < count && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    };
    wait_all(subscribers);
    for i in 1..=publishes {
        thread::sleep(Duration::from_millis(20)); // let everything settle
        current = smol::block_on(handle.refresh_rejected(&current)).expect("a new token");
        wait_all(subscribers * (i + 1));
    }
    smol::block_on(handle.shutdown());
    let logs: Vec<Vec<(usize, Instant)>> = smol::block_on(async {
        let mut logs = Vec::new();
        for t in tasks {
            logs.push(t.await);
        }
        logs
    });
    let published = published.lock().unwrap().clone();
    let mut worst = Vec::new();
    let mut missed = 0;
    for (n, at) in published.iter().enumerate().skip(1) {
        let lat: Vec<f64> = logs
            .iter()
            .filter_map(|log| log.iter().find(|(m, _)| *m == n))
            .map(|(_, seen)| ms(seen.duration_since(*at)))
            .collect();
        missed += subscribers - lat.len();
        let s = Summary::new(lat);
        println!("publish {n}: publish → subscriber {}", s.line("ms"));
        worst.push(s.max());
    }
    let worst = Summary::new(worst);
    println!(
        "publish → last subscriber, over publishes: {}",
        worst.line("ms")
    );
    support::verdict(
        missed == 0 && worst.median() <= 20.0,
        &format!("fan-out: publish → last of {subscribers} subscribers, median over publishes"),
        &format!("{:.2} ms; {missed} observations missed", worst.median()),
        "≤ 20 ms, none missed",
    );
    support::verdict(
        worst.max() <= 20.0,
        &format!("fan-out: publish → last of {subscribers} subscribers, worst publish"),
        &format!("{:.2} ms", worst.max()),
        "≤ 20 ms",
    );
}

/// What row 4's crowd costs without HTTP: `callers` waiting `token()`s
/// released by a source the bench opens, next to the floor of the same
/// crowd on the bare executor (tasks awaiting an `event_listener::Event`,
/// with and without an async-io timer each, as a waiting `token()` has).
fn crowd_floor(runs: usize, callers: usize) {
    println!("\n== crowd without HTTP: {callers} waiting callers released at once, {runs} runs ==");
    let pool = Pool::new();
    let mut tk = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (open, gate) = async_channel::bounded::<()>(1);
        let released: Arc<Mutex<Option<Instant>>> = Arc::default();
        let source = source::from_fn({
            let released = Arc::clone(&released);
            move |cx: FetchContext| {
                let (gate, released) = (gate.clone(), Arc::clone(&released));
                async move {
                    let _ = gate.recv().await;
                    *released.lock().unwrap() = Some(Instant::now());
                    let lifetime = Some(Duration::from_secs(3600));
                    Ok::<_, SourceError>(cx.token(AccessToken::new("t"), lifetime))
                }
            }
        });
        let (handle, driver) = TokenManager::builder(source).build();
        pool.spawn(driver).detach();
        thread::sleep(Duration::from_millis(50));
        let served = Arc::new(Served::new(callers));
        let cpu0 = support::ThreadTimes::now();
        let t0 = Instant::now();
        for i in 0..callers {
            let (h, served) = (handle.clone(), Arc::clone(&served));
            pool.spawn(async move {
                h.token().await.expect("a token");
                served.record(i, t0);
            })
            .detach();
        }
        thread::sleep(Duration::from_millis(300)); // every caller waits
        let cpu1 = support::ThreadTimes::now();
        open.try_send(()).expect("open the gate");
        let times = Summary::new(served.wait());
        let cpu2 = support::ThreadTimes::now();
        let publish = ms(released
            .lock()
            .unwrap()
            .expect("released")
            .duration_since(t0));
        tk.0.push(times.max() - publish);
        tk.1.push(cpu1.since(&cpu0).0 as f64 / callers as f64);
        tk.2.push(cpu2.since(&cpu1).0 as f64 / callers as f64);
        smol::block_on(handle.shutdown());
    }
    let floor = |with_timer: bool| {
        let mut lat = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let event = Arc::new(event_listener::Event::new());
            let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let served = Arc::new(Served::new(callers));
            let t0 = Instant::now();
            for i in 0..callers {
                let (event, go, served) =
                    (Arc::clone(&event), Arc::clone(&go), Arc::clone(&served));
                pool.spawn(async move {
                    let mut timer =
                        with_timer.then(|| async_io::Timer::after(Duration::from_secs(30)));
                    while !go.load(Ordering::Acquire) {
                        let listener = event.listen();
                        if go.load(Ordering::Acquire) {
                            break;
                        }
                        match &mut timer {
                            Some(timer) => {
                                futures_lite::future::or(listener, async {
                                    timer.await;
                                })
                                .await
                            }
                            None => listener.await,
                        }
                    }
                    served.record(i, t0);
                })
                .detach();
            }
            thread::sleep(Duration::from_millis(300));
            let cpu1 = support::ThreadTimes::now();
            let notified = ms(t0.elapsed());
            go.store(true, Ordering::Release);
            event.notify(usize::MAX);
            let times = Summary::new(served.wait());
            lat.push(times.max() - notified);
            cpu.push(support::cpu_ns_since(&cpu1) as f64 / callers as f64);
        }
        (Summary::new(lat), Summary::new(cpu))
    };
    let (bare, bare_cpu) = floor(false);
    let (timed, timed_cpu) = floor(true);
    let (lat, entry, wake) = (Summary::new(tk.0), Summary::new(tk.1), Summary::new(tk.2));
    println!(
        "tokenkeeper: publish → last caller {}; CPU per caller: waiting {:.0} ns, release {:.0} ns (medians)",
        lat.line("ms"),
        entry.median(),
        wake.median()
    );
    println!(
        "floor, event + executor:         notify → last task {}; CPU per task {:.0} ns",
        bare.line("ms"),
        bare_cpu.median()
    );
    println!(
        "floor, event + timer + executor: notify → last task {}; CPU per task {:.0} ns",
        timed.line("ms"),
        timed_cpu.median()
    );
}

fn main() {
    // `cargo bench` passes `--bench`, and maybe a filter; run everything
    // unless a filter names some scenarios.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let quick = support::quick();
    println!(
        "scenarios on {} (load average {})",
        support::machine(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if wanted("cold_start") {
        let runs = if quick { 3 } else { 10 };
        // One caller first: the floor that the crowd is compared with.
        cold_start(runs, 1, Duration::from_millis(50), Arrival::Task);
        cold_start(runs, 10_000, Duration::from_millis(50), Arrival::Task);
        cold_start(runs, 10_000, Duration::from_millis(50), Arrival::Thread);
    }
    if wanted("compare_and_invalidate") {
        compare_and_invalidate(if quick { 3 } else { 10 }, 1_000, Duration::from_millis(20));
    }
    if wanted("crowd_floor") {
        crowd_floor(if quick { 3 } else { 10 }, 10_000);
    }
    if wanted("fan_out") {
        fan_out(10_000, if quick { 5 } else { 20 });
    }
}
