//! `Backoff`: exponential delays with jitter and a cap, for retried reconciles and retried I/O.

use std::time::Duration;

/// Exponential backoff: the n-th retry waits between half and all of `min(cap, base · 2ⁿ⁻¹)`
/// ("equal jitter"), so retries of many entities do not stampede together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest delay ever waited.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 250 ms, doubling up to 30 s.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// A backoff from `base` doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The delay before retry number `attempt` (1 for the first retry), with `jitter` in
    /// `[0, 1)` choosing where in the upper half of the window it lands.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let window = self
            .base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.cap);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        window / 2 + window.div_f64(2.0).mul_f64(jitter)
    }

    /// The delay before retry number `attempt`, with random jitter.
    pub fn delay_with_random_jitter(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_base_and_stop_at_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay(5, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(1_000, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_keeps_each_delay_in_the_upper_half_of_its_window() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(150));
        assert_eq!(b.delay(2, f64::NAN), Duration::from_millis(100));
        for attempt in 1..20 {
            let d = b.delay_with_random_jitter(attempt);
            assert!(d >= b.delay(attempt, 0.0) && d <= b.delay(attempt, 1.0));
        }
    }
}
