//! The manager's decisions that the rest of the suite left unchecked: each
//! test here fails with a mutant that `cargo mutants` found alive (see
//! MUTANTS.md, which names the mutant next to each test).

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use smol::{LocalExecutor, Task};
use tokenkeeper::{
    Backoff, BoxFuture, Clock, Error, FetchReason, ManualClock, NoJitter, SourceError, Token,
    TokenHandle, TokenManager,
};

#[test]
fn a_retry_after_a_timed_out_fetch_gets_a_full_request_timeout_of_its_own() {
    let b = Bench::with(secs(60), |m| {
        m.request_timeout(secs(10))
            .backoff(Backoff::new(secs(1), 1.0, secs(1)))
    });
    let first = b.handle.current().unwrap();
    b.source.set_mode(Mode::Hang);
    b.advance_to(first.stale_ms());
    b.advance(secs(10));
    assert_eq!(
        b.handle.state().consecutive_failures,
        1,
        "the hung fetch timed out"
    );
    // The retry answers after 50 ms, far inside its own 10 s: the timeout
    // that ended the last fetch must not end this one too.
    b.source.set_latency(ms(50));
    b.source.set_mode(Mode::Succeed(Some(secs(60))));
    b.advance(secs(1));
    assert_eq!(b.source.calls(), 3);
    b.advance(ms(50));
    let state = b.handle.state();
    assert_eq!(state.consecutive_failures, 0, "{:?}", state.last_error);
    assert_ne!(b.handle.current().unwrap(), first);
}

/// A manual clock that counts timers armed and clock readings.
#[derive(Clone)]
struct CountingClock {
    inner: ManualClock,
    sleeps: Arc<AtomicUsize>,
    readings: Arc<AtomicUsize>,
}

impl CountingClock {
    fn new() -> CountingClock {
        CountingClock {
            inner: ManualClock::at_ms(START_MS),
            sleeps: Arc::new(AtomicUsize::new(0)),
            readings: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn sleeps(&self) -> usize {
        self.sleeps.load(Ordering::SeqCst)
    }

    fn readings(&self) -> usize {
        self.readings.load(Ordering::SeqCst)
    }
}

impl Clock for CountingClock {
    fn now(&self) -> SystemTime {
        self.readings.fetch_add(1, Ordering::SeqCst);
        self.inner.now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> BoxFuture<'static, ()> {
        self.sleeps.fetch_add(1, Ordering::SeqCst);
        self.inner.sleep_until(deadline)
    }
}

/// A manager on `clock` (no jitter, seeded backoff) run by `ex`.
fn manager_on(
    clock: &CountingClock,
    source: &ScriptedSource,
    backoff: Backoff,
    ex: &LocalExecutor<'static>,
) -> TokenHandle {
    let (handle, driver) = TokenManager::builder(source.clone())
        .clock(clock.clone())
        .jitter(NoJitter)
        .backoff(backoff.seed(7))
        .build();
    ex.spawn(driver).detach();
    settle(ex);
    handle
}

fn settle(ex: &LocalExecutor<'static>) {
    while ex.try_tick() {}
}

#[test]
fn callers_that_wake_the_actor_do_not_make_it_arm_a_timer_each() {
    let clock = CountingClock::new();
    let source = ScriptedSource::new(secs(60));
    source.set_mode(Mode::Fail(SourceError::transient("down")));
    let ex = LocalExecutor::new();
    let handle = manager_on(&clock, &source, Backoff::new(secs(10), 1.0, secs(10)), &ex);
    assert_eq!(source.calls(), 1);
    let armed = clock.sleeps();
    // No token: each caller nudges the actor, whose retry timer stays as
    // it was.
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let h = handle.clone();
            let task = ex.spawn(async move { h.token().await });
            settle(&ex);
            task
        })
        .collect();
    let more = clock.sleeps() - armed;
    assert!(more <= 1, "{more} timers armed for 10 wake-ups");
    source.set_mode(Mode::Succeed(Some(secs(60))));
    clock.inner.advance(secs(10));
    settle(&ex);
    assert_eq!(source.calls(), 2);
    for w in waiters {
        assert!(finished(w).is_ok());
    }
}

