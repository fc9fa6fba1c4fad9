//! The relay through a broker outage: a private broker frozen for 10 s mid-stream loses
//! nothing and keeps each key's order (run alone: it pauses a broker).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use es_core::Publisher;
use es_core::relay::{Relay, RelayOptions};
use es_kafka::{KafkaConfig, KafkaPublisher, TopicRouter, ensure_topics};
use es_postgres::PgCheckpointStore;
use support::outbox as ob;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_broker_paused_for_ten_seconds_mid_stream_loses_nothing() {
    support::alone();
    let broker = support::PrivateBroker::start();
    let bootstrap = broker.bootstrap_servers();
    let prefix = format!("{}.", support::unique("outage"));
    let topic = format!("{prefix}{}", ob::SOURCE_TYPE);
    ensure_topics(&KafkaConfig::new(&bootstrap), &[(&topic, 4)])
        .await
        .unwrap();
    let router = TopicRouter::new().with_prefix(prefix);
    let publisher: Arc<dyn Publisher> =
        Arc::new(KafkaPublisher::new(&KafkaConfig::new(&bootstrap), router).unwrap());

    let store = ob::fresh_store().await;
    let mut relay = Relay::new(
        "relay",
        store.clone(),
        PgCheckpointStore::new(&store),
        publisher,
    )
    .with_signal(store.append_signal().clone())
    .with_options(RelayOptions::default().batch_size(200));
    let stats = relay.stats();
    let task = tokio::spawn(async move { relay.run(std::future::pending()).await });

    // About 15 s of writing: 4 writers, 10 messages every 20 ms each.
    let writing = {
        let store = store.clone();
        tokio::spawn(async move {
            ob::write(&store, 4, 6_000, 20, 10, Duration::from_millis(20)).await;
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = stats.snapshot().published;
    assert!(before > 0, "the relay published before the outage");
    broker.pause();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = stats.snapshot();
    broker.resume();
    writing.await.unwrap();
    assert!(
        during.published <= before + 200,
        "nothing was acknowledged while the broker was frozen (at most the batch in flight)"
    );
    assert!(
        during.backlog > 0 && during.oldest_unpublished_at.is_some(),
        "the figures show the batch held up by the outage: {during:?}"
    );

    let records = ob::consume(&bootstrap, &topic, 6_000, Duration::from_secs(120)).await;
    ob::assert_per_key_order(&records, 20, 6_000);
    task.abort();
}
