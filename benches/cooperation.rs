//! Cooperation through a shared cache: how many authority requests a fleet
//! of 8 makes, next to one alone, on real time with tokens of a few
//! seconds, cold start included (all start together on an empty cache).
//!
//! ```sh
//! cargo bench --bench cooperation
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench cooperation   # 3 s tokens, 4 lifetimes per mode, processes only
//! ```
//!
//! One `local-authority` in this process serves every run. Each member of
//! a fleet is a `Chain` in front of client credentials, with the library's
//! default jitter and chain settings, and its own `FileCache` on one shared
//! path (the lease is the file lock next to it). The default jitter follows
//! `TokenSource::coordinates_refreshes`: `RandomEarlyJitter::coordinated`
//! (the same instant for the same token in every member) where the chain's
//! cache takes the lease, `RandomEarlyJitter::new` (drawn independently by
//! each member) where it does not. Modes, each on a fresh cache file for the
//! same time:
//!
//! - `1 process`: the baseline (lease, coordinated jitter);
//! - `8 processes, lease`: the design (coordinated jitter);
//! - `8 processes, jitter alone`: the same caches wrapped so that
//!   `has_lease()` is false (reads and writes still shared), hence
//!   independent jitter;
//! - full mode only: the same three with 8 managers inside this process
//!   (separate `FileCache`s, so the file locks exclude each other as across
//!   processes), 8 processes of the token example (`--watch --cache-file`:
//!   a lease, so coordinated jitter), and 8 processes with no cache (the
//!   upper bound; independent jitter).
//!
//! The processes are this benchmark binary run again with `--child`.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use local_authority::LocalAuthority;
use smol::Executor;
use tokenkeeper::cache::{CacheError, CacheKey, Chain, FileCache, TokenCache};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::{
    BoxFuture, ClientId, ClientSecret, Token, TokenHandle, TokenManager, TokenSource,
};

use std::process::{Child, Command, Stdio};

/// A cache that shares reads and writes but offers no lease.
struct NoLease<C>(C);

impl<C: TokenCache> TokenCache for NoLease<C> {
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

    fn has_lease(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!("{} (lease disabled)", self.0.describe())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Lease,
    JitterAlone,
    NoCache,
}

/// How the members of a fleet share their token.
fn chain(mode: Mode, authority_url: &str, path: &std::path::Path) -> Chain {
    let endpoint = TokenEndpoint::builder(authority_url, ClientId::new("client-a"))
        .client_secret(ClientSecret::new("secret-a"))
        .build()
        .expect("a loopback endpoint");
    let grant = ClientCredentials::new(endpoint);
    let cache = FileCache::new(path);
    match mode {
        Mode::Lease => Chain::new(grant).cache(cache),
        Mode::JitterAlone => Chain::new(grant).cache(NoLease(cache)),
        Mode::NoCache => Chain::new(grant),
    }
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Lease => "lease",
            Mode::JitterAlone => "jitter",
            Mode::NoCache => "none",
        }
    }

    fn parse(name: &str) -> Mode {
        match name {
            "lease" => Mode::Lease,
            "jitter" => Mode::JitterAlone,
            _ => Mode::NoCache,
        }
    }
}

/// `--child MODE PATH URL SECS`: one member of a fleet, for SECS seconds;
/// exits 0 if it holds a valid token at the end.
fn child(args: &[String]) -> ! {
    let [mode, path, url, secs] = args else {
        eprintln!("usage: cooperation --child MODE PATH URL SECS");
        std::process::exit(2);
    };
    let secs: f64 = secs.parse().expect("SECS");
    let chain = chain(Mode::parse(mode), url, std::path::Path::new(path));
    let (handle, driver) = TokenManager::builder(chain).build();
    let held = smol::block_on(futures_lite::future::or(
        async {
            driver.await;
            false
        },
        async {
            async_io::Timer::after(Duration::from_secs_f64(secs)).await;
            handle.current().is_some()
        },
    ));
    std::process::exit(if held { 0 } else { 1 });
}

/// A fresh cache path in `dir`.
fn fresh_path(dir: &std::path::Path) -> PathBuf {
    dir.join(format!("token-{}.json", fastrand::u64(..)))
}

/// Runs `instances` managers inside this process for `duration`; the
/// authority requests they made.
fn in_process(
    ex: &Arc<Executor<'static>>,
    authority: &LocalAuthority,
    dir: &std::path::Path,
    instances: usize,
    mode: Mode,
    duration: Duration,
) -> u64 {
    let path = fresh_path(dir);
    let before = authority.token_requests();
    let handles: Vec<TokenHandle> = (0..instances)
        .map(|_| {
            let (handle, driver) =
                TokenManager::builder(chain(mode, &authority.token_url(), &path)).build();
            ex.spawn(driver).detach();
            handle
        })
        .collect();
    thread::sleep(duration);
    let requests = authority.token_requests() - before;
    let served = handles.iter().filter(|h| h.current().is_some()).count();
    smol::block_on(async {
        for h in &handles {
            h.shutdown().await;
        }
    });
    assert_eq!(served, instances, "every instance holds a valid token");
    requests
}

