//! The outbox relay from a PostgreSQL outbox to the broker: nothing lost, per-key order kept,
//! through crashes, fatal producer errors and a change of leader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use es_core::relay::{Relay, RelayOptions};
use es_core::{OutboxMessage, PublishError, PublishFailure, Publisher};
use es_kafka::{KafkaConfig, KafkaPublisher, TopicRouter, ensure_topics};
use es_postgres::{Leader, PgCheckpointStore, PgEventStore};
use support::outbox::{self as ob, Counting};

const PARTITIONS: i32 = 4;

/// A unique topic for this test's messages, created on the broker, and the router to it.
async fn topic(bootstrap: &str) -> (String, TopicRouter) {
    let prefix = format!("{}.", support::unique("relay"));
    let topic = format!("{prefix}{}", ob::SOURCE_TYPE);
    ensure_topics(&KafkaConfig::new(bootstrap), &[(&topic, PARTITIONS)])
        .await
        .unwrap_or_else(|error| {
            panic!("cannot create {topic} at {bootstrap}: {error}; start the broker with `scripts/broker start`")
        });
    (topic, TopicRouter::new().with_prefix(prefix))
}

fn kafka(bootstrap: &str, router: &TopicRouter) -> Arc<dyn Publisher> {
    Arc::new(KafkaPublisher::new(&KafkaConfig::new(bootstrap), router.clone()).unwrap())
}

