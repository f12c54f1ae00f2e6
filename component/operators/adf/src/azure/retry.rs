//! When a failed Azure call is tried again inside one reconcile: `Retry-After` parsing and a
//! small bounded [`RetryPolicy`] on the SDK's capped, jittered [`Backoff`]. Past its bound the
//! call fails retryably and the SDK's per-entity backoff takes over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use operator_sdk::Backoff;

/// How many times one call is tried, and how long it may wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Delays between attempts when Azure does not say how long to wait.
    pub backoff: Backoff,
    /// The longest `Retry-After` honoured by waiting in the reconcile; a longer one ends the
    /// call so the entity is requeued instead.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 500 ms doubling up to 8 s, waiting at most 20 s for a `Retry-After`.
    fn default() -> Self {
        Self {
            attempts: 4,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(8)),
            max_wait: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt after attempt number `attempt` (1-based) failed
    /// retryably, or `None` when the call should give up. `retry_after` is Azure's hint;
    /// `jitter` in `[0, 1)` places the backoff delay in its window.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        match retry_after {
            Some(wait) if wait > self.max_wait => None,
            Some(wait) => Some(wait),
            None => Some(self.backoff.delay(attempt, jitter)),
        }
    }
}

/// Reads a `Retry-After` value: delta-seconds, or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(
            parse_retry_after("17", now()),
            Some(Duration::from_secs(17))
        );
        assert_eq!(
            parse_retry_after(" 0 ", now()),
            Some(Duration::from_secs(0))
        );
        assert_eq!(
            parse_retry_after("1.5", now()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now()),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("-3", now()), None);
        assert_eq!(parse_retry_after("soon", now()), None);
    }

    #[test]
    fn without_a_hint_delays_back_off_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 10,
            ..RetryPolicy::default()
        };
        let delays: Vec<_> = (1..=6)
            .filter_map(|attempt| policy.next_delay(attempt, None, 1.0))
            .collect();
        assert_eq!(
            delays,
            [500, 1_000, 2_000, 4_000, 8_000, 8_000]
                .map(Duration::from_millis)
                .to_vec()
        );
        let jittered = policy
            .next_delay(3, None, 0.0)
            .expect("a delay within the window");
        assert_eq!(jittered, Duration::from_secs(1));
    }

    #[test]
    fn a_retry_after_hint_is_waited_for_unless_it_is_too_long() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.next_delay(1, Some(Duration::from_secs(3)), 0.5),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            policy.next_delay(1, Some(Duration::from_secs(60)), 0.5),
            None
        );
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default();
        assert!(policy.next_delay(3, None, 0.5).is_some());
        assert_eq!(policy.next_delay(4, None, 0.5), None);
        assert_eq!(policy.next_delay(4, Some(Duration::ZERO), 0.5), None);
    }
}
