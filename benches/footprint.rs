//! Memory and wake-ups, counted exactly on virtual time: the size of a
//! handle and of a subscriber, whether the heap stays flat over a million
//! refreshes, and how often an idle manager wakes up.
//!
//! ```sh
//! cargo bench --bench footprint
//! TOKENKEEPER_BENCH_QUICK=1 cargo bench --bench footprint   # 100,000 refreshes instead of 1,000,000
//! ```
//!
//! Heap figures come from a counting global allocator in this binary (live
//! bytes = allocated − freed). Virtual time is a `ManualClock` driven by a
//! single-threaded `LocalExecutor`, as in `tests/manager.rs`.

#[path = "support/mod.rs"]
mod support;

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::Stream;
use smol::LocalExecutor;
use tokenkeeper::{
    source, AccessToken, FetchContext, ManualClock, NoJitter, SourceError, Subscription,
    TokenHandle, TokenManager,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{live, Counting, ALLOCATIONS};

#[global_allocator]
static GLOBAL: Counting = Counting;

const START_MS: u64 = 1_700_000_000_000;

/// A manager on virtual time whose source hands out `lifetime` tokens at
/// once; its driver on `ex`.
fn virtual_manager(
    ex: &LocalExecutor<'static>,
    clock: &ManualClock,
    lifetime: Duration,
) -> TokenHandle {
    let source = source::from_fn(move |cx: FetchContext| {
        let token = cx.token(AccessToken::new(support::jwt_like()), Some(lifetime));
        async move { Ok::<_, SourceError>(token) }
    });
    let (handle, driver) = TokenManager::builder(source)
        .clock(clock.clone())
        .jitter(NoJitter)
        .build();
    ex.spawn(driver).detach();
    settle(ex);
    assert!(handle.current().is_some(), "the first token is published");
    handle
}

fn settle(ex: &LocalExecutor<'static>) {
    while ex.try_tick() {}
}

/// Row 7a: the handle and a subscriber.
fn sizes() {
    println!("\n== sizes ==");
    let handle_size = size_of::<TokenHandle>();
    let sub_size = size_of::<Subscription>();
    println!(
        "size_of::<TokenHandle>() = {handle_size} B; size_of::<Subscription>() = {sub_size} B"
    );
    support::verdict(
        handle_size <= 64,
        "a handle",
        &format!("{handle_size} B"),
        "≤ 64 B",
    );

    let ex = LocalExecutor::new();
    let clock = ManualClock::at_ms(START_MS);
    let handle = virtual_manager(&ex, &clock, Duration::from_secs(3600));
    let mut clones: Vec<TokenHandle> = Vec::with_capacity(10_000);
    let clone_before = live();
    clones.extend((0..10_000).map(|_| handle.clone()));
    let per_clone = (live() - clone_before) as f64 / clones.len() as f64;
    drop(clones);
    println!("heap allocated per cloned handle: {per_clone:.1} B");

    // 10,000 subscribers, each polled until it waits for the next token.
    let n = 10_000;
    let before = live();
    let mut subs: Vec<Subscription> = Vec::with_capacity(n);
    let vec_bytes = live() - before;
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        let mut sub = handle.subscribe();
        // The first poll yields the current token, the second waits.
        assert!(matches!(
            Pin::new(&mut sub).poll_next(&mut cx),
            Poll::Ready(Some(_))
        ));
        assert!(Pin::new(&mut sub).poll_next(&mut cx).is_pending());
        subs.push(sub);
    }
    let heap = (live() - before - vec_bytes) as f64 / n as f64;
    let total = sub_size as f64 + heap;
    println!(
        "a waiting subscriber: {sub_size} B inline + {heap:.1} B of heap = {total:.1} B (over {n})"
    );
    support::verdict(
        total <= 256.0,
        "a waiting subscriber",
        &format!("{total:.1} B"),
        "≤ 256 B",
    );
    // They all see the next token.
    clock.advance(Duration::from_secs(2700));
    settle(&ex);
    let fresh = subs
        .iter_mut()
        .map(|s| Pin::new(s).poll_next(&mut cx))
        .filter(|p| matches!(p, Poll::Ready(Some(_))))
        .count();
    assert_eq!(fresh, n, "every subscriber sees the refreshed token");
}

