//! A fleet on one Redis: N processes (8, 64, 256) share one `RedisCache`
//! with 4 s tokens from the local authority for a minute each, cold start
//! included, twice per N in the same run: waiters that re-read the cache
//! every `lease_poll` (`poll`, the cache wrapped so that it gives no
//! notices) and waiters that take the holder's token from its pub/sub
//! message (`notify`, the cache as it is).
//!
//! ```sh
//! cargo bench --bench fleet --features redis
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench fleet --features redis   # 20 s, N = 8 and 64
//! TOKENKEEPER_FLEET_SIZES=256 cargo bench --bench fleet --features redis # some sizes only
//! ```
//!
//! Each run starts its own `redis-server` on a free loopback port (the
//! bench says so and ends when there is none). Measured per run:
//!
//! - authority requests per token lifetime, against one process alone over
//!   the same time (target ≤ 1.2× for any N: alone, a 4 s token is
//!   refreshed some 2.7 times per lifetime, see BENCHMARKS.md);
//! - Redis commands per second: the busiest 100 ms window (from `INFO
//!   stats`, sampled every 100 ms), over the whole run and after the first
//!   two lifetimes, and per lifetime the `GET`s, `SET`s and all commands
//!   (`INFO commandstats`; the sampler's own `INFO`s are left out);
//! - how long a process takes to hold a token after the first process
//!   held it (each member prints when it saw each token; after the first
//!   two lifetimes, so that the staggered start does not count).
//!
//! The members are this benchmark binary run again with `--child`: a
//! manager with the library's defaults (coordinated jitter: every member
//! refreshes at the same instant, the peak this measures) in front of
//! client credentials.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use local_authority::LocalAuthority;
use support::Summary;
use tokenkeeper::cache::{CacheError, CacheKey, Chain, Lease, RedisCache, TokenCache};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{BoxFuture, ClientId, ClientSecret, Token, TokenManager};

/// The Redis cache with its notices hidden: its waiters poll.
struct NoNotices(RedisCache);

