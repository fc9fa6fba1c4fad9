//! A real fatal error of the idempotent producer, which only rdkafka's mock cluster can
//! inject: the publisher reports it as fatal, and the relay recreates the producer and loses
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use es_core::memory::{MemoryCheckpointStore, MemoryOutbox};
use es_core::relay::{PublisherFactory, Relay, RelayOptions};
use es_core::{OutboxMessage, PublishError, Publisher};
use es_kafka::{KafkaConfig, KafkaPublisher, TopicRouter};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;

/// A mock cluster whose next producer id request fails with an error librdkafka treats as
/// fatal for an idempotent producer.
fn cluster_failing_once(
    topic: &str,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(topic, 2, 1).unwrap();
    cluster.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    cluster
}

fn messages(topic: &str, count: usize) -> Vec<OutboxMessage> {
    (0..count)
        .map(|n| {
            let key = format!("key-{}", n % 5);
            OutboxMessage::new(
                "Counted",
                key.clone(),
                json!({ "key": key, "n": n / 5 + 1 }),
            )
            .with_topic(topic)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_is_reported_as_fatal() {
    let cluster = cluster_failing_once("fatal");
    let config = KafkaConfig::new(cluster.bootstrap_servers());
    let publisher = KafkaPublisher::new(&config, TopicRouter::new()).unwrap();
    let failure = tokio::time::timeout(
        Duration::from_secs(30),
        publisher.publish(&messages("fatal", 3)),
    )
    .await
    .expect("the fatal error ends the publish")
    .unwrap_err();
    assert!(failure.error.is_fatal(), "{failure}");
    assert_eq!(failure.acknowledged, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_recreates_a_producer_that_failed_fatally() {
    let cluster = cluster_failing_once("orders");
    let bootstrap = cluster.bootstrap_servers();
    let outbox = MemoryOutbox::new();
    outbox.push(messages("orders", 50));
    let created = Arc::new(AtomicUsize::new(0));
    let factory = {
        let created = Arc::clone(&created);
        let real = KafkaPublisher::factory(KafkaConfig::new(&bootstrap), TopicRouter::new());
        move || -> Result<Arc<dyn Publisher>, PublishError> {
            created.fetch_add(1, Ordering::SeqCst);
            real.create_publisher()
        }
    };
    let mut relay = Relay::with_factory(
        "relay",
        outbox.clone(),
        MemoryCheckpointStore::new(),
        factory,
    )
    .with_options(
        RelayOptions::default().retry_delay(Duration::from_millis(50), Duration::from_millis(200)),
    );
    let stats = relay.stats();
    let task = tokio::spawn(async move { relay.run(std::future::pending()).await });
    let records = support::outbox::consume(&bootstrap, "orders", 50, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 50, "each message once");
    assert!(
        created.load(Ordering::SeqCst) >= 2,
        "the producer was recreated"
    );
    let snapshot = stats.snapshot();
    assert!(snapshot.errors >= 1);
    assert_eq!(snapshot.published, 50);
    task.abort();
}
