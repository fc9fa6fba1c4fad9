//! Several consumer groups on the test broker with the consumer preset: three groups joining
//! at once all receive within 10 s, again after a member of one of them leaves, and again
//! after a member of one of them is killed (a child process, SIGKILL: it never says goodbye).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::consume::ConsumerLoop;
use es_core::runtime::{RunningRuntime, Runtime};
use es_core::{Delivery, HandlerError, MessageHandler, OutboxMessage};
use es_kafka::{KafkaConfig, KafkaConsumer};
use serde_json::json;
use tokio::time::Instant;

/// The numbers it has handled.
#[derive(Clone, Default)]
struct Count(Arc<Mutex<BTreeSet<u64>>>);

impl Count {
    /// How many of `0..upto` it has handled.
    fn of(&self, upto: u64) -> usize {
        self.0.lock().unwrap().range(..upto).count()
    }
}

#[async_trait::async_trait]
impl MessageHandler for Count {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let n = delivery.message.payload["n"].as_u64().unwrap();
        self.0.lock().unwrap().insert(n);
        Ok(())
    }
}

/// Set in the environment of the child process that is a member to be killed:
/// `<bootstrap> <group> <topic>`.
const MEMBER: &str = "ES_GROUPS_TEST_MEMBER";

/// The life of the member to be killed: join, say `ready` once it has partitions, and handle
/// messages until the parent kills it.
async fn be_the_member_to_kill(spec: &str) -> ! {
    let [bootstrap, group, topic]: [&str; 3] =
        spec.split(' ').collect::<Vec<_>>().try_into().unwrap();
    let running = member(bootstrap, group, topic, &Count::default());
    while !running.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("member ready");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

fn member(bootstrap: &str, group: &str, topic: &str, count: &Count) -> RunningRuntime {
    // The preset's settings: nothing set here.
    let consumer = KafkaConsumer::builder(KafkaConfig::new(bootstrap), group)
        .subscribe([topic])
        .build()
        .unwrap();
    Runtime::new()
        .service(ConsumerLoop::new(consumer, count.clone()))
        .start()
}

async fn publish(bootstrap: &str, topic: &str, from: usize, count: usize) {
    let messages: Vec<_> = (from..from + count)
        .map(|n| {
            OutboxMessage::new("Counted", format!("key-{}", n % 8), json!({ "n": n }))
                .with_topic(topic)
        })
        .collect();
    support::publish(bootstrap, &messages).await;
}

/// Waits until every count has every number below `expected`.
async fn all_within(counts: &[Count], expected: u64, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let seen: Vec<usize> = counts.iter().map(|c| c.of(expected)).collect();
        if seen.iter().all(|&n| n as u64 == expected) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{what}: only {seen:?} of {expected} each after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_groups_joining_at_once_all_receive_within_ten_seconds_and_again_after_a_member_leaves_or_is_killed()
 {
    if let Ok(spec) = std::env::var(MEMBER) {
        be_the_member_to_kill(&spec).await;
    }
    let bootstrap = support::shared_bootstrap_servers();
    let topic = support::unique("groups");
    support::create_topic(&bootstrap, &topic, 4).await;
    publish(&bootstrap, &topic, 0, 20).await;

    let counts: Vec<Count> = (0..3).map(|_| Count::default()).collect();
    let groups: Vec<String> = (0..3)
        .map(|g| support::unique(&format!("group-{g}")))
        .collect();
    let members: Vec<RunningRuntime> = groups
        .iter()
        .zip(&counts)
        .map(|(group, count)| member(&bootstrap, group, &topic, count))
        .collect();
    let took = all_within(
        &counts,
        20,
        Duration::from_secs(10),
        "three groups joining at once",
    )
    .await;
    eprintln!("three groups joined at once and received everything in {took:?}");
    // The status is refreshed every 100 ms, so readiness may trail the first deliveries by
    // about that much.
    for running in &members {
        let deadline = Instant::now() + Duration::from_secs(1);
        while !running.is_ready() {
            assert!(
                Instant::now() < deadline,
                "ready once assigned: {:?}",
                running.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A second member joins the first group, settles, then leaves: the group rebalances twice
    // and every group still receives what follows.
    let second = member(&bootstrap, &groups[0], &topic, &counts[0]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !second.is_ready() {
        assert!(
            Instant::now() < deadline,
            "the second member never got partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.shutdown().await;
    publish(&bootstrap, &topic, 20, 20).await;
    let took = all_within(&counts, 40, Duration::from_secs(10), "after a member left").await;
    eprintln!("after a member left, every group received the next messages in {took:?}");

    // A member of the second group in a child process joins, settles, and is killed: the
    // group waits out its session (the preset's 6 s) before it rebalances, and every group
    // still receives what follows, the second one partly through redelivery.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "three_groups_joining_at_once_all_receive_within_ten_seconds_and_again_after_a_member_leaves_or_is_killed",
            "--nocapture",
        ])
        .env(MEMBER, format!("{bootstrap} {} {topic}", groups[1]))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "member ready")
    });
    let ready = tokio::time::timeout(Duration::from_secs(30), ready).await;
    assert!(
        matches!(ready, Ok(Ok(true))),
        "the child member never got partitions"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    publish(&bootstrap, &topic, 40, 20).await;
    let took = all_within(
        &counts,
        60,
        Duration::from_secs(15),
        "after a member was killed",
    )
    .await;
    eprintln!("after a member was killed, every group received the next messages in {took:?}");
    for running in members {
        running.shutdown().await;
    }
}

/// Three members of one group whose loops crashed (aborted mid-work) are closed through
/// their lag probes: every one has left before `close` returns, and a new member of the group
/// then receives what follows (members of one group leaving at the same moment wedge it on
/// the test broker about two times in three: `close` takes them one after another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_whose_loops_crashed_close_in_turn_and_the_group_takes_a_new_member() {
    let bootstrap = support::shared_bootstrap_servers();
    let topic = support::unique("closing");
    support::create_topic(&bootstrap, &topic, 4).await;
    let group = support::unique("closing-group");
    let count = Count::default();
    let mut probes = Vec::new();
    let mut runtime = Runtime::new();
    for _ in 0..3 {
        let consumer = KafkaConsumer::builder(KafkaConfig::new(&bootstrap), &group)
            .subscribe([&topic])
            .build()
            .unwrap();
        probes.push(consumer.lag_probe());
        runtime = runtime.service(ConsumerLoop::new(consumer, count.clone()));
    }
    let running = runtime.start();
    publish(&bootstrap, &topic, 0, 20).await;
    all_within(
        std::slice::from_ref(&count),
        20,
        Duration::from_secs(20),
        "three members",
    )
    .await;
    running.abort().await;

    let started = Instant::now();
    let late = es_kafka::LagProbe::close(probes, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(late, 0, "every member closes in time");
    eprintln!("three members closed in turn in {took:?}");

    let fresh = Count::default();
    let next = member(&bootstrap, &group, &topic, &fresh);
    publish(&bootstrap, &topic, 20, 20).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while fresh.0.lock().unwrap().range(20..40).count() < 20 {
        assert!(
            Instant::now() < deadline,
            "the new member received only {:?} of 20..40",
            fresh.0.lock().unwrap().range(20..40).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    next.shutdown().await;
}