fn relay(
    store: &PgEventStore,
    publisher: Arc<dyn Publisher>,
) -> Relay<PgEventStore, PgCheckpointStore> {
    Relay::new(
        "relay",
        store.clone(),
        PgCheckpointStore::new(store),
        publisher,
    )
    .with_signal(store.append_signal().clone())
    .with_options(RelayOptions::default().batch_size(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_from_eight_writers_arrive_once_each_in_key_order() {
    let bootstrap = support::shared_bootstrap_servers();
    let (topic, router) = topic(&bootstrap).await;
    let store = ob::fresh_store().await;
    let mut relay = relay(&store, kafka(&bootstrap, &router));
    let stats = relay.stats();
    let task = tokio::spawn(async move { relay.run(std::future::pending()).await });

    ob::write(&store, 8, 10_000, 100, 5, Duration::ZERO).await;
    let records = ob::consume(&bootstrap, &topic, 10_000, Duration::from_secs(120)).await;
    let duplicates = ob::assert_per_key_order(&records, 100, 10_000);
    assert_eq!(duplicates, 0, "no fault, no duplicate");
    let first = &records[0];
    assert_eq!(first.message_type, "Counted");
    assert_eq!(first.source_type.as_deref(), Some(ob::SOURCE_TYPE));
    assert_eq!(first.topic.as_deref(), Some(topic.as_str()));
    assert!(
        first.headers.contains_key("traceparent"),
        "the trace context travels"
    );
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.published, 10_000);
    assert_eq!(snapshot.errors, 0);
    task.abort();
}

/// Lets its `hang_on`-th publish reach the broker, then never returns: the relay is stuck
/// between publishing and writing its checkpoint, where the test kills it.
struct HangsAfterPublishing {
    inner: Arc<dyn Publisher>,
    calls: AtomicUsize,
    hang_on: usize,
    published: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Publisher for HangsAfterPublishing {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        self.inner.publish(messages).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.hang_on {
            self.published.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_checkpoint_republishes_and_loses_nothing() {
    let bootstrap = support::shared_bootstrap_servers();
    let (topic, router) = topic(&bootstrap).await;
    let store = ob::fresh_store().await;
    ob::write(&store, 4, 2_000, 20, 10, Duration::ZERO).await;

    let hanging = Arc::new(HangsAfterPublishing {
        inner: kafka(&bootstrap, &router),
        calls: AtomicUsize::new(0),
        hang_on: 2,
        published: tokio::sync::Notify::new(),
    });
    let mut first =
        relay(&store, hanging.clone()).with_options(RelayOptions::default().batch_size(300));
    let task = tokio::spawn(async move { first.run(std::future::pending()).await });
    tokio::time::timeout(Duration::from_secs(60), hanging.published.notified())
        .await
        .expect("the second batch was published");
    task.abort();
    let _ = task.await;

    let mut second = relay(&store, kafka(&bootstrap, &router));
    let task = tokio::spawn(async move { second.run(std::future::pending()).await });
    let records = ob::consume(&bootstrap, &topic, 2_000, Duration::from_secs(120)).await;
    let duplicates = ob::assert_per_key_order(&records, 20, 2_000);
    assert_eq!(
        duplicates, 300,
        "exactly the batch whose checkpoint was never written came twice"
    );
    task.abort();
}

/// Publishes half of its second batch through `inner`, then fails fatally.
struct FailsFatally {
    inner: Arc<dyn Publisher>,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Publisher for FailsFatally {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        if self.calls.fetch_add(1, Ordering::SeqCst) != 1 {
            return self.inner.publish(messages).await;
        }
        let half = messages.len() / 2;
        self.inner.publish(&messages[..half]).await?;
        Err(PublishFailure::new(
            half,
            PublishError::fatal("injected fatal producer error"),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_recreates_the_producer_and_loses_nothing() {
    let bootstrap = support::shared_bootstrap_servers();
    let (topic, router) = topic(&bootstrap).await;
    let store = ob::fresh_store().await;
    ob::write(&store, 4, 2_000, 20, 10, Duration::ZERO).await;

    let created = Arc::new(AtomicUsize::new(0));
    let factory = {
        let created = Arc::clone(&created);
        let real = KafkaPublisher::factory(KafkaConfig::new(&bootstrap), router.clone());
        move || -> Result<Arc<dyn Publisher>, PublishError> {
            use es_core::relay::PublisherFactory;
            let producer = real.create_publisher()?;
            if created.fetch_add(1, Ordering::SeqCst) == 0 {
                Ok(Arc::new(FailsFatally {
                    inner: producer,
                    calls: AtomicUsize::new(0),
                }))
            } else {
                Ok(producer)
            }
        }
    };
    let mut relay = Relay::with_factory(
        "relay",
        store.clone(),
        PgCheckpointStore::new(&store),
        factory,
    )
    .with_options(
        RelayOptions::default()
            .batch_size(300)
            .retry_delay(Duration::from_millis(50), Duration::from_millis(500)),
    );
    let stats = relay.stats();
    let task = tokio::spawn(async move { relay.run(std::future::pending()).await });
    let records = ob::consume(&bootstrap, &topic, 2_000, Duration::from_secs(120)).await;
    let duplicates = ob::assert_per_key_order(&records, 20, 2_000);
    assert_eq!(
        duplicates, 0,
        "the acknowledged half was checkpointed, not sent again"
    );
    assert_eq!(
        created.load(Ordering::SeqCst),
        2,
        "the producer was recreated once"
    );
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.publishers_created, 2);
    assert_eq!(snapshot.errors, 1);
    task.abort();
}

/// A candidate: waits for leadership, relays while it leads, counts what it published.
fn candidate(
    store: PgEventStore,
    publisher: Arc<dyn Publisher>,
    published: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut leader = Leader::acquire(
                store.pool(),
                store.schema(),
                "relay",
                Duration::from_millis(100),
            )
            .await
            .unwrap();
            let counting: Arc<dyn Publisher> = Arc::new(Counting {
                inner: Arc::clone(&publisher),
                published: Arc::clone(&published),
            });
            let mut relay = relay(&store, counting);
            // Stop relaying as soon as leadership is lost; the checkpoint's compare-and-set
            // fences the relay if it has not noticed yet.
            let lost = async {
                while leader.is_leader().await {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            let outcome = relay.run(lost).await;
            assert!(outcome.is_ok() || outcome.as_ref().is_err_and(|e| e.is_deposed()));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_relays_only_the_leader_publishes_and_the_standby_resumes_from_its_checkpoint() {
    let bootstrap = support::shared_bootstrap_servers();
    let (topic, router) = topic(&bootstrap).await;
    let store = ob::fresh_store().await;
    let by_first = Arc::new(AtomicUsize::new(0));
    let by_second = Arc::new(AtomicUsize::new(0));
    let first = candidate(store.clone(), kafka(&bootstrap, &router), by_first.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = candidate(store.clone(), kafka(&bootstrap, &router), by_second.clone());

    ob::write(&store, 4, 1_000, 20, 10, Duration::ZERO).await;
    ob::consume(&bootstrap, &topic, 1_000, Duration::from_secs(60)).await;
    assert_eq!(
        by_first.load(Ordering::SeqCst),
        1_000,
        "the leader published everything"
    );
    assert_eq!(
        by_second.load(Ordering::SeqCst),
        0,
        "the standby published nothing"
    );

    // The leader dies: its task ends, its leader connection closes, its lock is released.
    first.abort();
    let _ = first.await;
    ob::write(&store, 4, 1_000, 20, 10, Duration::ZERO).await;
    let records = ob::consume(&bootstrap, &topic, 2_000, Duration::from_secs(60)).await;
    assert_eq!(
        records.len(),
        2_000,
        "no message lost, none published twice"
    );
    assert_eq!(
        by_second.load(Ordering::SeqCst),
        1_000,
        "the standby took over from the checkpoint: only the new messages"
    );
    second.abort();
}
