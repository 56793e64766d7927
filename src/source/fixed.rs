use std::fmt;
use std::time::Duration;

use crate::error::SourceError;
use crate::source::{FetchContext, TokenSource};
use crate::token::{AccessToken, Token};
use crate::BoxFuture;

/// A source that hands out the same access token on every fetch, issued at
/// the time of the fetch with a fixed lifetime.
///
/// Useful for static credentials such as API keys, and in tests.
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{AccessToken, FetchContext, FixedSource, LifetimePolicy, ManualClock, TokenSource};
///
/// let mut source = FixedSource::new(AccessToken::new("key"), Duration::from_secs(3600));
/// let cx = FetchContext::new(ManualClock::default(), LifetimePolicy::default());
/// let token = futures_lite::future::block_on(source.fetch(cx)).unwrap();
/// assert_eq!(token.access_token().secret(), "key");
/// assert_eq!(token.lifetime(), Duration::from_secs(3600));
/// ```
#[derive(Clone)]
pub struct FixedSource {
    access_token: AccessToken,
    lifetime: Duration,
}

impl FixedSource {
    /// A source of `access_token`, each copy valid for `lifetime`.
    pub fn new(access_token: AccessToken, lifetime: Duration) -> FixedSource {
        FixedSource {
            access_token,
            lifetime,
        }
    }
}

impl fmt::Debug for FixedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedSource")
            .field("access_token", &self.access_token)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl TokenSource for FixedSource {
    fn fetch(&mut self, cx: FetchContext) -> BoxFuture<'_, Result<Token, SourceError>> {
        let token = cx.token(self.access_token.clone(), Some(self.lifetime));
        Box::pin(async move { Ok(token) })
    }
}
