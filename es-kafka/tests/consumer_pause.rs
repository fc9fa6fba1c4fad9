//! The pause-the-partition policy with paused partitions kept in PostgreSQL (across a
//! restart, until an operator resumes), and consumer lag.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{Consumer, Delivery, HandlerError, MessageHandler, OutboxMessage, PausedPartitions};
use es_kafka::{ConsumerRunner, FailurePolicy, RunnerOptions, RunnerStats};
use es_postgres::PgPausedPartitions;
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Records (topic, seq) of what it handled; fails `poison` transiently until `fixed`.
#[derive(Clone)]
struct Stuck {
    handled: Arc<Mutex<Vec<(String, u64)>>>,
    poison: Uuid,
    fixed: Arc<AtomicBool>,
}

impl Stuck {
    fn handled_on(&self, topic: &str) -> Vec<u64> {
        self.handled
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, seq)| *seq)
            .collect()
    }
}

#[async_trait::async_trait]
impl MessageHandler for Stuck {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if delivery.message.message_id == self.poison && !self.fixed.load(Ordering::SeqCst) {
            return Err(HandlerError::transient("the ledger is unreachable"));
        }
        let seq = delivery.message.payload["seq"].as_u64().unwrap();
        self.handled
            .lock()
            .unwrap()
            .push((delivery.topic.clone(), seq));
        Ok(())
    }
}

fn message(topic: &str, key: &str, seq: u64) -> OutboxMessage {
    OutboxMessage::new("Tested", key, json!({ "seq": seq })).with_topic(topic)
}

/// A member of `group` over `topics` pausing partitions into `paused`, in the background.
fn spawn(
    bootstrap: &str,
    group: &str,
    topics: &[&str],
    handler: Stuck,
    paused: PgPausedPartitions,
) -> (
    oneshot::Sender<()>,
    RunnerStats,
    tokio::task::JoinHandle<()>,
) {
    let options = RunnerOptions::default()
        .max_attempts(2)
        .backoff(Duration::from_millis(200), Duration::from_millis(200))
        .policy(FailurePolicy::PausePartition)
        .commit_interval(Duration::from_millis(200))
        .paused_refresh(Duration::from_millis(200));
    let consumer = support::consumer(bootstrap, group, topics);
    let mut runner = ConsumerRunner::new(consumer, handler)
        .with_options(options)
        .with_paused_store(paused);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_by_policy_stays_paused_across_a_restart_until_resumed() {
    let bootstrap = support::shared_bootstrap_servers();
    let store = support::outbox::fresh_store().await;
    let paused = store.paused_partitions();
    // The failing message leads a one-partition topic; other work flows on a second topic.
    let (stuck, flowing) = (support::unique("stuck"), support::unique("flowing"));
    support::create_topic(&bootstrap, &stuck, 1).await;
    support::create_topic(&bootstrap, &flowing, 2).await;
    let poison = message(&stuck, "ledger", 0);
    let mut messages = vec![poison.clone()];
    messages.extend((1..6).map(|seq| message(&stuck, "ledger", seq)));
    messages.extend((0..50).map(|seq| message(&flowing, &format!("k{}", seq % 7), seq)));
    support::publish(&bootstrap, &messages).await;

    let handler = Stuck {
        handled: Arc::default(),
        poison: poison.message_id,
        fixed: Arc::default(),
    };
    let group = support::unique("pausing");
    let topics = [stuck.as_str(), flowing.as_str()];
    let (stop, stats, task) = spawn(&bootstrap, &group, &topics, handler.clone(), paused.clone());
    support::wait_for("the other topic handled and the partition paused", || {
        handler.handled_on(&flowing).len() == 50 && stats.paused() == 1
    })
    .await;
    let listed = paused.list(&group).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let record = &listed[0];
    assert_eq!(
        (record.topic.as_str(), record.partition, record.offset),
        (stuck.as_str(), 0, 0)
    );
    assert_eq!(record.message_id, poison.message_id);
    assert!(
        record.reason.contains("the ledger is unreachable"),
        "{}",
        record.reason
    );
    assert!(
        handler.handled_on(&stuck).is_empty(),
        "nothing passed the failing message"
    );
    stop.send(()).unwrap();
    task.await.unwrap();

    // Fixed, but still paused: a new member of the group (a restart) keeps it held.
    handler.fixed.store(true, Ordering::SeqCst);
    let (stop, stats, task) = spawn(&bootstrap, &group, &topics, handler.clone(), paused.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        handler.handled_on(&stuck).is_empty(),
        "a paused partition stays paused across a restart"
    );
    assert_eq!(paused.list(&group).await.unwrap().len(), 1);

    paused.resume(&group, &stuck, 0).await.unwrap();
    support::wait_for("the resumed partition handled", || {
        handler.handled_on(&stuck).len() >= 6
    })
    .await;
    assert_eq!(
        handler.handled_on(&stuck),
        (0..6).collect::<Vec<_>>(),
        "in order, once"
    );
    assert_eq!(
        handler.handled_on(&flowing).len(),
        50,
        "nothing handled twice after the restart"
    );
    assert_eq!(stats.paused(), 0);
    assert_eq!(stats.dead_lettered(), 0);
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_what_the_group_has_not_committed() {
    let bootstrap = support::shared_bootstrap_servers();
    let topic = support::unique("lag");
    support::create_topic(&bootstrap, &topic, 2).await;
    // One record per produce request: tansu 0.6 reports a partition's end as the last
    // batch's first offset + 1, which is the true end only for one-record batches.
    for seq in 0..10 {
        support::publish(&bootstrap, &[message(&topic, &format!("k{seq}"), seq)]).await;
    }

    let mut consumer = support::consumer(&bootstrap, &support::unique("lagging"), &[&topic]);
    let first = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a delivery")
        .unwrap();
    let lag = consumer.lag().await.unwrap();
    let partitions: HashSet<u32> = lag.iter().map(|l| l.partition).collect();
    assert_eq!(
        partitions,
        HashSet::from([0, 1]),
        "both partitions assigned: {lag:?}"
    );
    assert_eq!(
        lag.iter().map(|l| l.high_watermark).sum::<i64>(),
        10,
        "{lag:?}"
    );
    assert_eq!(
        lag.iter().map(|l| l.lag).sum::<i64>(),
        10,
        "nothing committed yet: {lag:?}"
    );

    consumer.commit(&first).await.unwrap();
    let lag = consumer.lag().await.unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<i64>(), 9, "{lag:?}");
    let of_first = lag.iter().find(|l| l.partition == first.partition).unwrap();
    assert_eq!(of_first.committed, i64::try_from(first.offset).unwrap() + 1);

    for _ in 1..10 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a delivery")
            .unwrap();
        consumer.store(&delivery).unwrap();
    }
    let lag = consumer.lag().await.unwrap();
    assert_eq!(
        lag.iter().map(|l| l.lag).sum::<i64>(),
        9,
        "stored is not committed: {lag:?}"
    );
    consumer.commit_stored().await.unwrap();
    let lag = consumer.lag().await.unwrap();
    assert_eq!(lag.iter().map(|l| l.lag).sum::<i64>(), 0, "{lag:?}");
}
