use std::fmt;
use std::time::SystemTime;

use crate::error::SourceError;
use crate::time::{test_support, to_ms, utc_opt};

/// A snapshot of what the manager is doing, from [`TokenHandle::state`].
///
/// Instants are on the manager's clock (the system clock unless the builder
/// was given another). `Debug` prints them in UTC (RFC 3339, to the
/// millisecond). Nothing here holds a secret: errors are built by sources
/// without credentials.
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
/// assert!(state.last_error.is_none() && state.expires_at.is_none());
/// # drop(driver);
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ManagerState {
    /// Whether the driver is running.
    pub running: bool,
    /// When the last token was published.
    pub last_success_at: Option<SystemTime>,
    /// The most recent failure, kept after recovery (see
    /// `consecutive_failures` for whether it is still failing).
    pub last_error: Option<SourceError>,
    /// When `last_error` happened.
    pub last_error_at: Option<SystemTime>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Failed fetches, in total.
    pub failures: u64,
    /// When the next fetch is planned, if none is in flight.
    pub next_refresh_at: Option<SystemTime>,
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
    pub expires_at: Option<SystemTime>,
}

impl ManagerState {
    test_support! {
        /// `last_success_at` in ms since the Unix epoch.
        fn last_success_ms(&self) -> Option<u64> {
            self.last_success_at.map(to_ms)
        }

        /// `last_error_at` in ms since the Unix epoch.
        fn last_error_ms(&self) -> Option<u64> {
            self.last_error_at.map(to_ms)
        }

        /// `next_refresh_at` in ms since the Unix epoch.
        fn next_refresh_ms(&self) -> Option<u64> {
            self.next_refresh_at.map(to_ms)
        }

        /// `expires_at` in ms since the Unix epoch.
        fn expiry_ms(&self) -> Option<u64> {
            self.expires_at.map(to_ms)
        }
    }
}

impl fmt::Debug for ManagerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagerState")
            .field("running", &self.running)
            .field("last_success_at", &utc_opt(self.last_success_at))
            .field("last_error", &self.last_error)
            .field("last_error_at", &utc_opt(self.last_error_at))
            .field("consecutive_failures", &self.consecutive_failures)
            .field("failures", &self.failures)
            .field("next_refresh_at", &utc_opt(self.next_refresh_at))
            .field("source_requests", &self.source_requests)
            .field("cache_hits", &self.cache_hits)
            .field("refreshes", &self.refreshes)
            .field("rejections", &self.rejections)
            .field("expires_at", &utc_opt(self.expires_at))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_ms;

    #[test]
    fn debug_prints_instants_in_utc() {
        let state = ManagerState {
            running: true,
            last_success_at: Some(from_ms(1_796_649_969_123)),
            next_refresh_at: Some(from_ms(1_796_652_669_123)),
            refreshes: 1,
            source_requests: 1,
            expires_at: Some(from_ms(1_796_653_569_123)),
            ..ManagerState::default()
        };
        assert_eq!(
            format!("{state:?}"),
            "ManagerState { running: true, last_success_at: Some(2026-12-07T13:26:09.123Z), \
             last_error: None, last_error_at: None, consecutive_failures: 0, failures: 0, \
             next_refresh_at: Some(2026-12-07T14:11:09.123Z), source_requests: 1, \
             cache_hits: 0, refreshes: 1, rejections: 0, \
             expires_at: Some(2026-12-07T14:26:09.123Z) }"
        );
        let alternate = format!("{state:#?}");
        assert!(
            alternate.contains("    expires_at: Some(\n        2026-12-07T14:26:09.123Z,\n    ),"),
            "{alternate}"
        );
    }
}
