//! The command line of `opctl`: one struct per command, parsed by clap, plus the checks that
//! clap's attributes cannot express.

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use operator_contract::manifest::DEFAULT_WORKSPACE;
use operator_contract::ManifestKind;
use reqwest::Url;

#[path = "args/follow.rs"]
mod follow;
pub use follow::{Events, Wait};

/// The orchestrator's address when neither `--server` nor `OPCTL_SERVER` names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";
/// The environment variable read for `--server`.
pub const SERVER_ENV: &str = "OPCTL_SERVER";
/// The environment variable read for `-w/--workspace`.
pub const WORKSPACE_ENV: &str = "OPCTL_WORKSPACE";
/// The environment variable read for `--apikey`.
pub const APIKEY_ENV: &str = "OPCTL_APIKEY";
/// The environment variable naming opctl's config file.
pub const CONFIG_ENV: &str = "OPCTL_CONFIG";
/// The environment variable read for `-o/--output`.
pub const OUTPUT_ENV: &str = "OPCTL_OUTPUT";

/// One or more orchestrator URLs, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList(pub Vec<Url>);

impl std::str::FromStr for ServerList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let urls = text
            .split(',')
            .map(str::trim)
            .enumerate()
            .map(|(index, entry)| {
                let url = Url::parse(entry)
                    .map_err(|e| format!("server {} ('{entry}'): {e}", index + 1))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(format!(
                        "server {} ('{entry}'): an http:// or https:// URL is expected",
                        index + 1
                    ));
                }
                Ok(url)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(urls))
    }
}

/// Applies, lists, shows and deletes operators, resources and secrets on an orchestrator.
#[derive(Debug, Parser)]
#[command(name = "opctl", version, about, propagate_version = true)]
pub struct Cli {
    /// The orchestrator's base URL, or a comma-separated list of its replicas' URLs: the next
    /// is tried when one cannot be reached.
    #[arg(long, global = true, env = SERVER_ENV, default_value = DEFAULT_SERVER)]
    pub server: ServerList,

    /// Your API key [default: `apikey` in the config file, ~/.config/opctl/config.yaml or
    /// $OPCTL_CONFIG, which must be readable by you alone].
    #[arg(long, global = true, env = APIKEY_ENV, hide_env_values = true)]
    pub apikey: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// What `opctl` is asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Creates or updates every manifest of a file.
    Apply(Apply),
    /// Shows how each manifest of a file differs from the one stored (exit 0: none, 1: some,
    /// more: an error).
    Diff(Diff),
    /// Lists entities of one type, or shows one of them.
    Get(Get),
    /// Deletes one named entity, or every manifest of a file.
    Delete(Delete),
    /// Waits until a resource meets a condition (exit 0), or says why it did not (exit 1).
    Wait(Wait),
    /// Shows what happened to a resource and when (its last 100 events).
    Events(Events),
    /// Changes how many replicas of an operator's component run.
    Scale(Scale),
    /// Shows the last lines an operator's component replicas wrote.
    Logs(Logs),
    /// Prints an operator's components as Kubernetes objects (secret values redacted).
    Render(Render),
    /// Manages users and their API keys (admins only).
    #[command(subcommand)]
    User(UserCommand),
    /// Shows who the API key belongs to and their roles.
    Whoami,
    /// Prints a shell completion script: `source <(opctl completion bash)`.
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `opctl user create|list|delete`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user, or replaces one's roles, and prints a new API key (once; old keys stop
    /// working).
    Create(UserCreate),
    /// Lists users and their roles.
    List,
    /// Deletes a user and their keys.
    Delete {
        /// The user.
        name: String,
    },
}

/// `opctl user create NAME [--admin] [--role WS=read|write]...`.
#[derive(Debug, Args)]
pub struct UserCreate {
    /// The user's name (lowercase letters, digits, hyphens).
    pub name: String,
    /// May do everything, operators and users included.
    #[arg(long)]
    pub admin: bool,
    /// A role in a workspace, as WORKSPACE=read or WORKSPACE=write; repeat for more.
    #[arg(long = "role", value_name = "WS=ROLE", value_parser = parse_role)]
    pub roles: Vec<(String, String)>,
}

fn parse_role(text: &str) -> Result<(String, String), String> {
    let (ws, role) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not WORKSPACE=ROLE"))?;
    if !matches!(role, "read" | "write") {
        return Err(format!("role '{role}' is not read or write"));
    }
    Ok((ws.to_string(), role.to_string()))
}

impl Command {
    /// The command's name, as typed.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Apply(_) => "apply",
            Self::Diff(_) => "diff",
            Self::Get(_) => "get",
            Self::Delete(_) => "delete",
            Self::Wait(_) => "wait",
            Self::Events(_) => "events",
            Self::Scale(_) => "scale",
            Self::Logs(_) => "logs",
            Self::Render(_) => "render",
            Self::User(_) => "user",
            Self::Whoami => "whoami",
            Self::Completion { .. } => "completion",
        }
    }
}

