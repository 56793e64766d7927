//! The token-manager actor, its handles and subscriptions.
//!
//! One [`TokenManager`] keeps one token fresh. It is an actor: a single
//! future (the [`Driver`]) that alone owns the source, the refresh timer,
//! jitter and backoff, and runs one loop over three things: wake-ups from
//! handles, the result of the fetch in flight, and a timer. Handles read the
//! published token from a shared slot without talking to it, and leave what
//! they ask for there too (a rejected token, the deadline of a waiting
//! caller), so a crowd asking the same thing wakes the actor once.
//!
//! ```text
//!  worker ── TokenHandle::current() ──▶ shared slot ──▶ Arc<Token>
//!     │                                     ▲ publish
//!     │ token() when none is valid,         │
//!     │ refresh_rejected(), shutdown()      │
//!     └──────── wake-up ──────────▶ TokenManager (Driver) ──▶ TokenSource
//!  subscriber ◀── Subscription, Events ◀───┘  timer, jitter, backoff
//! ```
//!
//! The loop fetches the first token at start. After each publish it plans
//! the next fetch at the token's stale instant moved earlier by jitter. When
//! a fetch fails it keeps the old token published while it is valid (the
//! grace period) and retries with backoff. The timer never sleeps longer
//! than 30 s, so a wall-clock jump (suspend and resume) is noticed within
//! 30 s even though timers run on monotonic time.
//!
//! Fetches never run in a loop, whatever a token or a setting says. A
//! scheduled refresh comes at least 5 % of the token's lifetime (and at
//! least a second) after the fetch before it ended, even for a token stale
//! at issue, one already stale when a cache returns it, or a 0 % stale
//! policy; see [`TokenManagerBuilder`] for the exact rule. A retry waits
//! at least 100 ms, even with a zero backoff. And after every fetch the
//! driver gives the executor a turn before it can start the next, so a
//! source that answers at once never keeps it inside one poll.
//!
//! The driver is spawned by you, on any executor:
//!
//! ```
//! use std::time::Duration;
//! use tokenkeeper::{AccessToken, FixedSource, TokenManager};
//!
//! let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(3600));
//! let (handle, driver) = TokenManager::builder(source).build();
//! smol::block_on(async {
//!     smol::spawn(driver).detach();
//!     let token = handle.token().await.unwrap();
//!     assert_eq!(token.access_token().secret(), "t");
//! });
//! ```

mod authorization;
mod builder;
mod events;
mod handle;
mod shared;
mod state;
mod subscription;
mod thread_copy;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::future;

pub use authorization::Authorization;
pub use builder::TokenManagerBuilder;
pub use events::{Events, ManagerEvent};
pub use handle::TokenHandle;
pub use state::ManagerState;
pub use subscription::Subscription;

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::error::{RequestTimedOut, SourceError};
use crate::jitter::Jitter;
use crate::source::{FetchContext, FetchReason, TokenSource};
use crate::time::{duration_ms, from_ms, to_ms, Utc};
use crate::token::{LifetimePolicy, Token};
use crate::BoxFuture;
use shared::Shared;

/// The longest the actor sleeps without re-reading the wall clock (the
/// [`TokenManager`] docs promise it).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(30);

/// How many reads of a token one thread makes between two looks at the
/// clock while the token is not yet due for refresh.
///
/// Reads skip the clock until the token's refresh instant, when the actor
/// marks it so that every read checks its expiry. If the actor misses that
/// instant by the whole stale window (its executor starved, or the machine
/// asleep through the expiry), a thread may still serve the expired token
/// on up to this many reads before its own look at the clock withdraws it.
/// [`TokenHandle::current`] promises this number to users.
pub(crate) const UNCHECKED_READS: u32 = 15;

const LOG: &str = "tokenkeeper::manager";

/// The least time between a token's refresh instant and its expiry for
/// reads to skip the clock check until the refresh instant.
const LATE_MARGIN_MS: u64 = 1_000;

/// The least time between two scheduled refreshes, for tokens that live at
/// least four times as long (see [`earliest_refresh_ms`]).
const MIN_REFRESH_INTERVAL_MS: u64 = 1_000;

/// The least time between a fetch the actor starts on its own and the end
/// of the one before: a retry, whatever the backoff says, or a refresh of
/// a token close to its expiry.
const MIN_FETCH_GAP_MS: u64 = 100;