/// Runs `commands` as processes until they exit; the authority requests
/// made meanwhile.
fn processes(authority: &LocalAuthority, commands: Vec<Command>) -> u64 {
    let before = authority.token_requests();
    let mut children: Vec<Child> = commands
        .into_iter()
        .map(|mut c| {
            c.stdin(Stdio::null()).stdout(Stdio::null());
            c.spawn().expect("spawn a fleet member")
        })
        .collect();
    let mut failed = 0;
    for c in &mut children {
        if !c.wait().expect("wait for a fleet member").success() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "every process ends holding a valid token");
    authority.token_requests() - before
}

/// This binary as a fleet member.
fn member(mode: Mode, path: &std::path::Path, url: &str, duration: Duration) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current_exe"));
    c.arg("--child")
        .arg(mode.name())
        .arg(path)
        .arg(url)
        .arg(duration.as_secs_f64().to_string());
    c
}

/// The token example, built in this benchmark's profile folder; `None`
/// when it cannot be built.
fn token_example() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let profile = profile_dir.file_name()?.to_str()?;
    let profile = if profile == "debug" { "dev" } else { profile };
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            "token",
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", profile_dir.parent()?)
        .status()
        .ok()?;
    let bin = profile_dir.join("examples").join("token");
    (status.success() && bin.exists()).then_some(bin)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
    }
    let quick = support::quick();
    let lifetime = if quick { 3u64 } else { 4 };
    let periods = if quick { 4u64 } else { 10 };
    let duration = Duration::from_secs(lifetime * periods);
    println!(
        "cooperation on {}: {lifetime} s tokens, {} s per mode",
        support::machine(),
        duration.as_secs()
    );

    let authority = LocalAuthority::start().expect("start the authority");
    authority.set_expires_in(Some(lifetime.into()));
    let url = authority.token_url();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tokenkeeper-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");

    for mode in [Mode::Lease, Mode::JitterAlone, Mode::NoCache] {
        let coordinated = chain(mode, &url, &dir.join("probe.json")).coordinates_refreshes();
        println!(
            "mode {:<6}: default jitter {}",
            mode.name(),
            if coordinated {
                "coordinated (RandomEarlyJitter::coordinated)"
            } else {
                "independent (RandomEarlyJitter::new)"
            }
        );
    }

    let fleet = |mode: Mode, n: usize| {
        let path = fresh_path(&dir);
        let commands = (0..n)
            .map(|_| member(mode, &path, &url, duration))
            .collect();
        processes(&authority, commands)
    };
    let mut rows: Vec<(String, u64)> = Vec::new();
    let single = fleet(Mode::Lease, 1);
    rows.push(("1 process".into(), single));
    let lease = fleet(Mode::Lease, 8);
    rows.push(("8 processes, lease".into(), lease));
    let jitter = fleet(Mode::JitterAlone, 8);
    rows.push(("8 processes, jitter alone".into(), jitter));

    if !quick {
        match token_example() {
            Some(bin) => {
                let path = fresh_path(&dir);
                let commands = (0..8)
                    .map(|_| {
                        let mut c = Command::new(&bin);
                        c.args(["--token-url", &url, "--client-id", "client-a", "--watch"])
                            .arg(duration.as_secs().to_string())
                            .arg("--cache-file")
                            .arg(&path)
                            .env("TOKENKEEPER_CLIENT_SECRET", "secret-a");
                        c
                    })
                    .collect();
                let n = processes(&authority, commands);
                rows.push(("8 token examples (--watch --cache-file)".into(), n));
            }
            None => println!("(the token example could not be built; its row is skipped)"),
        }
        rows.push(("8 processes, no cache".into(), fleet(Mode::NoCache, 8)));

        let ex = Arc::new(Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let ex = Arc::clone(&ex);
                let stopped = stopped.clone();
                thread::spawn(move || {
                    let _ = smol::block_on(ex.run(stopped.recv()));
                })
            })
            .collect();
        for (name, n, mode) in [
            ("1 manager in process", 1, Mode::Lease),
            ("8 managers in process, lease", 8, Mode::Lease),
            ("8 managers in process, jitter alone", 8, Mode::JitterAlone),
        ] {
            let requests = in_process(&ex, &authority, &dir, n, mode, duration);
            rows.push((name.into(), requests));
        }
        drop(stop);
        for t in threads {
            let _ = t.join();
        }
    }

    println!(
        "\n== authority requests in {} s ({periods} token lifetimes of {lifetime} s), cold start included ==",
        duration.as_secs()
    );
    for (name, n) in &rows {
        println!(
            "{name:<42} {n:>4} = {:.2} per lifetime = {:.2}× 1 process",
            *n as f64 / periods as f64,
            *n as f64 / single as f64
        );
    }
    println!(
        "jitter alone / lease (8 processes): {:.2}×",
        jitter as f64 / lease as f64
    );
    let ratio = lease as f64 / single as f64;
    support::verdict(
        ratio <= 1.2,
        "8 processes with the lease vs 1 process",
        &format!("{ratio:.2}×"),
        "≤ 1.2×",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
