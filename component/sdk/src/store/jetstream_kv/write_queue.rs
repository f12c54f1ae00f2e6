//! `WriteQueue`: the pure bookkeeping of the KV writer. At most one write per KV key is in
//! flight; later writes to a busy key coalesce into one (the newest value wins, every waiter is
//! kept), so the bucket always ends at the newest value whatever order acks arrive in. A failed
//! write is retried, or superseded by a newer value, and its waiters resolve with that. A
//! refused write (fenced: this replica no longer leads) is not retried: it and everything
//! queued behind it on its key are refused.

use std::collections::HashMap;

/// A write to start: `value` (what to put, or to delete) under `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriteStart<V> {
    pub key: String,
    pub value: V,
    /// How many times in a row writes of this key have failed (0: start at once).
    pub failures: u32,
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    /// It is in the bucket.
    Durable,
    /// It failed in a way worth retrying.
    Failed,
    /// It was refused for good (fenced).
    Refused,
}

#[derive(Debug)]
struct KeyState<V, W> {
    in_flight: V,
    in_flight_waiters: Vec<W>,
    next: Option<(V, Vec<W>)>,
    failures: u32,
}

/// The writes of every key, with their values `V` and waiters `W`.
#[derive(Debug)]
pub(crate) struct WriteQueue<V, W> {
    keys: HashMap<String, KeyState<V, W>>,
}

impl<V, W> Default for WriteQueue<V, W> {
    fn default() -> Self {
        Self {
            keys: HashMap::new(),
        }
    }
}

impl<V: Clone, W> WriteQueue<V, W> {
    /// Queues a write; returns the write to start now when the key was idle.
    pub fn submit(&mut self, key: String, value: V, waiter: W) -> Option<WriteStart<V>> {
        match self.keys.get_mut(&key) {
            Some(state) => {
                match &mut state.next {
                    Some((next_value, waiters)) => {
                        *next_value = value;
                        waiters.push(waiter);
                    }
                    None => state.next = Some((value, vec![waiter])),
                }
                None
            }
            None => {
                self.keys.insert(
                    key.clone(),
                    KeyState {
                        in_flight: value.clone(),
                        in_flight_waiters: vec![waiter],
                        next: None,
                        failures: 0,
                    },
                );
                Some(WriteStart {
                    key,
                    value,
                    failures: 0,
                })
            }
        }
    }

    /// Adds `waiter` to the newest write pending for `key`, so it resolves with that write;
    /// gives it back when nothing is pending for the key.
    pub fn wait_for(&mut self, key: &str, waiter: W) -> Option<W> {
        let Some(state) = self.keys.get_mut(key) else {
            return Some(waiter);
        };
        match &mut state.next {
            Some((_, waiters)) => waiters.push(waiter),
            None => state.in_flight_waiters.push(waiter),
        }
        None
    }

    /// Records the end of the write in flight for `key`; returns the waiters it resolved
    /// (made durable, or refused) and the write to start next for that key, if any.
    pub fn completed(
        &mut self,
        key: &str,
        completion: Completion,
    ) -> (Vec<W>, Option<WriteStart<V>>) {
        if completion == Completion::Refused {
            let Some(state) = self.keys.remove(key) else {
                return (Vec::new(), None);
            };
            let mut refused = state.in_flight_waiters;
            if let Some((_, waiters)) = state.next {
                refused.extend(waiters);
            }
            return (refused, None);
        }
        let ok = completion == Completion::Durable;
        let Some(state) = self.keys.get_mut(key) else {
            return (Vec::new(), None);
        };
        let mut resolved = Vec::new();
        if ok {
            state.failures = 0;
            resolved = std::mem::take(&mut state.in_flight_waiters);
        } else {
            state.failures = state.failures.saturating_add(1);
        }
        match state.next.take() {
            Some((value, waiters)) => {
                // A newer value supersedes the failed one: its waiters wait for the newer one.
                state.in_flight_waiters.extend(waiters);
                state.in_flight = value.clone();
                let start = WriteStart {
                    key: key.to_string(),
                    value,
                    failures: state.failures,
                };
                (resolved, Some(start))
            }
            None if ok => {
                self.keys.remove(key);
                (resolved, None)
            }
            None => {
                let start = WriteStart {
                    key: key.to_string(),
                    value: state.in_flight.clone(),
                    failures: state.failures,
                };
                (resolved, Some(start))
            }
        }
    }

    /// True when no write is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const OK: Completion = Completion::Durable;
    const FAILED: Completion = Completion::Failed;

    fn value(v: &str) -> Option<Bytes> {
        Some(Bytes::from(v.to_string()))
    }

    #[test]
    fn a_write_to_an_idle_key_starts_at_once_and_resolves_its_waiter() {
        let mut q = WriteQueue::default();
        let start = q.submit("a".into(), value("1"), 1).expect("starts");
        assert_eq!(start.value, value("1"));
        assert_eq!(start.failures, 0);
        assert!(!q.is_idle());
        assert_eq!(q.completed("a", OK), (vec![1], None));
        assert!(q.is_idle());
    }

    #[test]
    fn writes_to_a_busy_key_coalesce_to_the_newest_value() {
        let mut q = WriteQueue::default();
        q.submit("a".into(), value("1"), 1).expect("starts");
        assert_eq!(q.submit("a".into(), value("2"), 2), None);
        assert_eq!(q.submit("a".into(), None, 3), None);
        assert!(q.submit("b".into(), value("x"), 4).is_some());
        let (resolved, next) = q.completed("a", OK);
        assert_eq!(resolved, vec![1]);
        let next = next.expect("the newest value is written next");
        assert_eq!(next.value, None);
        assert_eq!(q.completed("a", OK), (vec![2, 3], None));
    }

    #[test]
    fn a_failed_write_is_retried_with_its_failure_count_until_it_succeeds() {
        let mut q = WriteQueue::default();
        q.submit("a".into(), value("1"), 1).expect("starts");
        let (resolved, retry) = q.completed("a", FAILED);
        assert!(resolved.is_empty());
        let retry = retry.expect("retried");
        assert_eq!((retry.value, retry.failures), (value("1"), 1));
        let (_, retry) = q.completed("a", FAILED);
        assert_eq!(retry.expect("retried").failures, 2);
        assert_eq!(q.completed("a", OK), (vec![1], None));
    }

    #[test]
    fn a_newer_value_supersedes_a_failed_write_and_takes_over_its_waiters() {
        let mut q = WriteQueue::default();
        q.submit("a".into(), value("1"), 1).expect("starts");
        q.submit("a".into(), value("2"), 2);
        let (resolved, next) = q.completed("a", FAILED);
        assert!(resolved.is_empty());
        assert_eq!(next.expect("newer value").value, value("2"));
        assert_eq!(q.completed("a", OK), (vec![1, 2], None));
    }

    #[test]
    fn a_completion_for_an_unknown_key_changes_nothing() {
        let mut q: WriteQueue<Option<Bytes>, u32> = WriteQueue::default();
        assert_eq!(q.completed("zz", OK), (vec![], None));
    }

    #[test]
    fn a_refused_write_refuses_what_waits_behind_it_and_starts_nothing() {
        let mut q = WriteQueue::default();
        q.submit("a".into(), value("1"), 1).expect("starts");
        q.submit("a".into(), value("2"), 2);
        assert_eq!(q.completed("a", Completion::Refused), (vec![1, 2], None));
        assert!(q.is_idle());
        assert!(
            q.submit("a".into(), value("3"), 3).is_some(),
            "the key is free again"
        );
    }
}
