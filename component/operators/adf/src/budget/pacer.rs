//! The pacing of one factory's monitoring calls, pure (no I/O, no clock of its own): calls are
//! spaced evenly at `60 s / budget` plus 1 % (so no minute ever holds more than the budget,
//! whatever window is looked at, even when the network delays one call more than the next), a 429's `Retry-After` pauses them all, and the calls of the last
//! minute are counted for display. Instants are wall-clock milliseconds, so the state means
//! the same to the next leader.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// A minute, in milliseconds.
pub const MINUTE_MS: i64 = 60_000;

/// What is kept of a factory's pacing, and handed to the next leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PacerState {
    /// The earliest instant the next call may go (ms since the epoch).
    pub next_free_ms: i64,
    /// Azure asked to wait until then (ms since the epoch).
    #[serde(default)]
    pub paused_until_ms: i64,
    /// The instants of the calls made in the last minute.
    #[serde(default)]
    pub recent_ms: VecDeque<i64>,
}

/// A factory's pacer.
#[derive(Debug, Clone)]
pub struct Pacer {
    spacing_ms: i64,
    state: PacerState,
}

impl Pacer {
    /// A pacer allowing `budget_per_minute` calls a minute, resuming from `state`.
    pub fn new(budget_per_minute: u32, state: PacerState) -> Self {
        Self {
            // Rounded up, with a 1 % margin for the jitter between sending and arriving.
            spacing_ms: {
                let per = 100 * i64::from(budget_per_minute.max(1));
                (MINUTE_MS * 101 + per - 1) / per
            },
            state,
        }
    }

    /// When a call asked for at `now_ms` may go.
    pub fn slot(&self, now_ms: i64) -> i64 {
        now_ms
            .max(self.state.next_free_ms)
            .max(self.state.paused_until_ms)
    }

    /// Records a call going at `at_ms` (a slot this pacer gave).
    pub fn take(&mut self, at_ms: i64) {
        self.state.next_free_ms = at_ms + self.spacing_ms;
        self.state.recent_ms.push_back(at_ms);
        self.forget_before(at_ms - MINUTE_MS);
    }

    /// Azure answered 429 asking to wait until `until_ms`: no call goes before then.
    pub fn pause(&mut self, until_ms: i64) {
        self.state.paused_until_ms = self.state.paused_until_ms.max(until_ms);
    }

    /// Calls made in the minute before `now_ms`.
    pub fn used_last_minute(&mut self, now_ms: i64) -> usize {
        self.forget_before(now_ms - MINUTE_MS);
        self.state.recent_ms.len()
    }

    /// Whether calls are paused at `now_ms`.
    pub fn paused(&self, now_ms: i64) -> bool {
        self.state.paused_until_ms > now_ms
    }

    pub fn state(&self) -> &PacerState {
        &self.state
    }

    fn forget_before(&mut self, cutoff_ms: i64) {
        while self
            .state
            .recent_ms
            .front()
            .is_some_and(|at| *at <= cutoff_ms)
        {
            self.state.recent_ms.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes every slot asked for at `asks`, returning the instants the calls went.
    fn run(pacer: &mut Pacer, asks: impl IntoIterator<Item = i64>) -> Vec<i64> {
        asks.into_iter()
            .map(|now| {
                let at = pacer.slot(now);
                pacer.take(at);
                at
            })
            .collect()
    }

    #[test]
    fn calls_asked_at_once_are_spaced_so_no_minute_holds_more_than_the_budget() {
        let mut pacer = Pacer::new(600, PacerState::default());
        let went = run(&mut pacer, std::iter::repeat_n(1_000, 1_500));
        assert_eq!(went[0], 1_000);
        assert_eq!(went[1] - went[0], 101);
        for (i, start) in went.iter().enumerate() {
            let in_minute = went[i..]
                .iter()
                .take_while(|at| **at < start + MINUTE_MS)
                .count();
            assert!(
                in_minute <= 600,
                "{in_minute} calls in the minute from {start}"
            );
        }
        assert_eq!(pacer.used_last_minute(*went.last().unwrap_or(&0)), 595);
    }

    #[test]
    fn an_idle_factory_calls_at_once() {
        let mut pacer = Pacer::new(60, PacerState::default());
        assert_eq!(run(&mut pacer, [0, 5_000, 10_000]), vec![0, 5_000, 10_000]);
        assert_eq!(pacer.used_last_minute(70_001), 0);
    }

    #[test]
    fn a_pause_holds_every_call_until_it_ends() {
        let mut pacer = Pacer::new(600, PacerState::default());
        run(&mut pacer, [0]);
        pacer.pause(30_000);
        assert!(pacer.paused(10_000));
        assert_eq!(pacer.slot(10_000), 30_000);
        pacer.pause(20_000);
        assert_eq!(
            pacer.slot(10_000),
            30_000,
            "a shorter pause does not shorten it"
        );
        assert!(!pacer.paused(30_000));
        assert_eq!(pacer.slot(31_000), 31_000);
    }

    #[test]
    fn a_new_leader_resumes_from_the_state_kept() {
        let mut first = Pacer::new(60, PacerState::default());
        run(&mut first, [0, 0, 0]);
        first.pause(2_500);
        let kept: PacerState =
            serde_json::from_value(serde_json::to_value(first.state()).expect("json"))
                .expect("reads back");
        let mut next = Pacer::new(60, kept);
        assert_eq!(next.slot(1), 3_030);
        assert_eq!(next.used_last_minute(1), 3);
    }
}
