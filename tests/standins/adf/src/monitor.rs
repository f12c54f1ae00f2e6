//! What a factory's monitoring limit sees (not Azure's API: the stand-in's own report, for
//! tests and benchmarks): when each monitoring call (Get Pipeline Run, queryPipelineRuns,
//! queryActivityruns) arrived, by factory, and when each run was polled, to tell the most
//! calls any window of a given length held and the longest gap between two polls of a run.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::clock::millis_between;

/// Monitoring calls by factory, and polls by run.
#[derive(Debug, Default)]
pub struct Monitoring {
    by_factory: HashMap<String, Vec<DateTime<Utc>>>,
    polls_by_run: HashMap<String, Vec<DateTime<Utc>>>,
}

impl Monitoring {
    /// A monitoring call to `factory` that arrived `at`; `polled_run` when it read one run.
    pub fn record(&mut self, factory: &str, polled_run: Option<&str>, at: DateTime<Utc>) {
        self.by_factory
            .entry(factory.to_ascii_lowercase())
            .or_default()
            .push(at);
        if let Some(run) = polled_run {
            self.polls_by_run
                .entry(run.to_owned())
                .or_default()
                .push(at);
        }
    }

    /// `{"windowMs", "factories": {name: {"calls", "maxInWindow", "maxGapMs", "spanMs"}},
    /// "runsPolled", "maxPollGapMs"}`.
    pub fn report(&self, window_ms: u64) -> Value {
        let factories: serde_json::Map<String, Value> = self
            .by_factory
            .iter()
            .map(|(factory, calls)| {
                let mut calls = calls.clone();
                calls.sort();
                (
                    factory.clone(),
                    json!({
                        "calls": calls.len(),
                        "maxInWindow": max_in_window(&calls, window_ms),
                        "maxGapMs": max_gap(&calls),
                        "spanMs": match (calls.first(), calls.last()) {
                            (Some(first), Some(last)) => millis_between(*first, *last),
                            _ => 0,
                        },
                    }),
                )
            })
            .collect();
        let max_gap = self
            .polls_by_run
            .values()
            .map(|polls| {
                let mut polls = polls.clone();
                polls.sort();
                max_gap(&polls)
            })
            .max()
            .unwrap_or(0);
        json!({
            "windowMs": window_ms,
            "factories": factories,
            "runsPolled": self.polls_by_run.len(),
            "maxPollGapMs": max_gap,
        })
    }
}

/// The longest time between two of the sorted instants `calls`.
fn max_gap(calls: &[DateTime<Utc>]) -> u64 {
    calls
        .windows(2)
        .map(|pair| millis_between(pair[0], pair[1]))
        .max()
        .unwrap_or(0)
}

/// The most of the sorted instants `calls` any half-open window of `window_ms` holds.
fn max_in_window(calls: &[DateTime<Utc>], window_ms: u64) -> usize {
    let mut start = 0;
    let mut most = 0;
    for end in 0..calls.len() {
        while millis_between(calls[start], calls[end]) >= window_ms {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{millis, parse_timestamp};

    fn at(ms: u64) -> DateTime<Utc> {
        parse_timestamp("2026-11-26T10:00:00Z").unwrap_or_default() + millis(ms)
    }

    #[test]
    fn the_busiest_window_and_the_longest_poll_gap_are_reported() {
        let mut monitoring = Monitoring::default();
        for ms in [0, 100, 200, 1_000, 1_050, 1_100, 1_150, 5_000] {
            monitoring.record("F", None, at(ms));
        }
        monitoring.record("f", Some("run-1"), at(6_000));
        monitoring.record("f", Some("run-1"), at(9_500));
        monitoring.record("f", Some("run-2"), at(7_000));
        let report = monitoring.report(1_000);
        assert_eq!(report["factories"]["f"]["calls"], 11);
        // 200..1,150: five calls within 1,000 ms.
        assert_eq!(report["factories"]["f"]["maxInWindow"], 5);
        assert_eq!(report["runsPolled"], 2);
        assert_eq!(report["maxPollGapMs"], 3_500);
        assert_eq!(report["factories"]["f"]["maxGapMs"], 3_850);
    }
}
