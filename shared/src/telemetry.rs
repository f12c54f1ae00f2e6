//! Logging set-up shared by every binary: `tracing` to stderr, level from `RUST_LOG` or else
//! the binary's own `LOG_LEVEL` setting, text by default or JSON with `LOG_FORMAT=json`.

use tracing_subscriber::EnvFilter;

/// The seed's variable for the log level of components; `RUST_LOG` wins when both are set.
pub const LOG_LEVEL_ENV: &str = "LOG_LEVEL";
/// `json` for one JSON object a line, anything else for text.
pub const LOG_FORMAT_ENV: &str = "LOG_FORMAT";

/// Installs the global subscriber with `level` (a level or filter directives, as the binary
/// read it from its `LOG_LEVEL` setting) unless `RUST_LOG` says otherwise. Calling it twice is
/// harmless.
pub fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            EnvFilter::try_new(if level.trim().is_empty() {
                "info"
            } else {
                level
            })
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
