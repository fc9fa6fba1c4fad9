//! Messages handled as commands over the broker: one service's outbox → relay (publishing
//! every batch twice) → Kafka → a consumer whose handler runs a command on an aggregate in
//! another service's store → that service's new outbox rows, exactly once each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use es_core::relay::{Relay, RelayOptions};
use es_core::testing::{NegativeAmount, Tally, TallyCommand};
use es_core::{
    AggregateHandler, AppendRequest, EventStore, ExpectedVersion, HandlerRegistry, InvalidStreamId,
    MessageType, OutboxMessage, OutboxSource, Position, PublishFailure, Publisher, Repository,
    StreamId, StreamRead,
};
use es_kafka::{ConsumerRunner, KafkaConfig, KafkaPublisher, RunnerOptions, TopicRouter};
use es_postgres::{PgCheckpointStore, PgEventStore};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::json;
use support::outbox as ob;
use tokio::sync::oneshot;

/// Publishes every batch twice, as a relay that crashed after publishing and before moving
/// its checkpoint would.
struct Twice(KafkaPublisher);

#[async_trait::async_trait]
impl Publisher for Twice {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        self.0.publish(messages).await?;
        self.0.publish(messages).await
    }
}

#[derive(Deserialize)]
struct Deposit {
    tally: String,
    amount: i64,
}

impl MessageType for Deposit {
    const MESSAGE_TYPE: &'static str = "Deposit";
}

struct DepositHandler;

impl AggregateHandler for DepositHandler {
    type Message = Deposit;
    type Aggregate = Tally;

    fn stream(&self, deposit: &Deposit) -> Result<StreamId, InvalidStreamId> {
        StreamId::new(deposit.tally.clone())
    }

    fn command(&self, deposit: &Deposit) -> TallyCommand {
        TallyCommand::Add(deposit.amount)
    }

    fn rejected(&self, deposit: &Deposit, _: &NegativeAmount) -> Vec<OutboxMessage> {
        vec![OutboxMessage::new(
            "DepositRefused",
            deposit.tally.clone(),
            json!({ "amount": deposit.amount }),
        )]
    }
}

async fn outbox_count(store: &PgEventStore, at_least: usize) -> Vec<OutboxMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let batch = store.read_outbox(Position::START, 100_000).await.unwrap();
        if batch.messages.len() >= at_least {
            return batch.messages.into_iter().map(|m| m.message).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {at_least} outbox rows",
            batch.messages.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_twice_run_their_commands_once_and_write_their_outbox_once() {
    const TALLIES: usize = 10;
    const DEPOSITS: usize = 300;
    let bootstrap = support::shared_bootstrap_servers();
    let prefix = format!("{}.", support::unique("commands"));
    let topic = format!("{prefix}deposits");
    support::create_topic(&bootstrap, &topic, 4).await;

    // The sending service: deposits written to its outbox, one append each.
    let sender = ob::fresh_store().await;
    let mut expected = [0_i64; TALLIES];
    let mut refused = 0;
    for n in 0..DEPOSITS {
        let tally = n % TALLIES;
        // Every 30th deposit is negative: the tally refuses it, which is a decision.
        let amount = if n % 30 == 29 { -1 } else { n as i64 + 1 };
        if amount < 0 {
            refused += 1;
        } else {
            expected[tally] += amount;
        }
        let message = OutboxMessage::new(
            Deposit::MESSAGE_TYPE,
            format!("tally-{tally}"),
            json!({ "tally": format!("tally-{tally}"), "amount": amount }),
        )
        .with_topic(&topic);
        let source = StreamId::new(format!("deposit-{n}")).unwrap();
        sender
            .append(AppendRequest::new(source, ExpectedVersion::NoStream).with_outbox([message]))
            .await
            .unwrap();
    }
    let publisher =
        Twice(KafkaPublisher::new(&KafkaConfig::new(&bootstrap), TopicRouter::new()).unwrap());
    let mut relay = Relay::new(
        "deposits",
        sender.clone(),
        PgCheckpointStore::new(&sender),
        Arc::new(publisher) as Arc<dyn Publisher>,
    )
    .with_options(RelayOptions::default().batch_size(50));
    let relay_task = tokio::spawn(async move { relay.run(std::future::pending()).await });

    // The receiving service: a command per deposit, and an outbox message per event.
    let receiver = ob::fresh_store().await;
    let tallies =
        Repository::<Tally, _>::new(receiver.clone()).with_outbox(|stream, state, events| {
            events
                .iter()
                .map(|(_, metadata)| {
                    OutboxMessage::new(
                        "TallyChanged",
                        stream.as_str(),
                        json!({ "total": state.total }),
                    )
                    .caused_by(metadata)
                })
                .collect()
        });
    let handlers =
        HandlerRegistry::new().on::<Deposit>(tallies.message_handler("tallies", DepositHandler));
    let consumer = support::consumer(&bootstrap, &support::unique("tallies"), &[&topic]);
    let mut runner = ConsumerRunner::new(consumer, handlers)
        .with_options(RunnerOptions::default().commit_interval(Duration::from_millis(200)));
    let stats = runner.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let member = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });

    support::wait_for("every delivery, duplicates included", || {
        stats.handled() >= 2 * DEPOSITS as u64
    })
    .await;
    stop.send(()).unwrap();
    member.await.unwrap();
    relay_task.abort();

    assert_eq!(
        stats.handled(),
        2 * DEPOSITS as u64,
        "each message came twice"
    );
    let outbox = outbox_count(&receiver, DEPOSITS).await;
    assert_eq!(
        outbox.len(),
        DEPOSITS,
        "one outbox row per deposit, none twice"
    );
    let replies = outbox
        .iter()
        .filter(|m| m.message_type == "DepositRefused")
        .count();
    assert_eq!(replies, refused, "one reply per refused deposit");
    for (tally, total) in expected.iter().enumerate() {
        let id = StreamId::new(format!("tally-{tally}")).unwrap();
        let loaded = tallies.load(&id).await.unwrap();
        assert_eq!(loaded.state.total, *total, "tally {tally}");
        let events: Vec<_> = receiver
            .read_stream(&id, StreamRead::forward())
            .try_collect()
            .await
            .unwrap();
        let accepted = (0..DEPOSITS)
            .filter(|n| n % TALLIES == tally && n % 30 != 29)
            .count();
        assert_eq!(
            events.len(),
            accepted,
            "tally {tally}: one event per accepted deposit"
        );
    }
}
