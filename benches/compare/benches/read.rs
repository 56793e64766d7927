//! The read path of tokenkeeper next to aliri_tokens 0.3.2, in one run.
//!
//! ```sh
//! cargo bench -p tokenkeeper-compare --bench read
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench -p tokenkeeper-compare --bench read
//! ```
//!
//! Every read touches the first byte of the same 800-byte access token.
//! The reads come in two pairs, each a tokenkeeper read next to the
//! aliri_tokens read that gives the caller the same thing:
//!
//! - a borrow: tokenkeeper `with_current(|t| ..)` (this thread's copy,
//!   lent for the call) next to aliri_tokens `TokenWatcher::token()`
//!   (tokio's `watch` channel: a read lock held while the borrow lives);
//! - an owned token the caller may keep (across an `.await`, say):
//!   tokenkeeper `current()` (an `Arc` of this thread's copy) next to
//!   aliri_tokens `token().access_token().to_owned()` (its `watch::Ref`
//!   holds a lock and is not `Send`, so keeping the token means copying it).
//!
//! On 1 thread and on 2 threads reading one manager at once, each through
//! its own clone, and both through one shared value. At the end it prints
//! the ratio of each pair's medians against the targets: on one thread not
//! slower than aliri_tokens, on two threads ≥ 3× faster. One thread's
//! reads are a few nanoseconds either way and their ratio moves with the
//! CPU; on two threads aliri_tokens' lock shows on every machine.

#[path = "../../support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use aliri_tokens::TokenWatcher;
use criterion::Criterion;
use support::{PrivateArc, Threads};
use tokenkeeper::{Clock, SystemClock, TokenHandle};
use tokenkeeper_compare::{aliri_watcher, tokenkeeper_manager, tokio_runtime};

fn tk_current(h: &TokenHandle) -> Option<u8> {
    h.current().map(|t| t.access_token().secret().as_bytes()[0])
}

fn tk_with_current(h: &TokenHandle) -> Option<u8> {
    h.with_current(|t| t.access_token().secret().as_bytes()[0])
}

fn aliri_token(w: &TokenWatcher) -> Option<u8> {
    let token = w.token();
    Some(token.access_token().as_str().as_bytes()[0])
}

fn aliri_owned(w: &TokenWatcher) -> Option<u8> {
    let token = w.token().access_token().to_owned();
    Some(token.as_str().as_bytes()[0])
}

const GROUP_1: &str = "compare/1 thread";
const GROUP_2_CLONED: &str = "compare/2 threads, cloned";
const GROUP_2_SHARED: &str = "compare/2 threads, shared";
const TK_CURRENT: &str = "tokenkeeper current";
const TK_WITH: &str = "tokenkeeper with_current";
const ALIRI: &str = "aliri_tokens token";
const ALIRI_OWNED: &str = "aliri_tokens token, owned";

/// The pairs compared: tokenkeeper's read and aliri_tokens' read that gives
/// the caller the same. The targets are set on the first, the read
/// BENCHMARKS.md's row 3 names (`TokenWatcher::token()` and reading the
/// access token); the second is printed for the whole picture.
const PAIRS: [(&str, &str); 2] = [(TK_WITH, ALIRI), (TK_CURRENT, ALIRI_OWNED)];

/// Benchmarks `read` on two threads, each with `make()`'s value.
fn two<T: Send + 'static>(
    c: &mut Criterion,
    group: &str,
    name: &str,
    make: impl Fn() -> T,
    read: fn(&T) -> Option<u8>,
) {
    let threads = Threads::new(2, |_| {
        let value = make();
        move |iters: u64| {
            for _ in 0..iters {
                black_box(read(black_box(&value)));
            }
        }
    });
    c.benchmark_group(group)
        .bench_function(name, |b| b.iter_custom(|iters| threads.run(iters)));
}

