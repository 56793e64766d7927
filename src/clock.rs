//! Time: the wall clock and timers, real or virtual.
//!
//! Everything in tokenkeeper that depends on time goes through a [`Clock`]:
//! token expiry, refresh timers, backoff, request and wait timeouts. The
//! [`SystemClock`] reads the system time and sleeps on `async-io` timers,
//! which work under any executor. The [`ManualClock`] is for tests: time
//! stands still until the test moves it, and moving it wakes exactly the
//! sleepers that are due, so a day of refreshes runs in milliseconds and the
//! same way every time.
//!
//! A clock has two notions of time, as a real machine does. [`Clock::now`]
//! is the wall clock, which can jump (suspend and resume, an NTP step).
//! Timers run on monotonic time, which does not see those jumps.
//! [`ManualClock::jump`] moves only the wall clock, to test that the manager
//! notices.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tokenkeeper::{Clock, ManualClock};
//!
//! let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let clock = ManualClock::new(start);
//! let sleep = clock.sleep_until(start + Duration::from_secs(5));
//! clock.advance(Duration::from_secs(5));
//! futures_lite::future::block_on(sleep); // due: returns at once
//! assert_eq!(clock.now().duration_since(start).unwrap(), Duration::from_secs(5));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use crate::time::{at_since_epoch, from_ms, since_epoch, test_support, to_ms, Utc};
use crate::BoxFuture;

/// A source of wall-clock time and timers.
///
/// Implement it to run tokenkeeper on another notion of time; most users
/// pick [`SystemClock`] (the default) or [`ManualClock`] in tests. An
/// implementation provides [`now`](Clock::now) and
/// [`sleep_until`](Clock::sleep_until) only; the other methods are the
/// crate's own and keep their defaults.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::{BoxFuture, Clock, SystemClock};
///
/// /// The system clock, an hour ahead.
/// struct Ahead;
///
/// impl Clock for Ahead {
///     fn now(&self) -> SystemTime {
///         SystemClock.now() + Duration::from_secs(3600)
///     }
///
///     fn sleep_until(&self, deadline: SystemTime) -> BoxFuture<'static, ()> {
///         SystemClock.sleep_until(deadline - Duration::from_secs(3600))
///     }
/// }
///
/// assert!(Ahead.now() > SystemTime::now() + Duration::from_secs(3599));
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The wall-clock time now.
    fn now(&self) -> SystemTime;

    /// A future that completes once the wall clock reads `deadline` or
    /// later, as far as the timer can tell. The wall clock may jump while it
    /// sleeps; callers that care re-read [`now`](Clock::now) regularly.
    fn sleep_until(&self, deadline: SystemTime) -> BoxFuture<'static, ()>;

    /// [`now`](Clock::now) in ms since the Unix epoch, the crate's inner
    /// frame of time. Not for implementors to override.
    #[doc(hidden)]
    fn now_ms(&self) -> u64 {
        to_ms(self.now())
    }

    /// A cheap reading of the wall clock, as a rule not earlier than
    /// [`now_ms`](Clock::now_ms) would be and at most some 15 ms later
    /// ([`SystemClock`]'s; it lags when a loaded machine delivers the
    /// kernel's ticks late). The read path checks expiry with it (see
    /// [`TokenHandle::current`](crate::TokenHandle::current)), and with
    /// `now_ms` too in a token's last second, so a token counts as expired
    /// up to that much early, never late. Not for implementors to
    /// override.
    #[doc(hidden)]
    fn now_ms_fast(&self) -> u64 {
        self.now_ms()
    }
}

/// The system's wall clock with `async-io` timers.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{Clock, SystemClock};
///
/// futures_lite::future::block_on(async {
///     let start = SystemClock.now();
///     SystemClock.sleep_until(start + Duration::from_millis(10)).await;
///     assert!(SystemClock.now() >= start + Duration::from_millis(10));
/// });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: SystemTime) -> BoxFuture<'static, ()> {
        let wait = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Box::pin(async move {
            // Timer::after never fires when the instant would overflow, which
            // is the right answer for a deadline at the end of time.
            async_io::Timer::after(wait).await;
        })
    }

    /// On Linux the coarse real-time clock (read without a system call)
    /// plus a margin of three of its ticks and 1 ms; elsewhere `now_ms()`.
    ///
    /// The coarse clock is set once per tick to the time of the last whole
    /// tick the kernel accounted, so it runs up to two ticks behind
    /// `CLOCK_REALTIME`; the third tick covers a tick the hypervisor
    /// delivers late.
    fn now_ms_fast(&self) -> u64 {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::time::{clock_getres, clock_gettime, ClockId};
            use std::sync::OnceLock;
            static MARGIN_MS: OnceLock<u64> = OnceLock::new();
            let margin = *MARGIN_MS.get_or_init(|| {
                let tick = timespec_ms(clock_getres(ClockId::RealtimeCoarse));
                tick.saturating_mul(3).saturating_add(1)
            });
            timespec_ms(clock_gettime(ClockId::RealtimeCoarse)).saturating_add(margin)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        self.now_ms()
    }
}

