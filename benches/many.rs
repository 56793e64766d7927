//! Many managers in one process (issue 20): N = 1,000, 10,000 and 100,000
//! managers, each with its own source and one-hour tokens, their drivers on
//! one executor thread.
//!
//! ```sh
//! cargo bench --bench many
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench many   # fewer reads and a shorter watch
//! ```
//!
//! For each N it measures: the first `token()` on every handle once all
//! are published; a read (`with_current`) through a random handle, next to
//! the single-manager read and to a control that touches the same amount
//! of memory at random without tokenkeeper; the heap per idle manager
//! (counting allocator, opaque 64-byte tokens); and, watching 60 s of
//! virtual time in 1 ms steps, the most heartbeats in one step and the
//! longest an executor step takes. Last, polls of the drivers per refresh
//! with 60 s tokens. Virtual time is a `ManualClock` driven by a
//! single-threaded `LocalExecutor`; the times printed are real.

#[path = "support/mod.rs"]
mod support;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use counting_alloc::{live, Counting};
use smol::LocalExecutor;
use tokenkeeper::{
    source, AccessToken, FetchContext, ManualClock, SourceError, TokenHandle, TokenManager,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

const START_MS: u64 = 1_700_000_000_000;

/// Counts the polls of the driver it wraps.
struct Polls<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicU64>,
}

impl<F: Future> Future for Polls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

/// `n` managers with their own sources of `lifetime` tokens (opaque, 64
/// bytes), drivers spawned on `ex` (not yet run), each counting its polls
/// into `polls`.
fn managers(
    ex: &LocalExecutor<'static>,
    clock: &ManualClock,
    n: usize,
    lifetime: Duration,
    polls: &Arc<AtomicU64>,
) -> Vec<TokenHandle> {
    (0..n)
        .map(|i| {
            let secret = format!("{i:064}");
            let source = source::from_fn(move |cx: FetchContext| {
                let token = cx.token(AccessToken::new(secret.clone()), Some(lifetime));
                async move { Ok::<_, SourceError>(token) }
            });
            let (handle, driver) = TokenManager::builder(source).clock(clock.clone()).build();
            ex.spawn(Polls {
                inner: Box::pin(driver),
                polls: Arc::clone(polls),
            })
            .detach();
            handle
        })
        .collect()
}

fn settle(ex: &LocalExecutor<'static>) {
    while ex.try_tick() {}
}

fn read(h: &TokenHandle) -> u8 {
    h.with_current(|t| t.access_token().secret().as_bytes()[0])
        .unwrap_or(0)
}

/// The least of five timings: the machine's noise only adds.
fn best_of_5(mut time: impl FnMut() -> f64) -> f64 {
    (0..5).map(|_| time()).fold(f64::INFINITY, f64::min)
}

/// Nanoseconds per read over `order`, an index into `handles` per read.
fn reads_ns(handles: &[TokenHandle], order: &[u32]) -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for &i in order {
        sum += u64::from(read(black_box(&handles[i as usize])));
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / order.len() as f64
}

/// The same random walk over `n` heap blocks of a manager's size with
/// nothing of tokenkeeper: what the memory alone costs.
fn control_ns(blocks: &[Box<[u8]>], order: &[u32]) -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for &i in order {
        let block = black_box(&blocks[i as usize]);
        // A read touches a handle's manager, this thread's copy and the token.
        sum += u64::from(block[0])
            + u64::from(block[block.len() / 2])
            + u64::from(block[block.len() - 1]);
    }
    black_box(sum);
    start.elapsed().as_nanos() as f64 / order.len() as f64
}

