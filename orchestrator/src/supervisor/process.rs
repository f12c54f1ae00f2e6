//! The `process` runtime: each replica is a child process of the orchestrator running the
//! component's `command` and `arguments` with its environment. Its output goes to the
//! supervisor line by line; a stop sends SIGTERM, then SIGKILL after the grace period. Where
//! util-linux's `setpriv` is on PATH, replicas also get SIGTERM when the orchestrator dies, so
//! a killed orchestrator leaves none behind.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use actix::Addr;
use tokio::fs::OpenOptions;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::messages::{ReplicaExited, ReplicaOutput};
use super::spec::ComponentSpec;
use super::state::{Exit, ReplicaId};
use super::ComponentSupervisor;

/// Variables of the orchestrator's own environment a replica inherits; nothing else leaks.
const INHERITED_ENV: [&str; 6] = ["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ"];

/// Why a replica's process did not start.
#[derive(Debug, thiserror::Error)]
pub enum ProcessLaunchError {
    /// The component names no command.
    #[error("the component has no command to run")]
    NoCommand,
    /// The command is not an executable on the replica's PATH.
    #[error("cannot start {program}: no such executable")]
    NotFound { program: String },
    /// The operating system refused to start it.
    #[error("cannot start {program}: {source}")]
    SpawnFailed {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// How the `process` runtime starts replicas.
#[derive(Debug, Clone)]
pub struct ProcessLauncher {
    grace: Duration,
    /// `setpriv`, when found: it makes the kernel send SIGTERM to a replica whose parent died.
    setpriv: Option<PathBuf>,
    /// The orchestrator replica starting the processes, when there are several: it prefixes
    /// the replicas' names, since a paused leader's children still run when its successor
    /// starts its own, and two replicas of one name would confuse their election.
    instance: Option<String>,
    /// Where each replica's output is also appended, to `<name>.log`.
    log_dir: Option<PathBuf>,
}

/// A running replica: the way to ask its watcher to stop it.
#[derive(Debug)]
pub struct ProcessHandle {
    stop: mpsc::Sender<oneshot::Sender<()>>,
}

impl ProcessLauncher {
    pub fn new(grace: Duration) -> Self {
        let setpriv = find_on_path("setpriv");
        if setpriv.is_none() {
            warn!("setpriv not found: component processes outlive an orchestrator killed with SIGKILL");
        }
        Self {
            grace,
            setpriv,
            instance: None,
            log_dir: None,
        }
    }

    /// Appends each replica's output to `<dir>/<name>.log` too.
    pub fn with_log_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.log_dir = dir;
        self
    }

    /// Names the replicas started by orchestrator replica `instance` after it.
    pub fn with_instance(mut self, instance: Option<String>) -> Self {
        self.instance = instance;
        self
    }

    /// Starts one replica; its output and its exit are sent to `supervisor`. Returns its
    /// process id and the handle that stops it.
    pub fn spawn(
        &self,
        spec: &ComponentSpec,
        id: &ReplicaId,
        launch: u64,
        supervisor: Addr<ComponentSupervisor>,
    ) -> Result<(u32, ProcessHandle), ProcessLaunchError> {
        let argv = spec.argv();
        let Some(program) = argv.first() else {
            return Err(ProcessLaunchError::NoCommand);
        };
        let name = match &self.instance {
            Some(instance) => format!("{instance}-{}-{id}", spec.operator),
            None => format!("{}-{id}", spec.operator),
        };
        let mut env = spec.replica_env(&name);
        offset_metric_port(&mut env, id.index);
        let search_path = env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        if resolve_program(program, &search_path).is_none() {
            return Err(ProcessLaunchError::NotFound {
                program: program.clone(),
            });
        }
        let mut command = match &self.setpriv {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "TERM", "--"]).args(&argv);
                c
            }
            None => {
                let mut c = Command::new(program);
                c.args(&argv[1..]);
                c
            }
        };
        command
            .env_clear()
            .envs(
                INHERITED_ENV
                    .iter()
                    .filter_map(|k| Some((*k, std::env::var(k).ok()?))),
            )
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|source| ProcessLaunchError::SpawnFailed {
                program: program.clone(),
                source,
            })?;
        let pid = child.id().unwrap_or_default();
        let log_file = self
            .log_dir
            .as_ref()
            .map(|dir| dir.join(format!("{name}.log")));
        if let Some(out) = child.stdout.take() {
            let sink = OutputSink::new(id, launch, &supervisor, log_file.clone());
            tokio::spawn(pump(out, sink));
        }
        if let Some(err) = child.stderr.take() {
            let sink = OutputSink::new(id, launch, &supervisor, log_file);
            tokio::spawn(pump(err, sink));
        }
        let (stop, requests) = mpsc::channel(1);
        tokio::spawn(watch(
            child,
            requests,
            self.grace,
            id.clone(),
            launch,
            supervisor,
        ));
        Ok((pid, ProcessHandle { stop }))
    }
}

