use crate::error::SourceError;

/// A snapshot of what the manager is doing, from [`TokenHandle::state`].
///
/// Times are ms since the Unix epoch on the manager's clock. Nothing here
/// holds a secret: errors are built by sources without credentials.
///
/// [`TokenHandle::state`]: crate::TokenHandle::state
///
/// ```
/// use std::time::Duration;
/// use tokenkeeper::{AccessToken, FixedSource, TokenManager};
///
/// let (handle, driver) = TokenManager::builder(FixedSource::new(AccessToken::new("t"), Duration::from_secs(60))).build();
/// let state = handle.state();
/// assert_eq!(state.source_requests, 0); // the driver has not run yet
/// assert!(state.last_error.is_none());
/// # drop(driver);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ManagerState {
    /// Whether the driver is running.
    pub running: bool,
    /// When the last token was published.
    pub last_success_ms: Option<u64>,
    /// The most recent failure, kept after recovery (see
    /// `consecutive_failures` for whether it is still failing).
    pub last_error: Option<SourceError>,
    /// When `last_error` happened.
    pub last_error_ms: Option<u64>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Failed fetches, in total.
    pub failures: u64,
    /// When the next fetch is planned, if none is in flight.
    pub next_refresh_ms: Option<u64>,
    /// Fetches started, in total.
    pub source_requests: u64,
    /// Fetches answered from a cache rather than the authority (by a
    /// [`Chain`](crate::cache::Chain)); the rest of `source_requests` went
    /// to the authority or failed.
    pub cache_hits: u64,
    /// Tokens published, in total.
    pub refreshes: u64,
    /// Tokens withdrawn because a server rejected them.
    pub rejections: u64,
    /// When the published token expires.
    pub expiry_ms: Option<u64>,
}
