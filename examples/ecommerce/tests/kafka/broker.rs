//! A broker of the test's own, which it may freeze.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker of the test's own on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct PrivateBroker {
    child: Child,
    port: u16,
}

impl PrivateBroker {
    /// Starts a broker and waits until it answers; the test holds the suite's lock shared
    /// from then on, unless it holds it already.
    pub fn start() -> Self {
        crate::test_lock::hold_shared();
        let bin = tansu_bin();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", bin.display()));
        let broker = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !broker.answers(&bin) {
            assert!(
                Instant::now() < deadline,
                "private broker on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        broker
    }

    /// The broker's process id (the workflow bench reads its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes the broker (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    fn answers(&self, bin: &PathBuf) -> bool {
        Command::new("timeout")
            .arg("2")
            .arg(bin)
            .args([
                "topic",
                "list",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `TANSU_BIN`, else the binary `scripts/broker` installs.
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/tansu");
    assert!(
        installed.exists(),
        "no tansu binary: run `scripts/broker install` (or `scripts/test`), or set TANSU_BIN"
    );
    installed
}
