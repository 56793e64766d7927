//! The operators' stream: what the manager did, for metrics and health
//! checks.
//!
//! Only the actor writes events, into one bounded log shared by every
//! subscriber; each subscriber keeps its place in it with a sequence number.
//! The log lives beside the token slot and is never touched by a read of
//! the token.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use event_listener::{Event, EventListener};
use futures_core::Stream;
use futures_lite::future;

use crate::error::SourceError;
use crate::manager::shared::Shared;
use crate::source::FetchReason;
use crate::time::Utc;

/// How many of the latest events the manager keeps for its subscribers.
const CAPACITY: usize = 64;

/// Something the manager did, from [`Events`].
///
/// Instants are on the manager's clock (the system clock unless the
/// builder was given another). No event holds a token or a secret:
/// [`SourceError`]s are built by sources without credentials, so an event
/// may be logged with `{:?}` as it is.
///
/// ```
/// use tokenkeeper::ManagerEvent;
///
/// fn describe(event: &ManagerEvent) -> String {
///     match event {
///         ManagerEvent::Published { expires_at, .. } => format!("new token, expires at {expires_at:?}"),
///         ManagerEvent::FetchFailed { error, consecutive_failures, retry_in, .. } => {
///             format!("fetch failed ({consecutive_failures} in a row): {error}; retry in {retry_in:?}")
///         }
///         ManagerEvent::Withdrawn { .. } => "token withdrawn after a rejection".to_owned(),
///         ManagerEvent::Lagged { missed } => format!("{missed} events missed"),
///         ManagerEvent::Stopped => "stopped".to_owned(),
///         // Later versions may add events.
///         _ => "something else".to_owned(),
///     }
/// }
/// # assert_eq!(describe(&ManagerEvent::Stopped), "stopped");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum ManagerEvent {
    /// A new token was published: readers get it from now on.
    #[non_exhaustive]
    Published {
        /// When it was published.
        at: SystemTime,
        /// When the token expires.
        expires_at: SystemTime,
        /// When the manager plans to fetch the next one (its stale instant
        /// moved earlier by jitter).
        next_refresh_at: SystemTime,
    },
    /// A fetch failed. The token published before it, if any, stays
    /// published while it is valid.
    #[non_exhaustive]
    FetchFailed {
        /// When the failure was seen.
        at: SystemTime,
        /// What went wrong.
        error: SourceError,
        /// Why the failed fetch was made.
        reason: FetchReason,
        /// Failures since the last token was published, this one included.
        consecutive_failures: u32,
        /// How long the manager waits before it tries again (the backoff it
        /// chose; a rejection reported meanwhile does not shorten it).
        retry_in: Duration,
    },
    /// A server rejected the published token (reported with
    /// [`TokenHandle::refresh_rejected`](crate::TokenHandle::refresh_rejected)),
    /// and the manager withdrew it: no reader gets it any more.
    #[non_exhaustive]
    Withdrawn {
        /// When it was withdrawn.
        at: SystemTime,
    },
    /// This subscriber fell behind by more than the manager keeps, and
    /// `missed` events were lost to it; the stream goes on with the oldest
    /// event still kept.
    Lagged {
        /// How many events this subscriber will never see.
        missed: u64,
    },
    /// The manager stopped. Always the last event: the stream ends after it.
    Stopped,
}

/// Instants print in UTC (`2026-12-07T13:26:09.123Z`), as in
/// [`ManagerState`](crate::ManagerState)'s `Debug`.
impl fmt::Debug for ManagerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagerEvent::Published {
                at,
                expires_at,
                next_refresh_at,
            } => f
                .debug_struct("Published")
                .field("at", &Utc(*at))
                .field("expires_at", &Utc(*expires_at))
                .field("next_refresh_at", &Utc(*next_refresh_at))
                .finish(),
            ManagerEvent::FetchFailed {
                at,
                error,
                reason,
                consecutive_failures,
                retry_in,
            } => f
                .debug_struct("FetchFailed")
                .field("at", &Utc(*at))
                .field("error", error)
                .field("reason", reason)
                .field("consecutive_failures", consecutive_failures)
                .field("retry_in", retry_in)
                .finish(),
            ManagerEvent::Withdrawn { at } => {
                f.debug_struct("Withdrawn").field("at", &Utc(*at)).finish()
            }
            ManagerEvent::Lagged { missed } => {
                f.debug_struct("Lagged").field("missed", missed).finish()
            }
            ManagerEvent::Stopped => f.write_str("Stopped"),
        }
    }
}

