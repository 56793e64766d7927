//! Whether a cache of a chain is answering: a cache that failed or missed
//! its deadline is left alone for a cool-down instead of being asked again
//! on every fetch.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::time::duration_ms;

/// A cool-down grows by this factor after each failed probe...
const GROWTH: u64 = 2;
/// ...up to this many times the configured one.
const MAX_GROWTH: u64 = 8;

/// How one cache has been doing.
#[derive(Debug, Default)]
pub(super) struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failures in a row; 0 while the cache answers.
    failures: u32,
    /// The cool-down runs from `since_ms` for `length_ms`.
    since_ms: u64,
    length_ms: u64,
}

/// What [`Health::failed`] decided.
pub(super) struct CoolDown {
    /// How long the cache is now left alone.
    pub(super) length: Duration,
    /// Whether it was answering until now (so this is news worth a warning).
    pub(super) first: bool,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the cache is to be left alone at `now_ms`. A wall clock that
    /// stepped back before the cool-down began ends it: better one probe too
    /// many than a cache skipped for however long the step was.
    pub(super) fn cooling(&self, now_ms: u64) -> bool {
        let s = self.state();
        s.failures > 0 && now_ms >= s.since_ms && now_ms - s.since_ms < s.length_ms
    }

    /// Records a failure at `now_ms`: the cache cools down for `base`, or
    /// longer when the probe after a cool-down failed again.
    pub(super) fn failed(&self, now_ms: u64, base: Duration) -> CoolDown {
        let mut s = self.state();
        let first = s.failures == 0;
        let growth = GROWTH.saturating_pow(s.failures).min(MAX_GROWTH);
        s.failures = s.failures.saturating_add(1);
        s.since_ms = now_ms;
        s.length_ms = duration_ms(base).saturating_mul(growth);
        CoolDown {
            length: Duration::from_millis(s.length_ms),
            first,
        }
    }

    /// Records an answer; true when the cache had been failing until now.
    pub(super) fn answered(&self) -> bool {
        let mut s = self.state();
        std::mem::take(&mut s.failures) > 0
    }
}
