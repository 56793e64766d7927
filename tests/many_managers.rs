//! Many managers on one executor (issue 20): heartbeats spread over the
//! period rather than in one burst, and one wake-up per refresh.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use common::{secs, ScriptedSource, START_MS};
use smol::LocalExecutor;
use tokenkeeper::{BoxFuture, Clock, ManualClock, NoJitter, TokenHandle, TokenManager};

/// A manager's view of a shared clock, recording when it reads the wall
/// clock.
struct LoggedClock {
    inner: ManualClock,
    reads: Arc<Mutex<Vec<u64>>>,
}

impl Clock for LoggedClock {
    fn now(&self) -> SystemTime {
        let now = self.inner.now();
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        self.reads.lock().unwrap().push(ms as u64);
        now
    }

    fn sleep_until(&self, deadline: SystemTime) -> BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }
}

fn settle(ex: &LocalExecutor<'_>) {
    while ex.try_tick() {}
}

#[test]
fn heartbeats_of_managers_started_together_spread_over_the_period() {
    const N: usize = 1_000;
    let clock = ManualClock::at_ms(START_MS);
    let ex = LocalExecutor::new();
    let mut handles: Vec<TokenHandle> = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..N {
        let log = Arc::default();
        let logged = LoggedClock {
            inner: clock.clone(),
            reads: Arc::clone(&log),
        };
        let (handle, driver) = TokenManager::builder(ScriptedSource::new(secs(3600)))
            .clock(logged)
            .jitter(NoJitter)
            .build();
        ex.spawn(driver).detach();
        handles.push(handle);
        reads.push(log);
    }
    settle(&ex);
    assert!(handles.iter().all(|h| h.current().is_some()));
    let end_ms = START_MS + 180_000;
    let mut per_second = Vec::new();
    while clock.now_ms() < end_ms {
        let before = clock.wakeups();
        clock.advance(secs(1));
        settle(&ex);
        per_second.push(clock.wakeups() - before);
    }
    // After the first period every manager beats once per 30 s: a thirtieth
    // of them per second, give or take.
    let steady = &per_second[30..];
    let most = *steady.iter().max().unwrap();
    assert!(most <= N as u64 / 20, "{most} of {N} woke in one second");
    let total: u64 = steady.iter().sum();
    assert!(
        total <= (steady.len() as u64 / 30 + 1) * N as u64,
        "{total}"
    );
    // And none of them goes 30 s without reading the wall clock.
    for log in &reads {
        let mut at = log.lock().unwrap().clone();
        at.push(end_ms);
        let gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(gap <= 30_000, "{gap} ms between two wall-clock reads");
    }
}

/// Counts the polls of the future it wraps.
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

#[test]
fn a_refresh_costs_the_driver_one_wake_up() {
    for lifetime in [60, 3_600] {
        let clock = ManualClock::at_ms(START_MS);
        let ex = LocalExecutor::new();
        let (handle, driver) = TokenManager::builder(ScriptedSource::new(secs(lifetime)))
            .clock(clock.clone())
            .build();
        let polls = Arc::new(AtomicU64::new(0));
        ex.spawn(Polls {
            inner: Box::pin(driver),
            polls: Arc::clone(&polls),
        })
        .detach();
        settle(&ex);
        let first = handle.state().refreshes;
        let (polls_before, wakeups_before) = (polls.load(Ordering::Relaxed), clock.wakeups());
        // A refresh every 20–30 s (60 s tokens) or 35–45 min (an hour).
        let span = lifetime * 50;
        for _ in 0..span {
            clock.advance(secs(1));
            settle(&ex);
        }
        let refreshes = handle.state().refreshes - first;
        assert!(refreshes >= 60, "{refreshes} refreshes");
        let polls = polls.load(Ordering::Relaxed) - polls_before;
        let wakeups = clock.wakeups() - wakeups_before;
        // Heartbeats: one per 30 s beyond the refreshes' own wake-ups.
        let beats = if lifetime > 60 { span / 30 } else { 0 };
        let per_refresh = (polls - beats) as f64 / refreshes as f64;
        assert!(
            per_refresh <= 1.1,
            "{lifetime} s tokens: {polls} polls ({wakeups} timer wake-ups) for {refreshes} refreshes"
        );
        drop(handle);
    }
}