/// Milliseconds in a timespec, rounded up; negative times count as 0.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn timespec_ms(t: rustix::time::Timespec) -> u64 {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000)
        .saturating_add(nanos.div_ceil(1_000_000))
}

/// A virtual clock for tests; cloning it shares the same time.
///
/// Time moves only when [`advance`](ManualClock::advance),
/// [`set`](ManualClock::set) or [`jump`](ManualClock::jump) is called.
/// [`ManualClock::default`] starts at the Unix epoch.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::{Clock, ManualClock};
///
/// use futures_lite::future::{block_on, poll_once};
///
/// let start = SystemTime::now();
/// let clock = ManualClock::new(start);
/// let mut sleep = clock.sleep_until(start + Duration::from_secs(60));
/// assert!(block_on(poll_once(&mut sleep)).is_none()); // registers the sleeper
/// assert_eq!(clock.sleepers(), 1);
/// clock.jump(Duration::from_secs(3600)); // suspend: wall clock only
/// assert_eq!(clock.now(), start + Duration::from_secs(3600));
/// assert_eq!(clock.sleepers(), 1); // the timer did not see it
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.sleepers(), 0);
/// assert!(block_on(poll_once(&mut sleep)).is_some());
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Default)]
struct ManualInner {
    /// The wall clock, as the time since the Unix epoch.
    wall: Duration,
    /// Monotonic time, from the clock's creation.
    mono: Duration,
    next_id: u64,
    /// Sleepers keyed by (monotonic deadline, id); the id keeps keys unique.
    sleepers: BTreeMap<(Duration, u64), Waker>,
    wakeups: u64,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("ManualClock")
            .field("now", &Utc(at_since_epoch(inner.wall)))
            .field("sleepers", &inner.sleepers.len())
            .finish()
    }
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: SystemTime) -> ManualClock {
        let clock = ManualClock::default();
        clock.lock().wall = since_epoch(start);
        clock
    }

    test_support! {
        /// A clock that reads `now_ms` (ms since the Unix epoch) until moved.
        fn at_ms(now_ms: u64) -> ManualClock {
            ManualClock::new(from_ms(now_ms))
        }

        /// [`ManualClock::set`] with `now_ms` in ms since the Unix epoch.
        fn set_ms(&self, now_ms: u64) {
            self.set(from_ms(now_ms));
        }
    }

    fn lock(&self) -> MutexGuard<'_, ManualInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The time the clock reads, as [`Clock::now`] (without importing the
    /// trait).
    pub fn now(&self) -> SystemTime {
        at_since_epoch(self.lock().wall)
    }

    /// Moves both wall and monotonic time forward by `by` and wakes every
    /// sleeper that is now due.
    pub fn advance(&self, by: Duration) {
        let mut inner = self.lock();
        inner.wall = inner.wall.saturating_add(by);
        inner.mono = inner.mono.saturating_add(by);
        wake_due(inner);
    }

    /// Sets the wall clock to `now`. Moving forward also moves monotonic
    /// time and wakes due sleepers, like [`advance`](Self::advance); moving
    /// back steps the wall clock alone, as an NTP correction would.
    pub fn set(&self, now: SystemTime) {
        let now = since_epoch(now);
        let mut inner = self.lock();
        if let Some(by) = now.checked_sub(inner.wall) {
            inner.mono = inner.mono.saturating_add(by);
        }
        inner.wall = now;
        wake_due(inner);
    }

    /// Moves only the wall clock forward, as a suspended machine sees on
    /// resume: sleepers are not woken and still wait their monotonic time.
    pub fn jump(&self, by: Duration) {
        let mut inner = self.lock();
        inner.wall = inner.wall.saturating_add(by);
    }

    /// How many sleeps are pending.
    pub fn sleepers(&self) -> usize {
        self.lock().sleepers.len()
    }

    /// How many sleepers have been woken by moving time, in total.
    pub fn wakeups(&self) -> u64 {
        self.lock().wakeups
    }
}

fn wake_due(mut inner: MutexGuard<'_, ManualInner>) {
    // Ids count up from 0 and never reach u64::MAX.
    let first_later = (inner.mono, u64::MAX);
    let later = inner.sleepers.split_off(&first_later);
    let due = std::mem::replace(&mut inner.sleepers, later);
    inner.wakeups += due.len() as u64;
    // Wake outside the lock: a woken task on another thread may poll at once.
    drop(inner);
    for waker in due.into_values() {
        waker.wake();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        ManualClock::now(self)
    }

    /// A deadline at the end of time (see [`Token`](crate::Token)) is never
    /// due.
    fn sleep_until(&self, deadline: SystemTime) -> BoxFuture<'static, ()> {
        let deadline = since_epoch(deadline);
        let mut inner = self.lock();
        let mono_deadline = inner
            .mono
            .saturating_add(deadline.saturating_sub(inner.wall));
        let id = inner.next_id;
        inner.next_id += 1;
        drop(inner);
        Box::pin(ManualSleep {
            clock: self.clone(),
            key: (mono_deadline, id),
        })
    }

    fn now_ms(&self) -> u64 {
        to_ms(ManualClock::now(self))
    }
}

