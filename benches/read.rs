//! The read path: `current()`, `with_current()` and a ready `token()` on a
//! fresh 800-byte token, on one thread and on two threads reading one
//! manager at once (each through its own cloned handle, and both through
//! one shared handle).
//!
//! ```sh
//! cargo bench --bench read
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench read
//! ```
//!
//! Each read also touches the token's bytes (the first byte of the access
//! token), as a caller formatting an `Authorization` header would. Targets:
//! `current()` ≤ 20 ns on one thread; two threads within 1.5× of one.
//! `benches/compare` runs the same loops next to aliri_tokens.
//!
//! Last, a check without criterion: `with_current()` on one thread while
//! another clones and drops handles of the same manager without pause, next
//! to the same reads with that thread idle. A handle clone writes the
//! manager's handle count; reads must not share its cache line.

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use support::{PrivateArc, Threads};
use tokenkeeper::{AccessToken, Clock, FixedSource, SystemClock, TokenHandle, TokenManager};

/// A manager on the system clock holding a fresh one-hour token, its driver
/// running on a thread of its own.
fn fresh_manager(token: &str) -> TokenHandle {
    let source = FixedSource::new(AccessToken::new(token), Duration::from_secs(3600));
    let (handle, driver) = TokenManager::builder(source).build();
    std::thread::Builder::new()
        .name("tokenkeeper-driver".into())
        .spawn(move || futures_lite::future::block_on(driver))
        .expect("spawn the driver thread");
    futures_lite::future::block_on(handle.token()).expect("first token");
    handle
}

fn current(h: &TokenHandle) -> Option<u8> {
    h.current().map(|t| t.access_token().secret().as_bytes()[0])
}

fn with_current(h: &TokenHandle) -> Option<u8> {
    h.with_current(|t| t.access_token().secret().as_bytes()[0])
}

/// `token().await` when a valid token is published: polled once, ready.
fn token_ready(h: &TokenHandle, cx: &mut Context<'_>) -> Option<u8> {
    match pin!(h.token()).poll(cx) {
        Poll::Ready(Ok(t)) => Some(t.access_token().secret().as_bytes()[0]),
        _ => None,
    }
}

const GROUP_1: &str = "read/1 thread";
const GROUP_2: &str = "read/2 threads";
const CURRENT: &str = "current";
const WITH: &str = "with_current";
const CLONED: &str = "cloned handles";
const SHARED: &str = "one shared handle";
const PRIVATE_ARC: &str = "control: clone a thread-private Arc";
const COARSE_CLOCK: &str = "control: SystemClock::now_ms_fast";

type Read = fn(&TokenHandle) -> Option<u8>;
const READS: [(&str, Read); 2] = [(CURRENT, current), (WITH, with_current)];

fn one_thread(c: &mut Criterion, handle: &TokenHandle, token: &str) {
    assert!(current(handle).is_some() && with_current(handle).is_some());
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group(GROUP_1);
    for (name, read) in READS {
        g.bench_function(name, |b| b.iter(|| read(black_box(handle))));
    }
    g.bench_function("token (ready)", |b| {
        b.iter(|| token_ready(black_box(handle), &mut cx))
    });
    // Work that shares nothing, for comparison with the same on 2 threads.
    let mine = PrivateArc::new(token);
    g.bench_function(PRIVATE_ARC, |b| b.iter(|| black_box(&mine).read()));
    g.bench_function(COARSE_CLOCK, |b| {
        b.iter(|| black_box(&SystemClock).now_ms_fast())
    });
    g.finish();
}

/// Benchmarks `work` on two threads at once, each with `make()`'s value.
fn two<T: Send + 'static>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn() -> T,
    work: fn(&T) -> u64,
) {
    let threads = Threads::new(2, |_| {
        let value = make();
        move |iters: u64| {
            for _ in 0..iters {
                black_box(work(black_box(&value)));
            }
        }
    });
    c.benchmark_group(GROUP_2)
        .bench_function(name, |b| b.iter_custom(|iters| threads.run(iters)));
}

fn first(byte: Option<u8>) -> u64 {
    u64::from(byte.unwrap_or(0))
}

