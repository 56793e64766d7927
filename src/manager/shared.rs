//! The state the actor shares with handles and subscriptions.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::Waker;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use event_listener::Event;

use crate::cache::CacheKey;
use crate::clock::Clock;
use crate::manager::events::EventLog;
use crate::manager::state::ManagerState;
use crate::manager::thread_copy::CopyIndex;
use crate::token::Token;

/// How close to its expiry a token's validity is checked on the exact
/// clock as well as the fast one. Tokens are replaced long before, so
/// reads pay for the exact clock only while refreshes keep failing.
pub(crate) const EXACT_CLOCK_WINDOW_MS: u64 = 1_000;

/// The latest published token and its publication number.
pub(crate) struct Slot {
    pub(crate) token: Option<Arc<Token>>,
    /// Bumped on each publish; 0 means nothing was ever published.
    pub(crate) version: u64,
    /// Whether readers must check the token's expiry on the clock: it is
    /// due for refresh (see `local`).
    pub(crate) late: bool,
}

/// A value alone on its cache lines (two, for the adjacent-line
/// prefetcher), so that writing it slows no reader of its neighbours.
#[repr(align(128))]
struct Padded<T>(T);

/// See [`Shared::published`].
pub(crate) enum Published {
    This(u64),
    Other(Arc<Token>),
    Neither,
}

pub(crate) struct Shared {
    slot: RwLock<Slot>,
    /// Bumped after every change of the slot (publish, withdraw, stop), so
    /// readers can tell their copy is current with one atomic load.
    pub(crate) changes: AtomicU64,
    /// Where each thread keeps its copy of the token, read with `changes`.
    pub(crate) copy_index: CopyIndex,
    /// Whether the latest fetch failed with a permanent error.
    failing_permanently: AtomicBool,
    /// The actor's waker, registered on every poll of its wait.
    actor: AtomicWaker,
    /// Whether the actor has been woken to read this state and not yet
    /// taken the wake-up: a crowd of callers wakes it once, not once each.
    wake_pending: AtomicBool,
    /// How many `TokenHandle`s exist; the manager stops when the last goes.
    /// Written on every clone and drop of a handle, so it keeps a cache
    /// line of its own, away from what every read loads.
    /// In an allocation of its own, so that `Shared` itself needs no
    /// 128-byte alignment (which would pad every manager's allocation).
    handles: Box<Padded<AtomicUsize>>,
    /// Whether the manager was told to stop (`TokenHandle::shutdown`, or the
    /// last handle dropped).
    closed: AtomicBool,
    /// The newest publication a caller reported rejected; the actor acts on
    /// it when it wakes.
    rejected: AtomicU64,
    /// The earliest instant at which a waiting caller gives up, `u64::MAX`
    /// when none waits: the actor's timer wakes them then, so that waiting
    /// arms no timer of its own.
    wait_deadline_ms: AtomicU64,
    /// Whether the driver has started; until it has, waiters time
    /// themselves.
    driven: AtomicBool,
    /// Fetches a cache answered, counted by the sources (see `FetchContext`).
    pub(crate) cache_hits: Arc<AtomicU64>,
    /// Notified on every publish and when the manager stops.
    pub(crate) changed: Event,
    /// The latest events, for [`Events`](crate::manager::Events).
    pub(crate) events: EventLog,
    stopped: AtomicBool,
    state: Mutex<ManagerState>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) wait_timeout: Duration,
    /// The source's cache key, for sources downstream of this manager
    /// (a token exchange of its tokens).
    pub(crate) source_key: Option<CacheKey>,
    /// The source's DPoP key: the manager's one key.
    #[cfg(feature = "jwt")]
    pub(crate) dpop_key: Option<crate::oauth2::DpopKey>,
    /// The nonces resource servers gave, by origin.
    #[cfg(feature = "jwt")]
    pub(crate) resource_nonces: crate::oauth2::dpop::ResourceNonces,
}

impl Shared {
    pub(crate) fn new(clock: Arc<dyn Clock>, wait_timeout: Duration) -> Shared {
        Shared {
            slot: RwLock::new(Slot {
                token: None,
                version: 0,
                late: true,
            }),
            changes: AtomicU64::new(0),
            copy_index: CopyIndex::new(),
            failing_permanently: AtomicBool::new(false),
            actor: AtomicWaker::new(),
            wake_pending: AtomicBool::new(false),
            handles: Box::new(Padded(AtomicUsize::new(1))),
            closed: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            wait_deadline_ms: AtomicU64::new(u64::MAX),
            driven: AtomicBool::new(false),
            cache_hits: Arc::default(),
            changed: Event::new(),
            events: EventLog::new(),
            stopped: AtomicBool::new(false),
            state: Mutex::new(ManagerState::default()),
            clock,
            wait_timeout,
            source_key: None,
            #[cfg(feature = "jwt")]
            dpop_key: None,
            #[cfg(feature = "jwt")]
            resource_nonces: Default::default(),
        }
    }