impl TokenCache for NoNotices {
    fn read(&self, key: CacheKey) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        self.0.read(key)
    }

    fn write<'a>(
        &'a self,
        key: CacheKey,
        token: &'a Token,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        self.0.write(key, token)
    }

    fn try_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<Option<Lease>, CacheError>> {
        self.0.try_lease(ttl)
    }

    fn has_lease(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("{} (no notices)", self.0.describe())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `--child MODE TOKEN_URL REDIS_URL SECS`: one member for SECS seconds.
/// Prints `seen <issued ms> <now ms>` for every token it came to hold, at
/// the end (printing costs nothing while the fleet runs); exits 0 if it
/// holds a valid token then.
fn child(args: &[String]) -> ! {
    let [mode, token_url, redis_url, secs] = args else {
        eprintln!("usage: fleet --child MODE TOKEN_URL REDIS_URL SECS");
        std::process::exit(2);
    };
    let secs: f64 = secs.parse().expect("SECS");
    let endpoint = TokenEndpoint::builder(token_url, ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .expect("a loopback endpoint");
    let grant = ClientCredentials::new(endpoint);
    let cache = RedisCache::new(redis_url).expect("a Redis URL");
    let chain = match mode.as_str() {
        "poll" => Chain::new(grant).cache(NoNotices(cache)),
        _ => Chain::new(grant).cache(cache),
    };
    let (handle, driver) = TokenManager::builder(chain).build();
    let mut subscription = handle.subscribe();
    let seen = std::sync::Mutex::new(Vec::new());
    // Whether a valid token is held is asked while the manager still runs
    // (once its driver is dropped, the handle gives no token).
    let (held, state) = smol::block_on(futures_lite::future::or(
        async {
            let _driver = smol::spawn(driver);
            while let Some(token) = subscription.next().await {
                seen.lock().unwrap().push((token.issued_ms(), now_ms()));
            }
            (false, String::new())
        },
        async {
            async_io::Timer::after(Duration::from_secs_f64(secs)).await;
            let held = handle.current().is_some_and(|t| t.is_valid_at_ms(now_ms()));
            (held, format!("{:?}", handle.state()))
        },
    ));
    let mut out = String::new();
    for (issued, at) in seen.lock().unwrap().iter() {
        out.push_str(&format!("seen {issued} {at}\n"));
    }
    print!("{out}");
    if !held {
        eprintln!(
            "fleet member {}: no valid token at the end (now {}): {state}",
            std::process::id(),
            now_ms(),
        );
    }
    std::process::exit(if held { 0 } else { 1 });
}

/// A `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Option<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .args(["--maxclients", "4000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.connect().is_err() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let mut c = redis::Client::open(self.url())?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(c)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name:value` fields of an `INFO` section.
fn info(connection: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query(connection)
        .expect("INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The calls of `command` in `INFO commandstats` (`calls=N,...`).
fn calls(stats: &HashMap<String, String>, command: &str) -> u64 {
    stats
        .get(&format!("cmdstat_{command}"))
        .and_then(|v| v.split(',').next())
        .and_then(|c| c.strip_prefix("calls="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What one run measured.
struct Run {
    n: usize,
    mode: &'static str,
    requests: u64,
    per_lifetime: f64,
    peak_all: f64,
    peak_steady: f64,
    commands_per_lifetime: f64,
    gets_per_lifetime: f64,
    sets_per_lifetime: f64,
    delays: Summary,
    failed: usize,
}

fn run(
    authority: &LocalAuthority,
    n: usize,
    mode: &'static str,
    lifetime: u64,
    duration: Duration,
) -> Run {
    let server = Server::start().expect("redis-server starts");
    let mut sampler = server.connect().expect("connect to redis-server");
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut samples: Vec<(Instant, u64)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let stats = info(&mut sampler, "stats");
                let total = stats["total_commands_processed"].parse().unwrap_or(0);
                samples.push((Instant::now(), total));
                thread::sleep(Duration::from_millis(100));
            }
            (samples, sampler)
        })
    };
    let exe = std::env::current_exe().expect("current_exe");
    let before = authority.token_requests();
    let started = Instant::now();
    let started_ms = now_ms();
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new(&exe)
                .arg("--child")
                .arg(mode)
                .arg(authority.token_url())
                .arg(server.url())
                .arg(duration.as_secs_f64().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a fleet member")
        })
        .collect();
    let spawned = started.elapsed();
    let mut failed = 0;
    let mut seen: Vec<Vec<(u64, u64)>> = Vec::new();
    for c in &mut children {
        let lines: Vec<(u64, u64)> = BufReader::new(c.stdout.take().expect("piped"))
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                let mut parts = l.strip_prefix("seen ")?.split(' ');
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect();
        if !c.wait().expect("wait for a member").success() {
            failed += 1;
        }
        seen.push(lines);
    }
    let requests = authority.token_requests() - before;
    stop.store(true, Ordering::Relaxed);
    let (samples, mut sampler) = sampling.join().expect("the sampler");
    let stats = info(&mut sampler, "commandstats");

    // The busiest 100 ms (or so) window; the sampler's own INFO is one
    // command per window.
    let rate = |from: Instant| {
        samples
            .windows(2)
            .filter(|w| w[0].0 >= from)
            .map(|w| {
                let dt = (w[1].0 - w[0].0).as_secs_f64();
                (w[1].1.saturating_sub(w[0].1).saturating_sub(1)) as f64 / dt
            })
            .fold(0.0, f64::max)
    };
    let steady_from = started + spawned + Duration::from_secs(2 * lifetime);
    let lifetimes = duration.as_secs_f64() / lifetime as f64;
    let infos = calls(&stats, "info");
    let total: u64 = stats
        .iter()
        .filter(|(k, _)| k.starts_with("cmdstat_"))
        .map(|(k, _)| calls(&stats, &k["cmdstat_".len()..]))
        .sum::<u64>()
        - infos;

    // From the first member holding a token to each other one holding it.
    let steady_ms = started_ms + (spawned.as_millis() as u64) + 2_000 * lifetime;
    let mut first: HashMap<u64, u64> = HashMap::new();
    for (issued, at) in seen.iter().flatten() {
        let e = first.entry(*issued).or_insert(*at);
        *e = (*e).min(*at);
    }
    // Every sighting but one first one per token.
    let mut counted_first: HashMap<u64, bool> = HashMap::new();
    let mut delays = Vec::new();
    for (issued, at) in seen.iter().flatten() {
        if first[issued] < steady_ms {
            continue;
        }
        if *at == first[issued] && !counted_first.insert(*issued, true).unwrap_or(false) {
            continue;
        }
        delays.push((at - first[issued]) as f64);
    }
    let delays = Summary::new(delays);
    Run {
        n,
        mode,
        requests,
        per_lifetime: requests as f64 / lifetimes,
        peak_all: rate(started),
        peak_steady: rate(steady_from),
        commands_per_lifetime: total as f64 / lifetimes,
        gets_per_lifetime: calls(&stats, "get") as f64 / lifetimes,
        sets_per_lifetime: calls(&stats, "set") as f64 / lifetimes,
        delays,
        failed,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
    }
    if Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("fleet: no redis-server on the PATH; nothing measured");
        return;
    }
    let quick = support::quick();
    let lifetime = 4u64;
    let duration = Duration::from_secs(if quick { 20 } else { 60 });
    let sizes: Vec<usize> = match std::env::var("TOKENKEEPER_FLEET_SIZES") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) if quick => vec![8, 64],
        Err(_) => vec![8, 64, 256],
    };
    println!(
        "fleet on {}: {lifetime} s tokens, {} s per run, one redis-server per run",
        support::machine(),
        duration.as_secs()
    );
    let authority = LocalAuthority::start().expect("start the authority");
    authority.set_expires_in(Some(lifetime.into()));

    // One process alone: the requests a fleet is held to (a 4 s token is
    // refreshed before half its life, so alone it takes more than one per
    // lifetime; see BENCHMARKS.md).
    let mut runs = vec![run(&authority, 1, "notify", lifetime, duration)];
    let single = runs[0].per_lifetime;
    println!(
        "N =   1        : {} requests = {single:.2} per lifetime",
        runs[0].requests
    );
    for &n in &sizes {
        for mode in ["poll", "notify"] {
            let r = run(&authority, n, mode, lifetime, duration);
            println!(
                "N = {n:>3} {mode:<6}: {} requests = {:.2} per lifetime; peak {:.0} cmd/s \
                 (after 2 lifetimes {:.0}); per lifetime {:.0} commands, {:.0} GET, {:.0} SET; \
                 {} failed",
                r.requests,
                r.per_lifetime,
                r.peak_all,
                r.peak_steady,
                r.commands_per_lifetime,
                r.gets_per_lifetime,
                r.sets_per_lifetime,
                r.failed
            );
            println!(
                "          time to hold the new token after the first: {}",
                r.delays.line("ms")
            );
            runs.push(r);
        }
    }

    println!("\n| N | waiters | requests per lifetime (× 1 process) | peak cmd/s (steady) | commands / GET per lifetime | to the new token p50 / p99 / max |");
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {:.2} ({:.2}×) | {:.0} ({:.0}) | {:.0} / {:.0} | {:.0} / {:.0} / {:.0} ms |",
            r.n,
            r.mode,
            r.per_lifetime,
            r.per_lifetime / single,
            r.peak_all,
            r.peak_steady,
            r.commands_per_lifetime,
            r.gets_per_lifetime,
            r.delays.median(),
            r.delays.pct(99.0),
            r.delays.max()
        );
    }
    for r in &runs[1..] {
        let ratio = r.per_lifetime / single;
        support::verdict(
            ratio <= 1.2 && r.failed == 0,
            &format!("N = {} ({}): authority requests vs 1 process", r.n, r.mode),
            &format!("{ratio:.2}×, {} members without a valid token", r.failed),
            "≤ 1.2×, none",
        );
    }
}
