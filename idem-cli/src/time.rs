//! Times as operators read them: spans (`3m12s`), ages, expiries (`in 23h59m`,
//! `expired 2m ago`), and RFC 3339 timestamps for `--json` and `show`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A span in at most two units: `450ms`, `9s`, `3m12s`, `2m`, `23h59m`, `2d4h`.
pub(crate) fn span(span: Duration) -> String {
    let secs = span.as_secs();
    match secs {
        0 => format!("{}ms", span.subsec_millis()),
        1..=59 => format!("{secs}s"),
        60..=3599 => two(secs / 60, "m", secs % 60, "s"),
        3600..=86_399 => two(secs / 3600, "h", secs % 3600 / 60, "m"),
        _ => two(secs / 86_400, "d", secs % 86_400 / 3600, "h"),
    }
}

/// `3m12s`, or `2m` when the smaller unit is zero.
fn two(big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

/// How long ago `then` was, seen at `now` (`0ms` for a time in the future: another clock).
pub(crate) fn age(then: SystemTime, now: SystemTime) -> String {
    span(now.duration_since(then).unwrap_or_default())
}

/// When a lease or TTL runs out, seen at `now`: `in 23h59m`, `expired 2m ago`, or `never`
/// (a record that waits for an operator has no expiry).
pub(crate) fn expiry(expires_at: Option<SystemTime>, now: SystemTime) -> String {
    match expires_at {
        None => "never".to_owned(),
        Some(at) => match at.duration_since(now) {
            Ok(left) if !left.is_zero() => format!("in {}", span(left)),
            _ => format!(
                "expired {} ago",
                span(now.duration_since(at).unwrap_or_default())
            ),
        },
    }
}

/// Whether `expires_at` is at or before `now`.
pub(crate) fn is_past(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

/// `2025-06-01T03:12:45.120Z`: RFC 3339, UTC, milliseconds.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let ms = unix_ms(time);
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// `2025-06-01T03:12:45.120Z (3m12s ago)` or `… (in 23h59m)`.
pub(crate) fn stamp(time: SystemTime, now: SystemTime) -> String {
    let relative = match time.duration_since(now) {
        Ok(ahead) if !ahead.is_zero() => format!("in {}", span(ahead)),
        _ => format!("{} ago", age(time, now)),
    };
    format!("{} ({relative})", rfc3339(time))
}

/// Milliseconds since the Unix epoch (negative before it).
fn unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small and positive by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn spans_use_two_units_at_most() {
        let cases = [
            (Duration::from_millis(450), "450ms"),
            (Duration::from_secs(9), "9s"),
            (Duration::from_secs(192), "3m12s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(86_399), "23h59m"),
            (Duration::from_secs(2 * 86_400 + 4 * 3600 + 59), "2d4h"),
        ];
        for (duration, shown) in cases {
            assert_eq!(span(duration), shown);
        }
    }

    #[test]
    fn expiries_say_which_side_of_now_they_are() {
        let now = at(1_000_000);
        assert_eq!(expiry(Some(at(1_000_000 + 86_399_000)), now), "in 23h59m");
        assert_eq!(expiry(Some(at(1_000_000 - 120_000)), now), "expired 2m ago");
        assert_eq!(expiry(Some(now), now), "expired 0ms ago");
        assert_eq!(expiry(None, now), "never");
        assert_eq!(
            age(at(1_000_000 + 5_000), now),
            "0ms",
            "a clock ahead of ours"
        );
        assert!(is_past(Some(now), now) && !is_past(None, now));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // date -u -d @1748747565 → Sun Jun  1 03:12:45 UTC 2025
        assert_eq!(rfc3339(at(1_748_747_565_120)), "2025-06-01T03:12:45.120Z");
        // A leap day, and the last millisecond of a year.
        assert_eq!(rfc3339(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(at(1_704_067_199_999)), "2023-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_millis(1)),
            "1969-12-31T23:59:59.999Z"
        );
    }
}