/// What a subscriber finds at its place in the log.
enum Read {
    Event(ManagerEvent),
    /// Nothing new yet.
    Empty,
    /// It has read `Stopped`.
    End,
}

struct Log {
    events: VecDeque<ManagerEvent>,
    /// The sequence number of `events[0]`.
    first: u64,
    /// Whether `Stopped` was logged: nothing follows it.
    closed: bool,
    /// How many [`Events`] exist: with none, no event is kept but
    /// `Stopped`, since a new subscriber starts after the latest event.
    readers: usize,
}

/// The latest events, shared by every [`Events`] of one manager.
pub(crate) struct EventLog {
    log: Mutex<Log>,
    /// Notified on every event.
    added: Event,
}

impl EventLog {
    pub(crate) fn new() -> EventLog {
        EventLog {
            log: Mutex::new(Log {
                // Grown as subscribers need it: most managers have none.
                events: VecDeque::new(),
                first: 0,
                closed: false,
                readers: 0,
            }),
            added: Event::new(),
        }
    }

    /// Logs `event`, dropping the oldest beyond the capacity, and wakes the
    /// subscribers.
    pub(crate) fn push(&self, event: ManagerEvent) {
        let oldest = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if log.closed {
                return;
            }
            log.closed = matches!(event, ManagerEvent::Stopped);
            if log.readers == 0 {
                let unread = std::mem::take(&mut log.events);
                log.first += unread.len() as u64;
                if log.closed {
                    log.events.push_back(event);
                } else {
                    log.first += 1;
                }
                (None, unread)
            } else {
                log.events.push_back(event);
                if log.events.len() > CAPACITY {
                    log.first += 1;
                    (log.events.pop_front(), VecDeque::new())
                } else {
                    (None, VecDeque::new())
                }
            }
        };
        // Freed outside the lock.
        drop(oldest);
        self.added.notify(usize::MAX);
    }

    /// Where a new subscriber starts: after the latest event, or at
    /// `Stopped` once the manager has stopped, so that every stream ends
    /// with it.
    fn start(&self) -> u64 {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.readers += 1;
        let end = log.first + log.events.len() as u64;
        if log.closed {
            end - 1
        } else {
            end
        }
    }

    /// Called by each [`Events`] as it goes.
    fn leave(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .readers -= 1;
    }

    /// The event at `*next`, moving `*next` past it; `Lagged` if it is no
    /// longer kept.
    fn read(&self, next: &mut u64) -> Read {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if *next < log.first {
            let missed = log.first - *next;
            *next = log.first;
            return Read::Event(ManagerEvent::Lagged { missed });
        }
        // At most `CAPACITY` apart: `next` is never past the end.
        let index = (*next - log.first) as usize;
        match log.events.get(index) {
            Some(event) => {
                *next += 1;
                Read::Event(event.clone())
            }
            None if log.closed => Read::End,
            None => Read::Empty,
        }
    }
}

/// A stream of [`ManagerEvent`]s, from
/// [`TokenHandle::events`](crate::TokenHandle::events): what a metrics
/// exporter or a health check needs to hear about.
///
/// It yields each event from its creation on, in the order the manager
/// acted; the manager's last event is [`ManagerEvent::Stopped`], after
/// which the stream ends (a stream made after the manager stopped yields
/// just that). It does not keep the manager alive.
///
/// The manager keeps its latest 64 events, for all subscribers together,
/// so a slow subscriber costs no memory: one that falls further behind
/// gets [`ManagerEvent::Lagged`] with the number it missed, then the
/// oldest event kept. Events are made by the manager's own task when it
/// publishes, fails or stops, never on the token's read path.
///
/// Read it with the inherent [`next`](Self::next) (no import needed) or as
/// a [`Stream`] with any `StreamExt` (futures-lite's or futures-util's).
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{AccessToken, FixedSource, ManagerEvent, TokenManager};
///
/// let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(3600));
/// let (handle, driver) = TokenManager::builder(source).build();
/// let mut events = handle.events();
/// futures_lite::future::block_on(futures_lite::future::or(driver, async move {
///     let event = events.next().await.unwrap();
///     assert!(matches!(event, ManagerEvent::Published { .. }));
///     handle.shutdown().await;
///     assert!(matches!(events.next().await, Some(ManagerEvent::Stopped)));
///     assert!(events.next().await.is_none());
/// }));
/// ```
pub struct Events {
    shared: Arc<Shared>,
    /// The sequence number of the next event to yield.
    next: u64,
    listener: Option<EventListener>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").field("next", &self.next).finish()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.shared.events.leave();
    }
}

