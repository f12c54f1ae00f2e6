//! `Journal`: the `--electionStateFile`, an append-only log of this replica's leadership
//! transitions, one JSON object a line: `{"time", "replica", "event", "term", "reason"}` with
//! `event` one of `started`, `acquired`, `lost`, `released`, `stopped`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::fence::Term;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalEvent {
    /// The replica joined the election as a follower.
    Started,
    /// It took the lease: `term` is its term.
    Acquired,
    /// It stopped leading (lease lapsed, taken over, or a write refused): see `reason`.
    Lost,
    /// It gave the lease up because it is stopping.
    Released,
    /// It left the election.
    Stopped,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub time: DateTime<Utc>,
    pub replica: String,
    pub event: JournalEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The journal file, or none when no `--electionStateFile` was given.
#[derive(Debug)]
pub(crate) struct Journal {
    path: Option<PathBuf>,
    file: Option<File>,
    replica: String,
}

impl Journal {
    /// Opens `path` for appending (creating it), or a journal that records nothing.
    pub fn open(path: Option<&Path>, replica: &str) -> Self {
        let file = path.and_then(|p| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| warn!(path = %p.display(), error = %e, "election state file cannot be opened; transitions are not recorded"))
                .ok()
        });
        Self {
            path: path.map(Path::to_path_buf),
            file,
            replica: replica.to_string(),
        }
    }

    /// Appends one transition and makes it durable; a failure is logged, never fatal.
    pub fn record(&mut self, event: JournalEvent, term: Option<Term>, reason: Option<String>) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let entry = JournalEntry {
            time: Utc::now(),
            replica: self.replica.clone(),
            event,
            term,
            reason,
        };
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_data()) {
            let path = self.path.as_deref().unwrap_or(Path::new(""));
            warn!(path = %path.display(), error = %e, "election transition not recorded");
        }
    }
}

/// Reads a journal back (for tests and tools); unreadable lines are skipped.
#[cfg(test)]
pub fn read_journal(text: &str) -> Vec<JournalEntry> {
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_appended_one_json_line_each_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("election.log");
        let mut journal = Journal::open(Some(&path), "r1");
        journal.record(JournalEvent::Started, None, None);
        journal.record(JournalEvent::Acquired, Some(7), None);
        drop(journal);
        let mut journal = Journal::open(Some(&path), "r1");
        journal.record(JournalEvent::Lost, Some(7), Some("lapsed".into()));
        let entries = read_journal(&std::fs::read_to_string(&path).expect("written"));
        let events: Vec<_> = entries.iter().map(|e| (e.event, e.term)).collect();
        assert_eq!(
            events,
            vec![
                (JournalEvent::Started, None),
                (JournalEvent::Acquired, Some(7)),
                (JournalEvent::Lost, Some(7))
            ]
        );
        assert_eq!(entries[2].reason.as_deref(), Some("lapsed"));
        assert!(entries.iter().all(|e| e.replica == "r1"));
    }

    #[test]
    fn without_a_file_nothing_is_recorded() {
        let mut journal = Journal::open(None, "r1");
        journal.record(JournalEvent::Started, None, None);
    }
}
