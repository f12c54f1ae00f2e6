//! Time as Azure writes it: UTC instants in 100 ns ticks, shown as ISO-8601 with seven
//! fractional digits (`2026-11-26T10:00:00.1234567Z`), read back leniently.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc};

/// The longest duration any setting may ask for; it keeps every sum of instants far from
/// chrono's range, so time arithmetic never overflows.
pub const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1000;

/// Now, cut to Azure's 100 ns tick: a timestamp a client reads back and sends in a filter must
/// name the very instant the stand-in keeps, so nothing finer than what is printed is kept.
pub fn now() -> DateTime<Utc> {
    to_tick(Utc::now())
}

/// Cuts an instant to a whole 100 ns tick.
pub fn to_tick(at: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = at.nanosecond();
    at.with_nanosecond(nanos - nanos % 100).unwrap_or(at)
}

/// A duration of `ms` milliseconds, capped at [`MAX_DURATION_MS`].
pub fn millis(ms: u64) -> TimeDelta {
    let capped = ms.min(MAX_DURATION_MS);
    TimeDelta::try_milliseconds(i64::try_from(capped).unwrap_or(0)).unwrap_or_default()
}

/// Whole milliseconds from `from` to `to`, zero when `to` is earlier.
pub fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

/// `2026-11-26T10:00:00.1234567Z`, the shape of every timestamp in ADF's responses.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    // chrono has no seven-digit fraction specifier; a leap second's nanos (over 1e9) are capped.
    let ticks = (at.nanosecond() / 100).min(9_999_999);
    format!("{}.{ticks:07}Z", at.format("%Y-%m-%dT%H:%M:%S"))
}

/// Reads a timestamp as .NET would: RFC 3339 with any offset, or without an offset (taken as
/// UTC), or a bare date (its midnight, UTC).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    if let Ok(at) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(at.and_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_printed_with_seven_fractional_digits() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T10:00:00.123456789Z")
            .map(|at| at.with_timezone(&Utc))
            .ok();
        assert_eq!(
            at.map(format_timestamp).as_deref(),
            Some("2026-11-26T10:00:00.1234567Z")
        );
    }

    #[test]
    fn a_printed_timestamp_reads_back_as_the_same_tick() {
        let at = to_tick(Utc::now());
        assert_eq!(parse_timestamp(&format_timestamp(at)), Some(at));
    }

    #[test]
    fn timestamps_without_offset_or_time_are_read_as_utc() {
        let midnight = parse_timestamp("2026-11-26T00:00:00Z");
        assert!(midnight.is_some());
        assert_eq!(parse_timestamp("2026-11-26T00:00:00"), midnight);
        assert_eq!(parse_timestamp("2026-11-26"), midnight);
        assert_eq!(parse_timestamp("2026-11-26T01:00:00+01:00"), midnight);
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