/// Row 7b: live heap after `checkpoints` refresh cycles on virtual time,
/// with one reader and one subscriber following along.
fn refresh_cycles(checkpoints: &[u64]) {
    let total = *checkpoints.last().expect("a checkpoint");
    println!("\n== heap over {total} refresh cycles on virtual time ==");
    let ex = LocalExecutor::new();
    let clock = ManualClock::at_ms(START_MS);
    // 2 s tokens turn stale after 1 s: one refresh per virtual second.
    let handle = virtual_manager(&ex, &clock, Duration::from_secs(2));
    let seen = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut sub = handle.subscribe();
    ex.spawn({
        let seen = seen.clone();
        async move {
            while sub.next().await.is_some() {
                seen.set(seen.get() + 1);
            }
        }
    })
    .detach();
    settle(&ex);
    let refreshes0 = handle.state().refreshes;
    let mut at = Vec::new();
    let mut next = checkpoints.iter().peekable();
    let allocations0 = ALLOCATIONS.load(Ordering::Relaxed);
    for cycle in 1..=total {
        clock.advance(Duration::from_secs(1));
        settle(&ex);
        assert!(handle.current().is_some());
        if next.peek() == Some(&&cycle) {
            next.next();
            let refreshes = handle.state().refreshes - refreshes0;
            at.push((cycle, live(), refreshes, seen.get()));
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations0;
    for (cycle, bytes, refreshes, seen) in &at {
        println!(
            "after {cycle:>9} cycles: live heap {bytes:>9} B; {refreshes} refreshes; subscriber saw {seen}"
        );
    }
    println!(
        "allocations per refresh cycle: {:.1}",
        allocations as f64 / total as f64
    );
    let (first, last) = (at[0], at[at.len() - 1]);
    let growth = last.1 - first.1;
    support::verdict(
        growth.abs() <= 4096 && last.2 == total,
        "heap over refresh cycles",
        &format!(
            "{} B after {} cycles, {} B after {} cycles ({growth:+} B)",
            first.1, first.0, last.1, last.0
        ),
        "flat (±4 KiB)",
    );
    drop(handle);
    settle(&ex);
}

/// Row 8: wake-ups of a manager holding a fresh token for a virtual day.
fn idle_wakeups(lifetime: Duration, fresh_only: bool) {
    let ex = LocalExecutor::new();
    let clock = ManualClock::at_ms(START_MS);
    let handle = virtual_manager(&ex, &clock, lifetime);
    let day = 86_400u64;
    let before = clock.wakeups();
    let refreshes0 = handle.state().refreshes;
    for _ in 0..day {
        clock.advance(Duration::from_secs(1));
        settle(&ex);
    }
    let wakeups = clock.wakeups() - before;
    let refreshes = handle.state().refreshes - refreshes0;
    let per_30s = wakeups as f64 / (day as f64 / 30.0);
    println!(
        "token lifetime {} h: {wakeups} wake-ups in a virtual day ({refreshes} refreshes) = {per_30s:.3} per 30 s",
        lifetime.as_secs() / 3600
    );
    if fresh_only {
        support::verdict(
            per_30s <= 1.0,
            "idle actor, token fresh all day",
            &format!("{per_30s:.3} wake-ups per 30 s"),
            "≤ 1 per 30 s",
        );
    }
    drop(handle);
    settle(&ex);
}

fn main() {
    let quick = support::quick();
    println!("footprint on {}", support::machine());
    sizes();
    let checkpoints: &[u64] = if quick {
        &[10_000, 50_000, 100_000]
    } else {
        &[10_000, 100_000, 500_000, 1_000_000]
    };
    refresh_cycles(checkpoints);
    println!("\n== idle actor: wake-ups over a virtual day, time moved in 1 s steps ==");
    idle_wakeups(Duration::from_secs(48 * 3600), true);
    idle_wakeups(Duration::from_secs(3600), false);
}
