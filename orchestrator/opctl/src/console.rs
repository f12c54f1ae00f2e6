//! The log lines `opctl` writes to standard error, in the `INFO[0000] message` shape of
//! `dataos-ctl`: a level tag and the whole seconds since the command started.

use std::fmt;
use std::time::{Duration, Instant};

/// The level tag of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERRO",
        })
    }
}

/// The tag and elapsed time that open a log line, e.g. `INFO[0003]`.
pub fn line_prefix(level: Level, elapsed: Duration) -> String {
    format!("{level}[{:04}]", elapsed.as_secs())
}

/// The indentation of the detail lines that follow an error line.
const DETAIL_INDENT: &str = "  - ";

/// Writes log lines timed from when the command started.
#[derive(Debug, Clone, Copy)]
pub struct Console {
    started: Instant,
}

impl Console {
    /// Starts the clock that every line's elapsed time is counted from.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// Writes one line at `level`.
    pub fn log(&self, level: Level, message: &str) {
        eprintln!("{} {message}", line_prefix(level, self.started.elapsed()));
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Writes the reason on one `ERRO` line, then each detail indented on its own line.
    pub fn error(&self, reason: &str, details: &[String]) {
        self.log(Level::Error, &single_line(reason));
        for detail in details {
            eprintln!("{DETAIL_INDENT}{}", single_line(detail));
        }
    }
}

/// The text with every run of whitespace that holds a line break folded into one space.
pub fn single_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_string();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_counts_whole_seconds_zero_padded_to_four() {
        assert_eq!(
            line_prefix(Level::Info, Duration::from_millis(999)),
            "INFO[0000]"
        );
        assert_eq!(
            line_prefix(Level::Error, Duration::from_secs(12)),
            "ERRO[0012]"
        );
        assert_eq!(
            line_prefix(Level::Warn, Duration::from_secs(12_345)),
            "WARN[12345]"
        );
    }

    #[test]
    fn a_reason_with_line_breaks_is_folded_onto_one_line() {
        assert_eq!(single_line("bad yaml\n  at line 3\n"), "bad yaml at line 3");
        assert_eq!(single_line("already one line"), "already one line");
    }
}
