//! A consumer loop survives its broker freezing for 10 s: it resumes and loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{Delivery, HandlerError, MessageHandler, OutboxMessage, Publisher};
use es_kafka::{ConsumerRunner, KafkaConfig, KafkaPublisher, RunnerOptions, TopicRouter};
use serde_json::json;
use uuid::Uuid;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashSet<Uuid>>>);

impl Seen {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl MessageHandler for Seen {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.0.lock().unwrap().insert(delivery.message.message_id);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_broker_frozen_for_ten_seconds_loses_nothing() {
    support::alone();
    let broker = support::PrivateBroker::start();
    let bootstrap = broker.bootstrap_servers();
    let topic = support::unique("outage");
    support::create_topic(&bootstrap, &topic, 4).await;
    let messages: Vec<OutboxMessage> = (0..1_000)
        .map(|i| {
            OutboxMessage::new("Tested", format!("key-{}", i % 20), json!({ "i": i }))
                .with_topic(&topic)
        })
        .collect();
    let publisher = KafkaPublisher::new(&KafkaConfig::new(&bootstrap), TopicRouter::new()).unwrap();
    publisher.publish(&messages[..300]).await.unwrap();

    let seen = Seen::default();
    let consumer = support::consumer(&bootstrap, &support::unique("outage"), &[&topic]);
    let mut runner = ConsumerRunner::new(consumer, seen.clone())
        .with_options(RunnerOptions::default().commit_interval(Duration::from_millis(200)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 300 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of the first 300 handled",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    broker.pause();
    let rest = messages[300..].to_vec();
    let publishing = tokio::spawn(async move { publisher.publish(&rest).await.unwrap() });
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.resume();
    tokio::time::timeout(Duration::from_secs(60), publishing)
        .await
        .expect("the rest was published once the broker came back")
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < 1_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 1,000 handled after the outage",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    let ids: HashSet<Uuid> = messages.iter().map(|m| m.message_id).collect();
    assert_eq!(
        *seen.0.lock().unwrap(),
        ids,
        "every message handled, none foreign"
    );
}