impl Events {
    pub(crate) fn new(shared: Arc<Shared>) -> Events {
        let next = shared.events.start();
        Events {
            shared,
            next,
            listener: None,
        }
    }

    /// The next event, or `None` after [`ManagerEvent::Stopped`].
    ///
    /// The same as `StreamExt::next`, without the import; the future is
    /// `Unpin`, so it also goes into futures-util's `select!`.
    // Named like `StreamExt::next` on purpose, which it stands in for.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> impl Future<Output = Option<ManagerEvent>> + Unpin + '_ {
        future::poll_fn(move |cx| Pin::new(&mut *self).poll_next(cx))
    }
}

impl Stream for Events {
    type Item = ManagerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ManagerEvent>> {
        let this = &mut *self;
        loop {
            match this.shared.events.read(&mut this.next) {
                Read::Event(event) => {
                    this.listener = None;
                    return Poll::Ready(Some(event));
                }
                Read::End => return Poll::Ready(None),
                Read::Empty => {}
            }
            match &mut this.listener {
                // Register, then look again: an event in between is not lost.
                None => this.listener = Some(this.shared.events.added.listen()),
                Some(listener) => {
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.listener = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_ms;

    #[test]
    fn debug_prints_instants_in_utc() {
        let published = ManagerEvent::Published {
            at: from_ms(1_796_649_969_123),
            expires_at: from_ms(1_796_653_569_123),
            next_refresh_at: from_ms(1_796_652_669_123),
        };
        assert_eq!(
            format!("{published:?}"),
            "Published { at: 2026-12-07T13:26:09.123Z, expires_at: 2026-12-07T14:26:09.123Z, \
             next_refresh_at: 2026-12-07T14:11:09.123Z }"
        );
        let withdrawn = ManagerEvent::Withdrawn {
            at: from_ms(1_796_649_969_123),
        };
        assert_eq!(
            format!("{withdrawn:?}"),
            "Withdrawn { at: 2026-12-07T13:26:09.123Z }"
        );
        assert_eq!(
            format!("{:?}", ManagerEvent::Lagged { missed: 3 }),
            "Lagged { missed: 3 }"
        );
        assert_eq!(format!("{:?}", ManagerEvent::Stopped), "Stopped");
    }

    fn withdrawn() -> ManagerEvent {
        ManagerEvent::Withdrawn {
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn kept(log: &EventLog) -> usize {
        log.log.lock().unwrap().events.len()
    }

    #[test]
    fn events_are_kept_only_while_a_subscriber_may_read_them() {
        let log = EventLog::new();
        (0..10).for_each(|_| log.push(withdrawn()));
        assert_eq!(kept(&log), 0, "no subscriber: nothing kept");
        let mut next = log.start();
        (0..3).for_each(|_| log.push(withdrawn()));
        assert_eq!(kept(&log), 3);
        assert!(matches!(
            log.read(&mut next),
            Read::Event(ManagerEvent::Withdrawn { .. })
        ));
        log.leave();
        log.push(withdrawn());
        assert_eq!(kept(&log), 0, "the last subscriber gone: nothing kept");
        log.push(ManagerEvent::Stopped);
        let mut next = log.start();
        assert!(matches!(
            log.read(&mut next),
            Read::Event(ManagerEvent::Stopped)
        ));
        assert!(matches!(log.read(&mut next), Read::End));
    }
}