/// `opctl apply -f FILE [-w WS] [-l]`.
#[derive(Debug, Args)]
pub struct Apply {
    /// The manifest file (YAML or JSON, one or several documents); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,

    /// The workspace for resources and secrets, overriding the manifests' own.
    #[arg(short = 'w', long = "workspace", env = WORKSPACE_ENV, value_name = "WS")]
    pub workspace: Option<String>,

    /// Lints the file: parses and checks every document here (syntax, names, schemas) and warns
    /// about credentials in environmentVars, without sending anything.
    #[arg(short = 'l', long = "lint")]
    pub lint: bool,

    /// Sends the file for the server to validate fully and say what it would do (created,
    /// updated to a new generation, unchanged), storing nothing and sending no command.
    #[arg(long = "dry-run", conflicts_with = "lint")]
    pub dry_run: bool,
}

/// `opctl diff -f FILE [-w WS]`.
#[derive(Debug, Args)]
pub struct Diff {
    /// The manifest file (YAML or JSON, one or several documents); `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: String,

    /// The workspace for resources and secrets, overriding the manifests' own.
    #[arg(short = 'w', long = "workspace", env = WORKSPACE_ENV, value_name = "WS")]
    pub workspace: Option<String>,
}

/// `opctl get -t TYPE [-w WS] [-n NAME] [-a] [-d] [-o table|json|yaml]`.
#[derive(Debug, Args)]
pub struct Get {
    /// The type of entity: operator, resource or secret.
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub kind: ManifestKind,

    /// The workspace of resources and secrets (default `public`; ignored for operators).
    #[arg(short = 'w', long = "workspace", env = WORKSPACE_ENV, value_name = "WS")]
    pub workspace: Option<String>,

    /// Shows only the entity of this name.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: Option<String>,

    /// Lists the entities of every owner, not only yours.
    #[arg(short = 'a', long = "all")]
    pub all_owners: bool,

    /// Shows the whole record of the named entity, with the live details its operator reports.
    #[arg(short = 'd', long = "details")]
    pub details: bool,

    /// How to print: a table, or the server's JSON as it is, or that JSON as YAML
    /// (default: table, or yaml with `-d`).
    #[arg(short = 'o', long = "output", env = OUTPUT_ENV, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// Prints the list, then a line each time a listed entity changes, until interrupted
    /// (`-W`: `-w` stays the workspace, as scripts use it).
    #[arg(short = 'W', long = "watch")]
    pub watch: bool,
}

/// `opctl delete -t TYPE -n NAME [-w WS]` or `opctl delete -f FILE [-w WS]`.
#[derive(Debug, Args)]
pub struct Delete {
    /// The type of the entity to delete: operator, resource or secret.
    #[arg(
        short = 't',
        long = "type",
        value_name = "TYPE",
        requires = "name",
        required_unless_present = "file"
    )]
    pub kind: Option<ManifestKind>,

    /// The name of the entity to delete.
    #[arg(short = 'n', long = "name", value_name = "NAME", requires = "kind")]
    pub name: Option<String>,

    /// Deletes every manifest of this file, last document first; `-` reads standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with_all = ["kind", "name"])]
    pub file: Option<String>,

    /// The workspace of resources and secrets (default: the manifest's own, else `public`).
    #[arg(short = 'w', long = "workspace", env = WORKSPACE_ENV, value_name = "WS")]
    pub workspace: Option<String>,
}

/// `opctl scale -n OPERATOR [-c COMPONENT] -r N`.
#[derive(Debug, Args)]
pub struct Scale {
    /// The operator.
    #[arg(short = 'n', long = "name", value_name = "OPERATOR")]
    pub name: String,

    /// The component (may be left out when the operator has only one).
    #[arg(short = 'c', long = "component", value_name = "COMPONENT")]
    pub component: Option<String>,

    /// How many replicas should run.
    #[arg(short = 'r', long = "replicas", value_name = "N")]
    pub replicas: u32,
}

/// `opctl logs -n OPERATOR [-c COMPONENT] [-i REPLICA] [--tail N]`.
#[derive(Debug, Args)]
pub struct Logs {
    /// The operator.
    #[arg(short = 'n', long = "name", value_name = "OPERATOR")]
    pub name: String,

    /// Only this component's replicas.
    #[arg(short = 'c', long = "component", value_name = "COMPONENT")]
    pub component: Option<String>,

    /// Only the replica of this index.
    #[arg(short = 'i', long = "replica", value_name = "INDEX")]
    pub replica: Option<u32>,