fn main() {
    let since = SystemTime::now();
    let token = support::jwt_like();
    let runtime = tokio_runtime();
    let handle = tokenkeeper_manager(&token);
    let watcher = aliri_watcher(&runtime, &token);
    assert_eq!(tk_current(&handle), aliri_token(&watcher));
    assert_eq!(tk_with_current(&handle), aliri_token(&watcher));
    assert_eq!(tk_current(&handle), aliri_owned(&watcher));

    let mut c = support::criterion();
    {
        let mut g = c.benchmark_group(GROUP_1);
        g.bench_function(TK_CURRENT, |b| b.iter(|| tk_current(black_box(&handle))));
        g.bench_function(TK_WITH, |b| b.iter(|| tk_with_current(black_box(&handle))));
        g.bench_function(ALIRI, |b| b.iter(|| aliri_token(black_box(&watcher))));
        g.bench_function(ALIRI_OWNED, |b| b.iter(|| aliri_owned(black_box(&watcher))));
        g.finish();
    }

    two(
        &mut c,
        GROUP_2_CLONED,
        TK_CURRENT,
        || handle.clone(),
        tk_current,
    );
    two(
        &mut c,
        GROUP_2_CLONED,
        TK_WITH,
        || handle.clone(),
        tk_with_current,
    );
    two(
        &mut c,
        GROUP_2_CLONED,
        ALIRI,
        || watcher.clone(),
        aliri_token,
    );
    two(
        &mut c,
        GROUP_2_CLONED,
        ALIRI_OWNED,
        || watcher.clone(),
        aliri_owned,
    );

    let shared_handle = Arc::new(handle.clone());
    let shared_watcher = Arc::new(watcher.clone());
    two(
        &mut c,
        GROUP_2_SHARED,
        TK_CURRENT,
        || Arc::clone(&shared_handle),
        |h| tk_current(h),
    );
    two(
        &mut c,
        GROUP_2_SHARED,
        TK_WITH,
        || Arc::clone(&shared_handle),
        |h| tk_with_current(h),
    );
    two(
        &mut c,
        GROUP_2_SHARED,
        ALIRI,
        || Arc::clone(&shared_watcher),
        |w| aliri_token(w),
    );
    two(
        &mut c,
        GROUP_2_SHARED,
        ALIRI_OWNED,
        || Arc::clone(&shared_watcher),
        |w| aliri_owned(w),
    );
    controls(&mut c, &token);
    c.final_summary();

    summary(since);
}

const CONTROL_1: &str = "control/1 thread";
const CONTROL_2: &str = "control/2 threads";
const PRIVATE_ARC: &str = "clone a thread-private Arc";
const COARSE_CLOCK: &str = "SystemClock::now_ms_fast";

/// Work that shares nothing between threads, on 1 and 2 threads: whatever
/// slows it on 2 threads is the machine (two vCPUs that are not two whole
/// cores, or a busy host), not contention.
fn controls(c: &mut Criterion, token: &str) {
    let private = || PrivateArc::new(token);
    let arc_read: fn(&PrivateArc) -> Option<u8> = |p| Some(p.read());
    let clock_read: fn(&()) -> Option<u8> = |_| Some(SystemClock.now_ms_fast() as u8);
    let mut g = c.benchmark_group(CONTROL_1);
    let mine = private();
    g.bench_function(PRIVATE_ARC, |b| b.iter(|| arc_read(black_box(&mine))));
    g.bench_function(COARSE_CLOCK, |b| b.iter(|| clock_read(black_box(&()))));
    g.finish();
    two(c, CONTROL_2, PRIVATE_ARC, private, arc_read);
    two(c, CONTROL_2, COARSE_CLOCK, || (), clock_read);
}

/// Prints the medians, the ratios and the verdicts of this run.
fn summary(since: SystemTime) {
    let median = |group: &str, bench: &str| support::criterion_median_ns(group, bench, since);
    println!(
        "\n== read path, medians of this run ({}) ==",
        support::machine()
    );
    let one_current = median(GROUP_1, TK_CURRENT);
    for group in [GROUP_1, GROUP_2_CLONED, GROUP_2_SHARED] {
        for (i, (ours, theirs)) in PAIRS.into_iter().enumerate() {
            let (Some(ns), Some(aliri)) = (median(group, ours), median(group, theirs)) else {
                continue;
            };
            let what = format!("{group}: {ours} {ns:.2} ns vs {theirs} {aliri:.2} ns");
            let ratio = aliri / ns;
            if i == 0 {
                let (least, target) = if group == GROUP_1 {
                    (1.0, "not slower")
                } else {
                    (3.0, "≥ 3×")
                };
                support::verdict(
                    ratio >= least,
                    &what,
                    &format!("{ratio:.2}× faster"),
                    target,
                );
            } else {
                println!("{what}: {ratio:.2}× faster");
            }
        }
    }
    for control in [PRIVATE_ARC, COARSE_CLOCK] {
        if let (Some(one), Some(two)) = (median(CONTROL_1, control), median(CONTROL_2, control)) {
            support::report_control(&format!("control, {control}"), one, two);
        }
    }
    if let Some(one) = one_current {
        support::verdict(
            one <= 20.0,
            "1 thread: tokenkeeper current",
            &format!("{one:.2} ns"),
            "≤ 20 ns",
        );
        for group in [GROUP_2_CLONED, GROUP_2_SHARED] {
            for ours in [TK_CURRENT, TK_WITH] {
                let base = median(GROUP_1, ours);
                if let (Some(two), Some(base)) = (median(group, ours), base) {
                    support::verdict(
                        two <= 1.5 * base,
                        &format!("{group}: {ours} vs 1 thread"),
                        &format!("{two:.2} ns = {:.2}×", two / base),
                        "≤ 1.5×",
                    );
                }
            }
        }
    }
}
