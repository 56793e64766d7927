use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use event_listener::EventListener;
use futures_core::Stream;
use futures_lite::future;

use crate::manager::shared::Shared;
use crate::token::Token;

/// A watch-style stream of published tokens, from
/// [`TokenHandle::subscribe`](crate::TokenHandle::subscribe).
///
/// It yields the current token (if it is valid) and then each newly
/// published one. A subscriber that falls behind skips straight to the
/// newest token: nothing queues up, so each subscription takes the same
/// small, constant memory however slow it is. The stream ends when the
/// manager stops. It does not keep the manager alive.
///
/// Read it with the inherent [`next`](Self::next), which needs no import,
/// or as a [`Stream`] with any `StreamExt` (futures-lite's or
/// futures-util's: `map`, `filter`, `take`, `for_each`...). With a
/// `StreamExt` in scope, `tokens.next()` still calls the inherent method,
/// which does the same. To run a function on each token, see
/// [`TokenHandle::watch`](crate::TokenHandle::watch).
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
///
/// let source = FixedSource::new(AccessToken::new("t"), Duration::from_secs(60));
/// let (handle, driver) = TokenManager::builder(source).build();
/// let mut tokens = handle.subscribe();
/// futures_lite::future::block_on(futures_lite::future::or(driver, async move {
///     let first = tokens.next().await.unwrap();
///     assert_eq!(first.access_token().secret(), "t");
///     handle.shutdown().await;
///     assert!(tokens.next().await.is_none());
/// }));
/// ```
pub struct Subscription {
    shared: Arc<Shared>,
    /// The publication number last looked at; `u64::MAX` before the first.
    seen: u64,
    listener: Option<EventListener>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("seen", &self.seen)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(shared: Arc<Shared>) -> Subscription {
        Subscription {
            shared,
            seen: u64::MAX,
            listener: None,
        }
    }

    /// The next token: at first the current one if it is valid, then each
    /// new one as it is published (the newest, if several were published
    /// since the last call); `None` once the manager has stopped.
    ///
    /// The same as `StreamExt::next`, without the import; the future is
    /// `Unpin`, so it also goes into futures-util's `select!`.
    // Named like `StreamExt::next` on purpose, which it stands in for.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> impl Future<Output = Option<Arc<Token>>> + Unpin + '_ {
        future::poll_fn(move |cx| Pin::new(&mut *self).poll_next(cx))
    }

    /// The newest valid token not yet yielded, if there is one.
    fn take_new(&mut self) -> Option<Arc<Token>> {
        let now = self.shared.clock.now_ms();
        let (version, token) = self.shared.read_slot(|slot| {
            let valid = slot.token.as_ref().filter(|t| t.is_valid_at_ms(now));
            (slot.version, valid.cloned())
        });
        if version == self.seen {
            return None;
        }
        self.seen = version;
        token
    }
}

impl Stream for Subscription {
    type Item = Arc<Token>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Token>>> {
        let this = &mut *self;
        loop {
            if let Some(token) = this.take_new() {
                this.listener = None;
                return Poll::Ready(Some(token));
            }
            if this.shared.is_stopped() {
                return Poll::Ready(None);
            }
            match &mut this.listener {
                // Register, then look again: a publish in between is not lost.
                None => this.listener = Some(this.shared.changed.listen()),
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