    /// How many of the last lines of each replica.
    #[arg(long = "tail", value_name = "N", default_value_t = 200)]
    pub tail: usize,

    /// Then print each new line as the replicas write it, until interrupted.
    #[arg(short = 'f', long = "follow")]
    pub follow: bool,
}

/// `opctl render -n OPERATOR [--namespace NS]`.
#[derive(Debug, Args)]
pub struct Render {
    /// The operator.
    #[arg(short = 'n', long = "name", value_name = "OPERATOR")]
    pub name: String,

    /// The Kubernetes namespace of the objects [default: the orchestrator's].
    #[arg(long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
}

/// How `get` prints what it fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
    /// `TYPE/[WORKSPACE/]NAME`, one a line.
    Name,
}

impl Cli {
    /// Parses the arguments, then runs the checks clap's attributes cannot express.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let cli = Self::from_arg_matches(&matches)?;
        // `-w` typed for a type that lives in no workspace is a mistake worth saying; the
        // same value from OPCTL_WORKSPACE is not (it is set for the workspaced types).
        let typed_workspace = matches.subcommand().is_some_and(|(_, sub)| {
            sub.try_get_raw("workspace").is_ok_and(|v| v.is_some())
                && sub.value_source("workspace") == Some(ValueSource::CommandLine)
        });
        let kind = match &cli.command {
            Command::Get(get) => Some(get.kind),
            Command::Delete(delete) => delete.kind,
            Command::Wait(wait) => Some(wait.kind),
            Command::Events(events) => Some(events.kind),
            _ => None,
        };
        if let Some(kind) = kind.filter(|k| typed_workspace && !k.is_workspaced()) {
            return Err(usage_error(
                ErrorKind::ArgumentConflict,
                &format!("-w/--workspace: {kind}s live in no workspace; leave -w out"),
            ));
        }
        match &cli.command {
            Command::Get(get) => get.check()?,
            Command::Wait(wait) if wait.kind != ManifestKind::Resource => {
                return Err(usage_error(
                    ErrorKind::InvalidValue,
                    &format!(
                        "wait follows resources: {} has no status to wait for; use -t resource",
                        wait.kind
                    ),
                ))
            }
            Command::Events(events) if events.kind != ManifestKind::Resource => {
                return Err(usage_error(
                    ErrorKind::InvalidValue,
                    &format!(
                        "events are kept for resources: {} has none; use -t resource",
                        events.kind
                    ),
                ))
            }
            _ => {}
        }
        Ok(cli)
    }
}

impl Get {
    /// Refuses `-d` without `-n`, and `-d` with a table.
    fn check(&self) -> Result<(), clap::Error> {
        if self.details && self.name.is_none() {
            return Err(usage_error(
                ErrorKind::MissingRequiredArgument,
                "-d/--details shows one entity: name it with -n NAME",
            ));
        }
        if self.watch && self.details {
            return Err(usage_error(
                ErrorKind::ArgumentConflict,
                "--watch prints rows as they change; leave out -d/--details",
            ));
        }
        if self.watch && self.kind == ManifestKind::Secret {
            return Err(usage_error(
                ErrorKind::InvalidValue,
                "--watch follows operators and resources; secrets have no status to follow",
            ));
        }
        if self.details && self.output == Some(OutputFormat::Name) {
            return Err(usage_error(
                ErrorKind::ArgumentConflict,
                "-d/--details prints the whole record: use -o yaml (the default with -d) or -o json",
            ));
        }
        if self.details && self.output == Some(OutputFormat::Table) {
            return Err(usage_error(
                ErrorKind::ArgumentConflict,
                "-d/--details prints the whole record: use -o yaml (the default with -d) or -o json",
            ));
        }
        Ok(())
    }

    /// The output format asked for, or the default: YAML for details, else a table.
    pub fn output_format(&self) -> OutputFormat {
        self.output.unwrap_or(if self.details {
            OutputFormat::Yaml
        } else {
            OutputFormat::Table
        })
    }

    /// The workspace to look in; `None` for operators, which live in none.
    pub fn workspace(&self) -> Option<&str> {
        workspace_for(self.kind, self.workspace.as_deref())
    }
}

impl Delete {
    /// The workspace of the named entity; `None` for operators.
    pub fn workspace_for(&self, kind: ManifestKind) -> Option<&str> {
        workspace_for(kind, self.workspace.as_deref())
    }
}

/// The workspace given, else `public`, for types that live in a workspace.
fn workspace_for(kind: ManifestKind, given: Option<&str>) -> Option<&str> {
    kind.is_workspaced()
        .then(|| given.unwrap_or(DEFAULT_WORKSPACE))
}

/// A usage error in clap's own kind, so that it exits with clap's code.
fn usage_error(kind: ErrorKind, message: &str) -> clap::Error {
    Cli::command().error(kind, message)
}

