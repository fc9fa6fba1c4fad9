//! Effectively-once handling with the PostgreSQL inbox: outbox → relay → broker → consumer end
//! to end, duplicated deliveries, and a member leaving its group mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use es_core::relay::{Relay, RelayOptions};
use es_core::{InboxHandler, OutboxMessage, Publisher};
use es_kafka::{
    ConsumerRunner, KafkaConfig, KafkaPublisher, RunnerOptions, RunnerStats, TopicRouter,
    ensure_topics,
};
use es_postgres::{PgCheckpointStore, PgEventStore};
use serde_json::json;
use support::effects::{Effects, assert_once_in_order};
use support::outbox as ob;
use tokio::sync::oneshot;

/// A loop for `group` on `topic` whose handler writes `effects` through the inbox.
fn spawn_member(
    bootstrap: &str,
    group: &str,
    topic: &str,
    store: &PgEventStore,
    effects: Effects,
) -> (
    oneshot::Sender<()>,
    RunnerStats,
    tokio::task::JoinHandle<()>,
) {
    let consumer = support::consumer(bootstrap, group, &[topic]);
    let handler = InboxHandler::new(group, store.clone(), effects);
    let options = RunnerOptions::default().commit_interval(Duration::from_millis(200));
    let mut runner = ConsumerRunner::new(consumer, handler).with_options(options);
    let stats = runner.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, stats, task)
}

/// Waits until `effects` has at least `count` rows.
async fn wait_for_effects(effects: &Effects, store: &PgEventStore, count: usize, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = effects.count(store).await;
        if now >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {now} of {count} effects after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn numbered(topic: &str, keys: usize, total: usize) -> Vec<OutboxMessage> {
    let mut next = vec![0_u64; keys];
    (0..total)
        .map(|i| {
            let k = i % keys;
            next[k] += 1;
            let key = format!("key-{k}");
            OutboxMessage::new("Counted", key.clone(), json!({ "key": key, "n": next[k] }))
                .with_topic(topic)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_from_the_outbox_are_handled_once_each_in_key_order() {
    let bootstrap = support::shared_bootstrap_servers();
    let prefix = format!("{}.", support::unique("e2e"));
    let topic = format!("{prefix}{}", ob::SOURCE_TYPE);
    ensure_topics(&KafkaConfig::new(&bootstrap), &[(&topic, 4)])
        .await
        .unwrap();
    let store = ob::fresh_store().await;
    let effects = Effects::create(&store).await;
    let publisher: Arc<dyn Publisher> = Arc::new(
        KafkaPublisher::new(
            &KafkaConfig::new(&bootstrap),
            TopicRouter::new().with_prefix(prefix),
        )
        .unwrap(),
    );
    let mut relay = Relay::new(
        "relay",
        store.clone(),
        PgCheckpointStore::new(&store),
        publisher,
    )
    .with_signal(store.append_signal().clone())
    .with_options(RelayOptions::default().batch_size(500));
    let relay_task = tokio::spawn(async move { relay.run(std::future::pending()).await });
    let (stop, _, member) = spawn_member(
        &bootstrap,
        &support::unique("e2e"),
        &topic,
        &store,
        effects.clone(),
    );

    ob::write(&store, 4, 10_000, 100, 10, Duration::ZERO).await;
    wait_for_effects(&effects, &store, 10_000, Duration::from_secs(180)).await;
    stop.send(()).unwrap();
    member.await.unwrap();
    relay_task.abort();
    assert_once_in_order(&effects.rows(&store).await, 100, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice_has_its_effects_once() {
    let bootstrap = support::shared_bootstrap_servers();
    let topic = support::unique("twice");
    support::create_topic(&bootstrap, &topic, 4).await;
    let store = ob::fresh_store().await;
    let effects = Effects::create(&store).await;
    let publisher = KafkaPublisher::new(&KafkaConfig::new(&bootstrap), TopicRouter::new()).unwrap();
    let messages = numbered(&topic, 10, 500);
    for batch in messages.chunks(50) {
        publisher.publish(batch).await.unwrap();
        publisher.publish(batch).await.unwrap();
    }
    let (stop, stats, member) = spawn_member(
        &bootstrap,
        &support::unique("twice"),
        &topic,
        &store,
        effects.clone(),
    );
    wait_for_effects(&effects, &store, 500, Duration::from_secs(60)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stats.handled() < 1_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 1,000 deliveries handled",
            stats.handled()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    member.await.unwrap();
    assert_eq!(
        stats.handled(),
        1_000,
        "every delivery, duplicates included, was acknowledged"
    );
    assert_once_in_order(&effects.rows(&store).await, 10, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_one_leaving_loses_nothing() {
    let bootstrap = support::shared_bootstrap_servers();
    let topic = support::unique("leave");
    support::create_topic(&bootstrap, &topic, 4).await;
    let store = ob::fresh_store().await;
    let effects = Effects::create(&store).await;
    let group = support::unique("leave");
    let publisher = KafkaPublisher::new(&KafkaConfig::new(&bootstrap), TopicRouter::new()).unwrap();
    let (stop_first, first, first_task) =
        spawn_member(&bootstrap, &group, &topic, &store, effects.by("first"));
    let (stop_second, second, second_task) =
        spawn_member(&bootstrap, &group, &topic, &store, effects.by("second"));

    let messages = numbered(&topic, 40, 4_000);
    let mut batches = messages.chunks(100);
    // Publish until both members handled messages: the group split the partitions.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while first.handled() == 0 || second.handled() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never split its partitions"
        );
        if let Some(batch) = batches.next() {
            publisher.publish(batch).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The first member leaves mid-stream while publishing goes on.
    stop_first.send(()).unwrap();
    first_task.await.unwrap();
    for batch in batches {
        publisher.publish(batch).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_effects(&effects, &store, 4_000, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_second.send(()).unwrap();
    second_task.await.unwrap();
    let rows = effects.rows(&store).await;
    assert!(rows.iter().any(|row| row.3 == "first") && rows.iter().any(|row| row.3 == "second"));
    assert_once_in_order(&rows, 40, 4_000);
}
