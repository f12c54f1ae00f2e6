//! The PostgreSQL operator's test system: a real PostgreSQL 15 server made for the test
//! (`initdb` in a temporary directory, `pg_ctl start`), listening only on a unix socket in that
//! directory — no TCP port, so none can be taken by another process — with password (SCRAM)
//! authentication and every statement logged; NATS and an orchestrator that runs the
//! operator's component itself (the `process` runtime), 2 replicas electing a leader.
//!
//! The server binaries come from `POSTGRES_BIN_DIR` or `/usr/lib/postgresql/15/bin` (Debian's
//! `postgresql-15`; `deploy/ensure-postgresql.sh` installs it). Without them [`Postgres::start`]
//! says so and returns `None`: the test skips. `initdb` refuses to run as root, so as root the
//! server runs as the `postgres` user (`runuser`), in a directory given to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::{binary, example, wait_for_resource, NatsServer, Opctl, OrchestratorProcess};

/// How long a resource may take to reach a state.
pub const WAIT: Duration = Duration::from_secs(60);
/// The superuser's password of every test server, and the example role's.
pub const SUPERUSER_PASSWORD: &str = "pg-superuser-pw-7c1e9";
pub const APP_PASSWORD: &str = "app-role-pw-4b2d8";

/// The directory of the server binaries, if they are there.
pub fn bin_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("POSTGRES_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).exists())
        .then_some(dir)
}