/// Clap's error text on one line: its first paragraph, without the `error: ` tag.
pub fn usage_error_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first_paragraph = rendered.split("\n\n").next().unwrap_or_default();
    let one_line = first_paragraph
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    one_line
        .strip_prefix("error: ")
        .unwrap_or(&one_line)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_checked(line.split_whitespace())
    }

    fn get(line: &str) -> Get {
        match parse(line).expect("parses").command {
            Command::Get(get) => get,
            other => panic!("not a get: {other:?}"),
        }
    }

    #[test]
    fn the_dataos_ctl_examples_parse() {
        for line in [
            "opctl apply -f ./resources/adf-operator/resource.yaml -w public",
            "opctl apply -f ./resources/adf-operator/operator.yaml -l",
            "opctl get -t operator",
            "opctl get -t operator -a",
            "opctl get -t resource -w public",
            "opctl get -t resource -w public -n pipeline-run-1 -d",
            "opctl delete -t operator -n adf-operator",
        ] {
            parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn details_without_a_name_is_a_usage_error_that_says_to_add_one() {
        let error = parse("opctl get -t resource -d").expect_err("refused");
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            usage_error_line(&error),
            "-d/--details shows one entity: name it with -n NAME"
        );
    }

    #[test]
    fn details_print_yaml_unless_json_is_asked_and_refuse_a_table() {
        assert_eq!(
            get("opctl get -t resource -n r1 -d").output_format(),
            OutputFormat::Yaml
        );
        assert_eq!(
            get("opctl get -t resource -n r1 -d -o json").output_format(),
            OutputFormat::Json
        );
        assert_eq!(
            get("opctl get -t resource").output_format(),
            OutputFormat::Table
        );
        assert!(parse("opctl get -t resource -n r1 -d -o table").is_err());
    }

    #[test]
    fn resources_default_to_the_public_workspace_and_operators_have_none() {
        assert_eq!(get("opctl get -t resource").workspace(), Some("public"));
        assert_eq!(
            get("opctl get -t secret -w sandbox").workspace(),
            Some("sandbox")
        );
        assert_eq!(get("opctl get -t operator").workspace(), None);
        let error = parse("opctl get -t operator -w sandbox").expect_err("refused");
        assert_eq!(
            usage_error_line(&error),
            "-w/--workspace: operators live in no workspace; leave -w out"
        );
        assert!(parse("opctl delete -t operator -n demo -w sandbox").is_err());
    }

    #[test]
    fn an_unknown_type_names_the_valid_ones_on_one_line() {
        let error = parse("opctl get -t widget").expect_err("refused");
        let line = usage_error_line(&error);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains("expected operator, resource or secret"),
            "{line}"
        );
    }

    #[test]
    fn delete_takes_a_type_and_name_or_a_file_but_not_both() {
        assert!(parse("opctl delete -t operator -n adf-operator").is_ok());
        assert!(parse("opctl delete -f ops.yaml").is_ok());
        assert!(parse("opctl delete -t operator").is_err());
        assert!(parse("opctl delete -n adf-operator").is_err());
        assert!(parse("opctl delete").is_err());
        assert!(parse("opctl delete -f ops.yaml -t operator -n adf-operator").is_err());
    }

    #[test]
    fn scale_logs_and_render_name_an_operator() {
        for line in [
            "opctl scale -n adf-operator -c adf-controller -r 3",
            "opctl scale -n adf-operator --replicas 0",
            "opctl logs -n adf-operator",
            "opctl logs -n adf-operator -c adf-controller -i 1 --tail 50",
            "opctl render -n adf-operator --namespace operators",
        ] {
            parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
        assert!(
            parse("opctl scale -n adf-operator").is_err(),
            "replicas needed"
        );
        assert!(parse("opctl scale -r 3").is_err(), "operator needed");
        assert!(parse("opctl scale -n adf-operator -r -1").is_err());
        assert!(parse("opctl logs").is_err());
    }

    #[test]
    fn the_server_defaults_to_the_local_orchestrator() {
        let cli = parse("opctl get -t operator").expect("parses");
        assert_eq!(cli.server.0[0].as_str(), "http://127.0.0.1:7700/");
        let cli = parse("opctl get -t operator --server http://orch:8080").expect("parses");
        assert_eq!(cli.server.0[0].as_str(), "http://orch:8080/");
        let cli = parse("opctl get -t operator --server http://a:1,http://b:2").expect("parses");
        assert_eq!(cli.server.0.len(), 2);
        assert_eq!(cli.server.0[1].as_str(), "http://b:2/");
        let refused = parse("opctl get -t operator --server http://a:1,ftp://b").map(|_| ());
        let message = refused.expect_err("refused").to_string();
        assert!(message.contains("server 2 ('ftp://b')"), "{message}");
    }
}