    /// Whether `token` is valid now: by the fast clock and, in the token's
    /// last [`EXACT_CLOCK_WINDOW_MS`], by the exact clock too.
    ///
    /// The fast clock's margin covers the ticks a coarse clock normally
    /// lags by; a loaded virtual machine can deliver ticks later still, and
    /// a token must never count as valid after it expires.
    pub(crate) fn is_valid_now(&self, token: &Token) -> bool {
        let fast = self.clock.now_ms_fast();
        token.is_valid_at_ms(fast)
            && (token.expiry_ms() - fast > EXACT_CLOCK_WINDOW_MS
                || token.is_valid_at_ms(self.clock.now_ms()))
    }

    /// The published token, valid or not.
    pub(crate) fn token(&self) -> Option<Arc<Token>> {
        self.slot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .token
            .clone()
    }

    /// A copy of the published token in an allocation of its own, and
    /// whether it is late.
    pub(crate) fn copy_token(&self) -> (Option<Arc<Token>>, bool) {
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        let token = slot.token.as_ref().map(|t| Arc::new(Token::clone(t)));
        (token, slot.late)
    }

    /// Runs `f` on the slot under the read lock.
    pub(crate) fn read_slot<R>(&self, f: impl FnOnce(&Slot) -> R) -> R {
        f(&self.slot.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Publishes `token`, `late` as in [`mark_late`](Self::mark_late), and
    /// returns its publication number.
    pub(crate) fn publish(&self, token: Arc<Token>, late: bool) -> u64 {
        let version = {
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            slot.token = Some(token);
            slot.version += 1;
            slot.late = late;
            slot.version
        };
        self.changes.fetch_add(1, Ordering::Release);
        // Every waiter wakes to this publish; those that still wait record
        // their deadlines again, so none is left for the timer to fire on.
        self.wait_deadline_ms.store(u64::MAX, Ordering::SeqCst);
        self.changed.notify(usize::MAX);
        version
    }

    /// What the slot holds, for a caller reporting `token` rejected: that
    /// token (with its publication number), a valid replacement, or
    /// neither (withdrawn, expired, or nothing published yet).
    pub(crate) fn published(&self, token: &Token) -> Published {
        self.read_slot(|slot| match slot.token.as_ref() {
            Some(current) if **current == *token => Published::This(slot.version),
            Some(current) if self.is_valid_now(current) => Published::Other(Arc::clone(current)),
            _ => Published::Neither,
        })
    }

    /// Makes every read of the published token check its expiry on the
    /// clock, from the instant the actor plans to replace it.
    pub(crate) fn mark_late(&self) {
        {
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            if slot.late {
                return;
            }
            slot.late = true;
        }
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Withdraws the published token without publishing a new one.
    pub(crate) fn invalidate(&self) {
        self.slot
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .token = None;
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Marks the manager stopped and withdraws the token: nothing is served
    /// by a manager that no longer refreshes.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Nothing polls the actor any more: let its task go.
        drop(self.actor.take());
        self.invalidate();
        self.update_state(|s| {
            s.running = false;
            s.next_refresh_at = None;
        });
        self.changed.notify(usize::MAX);
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn state(&self) -> ManagerState {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        state.cache_hits = self.cache_hits.load(Ordering::Relaxed);
        state
    }

    /// The standing permanent failure, if the latest fetch failed with one.
    pub(crate) fn permanent_failure(&self) -> Option<crate::error::SourceError> {
        // Checked by every waiting caller: the lock only when it may be set.
        if !self.failing_permanently.load(Ordering::Acquire) {
            return None;
        }
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.consecutive_failures == 0 {
            return None;
        }
        state.last_error.clone().filter(|e| e.is_permanent())
    }

    /// Records that a server rejected publication `version`; a report of
    /// an older one than already recorded changes nothing.
    pub(crate) fn report_rejection(&self, version: u64) {
        self.rejected.fetch_max(version, Ordering::SeqCst);
    }

    /// The newest publication reported rejected, 0 for none.
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::SeqCst)
    }

    /// Records that a caller waits until `deadline_ms`. True when that is
    /// earlier than every deadline recorded so far: the actor must hear
    /// of it, since its timer may be set later.
    pub(crate) fn register_wait(&self, deadline_ms: u64) -> bool {
        self.wait_deadline_ms
            .fetch_min(deadline_ms, Ordering::SeqCst)
            > deadline_ms
    }

    /// The earliest recorded wait deadline.
    pub(crate) fn wait_deadline_ms(&self) -> u64 {
        self.wait_deadline_ms.load(Ordering::SeqCst)
    }

    /// At or after the earliest wait deadline: forgets the deadlines and
    /// wakes every waiter. Those that still wait record theirs again (each
    /// listens before recording, so none misses this wake-up).
    pub(crate) fn expire_waits(&self, now_ms: u64) {
        if self.wait_deadline_ms() <= now_ms {
            self.wait_deadline_ms.store(u64::MAX, Ordering::SeqCst);
            self.changed.notify(usize::MAX);
        }
    }

    /// Makes the actor read the shared state (wait deadlines, rejections)
    /// and the clock soon. Call it after writing what the actor should read:
    /// either this caller wakes the actor, or a wake-up that the actor has
    /// not yet taken is pending, and the actor reads the state after taking
    /// it (both sides are `SeqCst`).
    pub(crate) fn nudge(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.actor.wake();
        }
    }

    /// For the actor, on every poll: registers its waker, then takes a
    /// pending wake-up. `Some(true)`: read the shared state; `None`: stop.
    pub(crate) fn poll_wake(&self, waker: &Waker) -> Option<bool> {
        self.actor.register(waker);
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.wake_pending.swap(false, Ordering::SeqCst))
    }

