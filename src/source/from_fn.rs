use std::fmt;
use std::future::Future;

use crate::error::SourceError;
use crate::source::{FetchContext, TokenSource};
use crate::token::Token;
use crate::BoxFuture;

/// A source made from an async closure; see [`from_fn`].
pub struct FnSource<F> {
    fetch: F,
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSource")
    }
}

/// Turns a closure returning a future into a [`TokenSource`].
///
/// The closure is called once per fetch with a [`FetchContext`]; the future
/// it returns must be `Send + 'static`, so clone what it needs into it.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tokenkeeper::{source, AccessToken, FetchContext, LifetimePolicy, ManualClock, SourceError, TokenSource};
///
/// let calls = Arc::new(AtomicU32::new(0));
/// let counter = calls.clone();
/// let mut source = source::from_fn(move |cx: FetchContext| {
///     let n = counter.fetch_add(1, Ordering::SeqCst);
///     async move {
///         if n == 0 {
///             return Err(SourceError::transient("first call fails"));
///         }
///         Ok(cx.token(AccessToken::new(format!("t{n}")), Some(Duration::from_secs(60))))
///     }
/// });
/// let cx = FetchContext::new(ManualClock::default(), LifetimePolicy::default());
/// assert!(futures_lite::future::block_on(source.fetch(cx.clone())).is_err());
/// assert!(futures_lite::future::block_on(source.fetch(cx)).is_ok());
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// ```
pub fn from_fn<F, Fut>(fetch: F) -> FnSource<F>
where
    F: FnMut(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Token, SourceError>> + Send + 'static,
{
    FnSource { fetch }
}

impl<F, Fut> TokenSource for FnSource<F>
where
    F: FnMut(FetchContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Token, SourceError>> + Send + 'static,
{
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        Box::pin((self.fetch)(cx))
    }
}
