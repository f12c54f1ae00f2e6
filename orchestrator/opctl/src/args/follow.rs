//! The arguments of the commands that follow a resource: `wait` and `events`.

use clap::Args;
use operator_contract::manifest::DEFAULT_WORKSPACE;
use operator_contract::ManifestKind;

use super::{OutputFormat, OUTPUT_ENV, WORKSPACE_ENV};

/// `opctl wait -t resource [-w WS] -n NAME --for=... [--timeout 30s]`.
#[derive(Debug, Args)]
pub struct Wait {
    /// The type of entity: resource (the only one with a status to wait for).
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub kind: ManifestKind,

    /// The workspace of the resource (default `public`).
    #[arg(short = 'w', long = "workspace", env = WORKSPACE_ENV, value_name = "WS")]
    pub workspace: Option<String>,

    /// The resource.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: String,

    /// What to wait for: condition=TYPE (e.g. condition=Ready), runtime=STATE (e.g.
    /// runtime=succeeded) or delete.
    #[arg(long = "for", value_name = "WHAT", value_parser = crate::wait::parse_for)]
    pub condition: crate::wait::WaitFor,

    /// How long to wait at most: 30s, 500ms, 2m, 1h.
    #[arg(long = "timeout", value_name = "DURATION", default_value = "30s",
          value_parser = crate::wait::parse_timeout, allow_hyphen_values = true)]
    pub timeout: std::time::Duration,
}

/// `opctl events -t resource [-w WS] -n NAME [--watch] [-o table|json|yaml]`.
#[derive(Debug, Args)]
pub struct Events {
    /// The type of entity: resource (the only one with a history).
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub kind: ManifestKind,

    /// The workspace of the resource (default `public`).
    #[arg(short = 'w', long = "workspace", env = WORKSPACE_ENV, value_name = "WS")]
    pub workspace: Option<String>,

    /// The resource.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: String,

    /// Follows: prints each new event as it is kept, until interrupted (`-W`, as for get).
    #[arg(short = 'W', long = "watch")]
    pub watch: bool,

    /// How to print: a table, or the events as JSON or YAML.
    #[arg(short = 'o', long = "output", env = OUTPUT_ENV, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
}

impl Events {
    /// The resource's workspace: the one given, else `public`.
    pub fn workspace(&self) -> &str {
        self.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE)
    }
}

impl Wait {
    /// The resource's workspace: the one given, else `public`.
    pub fn workspace(&self) -> &str {
        self.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE)
    }
}