    /// Tells the actor to stop.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.actor.wake();
    }

    /// Counts a new handle.
    pub(crate) fn add_handle(&self) {
        self.handles.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dropped handle; the last one stops the manager.
    pub(crate) fn remove_handle(&self) {
        if self.handles.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }

    /// Marks the driver started.
    pub(crate) fn set_driven(&self) {
        self.driven.store(true, Ordering::Release);
    }

    /// Whether the driver has started.
    pub(crate) fn is_driven(&self) -> bool {
        self.driven.load(Ordering::Acquire)
    }

    /// Wakes every waiter without publishing, so they look at the state.
    pub(crate) fn wake_waiters(&self) {
        self.changed.notify(usize::MAX);
    }

    pub(crate) fn update_state(&self, f: impl FnOnce(&mut ManagerState)) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state);
        let permanent = state.consecutive_failures > 0
            && state.last_error.as_ref().is_some_and(|e| e.is_permanent());
        self.failing_permanently.store(permanent, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::clock::ManualClock;
    use crate::token::AccessToken;
    use crate::BoxFuture;

    /// A clock whose fast reading lags the exact one by `lag_ms`, as a
    /// coarse clock does when a loaded machine delivers its ticks late.
    struct LaggingClock {
        exact: ManualClock,
        lag_ms: u64,
        exact_readings: std::sync::atomic::AtomicUsize,
    }

    impl Clock for LaggingClock {
        fn now(&self) -> std::time::SystemTime {
            self.exact_readings.fetch_add(1, Ordering::SeqCst);
            self.exact.now()
        }

        fn sleep_until(&self, deadline: std::time::SystemTime) -> BoxFuture<'static, ()> {
            self.exact.sleep_until(deadline)
        }

        fn now_ms_fast(&self) -> u64 {
            self.exact.now_ms() - self.lag_ms
        }
    }

    #[test]
    fn a_token_is_never_valid_after_its_expiry_however_far_the_fast_clock_lags() {
        let exact = ManualClock::at_ms(1_000_000);
        let clock = Arc::new(LaggingClock {
            exact: exact.clone(),
            lag_ms: 30,
            exact_readings: Default::default(),
        });
        let shared = Shared::new(clock.clone(), Duration::from_secs(1));
        let token = Token::from_parts_ms(AccessToken::new("t"), 0, 500_000, 1_000_010).unwrap();
        // 10 ms left on the exact clock: valid.
        assert!(shared.is_valid_now(&token));
        // Expired 5 ms ago, while the fast clock still reads 25 ms before
        // the expiry.
        exact.set_ms(1_000_015);
        assert!(!shared.is_valid_now(&token));
        // Before its last second by the fast clock, the fast clock alone
        // decides; from the start of that second on, the exact one too.
        let fast = 1_000_015 - 30;
        let readings = || clock.exact_readings.load(Ordering::SeqCst);
        for (left, exact_read) in [(1_001, false), (1_000, true)] {
            let token =
                Token::from_parts_ms(AccessToken::new("t"), 0, 500_000, fast + left).unwrap();
            let before = readings();
            assert!(shared.is_valid_now(&token));
            assert_eq!(readings() > before, exact_read, "{left} ms left");
        }
        let long = Token::from_parts_ms(AccessToken::new("t"), 0, 500_000, fast + 1_000).unwrap();
        exact.set_ms(fast + 1_000 + 10);
        assert!(!shared.is_valid_now(&long), "expired on the exact clock");
    }

    #[test]
    fn the_newest_rejected_publication_is_kept() {
        let shared = Shared::new(Arc::new(ManualClock::default()), Duration::from_secs(1));
        assert_eq!(shared.rejected(), 0);
        shared.report_rejection(1);
        assert_eq!(shared.rejected(), 1);
        shared.report_rejection(1);
        assert_eq!(shared.rejected(), 1);
        shared.report_rejection(3);
        assert_eq!(shared.rejected(), 3);
        shared.report_rejection(2);
        assert_eq!(shared.rejected(), 3);
    }
}
