//! When to refresh: the stale instant moved earlier by a random amount.
//!
//! Many instances that fetched their tokens at the same moment would all
//! refresh at the same moment too, and stampede the authority. A jitter
//! policy spreads them: [`RandomEarlyJitter`] refreshes at a uniformly random
//! instant in `[stale - early, stale]`, where `early` is the smaller of its
//! maximum and half the fresh period (`stale - issued`). So a token is never
//! refreshed before half its fresh period, and a short-lived token with a
//! large jitter does not refresh in a loop.
//!
//! The draw is a function of the token (its instants) and a key. With a
//! random key per instance ([`RandomEarlyJitter::new`]) instances spread out
//! even when they hold the same token. With one key for the whole fleet
//! ([`RandomEarlyJitter::coordinated`]) instances holding the same token,
//! from a shared cache, pick the same instant: one of them takes the refresh
//! lease and the others take its new token from the cache, so the fleet
//! refreshes once per token. (Drawing independently, it would refresh at the
//! earliest of its draws, before most of the fresh period was used.) The
//! manager picks the coordinated kind by default when its source takes a
//! lease (see [`TokenSource::coordinates_refreshes`]), and the independent
//! kind otherwise, where refreshing in step would stampede.
//!
//! [`TokenSource::coordinates_refreshes`]: crate::TokenSource::coordinates_refreshes
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tokenkeeper::{Jitter, RandomEarlyJitter};
//!
//! // A 4 s token turns stale after 2 s; with a 60 s jitter it is refreshed
//! // between 1 s and 2 s after issue.
//! let issued = SystemTime::now();
//! let mut jitter = RandomEarlyJitter::new(Duration::from_secs(60));
//! let at = jitter.refresh_at(issued, issued + Duration::from_secs(2));
//! let after = at.duration_since(issued).unwrap();
//! assert!(after >= Duration::from_secs(1) && after <= Duration::from_secs(2));
//! ```

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::time::{duration_ms, from_ms, to_ms};

/// Picks the instant to refresh a token, given when it was issued and when
/// it turns stale.
///
/// The result must lie in `[issued, stale]`; the manager clamps it, to the
/// millisecond.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::Jitter;
///
/// /// Refreshes halfway through the fresh period.
/// struct Halfway;
///
/// impl Jitter for Halfway {
///     fn refresh_at(&mut self, issued: SystemTime, stale: SystemTime) -> SystemTime {
///         issued + stale.duration_since(issued).unwrap_or_default() / 2
///     }
/// }
///
/// let issued = SystemTime::now();
/// assert_eq!(Halfway.refresh_at(issued, issued + Duration::from_secs(60)), issued + Duration::from_secs(30));
/// ```
pub trait Jitter: Send + 'static {
    /// The refresh instant for a token issued at `issued` that turns stale
    /// at `stale`.
    fn refresh_at(&mut self, issued: SystemTime, stale: SystemTime) -> SystemTime;
}

/// Refresh exactly at the stale instant. For tests and single instances.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::{Jitter, NoJitter};
///
/// let issued = SystemTime::now();
/// let stale = issued + Duration::from_secs(45);
/// assert_eq!(NoJitter.refresh_at(issued, stale), stale);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoJitter;

impl Jitter for NoJitter {
    fn refresh_at(&mut self, _issued: SystemTime, stale: SystemTime) -> SystemTime {
        stale
    }
}

/// Refresh at a uniformly random instant up to `max` before the stale
/// instant, and never before half the fresh period.
///
/// The draw is a function of the token's instants (to the millisecond) and
/// the jitter's key: the same key draws the same instant for the same token.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tokenkeeper::{Jitter, RandomEarlyJitter};
///
/// let issued = SystemTime::now();
/// let stale = issued + Duration::from_secs(2700);
/// let mut jitter = RandomEarlyJitter::with_key(Duration::from_secs(10), 42);
/// let at = jitter.refresh_at(issued, stale);
/// assert!(at <= stale && at >= stale - Duration::from_secs(10));
/// ```
pub struct RandomEarlyJitter {
    max_ms: u64,
    key: u64,
}

/// The key of [`RandomEarlyJitter::coordinated`], the same in every
/// instance.
const DEFAULT_KEY: u64 = 0x746f_6b65_6e6b_6565;

impl RandomEarlyJitter {
    /// Jitter of up to `max` (zero means none), drawn independently by each
    /// instance.
    pub fn new(max: Duration) -> RandomEarlyJitter {
        RandomEarlyJitter::with_key(max, fastrand::u64(..))
    }

    /// Jitter of up to `max` on which every instance agrees for the same
    /// token: for fleets that share a cache with a refresh lease.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokenkeeper::{Jitter, RandomEarlyJitter};
    ///
    /// let (issued, stale) = (SystemTime::now(), SystemTime::now() + Duration::from_secs(2700));
    /// let mut a = RandomEarlyJitter::coordinated(Duration::from_secs(10));
    /// let mut b = RandomEarlyJitter::coordinated(Duration::from_secs(10));
    /// assert_eq!(a.refresh_at(issued, stale), b.refresh_at(issued, stale));
    /// ```
    pub fn coordinated(max: Duration) -> RandomEarlyJitter {
        RandomEarlyJitter::with_key(max, DEFAULT_KEY)
    }

