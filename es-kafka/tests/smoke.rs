//! Proves the test suite reaches a real Kafka-protocol broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn round_trip(bootstrap: &str) {
    let topic = support::unique("smoke");
    support::create_topic(bootstrap, &topic, 1).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    let payload = support::unique("payload");
    producer
        .send(
            FutureRecord::to(&topic).key("key-1").payload(&payload),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|(error, _)| panic!("produce to {bootstrap} failed: {error}"));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", support::unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("no message consumed within 30 s")
        .unwrap();
    assert_eq!(message.key(), Some("key-1".as_bytes()));
    assert_eq!(message.payload(), Some(payload.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaches_the_shared_broker() {
    round_trip(&support::shared_bootstrap_servers()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_broker_serves_and_can_be_paused() {
    let broker = support::PrivateBroker::start();
    round_trip(&broker.bootstrap_servers()).await;

    broker.pause();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .create()
            .unwrap();
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(2));
    assert!(
        metadata.is_err(),
        "a paused broker answered a metadata request"
    );

    broker.resume();
    round_trip(&broker.bootstrap_servers()).await;
}