fn scale(n: usize, reads: usize, watch: Duration) {
    println!("\n== N = {n} managers, one-hour tokens, one executor thread ==");
    let ex = LocalExecutor::new();
    let clock = ManualClock::at_ms(START_MS);
    let polls = Arc::new(AtomicU64::new(0));
    let before = live();
    let handles = managers(&ex, &clock, n, Duration::from_secs(3600), &polls);
    let start = Instant::now();
    settle(&ex);
    let publish = start.elapsed();
    let idle = (live() - before) as f64 / n as f64;
    assert!(handles.iter().all(|h| h.state().refreshes == 1));

    // Every handle's first token() on this thread, all published.
    let start = Instant::now();
    for h in &handles {
        let token = futures_lite::future::block_on(h.token()).expect("a token");
        black_box(token);
    }
    let first = start.elapsed();
    let with_copies = (live() - before) as f64 / n as f64;
    println!("all {n} drivers fetched and published in {publish:?}");
    println!("first token() on every handle: {first:?}");
    support::verdict(
        n < 100_000 || first <= Duration::from_secs(1),
        &format!("first token() on {n} handles"),
        &format!("{:.3} s", first.as_secs_f64()),
        "≤ 1 s at 100,000",
    );

    // Reads: the same number through one handle, one of N, and at random.
    let mut rng = fastrand::Rng::with_seed(20);
    let random: Vec<u32> = (0..reads).map(|_| rng.u32(..n as u32)).collect();
    let one = vec![rng.u32(..n as u32); reads];
    let single = {
        let single_polls = Arc::new(AtomicU64::new(0));
        let single_ex = LocalExecutor::new();
        let h = managers(
            &single_ex,
            &clock,
            1,
            Duration::from_secs(3600),
            &single_polls,
        );
        settle(&single_ex);
        read(&h[0]);
        let zeros = vec![0; reads];
        best_of_5(|| reads_ns(&h, &zeros))
    };
    let warm = best_of_5(|| reads_ns(&handles, &one));
    let cold = best_of_5(|| reads_ns(&handles, &random));
    let blocks: Vec<Box<[u8]>> = (0..n)
        .map(|i| vec![i as u8; idle as usize].into_boxed_slice())
        .collect();
    let control = best_of_5(|| control_ns(&blocks, &random));
    drop(blocks);
    println!(
        "read (with_current): single manager {single:.1} ns; one handle of {n} {warm:.1} ns; \
         a random handle {cold:.1} ns (control, a random {:.0}-byte block of {n}: {control:.1} ns)",
        idle
    );
    support::verdict(
        warm <= 2.0 * single,
        &format!("a read through one handle of {n}"),
        &format!("{:.2}× the single-manager read", warm / single),
        "≤ 2×",
    );
    support::verdict(
        cold <= 2.0 * single.max(control),
        &format!("a read through a random handle of {n}"),
        &format!(
            "{:.2}× the single-manager read, {:.2}× the memory control",
            cold / single,
            cold / control
        ),
        "≤ 2× (of the control when memory is the floor)",
    );
    println!(
        "heap per idle manager: {idle:.0} B before any read, {with_copies:.0} B with this thread's copy"
    );
    support::verdict(
        with_copies <= 2048.0,
        "heap per idle manager",
        &format!("{with_copies:.0} B"),
        "≤ 2 KiB",
    );

    // Heartbeats: 1 ms steps of virtual time.
    let polls_before = polls.load(Ordering::Relaxed);
    let wakeups_before = clock.wakeups();
    let (mut most, mut longest, mut busy) = (0, Duration::ZERO, Duration::ZERO);
    let mut step = 0;
    while Duration::from_millis(step) < watch {
        let woken = clock.wakeups();
        let start = Instant::now();
        clock.advance(Duration::from_millis(1));
        settle(&ex);
        let took = start.elapsed();
        let woken = clock.wakeups() - woken;
        if woken > 0 {
            busy += took;
        }
        longest = longest.max(took);
        most = most.max(woken);
        step += 1;
    }
    let wakeups = clock.wakeups() - wakeups_before;
    let idle_polls = polls.load(Ordering::Relaxed) - polls_before;
    // A step's time includes the machine's noise (page faults, other
    // processes); the burst is the most drivers one step woke, at the
    // mean cost of a wake-up.
    let per_wakeup = busy / u32::try_from(wakeups.max(1)).unwrap_or(u32::MAX);
    let burst = per_wakeup * u32::try_from(most).unwrap_or(u32::MAX);
    println!(
        "over {watch:?} idle: {wakeups} timer wake-ups, {idle_polls} polls, {per_wakeup:?} each; \
         most in one 1 ms step {most}; longest step (noise included) {longest:?}"
    );
    support::verdict(
        burst <= Duration::from_millis(10),
        &format!("longest heartbeat burst, {n} managers"),
        &format!(
            "{most} drivers in one step, {:.3} ms",
            burst.as_secs_f64() * 1e3
        ),
        "≤ 10 ms",
    );
    drop(handles);
    settle(&ex);
}

/// Polls per refresh: `n` managers with 60 s tokens over `span`.
fn polls_per_refresh(n: usize, span: Duration) {
    println!("\n== polls per refresh: {n} managers, 60 s tokens, {span:?} ==");
    let ex = LocalExecutor::new();
    let clock = ManualClock::at_ms(START_MS);
    let polls = Arc::new(AtomicU64::new(0));
    let handles = managers(&ex, &clock, n, Duration::from_secs(60), &polls);
    settle(&ex);
    let count = |h: &[TokenHandle]| h.iter().map(|h| h.state().refreshes).sum::<u64>();
    let (refreshes0, polls0) = (count(&handles), polls.load(Ordering::Relaxed));
    let mut done = Duration::ZERO;
    while done < span {
        clock.advance(Duration::from_secs(1));
        settle(&ex);
        done += Duration::from_secs(1);
    }
    let refreshes = count(&handles) - refreshes0;
    let polls = polls.load(Ordering::Relaxed) - polls0;
    let per = polls as f64 / refreshes as f64;
    println!("{refreshes} refreshes, {polls} driver polls");
    support::verdict(
        per <= 1.1,
        "polls per refresh",
        &format!("{per:.3}"),
        "≤ 1.1",
    );
}

fn main() {
    let quick = support::quick();
    println!("many managers in one process ({})", support::machine());
    let (reads, watch) = if quick {
        (200_000, Duration::from_secs(31))
    } else {
        (2_000_000, Duration::from_secs(60))
    };
    for n in [1_000, 10_000, 100_000] {
        scale(n, reads, watch);
    }
    polls_per_refresh(1_000, Duration::from_secs(if quick { 300 } else { 1_800 }));
}
