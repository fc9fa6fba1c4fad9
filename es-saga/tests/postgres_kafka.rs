#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The order saga end to end on the real stack: `PgSagaStore`, its outbox relayed to the
//! broker, the saga fed by a Kafka consumer group, and services answering its commands
//! through the broker, every reply published twice.

mod common;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::relay::Relay;
use es_core::{
    Delivery, HandlerError, MessageHandler, OutboxMessage, OutboxSource, Position, Publisher,
};
use es_kafka::{
    ConsumerRunner, KafkaConfig, KafkaConsumer, KafkaPublisher, RunnerOptions, TopicRouter,
    ensure_topics,
};
use es_postgres::PgCheckpointStore;
use es_saga::SagaRunner;
use support::*;
use tokio::sync::watch;

const ORDERS: usize = 40;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn member(bootstrap: &str, group: &str, topics: &[&str]) -> KafkaConsumer {
    KafkaConsumer::builder(KafkaConfig::new(bootstrap), group)
        .subscribe(topics.iter().copied())
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .build()
        .unwrap()
}

/// The stock, payment and shipping services: answer each command once (deduplicating on
/// its message id, as a receiver must) and publish every reply twice.
struct Services {
    outcomes: HashMap<String, Outcome>,
    replies: String,
    publisher: KafkaPublisher,
    answered: Mutex<HashSet<uuid::Uuid>>,
}

#[async_trait::async_trait]
impl MessageHandler for Services {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let command = &delivery.message;
        if !self.answered.lock().unwrap().insert(command.message_id) {
            return Ok(());
        }
        let Some(outcome) = order_id(command).and_then(|order| self.outcomes.get(&order).copied())
        else {
            return Ok(());
        };
        let replies: Vec<OutboxMessage> = respond(command, outcome)
            .into_iter()
            .map(|reply| reply.with_topic(&self.replies))
            .collect();
        let twice: Vec<OutboxMessage> = replies.iter().chain(&replies).cloned().collect();
        self.publisher
            .publish(&twice)
            .await
            .map_err(|failure| HandlerError::transient(failure.to_string()))
    }
}

fn spawn_runner<H: MessageHandler + 'static>(
    consumer: KafkaConsumer,
    handler: H,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut stop = stop.clone();
    tokio::spawn(async move {
        ConsumerRunner::new(consumer, handler)
            .with_options(
                RunnerOptions::default()
                    .backoff(Duration::from_millis(20), Duration::from_millis(200))
                    .max_attempts(50),
            )
            .run(async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
            .unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_run_to_their_end_through_the_broker_with_every_reply_delivered_twice() {
    let bootstrap = es_kafka::bootstrap_servers().unwrap_or_else(|error| panic!("{error}"));
    let store = common::fresh_store().await;
    let sagas = store.saga_store();
    let (orders, commands, replies) = (unique("orders"), unique("commands"), unique("replies"));
    let config = KafkaConfig::new(&bootstrap);
    ensure_topics(&config, &[(&orders, 4), (&commands, 4), (&replies, 4)])
        .await
        .unwrap();
    let runner = SagaRunner::new(OrderSaga, sagas.clone()).with_command_topic(&commands);

    let (stop, stopped) = watch::channel(false);
    let publisher: Arc<dyn Publisher> =
        Arc::new(KafkaPublisher::new(&config, TopicRouter::new()).unwrap());
    let mut relay = Relay::new(
        "saga-commands",
        sagas.clone(),
        PgCheckpointStore::new(&store),
        Arc::clone(&publisher),
    );
    let relay_task = {
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            relay
                .run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
        })
    };

    let placed_orders: Vec<(String, Outcome)> = (0..ORDERS)
        .map(|i| (unique_order("kafka"), Outcome::for_index(i)))
        .collect();
    let services = Services {
        outcomes: placed_orders.iter().cloned().collect(),
        replies: replies.clone(),
        publisher: KafkaPublisher::new(&config, TopicRouter::new()).unwrap(),
        answered: Mutex::default(),
    };
    let tasks = [
        spawn_runner(
            member(&bootstrap, &unique("order-saga"), &[&orders, &replies]),
            runner.clone(),
            &stopped,
        ),
        spawn_runner(
            member(&bootstrap, &unique("services"), &[&commands]),
            services,
            &stopped,
        ),
    ];
    let starts: Vec<OutboxMessage> = placed_orders
        .iter()
        .enumerate()
        .map(|(i, (order, _))| placed(order, 10 + i as u64).with_topic(&orders))
        .collect();
    publisher.publish(&starts).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut unfinished = placed_orders.len();
    while unfinished > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{unfinished} of {ORDERS} orders did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        unfinished = 0;
        for (order, _) in &placed_orders {
            let done = runner
                .instance(order)
                .await
                .unwrap()
                .is_some_and(|v| v.completed);
            unfinished += usize::from(!done);
        }
    }
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    relay_task.await.unwrap();

    // Every command the saga committed, by order: each decision committed once although
    // every reply came twice.
    let outbox = sagas.read_outbox(Position::START, 100_000).await.unwrap();
    let mut sent: HashMap<String, Vec<OutboxMessage>> = HashMap::new();
    for stored in outbox.messages {
        let order = order_id(&stored.message).unwrap();
        sent.entry(order).or_default().push(stored.message);
    }
    for (order, outcome) in &placed_orders {
        let view = runner.instance(order).await.unwrap().unwrap();
        let commands = sent.get(order).map(Vec::as_slice).unwrap_or_default();
        assert_terminal(&view, commands, *outcome);
        assert_eq!(
            runner.history(order).await.unwrap().len(),
            usize::try_from(view.version).unwrap(),
            "one history entry per committed decision"
        );
        let distinct: HashSet<&str> = commands.iter().map(|c| c.message_type.as_str()).collect();
        assert_eq!(
            distinct.len(),
            commands.len(),
            "no command sent twice for {order}: {:?}",
            types(commands)
        );
    }
}