/// The future that runs a [`TokenManager`]; spawn it on any executor.
///
/// It completes when the manager stops: after
/// [`TokenHandle::shutdown`] or once every handle is dropped. Dropping it
/// stops the manager too.
#[must_use = "the manager does nothing unless its driver is spawned or awaited"]
pub struct Driver {
    inner: BoxFuture<'static, ()>,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Driver")
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

type Fetch = BoxFuture<'static, (Box<dyn TokenSource>, Result<Arc<Token>, SourceError>)>;

/// The actor that keeps one token fresh.
///
/// Made by [`TokenManager::builder`]; it runs inside the [`Driver`] that
/// [`TokenManagerBuilder::build`] returns, and is reached through
/// [`TokenHandle`]s.
///
/// While it waits for the next refresh, the actor re-reads the wall clock
/// at least every 30 s: timers run on monotonic time, which stands still
/// while a machine sleeps, so a suspend and resume (or a step of the wall
/// clock) is noticed within 30 s, and a token that expired meanwhile is
/// refreshed then.
///
/// Managers started together do not keep these wake-ups in step: each
/// starts its beat at its own point of the first 30 s.
pub struct TokenManager {
    shared: Arc<Shared>,
    /// `None` while a fetch owns it.
    source: Option<Box<dyn TokenSource>>,
    fetch: Option<Fetch>,
    clock: Arc<dyn Clock>,
    jitter: Box<dyn Jitter>,
    backoff: Backoff,
    policy: LifetimePolicy,
    request_timeout: Duration,
    forced_refresh_interval: Duration,
    /// The last published token, kept after it is withdrawn or expires.
    current: Option<Arc<Token>>,
    /// The publication number of `current`.
    version: u64,
    /// The newest rejected publication already acted on.
    rejected: u64,
    /// Whether `current` was withdrawn after a rejection.
    withdrawn: bool,
    next_attempt_ms: u64,
    next_reason: FetchReason,
    last_forced_ms: Option<u64>,
    heartbeat_ms: u64,
    timer: Option<(u64, BoxFuture<'static, ()>)>,
    /// When the fetch in flight is abandoned, and how.
    fetch_deadline_ms: u64,
    /// Whether a fetch ended since the driver last returned `Pending`: the
    /// next fetch waits for the executor to have had a turn.
    fetched_in_this_poll: bool,
    cancel: Arc<Cancel>,
}

/// Ends a fetch from outside: set by the actor at the deadline.
///
/// It needs no waker: the actor polls the fetch right after setting it.
#[derive(Default)]
struct Cancel {
    fired: AtomicBool,
}

impl Cancel {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
    }

    fn reset(&self) {
        self.fired.store(false, Ordering::Release);
    }

