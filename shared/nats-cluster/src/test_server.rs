//! A throwaway nats-server with JetStream for crates' own tests (feature `test-server`): it
//! picks its own port and reports it in its ports file, so no port is chosen and bound later
//! by someone else. `NATS_SERVER_BIN` names the binary (default: `nats-server` on PATH).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server, killed and its storage removed when dropped.
pub struct TestNatsServer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl TestNatsServer {
    /// Starts one with JetStream on 127.0.0.1 and waits (≤ 10 s) for its client URL.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.path())
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (install nats-server >= 2.10): {e}"));
        let ports = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let url = read_client_url(&ports, Duration::from_secs(10));
        Self {
            child,
            url,
            _dir: dir,
        }
    }

    /// Its client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The client URL from a ports file, once the server has written it.
fn read_client_url(ports: &Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(ports) {
            if let Some(url) = client_url(&text) {
                return url;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no ports file {}",
            ports.display()
        );
        // The file appears once the server listens; nothing announces it sooner.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first client URL of a ports file: `{"nats": ["nats://127.0.0.1:PORT"], ...}`.
fn client_url(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value["nats"][0].as_str().map(str::to_string)
}

impl Drop for TestNatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