impl ProcessHandle {
    /// Stops the replica (SIGTERM, then SIGKILL after the grace period); resolves once it has
    /// exited. Resolves at once when it had already exited.
    pub async fn stop(self) {
        let (done, stopped) = oneshot::channel();
        if self.stop.send(done).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

/// Where a replica's output lines go: the supervisor, and a log file when one is set.
struct OutputSink {
    id: ReplicaId,
    launch: u64,
    supervisor: Addr<ComponentSupervisor>,
    log_file: Option<PathBuf>,
}

impl OutputSink {
    fn new(
        id: &ReplicaId,
        launch: u64,
        supervisor: &Addr<ComponentSupervisor>,
        log_file: Option<PathBuf>,
    ) -> Self {
        Self {
            id: id.clone(),
            launch,
            supervisor: supervisor.clone(),
            log_file,
        }
    }
}

/// Sends each line the replica writes to the supervisor, and appends it to the log file.
async fn pump(stream: impl AsyncRead + Unpin, sink: OutputSink) {
    let mut file = match &sink.log_file {
        Some(path) => match OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
        {
            Ok(file) => Some(file),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot open the replica's log file");
                None
            }
        },
        None => None,
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Some(f) = file.as_mut() {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    if f.write_all(&line).await.is_err() {
                        file = None;
                    }
                }
                sink.supervisor.do_send(ReplicaOutput {
                    id: sink.id.clone(),
                    launch: sink.launch,
                    line: String::from_utf8_lossy(&line).trim_end().to_string(),
                });
            }
        }
    }
}

/// Owns the child: reports its exit, or stops it when asked.
async fn watch(
    mut child: Child,
    mut requests: mpsc::Receiver<oneshot::Sender<()>>,
    grace: Duration,
    id: ReplicaId,
    launch: u64,
    supervisor: Addr<ComponentSupervisor>,
) {
    let (status, done) = tokio::select! {
        status = child.wait() => (status, None),
        request = requests.recv() => (terminate(&mut child, grace).await, request),
    };
    let exit = match status {
        Ok(status) => exit_of(status),
        Err(e) => Exit {
            code: None,
            reason: format!("lost track of the process: {e}"),
        },
    };
    supervisor.do_send(ReplicaExited { id, launch, exit });
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
async fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<ExitStatus> {
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            return status;
        }
    }
    child.kill().await?;
    child.wait().await
}

/// The exit of a process, shell-style: 128 + the signal's number when a signal ended it.
pub fn exit_of(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit {
            code: Some(i64::from(code)),
            reason: format!("exited with code {code}"),
        },
        (None, Some(signal)) => Exit {
            code: Some(128 + i64::from(signal)),
            reason: format!("killed by signal {signal}"),
        },
        (None, None) => Exit {
            code: None,
            reason: "exited".into(),
        },
    }
}

/// The first executable file named `name` in a directory of the orchestrator's PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    resolve_program(name, &std::env::var("PATH").ok()?)
}

/// `program` itself when it names a path, else the first executable of that name in a
/// directory of `search_path`.
fn resolve_program(program: &str, search_path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(search_path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Replicas run as processes share the host's ports: replica `i` serves its metrics on
/// `METRIC_PORT + i` (containers and pods each have their own network and keep the port).
fn offset_metric_port(env: &mut std::collections::BTreeMap<String, String>, index: u32) {
    if let Some(port) = env.get_mut(operator_contract::env::METRIC_PORT_ENV) {
        if let Ok(base) = port.trim().parse::<u32>() {
            *port = (base + index).to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn programs_are_found_by_path_or_on_the_search_path() {
        assert_eq!(
            resolve_program("sh", "/nonexistent:/bin:/usr/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert!(resolve_program("/bin/sh", "").is_some());
        assert!(resolve_program("/opt/operator/adf-operator", "/bin").is_none());
        assert!(resolve_program("no-such-program-here", "/bin:/usr/bin").is_none());
    }

    #[test]
    fn exits_read_as_a_shell_would_report_them() {
        assert_eq!(exit_of(ExitStatus::from_raw(3 << 8)).code, Some(3));
        let killed = exit_of(ExitStatus::from_raw(9));
        assert_eq!(killed.code, Some(137));
        assert_eq!(killed.reason, "killed by signal 9");
    }
}