fn two_threads(c: &mut Criterion, handle: &TokenHandle, token: &str) {
    let shared = Arc::new(handle.clone());
    two(
        c,
        &format!("{CURRENT}, {CLONED}"),
        || handle.clone(),
        |h| first(current(h)),
    );
    two(
        c,
        &format!("{CURRENT}, {SHARED}"),
        || Arc::clone(&shared),
        |h| first(current(h)),
    );
    two(
        c,
        &format!("{WITH}, {CLONED}"),
        || handle.clone(),
        |h| first(with_current(h)),
    );
    two(
        c,
        &format!("{WITH}, {SHARED}"),
        || Arc::clone(&shared),
        |h| first(with_current(h)),
    );
    two(
        c,
        PRIVATE_ARC,
        || PrivateArc::new(token),
        |p| u64::from(p.read()),
    );
    two(c, COARSE_CLOCK, || SystemClock, |clock| clock.now_ms_fast());
}

fn main() {
    let since = SystemTime::now();
    let token = support::jwt_like();
    let handle = fresh_manager(&token);
    let mut c = support::criterion();
    one_thread(&mut c, &handle, &token);
    two_threads(&mut c, &handle, &token);
    c.final_summary();
    summary(since);
    clone_churn(&handle);
}

/// `with_current()` while another thread clones and drops handles, next to
/// the same with that thread idle: rounds alternate, medians compared.
fn clone_churn(handle: &TokenHandle) {
    let (rounds, reads) = if support::quick() {
        (6, 10_000_000)
    } else {
        (20, 20_000_000)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let churn = Arc::new(AtomicBool::new(false));
    let cloner = {
        let (handle, stop, churn) = (handle.clone(), Arc::clone(&stop), Arc::clone(&churn));
        std::thread::spawn(move || {
            let mut clones = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if churn.load(Ordering::Relaxed) {
                    drop(black_box(handle.clone()));
                    clones += 1;
                } else {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            clones
        })
    };
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let churning = round % 2 == 1;
        churn.store(churning, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        let start = Instant::now();
        for _ in 0..reads {
            black_box(with_current(black_box(handle)));
        }
        times[usize::from(churning)].push(start.elapsed().as_secs_f64() * 1e9 / reads as f64);
    }
    stop.store(true, Ordering::Relaxed);
    let clones = cloner.join().expect("the cloning thread");
    let [idle, churning] = times.map(support::Summary::new);
    println!(
        "\n== with_current() while another thread clones and drops handles ({rounds} alternating rounds of {reads} reads; {clones} clones) =="
    );
    println!(
        "with_current(), other thread cloning handles: {:.2} ns, idle: {:.2} ns = {:.2}×",
        churning.median(),
        idle.median(),
        churning.median() / idle.median()
    );
}

/// Prints this run's medians against the targets.
fn summary(since: SystemTime) {
    let median = |group: &str, bench: &str| support::criterion_median_ns(group, bench, since);
    println!(
        "\n== read path, medians of this run ({}) ==",
        support::machine()
    );
    if let Some(one) = median(GROUP_1, CURRENT) {
        support::verdict(
            one <= 20.0,
            "current(), 1 thread",
            &format!("{one:.2} ns"),
            "≤ 20 ns",
        );
    }
    if let Some(one) = median(GROUP_1, WITH) {
        println!("with_current(), 1 thread: {one:.2} ns");
    }
    for (name, _) in READS {
        for how in [CLONED, SHARED] {
            let two = median(GROUP_2, &format!("{name}, {how}"));
            if let (Some(one), Some(two)) = (median(GROUP_1, name), two) {
                support::verdict(
                    two <= 1.5 * one,
                    &format!("{name}(), 2 threads, {how}"),
                    &format!("{two:.2} ns per read = {:.2}× 1 thread", two / one),
                    "≤ 1.5×",
                );
            }
        }
    }
    for control in [PRIVATE_ARC, COARSE_CLOCK] {
        if let (Some(one), Some(two)) = (median(GROUP_1, control), median(GROUP_2, control)) {
            support::report_control(control, one, two);
        }
    }
}
