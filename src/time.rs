//! Milliseconds since the Unix epoch, the crate's inner frame of time, and
//! their conversions to and from the `SystemTime` and `Duration` of the
//! public API.
//!
//! Inside, an instant is a `u64` of milliseconds: cheap to compare, to store
//! in an atomic and to write in a cache entry. Every conversion saturates:
//! an instant before the epoch counts as the epoch, and one from the last
//! millisecond of the year 9999 on as the end of time (`u64::MAX` inside).
//! `SystemTime`'s range depends on the platform (on Windows it ends in the
//! year 30828); every platform reaches the year 9999, so the end of time
//! reads the same everywhere.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last millisecond of the year 9999 (UTC), in ms since the Unix epoch:
/// the latest instant the public API shows.
pub(crate) const END_MS: u64 = 253_402_300_799_999;

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `ms` since the Unix epoch as a `SystemTime`; from [`END_MS`] on (the end
/// of time included) the last millisecond of the year 9999.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.min(END_MS))
}

/// `t` in whole ms since the Unix epoch, rounded down: the epoch for an
/// earlier instant, the end of time (`u64::MAX`) from the last millisecond of
/// the year 9999 on, so that `to_ms(from_ms(ms)) == ms` for every `ms`
/// below [`END_MS`] and for `u64::MAX`.
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    end_of_time(t.duration_since(UNIX_EPOCH).map_or(0, duration_ms))
}

/// `t` as the time since the Unix epoch: zero for an earlier instant, and
/// `Duration::MAX` (the end of time) from the last millisecond of the year
/// 9999 on.
pub(crate) fn since_epoch(t: SystemTime) -> Duration {
    if t >= from_ms(END_MS) {
        Duration::MAX
    } else {
        t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
    }
}

/// [`since_epoch`] back to an instant, the end of time read as the last
/// millisecond of the year 9999.
pub(crate) fn at_since_epoch(d: Duration) -> SystemTime {
    UNIX_EPOCH + d.min(Duration::from_millis(END_MS))
}

fn end_of_time(ms: u64) -> u64 {
    if ms >= END_MS {
        u64::MAX
    } else {
        ms
    }
}

/// The time from `now_ms` until `later_ms`, zero once it has passed.
pub(crate) fn until(now_ms: u64, later_ms: u64) -> Duration {
    Duration::from_millis(later_ms.saturating_sub(now_ms))
}

/// The wall clock of the system, in ms since the Unix epoch.
pub(crate) fn system_now_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// An instant printed as RFC 3339 in UTC with milliseconds, such as
/// `2026-12-07T13:26:09.123Z`, for `Debug` output a person reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Utc(pub(crate) SystemTime);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = to_ms(self.0).min(END_MS);
        let (year, month, day) = civil_from_days(ms / 86_400_000);
        let in_day = ms % 86_400_000;
        let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
        let (second, milli) = (in_day / 1_000 % 60, in_day % 1_000);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z"
        )
    }
}

impl fmt::Debug for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An optional instant for `Debug` output: `Some(2026-…Z)` or `None`.
pub(crate) fn utc_opt(t: Option<SystemTime>) -> Option<Utc> {
    t.map(Utc)
}

/// The proleptic Gregorian (year, month, day) of a day counted from
/// 1970-01-01, after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shifted to 0000-03-01 so that a leap day ends its year, in eras of
    // 400 years (146,097 days) that repeat exactly.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Declares methods that tests, benchmarks and the fuzz crate call with
/// milliseconds: public and hidden from the docs under the `test-support`
/// feature, crate-private otherwise, so that the library's own code calls
/// them the same way whatever the features.
macro_rules! test_support {
    ($($(#[$attr:meta])* fn $name:ident($($args:tt)*) $(-> $ret:ty)? $body:block)*) => {$(
        #[cfg(feature = "test-support")]
        #[doc(hidden)]
        $(#[$attr])*
        pub fn $name($($args)*) $(-> $ret)? $body

        #[cfg(not(feature = "test-support"))]
        #[allow(dead_code)]
        $(#[$attr])*
        pub(crate) fn $name($($args)*) $(-> $ret)? $body
    )*};
}
pub(crate) use test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_at_both_ends() {
        assert_eq!(from_ms(0), UNIX_EPOCH);
        assert_eq!(
            from_ms(1_700_000_000_123),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
        let end = UNIX_EPOCH + Duration::from_millis(END_MS);
        assert_eq!(from_ms(END_MS), end);
        assert_eq!(from_ms(u64::MAX), end);
        assert_eq!(to_ms(end), u64::MAX);
        assert_eq!(to_ms(end - Duration::from_millis(1)), END_MS - 1);
        assert_eq!(to_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        for ms in [0, 1, 1_700_000_000_123, END_MS - 1, u64::MAX] {
            assert_eq!(to_ms(from_ms(ms)), ms, "{ms}");
        }
        assert_eq!(
            since_epoch(UNIX_EPOCH - Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(since_epoch(end), Duration::MAX);
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(at_since_epoch(since_epoch(t)), t);
        assert_eq!(at_since_epoch(Duration::MAX), end);
    }

    #[test]
    fn sub_millisecond_instants_round_down() {
        let t = UNIX_EPOCH + Duration::from_micros(1_500);
        assert_eq!(to_ms(t), 1);
        assert_eq!(until(5, 3), Duration::ZERO);
        assert_eq!(until(3, 5), Duration::from_millis(2));
    }

    #[test]
    fn utc_prints_rfc_3339_with_milliseconds() {
        let at = |ms| Utc(from_ms(ms)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_796_649_969_123), "2026-12-07T13:26:09.123Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z"); // a leap day
        assert_eq!(at(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            Utc(UNIX_EPOCH - Duration::from_secs(5)).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn utc_agrees_with_httpdate_on_the_date_and_time() {
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let mut rng = fastrand::Rng::with_seed(16);
        for _ in 0..20_000 {
            // httpdate prints the years up to 9999 only.
            let secs = rng.u64(..END_MS / 1_000);
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            // "Sun, 06 Nov 1994 08:49:37 GMT"
            let http = httpdate::fmt_http_date(t);
            let f: Vec<&str> = http.split([' ', ':']).collect();
            let month = months.iter().position(|m| *m == f[2]).unwrap() + 1;
            let expected = format!(
                "{}-{month:02}-{}T{}:{}:{}.000Z",
                f[3], f[1], f[4], f[5], f[6]
            );
            assert_eq!(Utc(t).to_string(), expected, "{secs}");
        }
    }
}