#[test]
fn a_token_with_a_second_left_after_its_refresh_instant_is_read_without_the_clock() {
    // A 2 s token is refreshed at 1 s (half its lifetime is the stale
    // window): exactly the margin the actor needs to mark it late in time,
    // so reads until then skip the clock.
    let clock = CountingClock::new();
    let source = ScriptedSource::new(secs(2));
    let ex = LocalExecutor::new();
    let handle = manager_on(&clock, &source, Backoff::default(), &ex);
    let token = handle.current().unwrap();
    assert_eq!(
        token.expiry_ms() - handle.state().next_refresh_ms().unwrap(),
        1_000
    );
    let before = clock.readings();
    for _ in 0..UNCHECKED_READS * 10 {
        assert!(handle.current().is_some());
    }
    let readings = clock.readings() - before;
    assert!(
        readings < 20,
        "{readings} clock readings for {} reads",
        UNCHECKED_READS * 10
    );
}

#[test]
fn a_rejection_of_a_token_replaced_before_the_actor_read_it_withdraws_nothing() {
    let b = Bench::new(secs(3600));
    let first = b.handle.current().unwrap();
    b.source.set_latency(ms(50));
    b.advance_to(first.stale_ms());
    assert_eq!(b.source.calls(), 2, "the scheduled refresh is in flight");
    // The caller reports `first` while it is still published; the refresh
    // lands in the same executor turn, before the actor reads the report.
    let caller = b.ex.spawn({
        let h = b.handle.clone();
        let t = first.clone();
        async move { h.refresh_rejected(&t).await }
    });
    b.clock.advance(ms(50));
    b.settle();
    let second = b.handle.current().expect("the replacement stays published");
    assert_ne!(second, first);
    assert_eq!(finished(caller).unwrap(), second);
    assert_eq!(
        b.source.calls(),
        2,
        "a late report of a replaced token fetches nothing"
    );
    assert_eq!(b.handle.state().rejections, 0);
}

fn reject(b: &Bench, token: &Arc<Token>) -> Task<Result<Arc<Token>, Error>> {
    let h = b.handle.clone();
    let t = token.clone();
    b.ex.spawn(async move { h.refresh_rejected(&t).await })
}

#[test]
fn a_rate_limited_forced_refresh_is_reported_as_the_next_refresh() {
    let b = Bench::with(secs(3600), |m| m.forced_refresh_interval(secs(5)));
    let first = b.handle.current().unwrap();
    let r1 = reject(&b, &first);
    b.settle();
    let second = finished(r1).unwrap();
    let forced_at = b.now();
    b.advance(secs(1));
    let _r2 = reject(&b, &second);
    b.settle();
    assert_eq!(
        b.source.calls(),
        2,
        "the interval holds the second one back"
    );
    assert_eq!(
        b.handle.state().next_refresh_ms(),
        Some(forced_at + 5_000),
        "the state says when the forced refresh comes"
    );
}

#[test]
fn a_rejection_at_the_scheduled_refresh_instant_does_not_count_as_forced() {
    let b = Bench::with(secs(3600), |m| m.forced_refresh_interval(secs(5)));
    let first = b.handle.current().unwrap();
    // The report and the refresh instant reach the actor in one turn.
    let r1 = reject(&b, &first);
    b.clock.set_ms(first.stale_ms());
    b.settle();
    assert_eq!(b.source.calls(), 2);
    assert_eq!(b.source.reasons()[1], FetchReason::Scheduled);
    let second = finished(r1).unwrap();
    // That refresh was due anyway: a rejection of its token right after is
    // no second forced refresh within the interval, and is acted on at once.
    let r2 = reject(&b, &second);
    b.settle();
    assert_eq!(b.source.calls(), 3);
    assert_eq!(b.source.reasons()[2], FetchReason::Rejected);
    assert_ne!(finished(r2).unwrap(), second);
}

