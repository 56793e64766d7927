//! How long to wait after a failed refresh.
//!
//! [`Backoff`] is exponential backoff with full jitter: after the n-th
//! consecutive failure it waits a uniformly random time in
//! `[0, initial * multiplier^(n-1)]`, so a fleet that failed together does
//! not retry together. Once that bound reaches the cap, each retry waits the
//! cap itself: the ramp has already spread the fleet's retries, and a long
//! outage then costs at most one request per cap and instance. A retry-after
//! hint from the source (for example HTTP `Retry-After`) is a floor. A
//! permanent error (say, `invalid_client`) waits the full cap straight away:
//! retrying sooner cannot help, and the error is reported through the
//! manager's state. A success resets it.
//!
//! ```
//! use std::time::Duration;
//! use tokenkeeper::{Backoff, ErrorKind};
//!
//! let mut backoff = Backoff::default();
//! let first = backoff.next_delay(ErrorKind::Transient, None);
//! assert!(first <= Duration::from_millis(500));
//! assert_eq!(backoff.next_delay(ErrorKind::Permanent, None), Duration::from_secs(60));
//! backoff.reset();
//! assert_eq!(backoff.failures(), 0);
//! ```

use std::fmt;
use std::time::Duration;

use crate::error::ErrorKind;
use crate::time::duration_ms;

/// The longest retry-after hint that is honoured; a larger one (or a hostile
/// one) is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Exponential backoff with full jitter; see the [module docs](self).
pub struct Backoff {
    initial_ms: u64,
    multiplier: f64,
    cap_ms: u64,
    failures: u32,
    rng: fastrand::Rng,
}

impl Default for Backoff {
    /// 500 ms initial, ×2 per failure, capped at 60 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), 2.0, Duration::from_secs(60))
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("initial_ms", &self.initial_ms)
            .field("multiplier", &self.multiplier)
            .field("cap_ms", &self.cap_ms)
            .field("failures", &self.failures)
            .finish()
    }
}

impl Backoff {
    /// Backoff starting at `initial`, multiplied by `multiplier` per failure,
    /// never above `cap`. A multiplier below 1 (or not a number) counts as 1;
    /// an initial delay above the cap counts as the cap.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = tokenkeeper::Backoff::new(Duration::from_secs(1), 3.0, Duration::from_secs(30));
    /// assert_eq!(backoff.cap(), Duration::from_secs(30));
    /// ```
    pub fn new(initial: Duration, multiplier: f64, cap: Duration) -> Backoff {
        let cap_ms = duration_ms(cap);
        Backoff {
            initial_ms: duration_ms(initial).min(cap_ms),
            multiplier: if multiplier >= 1.0 { multiplier } else { 1.0 },
            cap_ms,
            failures: 0,
            rng: fastrand::Rng::new(),
        }
    }

    /// Uses a seeded random generator, for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Backoff {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The largest delay.
    pub fn cap(&self) -> Duration {
        Duration::from_millis(self.cap_ms)
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The upper bound of the next delay if one more ordinary failure happens.
    pub fn ceiling(&self) -> Duration {
        Duration::from_millis(self.ceiling_ms(self.failures))
    }

    fn ceiling_ms(&self, failures: u32) -> u64 {
        let factor = self.multiplier.powi(failures.min(1_000) as i32);
        let ms = self.initial_ms as f64 * factor;
        // `as` saturates for floats, and infinity becomes u64::MAX.
        (ms as u64).min(self.cap_ms)
    }

    /// Records a failure and returns how long to wait before the next try:
    /// random up to the exponential bound during the ramp, the cap after.
    ///
    /// A [permanent](ErrorKind::Permanent) failure jumps to the cap.
    /// `retry_after` is the source's hint (honoured up to
    /// [`MAX_RETRY_AFTER`]).
    pub fn next_delay(&mut self, kind: ErrorKind, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling_ms(self.failures);
        self.failures = self.failures.saturating_add(1);
        let delay = if kind == ErrorKind::Permanent || ceiling >= self.cap_ms {
            self.cap_ms
        } else {
            self.rng.u64(0..=ceiling)
        };
        let floor = retry_after.map_or(0, |d| duration_ms(d.min(MAX_RETRY_AFTER)));
        Duration::from_millis(delay.max(floor))
    }

    /// Forgets past failures, after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_full_jitter_bounds_up_to_the_cap() {
        let mut max_seen = [0u64; 10];
        for seed in 0..2_000 {
            let mut b = Backoff::default().seed(seed);
            for (n, seen) in max_seen.iter_mut().enumerate() {
                let d = duration_ms(b.next_delay(ErrorKind::Transient, None));
                let ceiling = (500u64 << n).min(60_000);
                assert!(d <= ceiling, "failure {n}: {d} > {ceiling}");
                *seen = (*seen).max(d);
            }
        }
        // Full jitter reaches close to each ceiling over many runs.
        // Full jitter reaches close to each ceiling over many runs; at the
        // cap the delay is the cap.
        assert!(max_seen[0] > 450 && max_seen[3] > 3_600, "{max_seen:?}");
        assert_eq!(max_seen[7..], [60_000; 3]);
    }

    #[test]
    fn permanent_jumps_to_the_cap() {
        let mut b = Backoff::default();
        assert_eq!(
            b.next_delay(ErrorKind::Permanent, None),
            Duration::from_secs(60)
        );
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn retry_after_is_a_floor_and_is_bounded() {
        let mut b = Backoff::default();
        assert!(
            b.next_delay(ErrorKind::Transient, Some(Duration::from_secs(7)))
                >= Duration::from_secs(7)
        );
        assert_eq!(
            b.next_delay(ErrorKind::Transient, Some(Duration::MAX)),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default().seed(9);
        for _ in 0..20 {
            b.next_delay(ErrorKind::Transient, None);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
        assert!(b.next_delay(ErrorKind::Transient, None) <= Duration::from_millis(500));
    }

    #[test]
    fn odd_parameters_do_not_panic() {
        let mut b = Backoff::new(Duration::MAX, f64::NAN, Duration::ZERO);
        assert_eq!(b.next_delay(ErrorKind::Transient, None), Duration::ZERO);
        let mut b = Backoff::new(Duration::from_millis(1), f64::INFINITY, Duration::MAX);
        for _ in 0..5 {
            b.next_delay(ErrorKind::Transient, None);
        }
        let mut b = Backoff::new(Duration::from_millis(1), 1e300, Duration::from_secs(1));
        for _ in 0..2_000 {
            assert!(b.next_delay(ErrorKind::Transient, None) <= Duration::from_secs(1));
        }
    }
}
