//! One application, two backends, chosen at start-up: the application is a function generic
//! over `es_core::Backend`; `main` picks PostgreSQL when `DATABASE_URL` is set, memory
//! otherwise. No type forwards each port's methods to one backend or the other.
//!
//! ```text
//! cargo run -p es-postgres --example backend_choice                 # in memory
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run -p es-postgres --example backend_choice               # on PostgreSQL
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    dead_code,
    unreachable_pub
)]

use std::sync::Arc;

use es_core::memory::{MemoryBackend, MemoryBus};
use es_core::relay::Relay;
use es_core::testing::{Tally, TallyCommand};
use es_core::{
    AggregateHandler, Backend, BoxError, Delivery, HandlerRegistry, InvalidStreamId,
    MessageHandler, MessageType, OutboxMessage, Publisher, Repository, StreamId,
};
use es_postgres::{PgBackend, PgConfig};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Deposit {
    pub tally: String,
    pub amount: i64,
}

impl MessageType for Deposit {
    const MESSAGE_TYPE: &'static str = "Deposit";
}

#[derive(Debug)]
pub struct Deposits;

impl AggregateHandler for Deposits {
    type Message = Deposit;
    type Aggregate = Tally;

    fn stream(&self, deposit: &Deposit) -> Result<StreamId, InvalidStreamId> {
        StreamId::new(deposit.tally.clone())
    }

    fn command(&self, deposit: &Deposit) -> TallyCommand {
        TallyCommand::Add(deposit.amount)
    }
}

/// What a run of the application did.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub total: i64,
    pub announced: usize,
}

/// The application, for any backend: handles each deposit exactly once (every one is
/// delivered twice here), announces each change through the outbox, and relays the outbox.
pub async fn run<B: Backend>(backend: &B, tally: &str) -> Result<Report, BoxError> {
    let store = backend.store("tallies").await?;
    let tallies = Repository::<Tally, _>::new(store.clone()).with_outbox(|stream, state, _| {
        let payload = serde_json::json!({ "total": state.total });
        vec![OutboxMessage::new("TallyChanged", stream.as_str(), payload).with_topic("tallies")]
    });
    let handlers =
        HandlerRegistry::new().on::<Deposit>(tallies.message_handler("deposits", Deposits));
    for amount in [5, 7, 11] {
        let payload = serde_json::json!({ "tally": tally, "amount": amount });
        let message = OutboxMessage::new(Deposit::MESSAGE_TYPE, tally, payload);
        let delivery = Delivery {
            topic: "deposits".into(),
            partition: 0,
            offset: 0,
            attempt: 1,
            message,
        };
        handlers.handle(&delivery).await?;
        handlers.handle(&delivery).await?; // at least once: a duplicate
    }
    let bus = MemoryBus::new();
    let publisher: Arc<dyn Publisher> = Arc::new(bus.clone());
    let checkpoints = backend.checkpoints(&store);
    let mut relay = Relay::new(
        format!("relay-{tally}"),
        store.clone(),
        checkpoints,
        publisher,
    );
    // A service runs the relay as a runtime service; here it relays until the three
    // announcements are out (on PostgreSQL a read can be held back a moment by another
    // transaction still open: it is gap-safe).
    let announced = || {
        bus.published("tallies")
            .iter()
            .filter(|m| m.partition_key == tally)
            .count()
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while announced() < 3 && tokio::time::Instant::now() < deadline {
        if relay.run_once().await?.published == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let total = tallies.load(&StreamId::new(tally)?).await?.state.total;
    let announced = announced();
    Ok(Report { total, announced })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let tally = format!("tally-{}", uuid::Uuid::new_v4().simple());
    let report = match std::env::var("DATABASE_URL") {
        Ok(_) => {
            run(
                &PgBackend::new(&PgConfig::from_env()?.schema("backend_choice"))?,
                &tally,
            )
            .await?
        }
        Err(_) => run(&MemoryBackend::new(), &tally).await?,
    };
    println!("{report:?}");
    Ok(())
}