#[test]
fn a_late_rejection_of_a_replaced_token_leaves_the_replacement_published() {
    let b = Bench::new(secs(3600));
    let first = b.handle.current().unwrap();
    let r1 = reject(&b, &first);
    b.settle();
    let second = finished(r1).unwrap();
    assert_eq!(b.handle.state().rejections, 1);
    // Another caller still holds `first` and reports it: it gets the
    // replacement, and the replacement stays.
    b.advance(secs(1));
    let late = reject(&b, &first);
    b.settle();
    assert_eq!(finished(late).unwrap(), second);
    assert_eq!(b.handle.current(), Some(second));
    assert_eq!(b.handle.state().rejections, 1);
    b.advance(secs(10));
    assert_eq!(b.source.calls(), 2);
}

/// A manager whose driver counts its polls, on virtual time, run by `ex`.
fn manager_counting_polls(
    source: &ScriptedSource,
    ex: &LocalExecutor<'static>,
) -> (TokenHandle, ManualClock, Arc<AtomicUsize>) {
    let clock = ManualClock::at_ms(START_MS);
    let (handle, driver) = TokenManager::builder(source.clone())
        .clock(clock.clone())
        .jitter(NoJitter)
        .build();
    let polls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&polls);
    let mut driver = Box::pin(driver);
    ex.spawn(std::future::poll_fn(move |cx| {
        counted.fetch_add(1, Ordering::SeqCst);
        driver.as_mut().poll(cx)
    }))
    .detach();
    settle(ex);
    (handle, clock, polls)
}

#[test]
fn a_late_rejection_of_a_replaced_token_does_not_wake_the_actor() {
    let source = ScriptedSource::new(secs(3600));
    let ex = LocalExecutor::new();
    let (handle, _clock, polls) = manager_counting_polls(&source, &ex);
    let first = handle.current().unwrap();
    let report = {
        let h = handle.clone();
        let t = first.clone();
        ex.spawn(async move { h.refresh_rejected(&t).await })
    };
    settle(&ex);
    let second = finished(report).unwrap();
    let before = polls.load(Ordering::SeqCst);
    // Callers still holding `first` get the replacement straight away:
    // nothing for the actor to do, so it is not woken.
    for _ in 0..100 {
        let late = {
            let h = handle.clone();
            let t = first.clone();
            ex.spawn(async move { h.refresh_rejected(&t).await })
        };
        settle(&ex);
        assert_eq!(finished(late).unwrap(), second);
    }
    assert_eq!(polls.load(Ordering::SeqCst), before);
    assert_eq!(source.calls(), 2);
}

#[test]
fn a_caller_waiting_until_an_instant_already_recorded_does_not_wake_the_actor() {
    let source = ScriptedSource::new(secs(3600));
    let ex = LocalExecutor::new();
    let (handle, _clock, polls) = manager_counting_polls(&source, &ex);
    let first = handle.current().unwrap();
    source.set_mode(Mode::Hang);
    let report = || {
        let h = handle.clone();
        let t = first.clone();
        let task = ex.spawn(async move { h.refresh_rejected(&t).await });
        settle(&ex);
        task
    };
    // The first report withdraws the token; its replacement hangs.
    let before = polls.load(Ordering::SeqCst);
    let reported = report();
    assert!(polls.load(Ordering::SeqCst) > before);
    assert_eq!(source.calls(), 2);
    assert!(handle.current().is_none());
    // On a clock that has not moved, later callers wait until the same
    // instant: the actor's timer already covers them.
    let before = polls.load(Ordering::SeqCst);
    let waiting: Vec<_> = (0..10).map(|_| report()).collect();
    assert_eq!(polls.load(Ordering::SeqCst), before);
    drop((reported, waiting));
}
