//! Cooperation through a shared cache: how many authority requests a fleet
//! of managers makes, next to one manager alone, on real time with tokens
//! of a few seconds.
//!
//! ```sh
//! cargo bench --bench cooperation
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench cooperation   # 3 s tokens, 4 lifetimes per mode
//! ```
//!
//! In-process: 8 managers in this one process, each with its own
//! `FileCache` on the same path (separate open files, so the file lock that
//! is the lease excludes them from each other as it would separate
//! processes), each a `Chain` in front of client credentials against one
//! `local-authority`, with the library's default jitter and chain settings.
//! Modes, each on a fresh cache file for the same time:
//!
//! - `1 instance`: the baseline;
//! - `8 instances, lease`: the design;
//! - `8 instances, jitter alone`: the same caches wrapped so that
//!   `has_lease()` is false (reads and writes still shared);
//! - `8 instances, no cache` (full mode only): the upper bound.
//!
//! Cold start is included: all instances start together on an empty cache.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use local_authority::LocalAuthority;
use smol::Executor;
use tokenkeeper::cache::{CacheError, FileCache, TokenCache};
use tokenkeeper::oauth2::{ClientCredentials, TokenEndpoint};
use tokenkeeper::source::Chain;
use tokenkeeper::{BoxFuture, ClientId, ClientSecret, Token, TokenHandle, TokenManager};

/// A cache that shares reads and writes but offers no lease.
struct NoLease<C>(C);

impl<C: TokenCache> TokenCache for NoLease<C> {
    fn read(&self) -> BoxFuture<'_, Result<Option<Token>, CacheError>> {
        self.0.read()
    }

    fn write<'a>(&'a self, token: &'a Token) -> BoxFuture<'a, Result<(), CacheError>> {
        self.0.write(token)
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

fn grant(authority: &LocalAuthority) -> ClientCredentials {
    let endpoint = TokenEndpoint::builder(
        authority.token_url(),
        ClientId::new("client-a"),
        ClientSecret::new("secret-a"),
    )
    .build()
    .expect("a loopback endpoint");
    ClientCredentials::new(endpoint)
}

/// Runs `instances` managers for `duration`; the authority requests they made.
fn run(
    ex: &Arc<Executor<'static>>,
    authority: &LocalAuthority,
    dir: &std::path::Path,
    instances: usize,
    mode: Mode,
    duration: Duration,
) -> u64 {
    let path = dir.join(format!("token-{}-{instances}.json", fastrand::u64(..)));
    let before = authority.token_requests();
    let handles: Vec<TokenHandle> = (0..instances)
        .map(|_| {
            let cache = FileCache::new(path.clone());
            let chain = match mode {
                Mode::Lease => Chain::new(grant(authority)).cache(cache),
                Mode::JitterAlone => Chain::new(grant(authority)).cache(NoLease(cache)),
                Mode::NoCache => Chain::new(grant(authority)),
            };
            let (handle, driver) = TokenManager::builder(chain).build();
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

fn main() {
    let quick = support::quick();
    let lifetime = if quick { 3u64 } else { 4 };
    let periods = if quick { 4u64 } else { 10 };
    let duration = Duration::from_secs(lifetime * periods);
    println!(
        "cooperation on {}: {lifetime} s tokens, {} s per mode (in one process; see the file's docs)",
        support::machine(),
        duration.as_secs()
    );

    let authority = LocalAuthority::start().expect("start the authority");
    authority.set_expires_in(Some(lifetime.into()));
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tokenkeeper-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");

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

    let single = run(&ex, &authority, &dir, 1, Mode::Lease, duration);
    let lease = run(&ex, &authority, &dir, 8, Mode::Lease, duration);
    let jitter = run(&ex, &authority, &dir, 8, Mode::JitterAlone, duration);
    let none = (!quick).then(|| run(&ex, &authority, &dir, 8, Mode::NoCache, duration));

    let per_lifetime = |n: u64| n as f64 / periods as f64;
    println!(
        "\n== authority requests in {} s ({periods} token lifetimes of {lifetime} s) ==",
        duration.as_secs()
    );
    println!(
        "1 instance:                {single:>4} ({:.2} per lifetime)",
        per_lifetime(single)
    );
    println!(
        "8 instances, lease:        {lease:>4} ({:.2} per lifetime) = {:.2}× 1 instance",
        per_lifetime(lease),
        lease as f64 / single as f64
    );
    println!(
        "8 instances, jitter alone: {jitter:>4} ({:.2} per lifetime) = {:.2}× 1 instance = {:.2}× the lease",
        per_lifetime(jitter),
        jitter as f64 / single as f64,
        jitter as f64 / lease as f64
    );
    if let Some(none) = none {
        println!(
            "8 instances, no cache:     {none:>4} ({:.2} per lifetime) = {:.2}× 1 instance",
            per_lifetime(none),
            none as f64 / single as f64
        );
    }
    let ratio = lease as f64 / single as f64;
    support::verdict(
        ratio <= 1.2,
        "8 instances with the lease vs 1 instance",
        &format!("{ratio:.2}×"),
        "≤ 1.2×",
    );

    drop(stop);
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