    /// Jitter of up to `max` drawn with `key`: instances with the same key
    /// draw the same instant for the same token, others differ.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use tokenkeeper::{Jitter, RandomEarlyJitter};
    ///
    /// let (issued, stale) = (SystemTime::now(), SystemTime::now() + Duration::from_secs(2700));
    /// let draw = |key| RandomEarlyJitter::with_key(Duration::from_secs(10), key).refresh_at(issued, stale);
    /// assert_eq!(draw(7), draw(7));
    /// ```
    pub fn with_key(max: Duration, key: u64) -> RandomEarlyJitter {
        RandomEarlyJitter {
            max_ms: duration_ms(max),
            key,
        }
    }

    /// The draw in ms since the Unix epoch, the frame the key mixes.
    fn draw_ms(&self, issued_ms: u64, stale_ms: u64) -> u64 {
        let fresh = stale_ms.saturating_sub(issued_ms);
        let early = self.max_ms.min(fresh / 2);
        let seed = mix(mix(self.key ^ issued_ms) ^ stale_ms);
        stale_ms - fastrand::Rng::with_seed(seed).u64(0..=early)
    }
}

impl Default for RandomEarlyJitter {
    /// Up to 10 s early: enough to spread a fleet, small next to the default
    /// 30 s minimum stale window.
    fn default() -> Self {
        RandomEarlyJitter::new(Duration::from_secs(10))
    }
}

impl fmt::Debug for RandomEarlyJitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out: it is not a secret, but nothing needs it.
        f.debug_struct("RandomEarlyJitter")
            .field("max", &Duration::from_millis(self.max_ms))
            .finish()
    }
}

impl Jitter for RandomEarlyJitter {
    fn refresh_at(&mut self, issued: SystemTime, stale: SystemTime) -> SystemTime {
        from_ms(self.draw_ms(to_ms(issued), to_ms(stale)))
    }
}

/// SplitMix64's finalizer: spreads nearby inputs over all of `u64`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_within_bounds_and_cover_them() {
        let jitter = RandomEarlyJitter::with_key(Duration::from_secs(10), 1);
        let (mut lo, mut hi) = (u64::MAX, 0);
        for i in 0..100_000 {
            // Tokens issued a millisecond apart, each with a 45 min fresh period.
            let at = jitter.draw_ms(1_000_000 + i, 3_700_000 + i) - i;
            assert!((3_690_000..=3_700_000).contains(&at), "{at}");
            lo = lo.min(at);
            hi = hi.max(at);
        }
        // Uniform over 10,001 values: 100,000 draws reach both ends' neighbourhoods.
        assert!(lo < 3_690_100 && hi > 3_699_900, "{lo} {hi}");
    }

    #[test]
    fn bounded_by_half_the_fresh_period() {
        let jitter = RandomEarlyJitter::with_key(Duration::from_secs(60), 2);
        for i in 0..10_000 {
            let at = jitter.draw_ms(i, 2_000 + i) - i;
            assert!((1_000..=2_000).contains(&at), "{at}");
        }
    }

    #[test]
    fn zero_max_and_zero_fresh_period() {
        let none = RandomEarlyJitter::new(Duration::ZERO);
        assert_eq!(none.draw_ms(0, 5_000), 5_000);
        let big = RandomEarlyJitter::new(Duration::MAX);
        assert_eq!(big.draw_ms(7, 7), 7);
        assert_eq!(big.draw_ms(u64::MAX, u64::MAX), u64::MAX);
        // A broken input (stale before issue) stays at stale, no underflow.
        assert_eq!(big.draw_ms(10, 5), 5);
    }

    #[test]
    fn the_same_token_gets_the_same_instant_everywhere() {
        let a = RandomEarlyJitter::coordinated(Duration::from_secs(10));
        let b = RandomEarlyJitter::coordinated(Duration::from_secs(10));
        let other_key = RandomEarlyJitter::new(Duration::from_secs(10));
        let mut differs = 0;
        for issued in 0..1_000 {
            let stale = issued + 2_700_000;
            assert_eq!(a.draw_ms(issued, stale), b.draw_ms(issued, stale));
            differs += usize::from(a.draw_ms(issued, stale) != other_key.draw_ms(issued, stale));
        }
        assert!(differs > 990, "{differs}");
    }

    #[test]
    fn typed_draws_are_the_millisecond_draws() {
        let mut jitter = RandomEarlyJitter::with_key(Duration::from_secs(10), 4);
        for i in 0..1_000 {
            let (issued, stale) = (1_700_000_000_000 + i, 1_700_002_700_000 + i);
            let at = jitter.refresh_at(from_ms(issued), from_ms(stale));
            assert_eq!(to_ms(at), jitter.draw_ms(issued, stale));
        }
        let t = from_ms(1_000);
        assert_eq!(NoJitter.refresh_at(from_ms(0), t), t);
        let debug = format!("{jitter:?}");
        assert_eq!(debug, "RandomEarlyJitter { max: 10s }");
    }

    #[test]
    fn mean_is_near_the_middle() {
        let jitter = RandomEarlyJitter::with_key(Duration::from_secs(10), 3);
        let n = 20_000u64;
        let sum: u64 = (0..n)
            .map(|i| 100_000 + i - jitter.draw_ms(i, 100_000 + i))
            .sum();
        let mean = sum / n;
        assert!((4_800..=5_200).contains(&mean), "{mean}");
    }
}
