//! Several consumer groups on the test broker with the consumer preset: three groups joining
//! at once all receive within 10 s, and again after a member of one of them leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use es_core::consume::ConsumerLoop;
use es_core::runtime::{RunningRuntime, Runtime};
use es_core::{Delivery, HandlerError, MessageHandler, OutboxMessage};
use es_kafka::{KafkaConfig, KafkaConsumer};
use serde_json::json;
use tokio::time::Instant;

/// Counts what it handles.
#[derive(Clone, Default)]
struct Count(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl MessageHandler for Count {
    async fn handle(&self, _: &Delivery) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
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

async fn all_within(counts: &[Count], expected: usize, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let seen: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        if seen.iter().all(|&n| n >= expected) {
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
async fn three_groups_joining_at_once_all_receive_within_ten_seconds_and_again_after_a_member_leaves()
 {
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
    for running in members {
        running.shutdown().await;
    }
}