    async fn fired(&self) {
        future::poll_fn(|_| {
            if self.fired.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("current", &self.current)
            .field("next_attempt_ms", &self.next_attempt_ms)
            .field("fetching", &self.fetch.is_some())
            .finish()
    }
}

/// What ended the actor's wait: one turn of its loop handles one.
enum Wakeup {
    /// The fetch in flight ended, and hands the source back.
    Fetched(Box<dyn TokenSource>, Result<Arc<Token>, SourceError>),
    /// A handle left something to read in the shared state.
    Handle,
    /// Every handle is gone, or one called `shutdown`.
    Closed,
    /// The timer fired: a refresh, a deadline or the heartbeat is due.
    Timer,
}

impl TokenManager {
    /// Starts configuring a manager that fetches tokens from `source`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokenkeeper::{AccessToken, FixedSource, NoJitter, TokenManager};
    ///
    /// let (handle, driver) = TokenManager::builder(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60)))
    ///     .jitter(NoJitter)
    ///     .request_timeout(Duration::from_secs(5))
    ///     .build();
    /// # drop((handle, driver));
    /// ```
    pub fn builder(source: impl TokenSource) -> TokenManagerBuilder {
        TokenManagerBuilder::new(Box::new(source))
    }

    // Boxed: an async fn keeps its argument twice, once as given and once
    // as a local, and the actor is most of the driver's size.
    async fn run(mut self: Box<Self>) {
        let mut now = self.clock.now_ms();
        self.heartbeat_ms = now.saturating_add(first_heartbeat_ms());
        self.shared.update_state(|s| s.running = true);
        self.shared.set_driven();
        log::debug!(target: LOG, "token manager started");
        loop {
            // After the wall clock stepped back, do not sleep past one beat.
            self.heartbeat_ms = self
                .heartbeat_ms
                .min(now.saturating_add(duration_ms(HEARTBEAT)));
            self.shared.expire_waits(now);
            let rejected = self.shared.rejected();
            if rejected > self.rejected {
                self.rejected = rejected;
                self.on_rejected(rejected, now);
            }
            if self.fetch.is_none() && now >= self.next_attempt_ms {
                // A source that answers at once must not keep the actor in
                // one poll: the executor gets a turn before the next fetch
                // starts, whatever the clock and timers say.
                if self.fetched_in_this_poll {
                    self.fetched_in_this_poll = false;
                    future::yield_now().await;
                }
                // A withdrawn token is read by no one.
                if !self.withdrawn {
                    self.shared.mark_late();
                }
                self.start_fetch(now);
            } else if self.fetch.is_some() && now >= self.fetch_deadline_ms {
                self.cancel.fire();
            }
            let wakeup = self.next_wakeup().await;
            // One reading per turn, for the wake-up and the next turn's checks.
            now = self.clock.now_ms();
            match wakeup {
                Wakeup::Fetched(source, result) => {
                    self.source = Some(source);
                    self.fetched_in_this_poll = true;
                    // Left armed, the deadline's timer would wake the actor
                    // once more for nothing before the next refresh.
                    if matches!(self.timer, Some((at, _)) if at == self.fetch_deadline_ms) {
                        self.timer = None;
                    }
                    self.fetch_deadline_ms = u64::MAX;
                    match result {
                        Ok(token) => self.on_token(token, now),
                        Err(error) => self.on_error(error, now),
                    }
                }
                // The next turn reads the shared state.
                Wakeup::Handle => {}
                Wakeup::Closed => break,
                // Whatever it was for, the wake-up read the wall clock: a
                // refresh every 30 s or less needs no beat of its own.
                Wakeup::Timer => {
                    self.heartbeat_ms = now.saturating_add(duration_ms(HEARTBEAT));
                }
            }
        }
        log::debug!(target: LOG, "token manager stopped");
    }

    /// Waits for the fetch in flight, a wake-up from a handle, or the timer.
    async fn next_wakeup(&mut self) -> Wakeup {
        let wake_ms = if self.fetch.is_some() {
            self.heartbeat_ms.min(self.fetch_deadline_ms)
        } else {
            self.next_attempt_ms.min(self.heartbeat_ms)
        }
        .min(self.shared.wait_deadline_ms());
        // An armed timer that fires no later is kept, and counts as the
        // heartbeat: waking early costs a loop turn, arming a timer costs
        // the reactor a wake-up.
        match &self.timer {
            Some((at, _)) if *at <= wake_ms => self.heartbeat_ms = self.heartbeat_ms.min(*at),
            _ => self.timer = Some((wake_ms, self.clock.sleep_until(from_ms(wake_ms)))),
        }
        future::poll_fn(|cx| {
            if let Some(fetch) = &mut self.fetch {
                if let Poll::Ready((source, result)) = fetch.as_mut().poll(cx) {
                    self.fetch = None;
                    return Poll::Ready(Wakeup::Fetched(source, result));
                }
            }
            match self.shared.poll_wake(cx.waker()) {
                None => return Poll::Ready(Wakeup::Closed),
                Some(true) => return Poll::Ready(Wakeup::Handle),
                Some(false) => {}
            }
            if let Some((_, timer)) = &mut self.timer {
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    return Poll::Ready(Wakeup::Timer);
                }
            }
            // The executor gets its turn now.
            self.fetched_in_this_poll = false;
            Poll::Pending
        })
        .await
    }

    fn start_fetch(&mut self, now: u64) {
        let Some(mut source) = self.source.take() else {
            return;
        };
        let reason = self.next_reason;
        if reason == FetchReason::Rejected {
            self.last_forced_ms = Some(now);
        }
        let timeout = self.request_timeout;
        let deadline = now.saturating_add(duration_ms(timeout));
        let cx = FetchContext {
            clock: Arc::clone(&self.clock),
            policy: self.policy,
            current: self.current.clone(),
            reason,
            deadline_ms: Some(deadline),
            cache_hits: Some(Arc::clone(&self.shared.cache_hits)),
        };
        log::debug!(target: LOG, "fetching a token ({reason:?})");
        self.shared.update_state(|s| {
            s.source_requests += 1;
            s.next_refresh_at = None;
        });
        // The deadline rides on the actor's own timer; at the deadline the
        // actor fires `cancel`, and the fetch ends with the source handed back.
        // One flag for every fetch: the last one has ended, so nothing
        // else reads it.
        self.cancel.reset();
        let cancel = Arc::clone(&self.cancel);
        self.fetch_deadline_ms = deadline;
        self.fetch = Some(Box::pin(async move {
            let result = future::or(source.fetch(cx), async move {
                cancel.fired().await;
                let timed_out = RequestTimedOut { after: timeout };
                Err(SourceError::transient(timed_out.to_string()).with_cause(timed_out))
            })
            .await;
            // Into its `Arc` at once: the token moves on as a pointer.
            (source, result.map(Arc::new))
        }));
    }

    fn on_token(&mut self, token: Arc<Token>, now: u64) {
        if !token.is_valid_at_ms(now) {
            self.on_error(
                SourceError::transient("the source returned a token that had already expired"),
                now,
            );
            return;
        }
        let jittered = self.jitter.refresh_at(token.issued_at(), token.stale_at());
        let refresh_at = to_ms(jittered)
            .clamp(token.issued_ms(), token.stale_ms())
            // A token stale at issue or on arrival would be refreshed at once.
            .max(earliest_refresh_ms(&token, now));
        self.backoff.reset();
        self.next_attempt_ms = refresh_at;
        self.next_reason = FetchReason::Scheduled;
        self.current = Some(Arc::clone(&token));
        self.withdrawn = false;
        log::info!(
            target: LOG,
            "published a token expiring at {}; next refresh at {}",
            Utc(token.expires_at()),
            Utc(from_ms(refresh_at))
        );
        self.shared.update_state(|s| {
            s.last_success_at = Some(from_ms(now));
            s.consecutive_failures = 0;
            s.next_refresh_at = Some(from_ms(refresh_at));
            s.refreshes += 1;
            s.expires_at = Some(token.expires_at());
        });
        // Readers skip the clock until the refresh instant, when the actor
        // marks the token late; a token that expires soon after it gives
        // the actor no room to be late, so its reads check from the start.
        let late = token.expiry_ms().saturating_sub(refresh_at) < LATE_MARGIN_MS;
        let expiry_ms = token.expiry_ms();
        self.version = self.shared.publish(token, late);
        self.shared.events.push(ManagerEvent::Published {
            at: from_ms(now),
            expires_at: from_ms(expiry_ms),
            next_refresh_at: from_ms(refresh_at),
        });
    }

    fn on_error(&mut self, error: SourceError, now: u64) {
        // Still the reason of the fetch that failed.
        let reason = self.next_reason;
        // A zero backoff (or a full-jitter draw of 0) would retry at once.
        let delay = self
            .backoff
            .next_delay(error.kind(), error.retry_after())
            .max(Duration::from_millis(MIN_FETCH_GAP_MS));
        self.next_attempt_ms = now.saturating_add(duration_ms(delay));
        if self.next_reason != FetchReason::Initial {
            self.next_reason = FetchReason::Retry;
        }
        let failures = self.backoff.failures();
        log::warn!(
            target: LOG,
            "token fetch failed ({:?}, {failures} in a row): {error}; retrying in {delay:?}",
            error.kind()
        );
        let next = self.next_attempt_ms;
        let permanent = error.is_permanent();
        let event = ManagerEvent::FetchFailed {
            at: from_ms(now),
            error: error.clone(),
            reason,
            consecutive_failures: failures,
            retry_in: delay,
        };
        self.shared.update_state(|s| {
            s.last_error = Some(error);
            s.last_error_at = Some(from_ms(now));
            s.consecutive_failures = failures;
            s.failures += 1;
            s.next_refresh_at = Some(from_ms(next));
        });
        self.shared.events.push(event);
        if permanent {
            // Waiters without a valid token give up now rather than at
            // their timeout; those with one never wait.
            self.shared.wake_waiters();
        }
    }

    fn on_rejected(&mut self, version: u64, now: u64) {
        // `version` is 0 until the first publish, which no rejection names.
        if self.withdrawn || version != self.version {
            return;
        }
        self.withdrawn = true;
        self.shared.invalidate();
        self.shared.update_state(|s| s.rejections += 1);
        self.shared
            .events
            .push(ManagerEvent::Withdrawn { at: from_ms(now) });
        log::info!(target: LOG, "a server rejected the current token; withdrawing it");
        // A fetch in flight brings the replacement; during backoff the retry
        // already planned is the earliest allowed.
        if self.fetch.is_some() || self.backoff.failures() > 0 {
            return;
        }
        let earliest = self.last_forced_ms.map_or(now, |at| {
            at.saturating_add(duration_ms(self.forced_refresh_interval))
        });
        let at = earliest.max(now);
        if at < self.next_attempt_ms {
            self.next_attempt_ms = at;
            self.next_reason = FetchReason::Rejected;
            // Due now, the fetch starts in this turn and clears it again.
            self.shared
                .update_state(|s| s.next_refresh_at = Some(from_ms(at)));
        }
    }
}

/// The delay of a manager's first heartbeat, between 1 ms and
/// [`HEARTBEAT`]; each beat after comes a full period after the one before.
///
/// Managers started together would otherwise keep waking together, every
/// period, in one burst that grows with their number. Delays follow the
/// golden-ratio sequence over the period, so any run of managers started
/// one after another spreads evenly, with no luck of a draw.
fn first_heartbeat_ms() -> u64 {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    heartbeat_phase_ms(STARTED.fetch_add(1, Ordering::Relaxed))
}

/// The first heartbeat's delay for the `n`th manager started in this
/// process: at least 1 ms and less than [`HEARTBEAT`].
fn heartbeat_phase_ms(n: u64) -> u64 {
    // n × (golden ratio − 1), as a fraction of 2^64.
    let fraction = u128::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let period = duration_ms(HEARTBEAT);
    1 + ((fraction * u128::from(period - 1)) >> 64) as u64
}

/// The earliest instant for the refresh after `token`, published at `now`.
///
/// Scheduled refreshes are spaced by 5 % of the token's lifetime, and at
/// least [`MIN_REFRESH_INTERVAL_MS`], whatever the token says: stale at
/// issue, already stale on arrival from a cache, or under a 0 % stale
/// policy. The spacing never exceeds a quarter of the lifetime (so the
/// jitter's range, which starts no earlier, is kept for short tokens), nor
/// half the time the token has left (so one more try comes before it
/// expires); and it is never shorter than [`MIN_FETCH_GAP_MS`].
fn earliest_refresh_ms(token: &Token, now: u64) -> u64 {
    let lifetime = token.expiry_ms() - token.issued_ms();
    let left = token.expiry_ms().saturating_sub(now);
    let interval = (lifetime / 20)
        .max(MIN_REFRESH_INTERVAL_MS)
        .min(lifetime / 4)
        .min(left / 2)
        .max(MIN_FETCH_GAP_MS);
    now.saturating_add(interval)
}

impl Drop for TokenManager {
    fn drop(&mut self) {
        self.shared.stop();
        // After the stop, so a subscriber hearing of it finds it stopped.
        self.shared.events.push(ManagerEvent::Stopped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::AccessToken;

    #[test]
    fn refreshes_are_spaced_by_a_share_of_the_lifetime() {
        const HOUR: u64 = 3_600_000;
        // (issued, expiry, now, the least time to the next refresh)
        let cases = [
            (0, HOUR, 0, 180_000), // 5 % of an hour
            (5_000, 5_000 + HOUR, 5_000, 180_000),
            (0, 10_000, 0, 1_000),                 // at least a second
            (0, 2_000, 0, 500),                    // a quarter of a 2 s token
            (0, 200, 0, 100),                      // never below 100 ms
            (0, HOUR, HOUR - 60_000, 30_000),      // half of what is left
            (0, HOUR, HOUR - 1, 100),              // even at the last moment
            (0, u64::MAX, 0, u64::MAX / 20),       // no overflow
            (0, u64::MAX, u64::MAX - 1, u64::MAX), // saturates
        ];
        for (issued, expiry, now, gap) in cases {
            let token =
                Token::from_parts_ms(AccessToken::new("t"), issued, issued, expiry).unwrap();
            assert_eq!(
                earliest_refresh_ms(&token, now),
                now.saturating_add(gap),
                "issued {issued}, expiry {expiry}, now {now}"
            );
        }
    }

    #[test]
    fn first_heartbeats_fall_inside_the_period_and_spread_evenly() {
        let period = duration_ms(HEARTBEAT);
        assert_eq!(heartbeat_phase_ms(0), 1, "never at once");
        let phases: Vec<u64> = (0..100_000).map(heartbeat_phase_ms).collect();
        let (low, high) = (phases.iter().min(), phases.iter().max());
        // The sequence comes within a few milliseconds of either end.
        assert_eq!(low, Some(&1));
        assert_eq!(high, Some(&(period - 1)), "never a full period late");
        // Any 1,000 managers started in a row leave no gap of more than
        // three times the even share between their beats.
        let mut first: Vec<u64> = phases[5_000..6_000].to_vec();
        first.sort_unstable();
        let widest = first.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(widest <= 3 * period / 1_000, "a gap of {widest} ms");
    }
}
