//! Exactly-once handlers racing a duplicate that is still uncommitted: the duplicate waits
//! (proved by the server's lock view), then finds the record and changes nothing. These hold a
//! transaction open, so they run alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::testing::{Tally, TallyCommand};
use es_core::{
    AggregateHandler, CommandContext, Delivery, HandlerError, HandlerRegistry, InboxHandler,
    InvalidStreamId, MessageHandler, MessageType, OutboxMessage, Repository, StoreTransaction,
    StreamId, TransactionalHandler, TransactionalStore, Version,
};
use es_postgres::{PgEventStore, PgTransaction};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Add {
    tally: String,
    amount: i64,
}

impl MessageType for Add {
    const MESSAGE_TYPE: &'static str = "Add";
}

struct AddHandler;

impl AggregateHandler for AddHandler {
    type Message = Add;
    type Aggregate = Tally;

    fn stream(&self, add: &Add) -> Result<StreamId, InvalidStreamId> {
        StreamId::new(add.tally.clone())
    }

    fn command(&self, add: &Add) -> TallyCommand {
        TallyCommand::Add(add.amount)
    }
}

fn delivery(message: OutboxMessage) -> Delivery {
    Delivery {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        attempt: 1,
        message,
    }
}

/// Waits until a backend runs a statement matching `pattern` while waiting on a lock of
/// `kind` (`advisory` for stream locks, `transactionid` for another transaction's row).
async fn wait_for_wait(client: &tokio_postgres::Client, kind: &str, pattern: &str) {
    for _ in 0..500 {
        let waiting = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND wait_event = $1 AND query LIKE $2",
                &[&kind, &pattern],
            )
            .await
            .unwrap();
        if waiting.is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no backend waited on a {kind} lock running {pattern} within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_command_delivered_again_while_the_first_is_uncommitted_waits_and_applies_once() {
    common::alone();
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    let id = common::stream("tally");
    let tallies = Repository::<Tally, PgEventStore>::new(store.clone());
    let handlers = HandlerRegistry::new().on::<Add>(tallies.message_handler("tallies", AddHandler));
    let message = OutboxMessage::new(
        "Add",
        id.as_str(),
        json!({ "tally": id.as_str(), "amount": 5 }),
    );

    // The first delivery, in flight: its effects and record written, not committed.
    let mut first = store.begin(std::slice::from_ref(&id)).await.unwrap();
    tallies
        .execute_in(
            &mut first,
            &id,
            &TallyCommand::Add(5),
            &CommandContext::new(),
        )
        .await
        .unwrap();
    assert!(
        first
            .record_handled("tallies", message.message_id)
            .await
            .unwrap()
    );

    let second = tokio::spawn({
        let delivery = delivery(message.clone());
        async move { handlers.handle(&delivery).await }
    });
    let pattern = format!("%\"{}\".lock_streams%", store.schema());
    wait_for_wait(&observer, "advisory", &pattern).await;
    assert!(
        !second.is_finished(),
        "the duplicate waits for the first delivery"
    );

    first.commit().await.unwrap();
    second
        .await
        .unwrap()
        .expect("the duplicate is acknowledged");
    let loaded = tallies.load(&id).await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (5, Version::new(1)));
}

/// Writes one row per handled message into `effects`; names no stream.
struct Effects(String);

#[async_trait::async_trait]
impl TransactionalHandler<PgTransaction> for Effects {
    type Message = serde_json::Value;

    async fn handle(
        &self,
        tx: &mut PgTransaction,
        _: &serde_json::Value,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let sql = format!("INSERT INTO {} (message_id) VALUES ($1)", self.0);
        tx.client()
            .execute(&sql, &[&delivery.message.message_id])
            .await
            .map_err(HandlerError::transient)?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_effects_of_a_concurrent_duplicate_roll_back_when_its_record_finds_the_first() {
    common::alone();
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    let table = format!("\"{}\".effects", store.schema());
    observer
        .batch_execute(&format!("CREATE TABLE {table} (message_id uuid NOT NULL)"))
        .await
        .unwrap();
    let handler = InboxHandler::new("effects", store.clone(), Effects(table.clone()));
    let message = OutboxMessage::new("Effect", "k", json!({}));

    // The first delivery, in flight: its effect and record written, not committed.
    let mut first = store.begin(&[]).await.unwrap();
    first
        .client()
        .execute(
            &format!("INSERT INTO {table} (message_id) VALUES ($1)"),
            &[&message.message_id],
        )
        .await
        .unwrap();
    assert!(
        first
            .record_handled("effects", message.message_id)
            .await
            .unwrap()
    );

    // The duplicate finds no committed record, applies its effect, then waits on the record.
    let second = tokio::spawn({
        let delivery = delivery(message.clone());
        async move { handler.handle(&delivery).await }
    });
    wait_for_wait(&observer, "transactionid", "%inbox%").await;
    assert!(
        !second.is_finished(),
        "the duplicate's record waits for the first"
    );

    first.commit().await.unwrap();
    second
        .await
        .unwrap()
        .expect("the duplicate is acknowledged");
    let rows: i64 = observer
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rows, 1,
        "the duplicate's effect rolled back with its record"
    );
}