/// A PostgreSQL server of one test, stopped when dropped.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Run the server's commands as this user (`None`: as the test itself).
    run_as: Option<String>,
    /// The unix socket's directory and number, read back from `postmaster.pid`.
    pub socket_dir: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// Makes and starts a server; `None` (after saying why) when the binaries are missing.
    pub fn start() -> anyhow::Result<Option<Self>> {
        let Some(bin) = bin_dir() else {
            eprintln!(
                "SKIPPED: PostgreSQL 15 server binaries not found (set POSTGRES_BIN_DIR, or install \
                 Debian's postgresql-15: bash deploy/ensure-postgresql.sh)"
            );
            return Ok(None);
        };
        let dir = tempfile::Builder::new().prefix("pg-test-").tempdir()?;
        let run_as = is_root().then(|| "postgres".to_string());
        if run_as.is_some() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", dir.path().display());
            }
        }
        let mut server = Self {
            bin,
            dir,
            run_as,
            socket_dir: PathBuf::new(),
            port: 0,
        };
        let pwfile = server.dir.path().join("pwfile");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD)?;
        server.own(&pwfile)?;
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--pwfile",
                &pwfile.to_string_lossy(),
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )?;
        let socket_dir = server.dir.path().to_string_lossy().into_owned();
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{socket_dir}' -p 5432 \
             -c fsync=off -c log_statement=all -c log_connections=on"
        );
        let log = server.log_path().to_string_lossy().into_owned();
        server.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )?;
        // What the server says it listens on: postmaster.pid's 4th and 5th lines.
        let pid_file = std::fs::read_to_string(Path::new(&data).join("postmaster.pid"))?;
        let lines: Vec<&str> = pid_file.lines().collect();
        server.port = lines
            .get(3)
            .and_then(|l| l.trim().parse().ok())
            .context("no port in postmaster.pid")?;
        server.socket_dir =
            PathBuf::from(lines.get(4).context("no socket in postmaster.pid")?.trim());
        Ok(Some(server))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn own(&self, path: &Path) -> anyhow::Result<()> {
        if self.run_as.is_some() {
            Command::new("chown").arg("postgres:").arg(path).status()?;
        }
        Ok(())
    }

    /// Runs a server binary (as the postgres user when root) and waits for it.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", path.display()))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Everything the server logged (every statement, every connection).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A connection as `user` with `password`, to `database`.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A superuser's connection.
    pub async fn superuser(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.connect_as("postgres", SUPERUSER_PASSWORD, "postgres")
            .await
    }

    /// The example Secret with this server's login (`PGHOST` its socket directory).
    pub fn secret(&self) -> String {
        example("postgres-secret.yaml")
            .replace(
                "PGHOST: postgres",
                &format!("PGHOST: {}", self.socket_dir.display()),
            )
            .replace("PGPORT: \"5432\"", &format!("PGPORT: \"{}\"", self.port))
            .replace(
                "PGPASSWORD: replace-me",
                &format!("PGPASSWORD: {SUPERUSER_PASSWORD}"),
            )
            .replace(
                "APP_PASSWORD: replace-me-too",
                &format!("APP_PASSWORD: {APP_PASSWORD}"),
            )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL, NATS, and an orchestrator running the PostgreSQL operator's 2 replicas.
pub struct PgSystem {
    pub postgres: Postgres,
    pub nats: NatsServer,
    pub orchestrator: OrchestratorProcess,
    pub client: async_nats::Client,
    pub opctl: Opctl,
}

impl PgSystem {
    /// Everything started, the Secret and the operator applied; `None` when PostgreSQL is
    /// missing (the test skips).
    pub async fn start() -> anyhow::Result<Option<Self>> {
        let Some(postgres) = Postgres::start()? else {
            return Ok(None);
        };
        let nats = NatsServer::start()?;
        let orchestrator = OrchestratorProcess::start_with_env(
            &nats.url(),
            &[
                ("ORCHESTRATOR_COMPONENT_RUNTIME", "process"),
                ("ORCHESTRATOR_RESTART_BACKOFF_MS", "100"),
                ("ORCHESTRATOR_RESTART_BACKOFF_MAX_MS", "400"),
                ("ORCHESTRATOR_STOP_GRACE_S", "5"),
            ],
        )?;
        let client = nats.client().await?;
        let opctl = orchestrator.opctl();
        opctl.apply(&postgres.secret(), Some("user-system"))?;
        opctl.apply(&operator_manifest()?, None)?;
        Ok(Some(Self {
            postgres,
            nats,
            orchestrator,
            client,
            opctl,
        }))
    }

    /// Applies a resource manifest in `public`.
    pub fn apply(&self, manifest: &str) -> anyhow::Result<()> {
        self.opctl.apply(manifest, Some("public"))?;
        Ok(())
    }

    /// Waits until the resource `name` satisfies `done`; returns its record.
    pub async fn wait(&self, name: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let record =
            wait_for_resource(&self.client, "public", name, WAIT, |r| r.is_some_and(&done))
                .await
                .with_context(|| format!("component logs:\n{}", self.logs().unwrap_or_default()))?;
        record.context("vanished")
    }

    /// Waits until the resource `name` has reconciled generation `generation` and is Ready.
    pub async fn wait_ready(&self, name: &str, generation: u64) -> anyhow::Result<Value> {
        self.wait(name, |r| {
            applied_generation(r) == Some(generation) && condition(r, "Ready") == Some("True")
        })
        .await
    }

    /// Waits until the resource `name` is gone from the orchestrator.
    pub async fn wait_gone(&self, name: &str) -> anyhow::Result<()> {
        wait_for_resource(&self.client, "public", name, WAIT, |r| r.is_none()).await?;
        Ok(())
    }

    /// What the component's replicas logged (`opctl logs`).
    pub fn logs(&self) -> anyhow::Result<String> {
        let run = self.opctl.run(&["logs", "-n", "postgres-operator"])?;
        if run.code != 0 {
            bail!("opctl logs failed: {}", run.stderr);
        }
        Ok(run.stdout)
    }
}

/// The example operator with its command set to the built binary and a resync every second,
/// so drift is seen at once.
pub fn operator_manifest() -> anyhow::Result<String> {
    let command = binary("postgres-operator")?.display().to_string();
    let manifest = example("postgres-operator.yaml")
        .replace("/opt/operator/postgres-operator", &command)
        .replace(
            "        OPERATOR_RESYNC_INTERVAL_S: 60\n",
            "        OPERATOR_RESYNC_INTERVAL_S: 1\n        ELECTION_LEASE_TTL_MS: 2000\n        ELECTION_RENEW_INTERVAL_MS: 400\n",
        );
    anyhow::ensure!(
        manifest.contains(&command) && manifest.contains("RESYNC_INTERVAL_S: 1"),
        "the example changed shape"
    );
    Ok(manifest)
}

/// A resource manifest of the operator.
pub fn resource(name: &str, resource_type: &str, spec: &str) -> String {
    format!(
        "name: {name}\nversion: v1alpha\ntype: resource\nowner: tester\nresource:\n  operator: postgres-operator\n  type: {resource_type}\n  spec: {spec}\n"
    )
}

/// The status condition `kind`'s status (`True`, `False`, `Unknown`).
pub fn condition<'a>(record: &'a Value, kind: &str) -> Option<&'a str> {
    record["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
}

/// The condition `kind`'s reason.
pub fn reason<'a>(record: &'a Value, kind: &str) -> Option<&'a str> {
    record["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["reason"]
        .as_str()
}

/// The generation the operator last applied in full.
pub fn applied_generation(record: &Value) -> Option<u64> {
    record["status"]["details"]["appliedGeneration"].as_u64()
}