/// A pending sleep on a [`ManualClock`].
struct ManualSleep {
    clock: ManualClock,
    key: (Duration, u64),
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.clock.lock();
        if inner.mono >= self.key.0 {
            inner.sleepers.remove(&self.key);
            Poll::Ready(())
        } else {
            inner.sleepers.insert(self.key, cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        self.clock.lock().sleepers.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;
    use std::time::UNIX_EPOCH;

    fn ms(ms: u64) -> SystemTime {
        from_ms(ms)
    }

    #[test]
    fn advance_wakes_exactly_the_due_sleepers() {
        let clock = ManualClock::default();
        let mut early = clock.sleep_until(ms(10));
        let mut late = clock.sleep_until(ms(20));
        assert!(future::block_on(future::poll_once(&mut early)).is_none());
        assert!(future::block_on(future::poll_once(&mut late)).is_none());
        assert_eq!(clock.sleepers(), 2);
        clock.advance(Duration::from_millis(10));
        assert_eq!(clock.sleepers(), 1);
        assert!(future::block_on(future::poll_once(&mut early)).is_some());
        assert!(future::block_on(future::poll_once(&mut late)).is_none());
        clock.set(ms(25));
        assert!(future::block_on(future::poll_once(&mut late)).is_some());
        assert_eq!(clock.wakeups(), 2);
    }

    #[test]
    fn jump_does_not_wake_and_backward_set_keeps_timers() {
        let clock = ManualClock::new(ms(1_000));
        let mut sleep = clock.sleep_until(ms(2_000));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.jump(Duration::from_secs(10));
        assert_eq!(clock.now(), ms(11_000));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.set(ms(0));
        assert_eq!(clock.now_ms(), 0);
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.advance(Duration::from_secs(1));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_some());
    }

    #[test]
    fn a_deadline_between_milliseconds_is_not_met_early() {
        let clock = ManualClock::default();
        let mut sleep = clock.sleep_until(UNIX_EPOCH + Duration::from_micros(1_500));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.advance(Duration::from_millis(1));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.advance(Duration::from_millis(1));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_some());
    }

    #[test]
    fn the_manual_clock_keeps_the_precision_it_is_given() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.now_ms(), 1_700_000_000_123);
        let mut sleep = clock.sleep_until(start + Duration::from_secs(5));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.advance(Duration::from_secs(5));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_some());
        assert_eq!(clock.now(), start + Duration::from_secs(5));
        clock.set(UNIX_EPOCH - Duration::from_secs(1)); // before the epoch: the epoch
        assert_eq!(clock.now(), UNIX_EPOCH);
    }

    #[test]
    fn a_deadline_at_the_end_of_time_is_never_due() {
        let clock = ManualClock::default();
        let mut sleep = clock.sleep_until(ms(u64::MAX));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        clock.advance(Duration::from_secs(1_000_000_000_000));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
    }

    #[test]
    fn dropping_a_sleep_unregisters_it() {
        let clock = ManualClock::default();
        let mut sleep = clock.sleep_until(ms(10));
        assert!(future::block_on(future::poll_once(&mut sleep)).is_none());
        drop(sleep);
        assert_eq!(clock.sleepers(), 0);
    }

    #[test]
    fn the_fast_clock_is_not_behind_as_a_rule() {
        // Spread over some 100 ticks: reads within one tick all see the
        // same coarse value, and how far behind it is changes per tick. A
        // loaded machine may deliver a tick late now and then (the read
        // path checks a token's last second on the exact clock for that);
        // a margin too small would put whole ticks behind.
        let mut behind = 0;
        for _ in 0..500 {
            let exact = SystemClock.now_ms();
            let fast_after = SystemClock.now_ms_fast();
            if fast_after < exact {
                behind += 1;
            } else {
                assert!(fast_after - exact < 100, "fast clock too far ahead");
            }
            std::thread::sleep(Duration::from_micros(700));
        }
        // Without the margin nearly every reading would be behind; one
        // late tick puts at most a few dozen of them behind.
        assert!(behind < 100, "{behind} of 500 fast readings behind");
        let clock = ManualClock::new(ms(42));
        assert_eq!(clock.now_ms_fast(), 42);
    }

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let before = SystemTime::now();
        let now = SystemClock.now();
        assert!(now >= before && now <= SystemTime::now());
        let ms = SystemClock.now_ms();
        assert!(ms >= to_ms(before) && ms <= to_ms(SystemTime::now()));
    }

    #[test]
    fn past_deadline_is_ready_and_end_of_time_saturates() {
        let clock = ManualClock::at_ms(u64::MAX - 1);
        future::block_on(clock.sleep_until(ms(5)));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now_ms(), u64::MAX);
        assert_eq!(clock.now(), ms(crate::time::END_MS));
    }

    #[test]
    fn debug_shows_the_time_in_utc() {
        let clock = ManualClock::new(ms(1_796_649_969_123));
        assert_eq!(
            format!("{clock:?}"),
            "ManualClock { now: 2026-12-07T13:26:09.123Z, sleepers: 0 }"
        );
    }
}
