//! Test support: reaching the shared broker and starting private ones.
#![allow(dead_code, unreachable_pub)]

pub mod effects;
pub mod outbox;
#[path = "../../../es-postgres/tests/common/test_lock.rs"]
pub mod test_lock;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// The shared broker's bootstrap servers, or a panic saying how to start it. From the first
/// call the test holds the suite's lock shared (see [`test_lock`]), as it does once it builds
/// a store or starts a private broker; `alone_*` tests call [`alone`] first.
pub fn shared_bootstrap_servers() -> String {
    let servers = es_kafka::bootstrap_servers().unwrap_or_else(|error| panic!("{error}"));
    test_lock::hold_shared();
    servers
}

/// Makes the test hold the suite's lock exclusively until it ends: the first line of every
/// `alone_*` test (see [`test_lock::alone`]).
pub fn alone() {
    test_lock::alone();
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Publishes `messages` (each to its own topic) through a fresh publisher, and waits until
/// the broker has them all.
pub async fn publish(bootstrap: &str, messages: &[es_core::OutboxMessage]) {
    use es_core::Publisher as _;
    let publisher = es_kafka::KafkaPublisher::new(
        &es_kafka::KafkaConfig::new(bootstrap),
        es_kafka::TopicRouter::new(),
    )
    .unwrap();
    publisher.publish(messages).await.unwrap();
}

/// Polls `done` every 50 ms; fails the test naming `what` after 60 s.
pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .unwrap_or_else(|error| {
            panic!("cannot reach the broker at {bootstrap} to create {topic}: {error}; start it with `scripts/broker start`")
        });
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("creating topic {name} failed: {code}"));
    }
}

/// A tansu broker of the test's own on a free loopback port, stopped when dropped.
///
/// Tests that pause a broker (`SIGSTOP`) use one of these so that other tests keep theirs.
#[derive(Debug)]
pub struct PrivateBroker {
    child: Child,
    port: u16,
}

impl PrivateBroker {
    /// Starts a broker and waits until it answers.
    pub fn start() -> Self {
        test_lock::hold_shared();
        let bin = tansu_bin();
        let port = free_port();
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
        broker.wait_ready(&bin);
        broker
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes the broker process (`SIGSTOP`): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused broker (`SIGCONT`).
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

    fn wait_ready(&self, bin: &PathBuf) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("tcp://127.0.0.1:{}", self.port);
        loop {
            let answered = Command::new("timeout")
                .args(["2"])
                .arg(bin)
                .args(["topic", "list", "--broker", &url])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if answered {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private broker on port {} did not become ready",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.resume_quietly();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateBroker {
    fn resume_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }
}

/// The tansu binary: `TANSU_BIN`, else the one `scripts/broker install` puts in `.tools`.
fn tansu_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let installed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/tansu");
    assert!(
        installed.exists(),
        "no tansu binary: run `scripts/broker install` (or the whole suite with `scripts/test`), or set TANSU_BIN"
    );
    installed
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A member of `group` on `bootstrap`, reading `topics` from their start, with the test
/// broker's short group timeouts.
pub fn consumer(bootstrap: &str, group: &str, topics: &[&str]) -> es_kafka::KafkaConsumer {
    consumer_builder(bootstrap, group, topics).build().unwrap()
}

/// The builder behind [`consumer`], for tests that configure more.
pub fn consumer_builder(
    bootstrap: &str,
    group: &str,
    topics: &[&str],
) -> es_kafka::KafkaConsumerBuilder {
    es_kafka::KafkaConsumer::builder(es_kafka::KafkaConfig::new(bootstrap), group)
        .subscribe(topics.iter().copied())
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
}
