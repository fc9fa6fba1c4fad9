//! A first service on PostgreSQL and Kafka: it credits accounts for the payments another
//! service announces on Kafka, exactly once however often a payment message arrives, tells
//! the world through its outbox, and keeps a table of balances with the projection daemon.
//!
//! ```text
//! scripts/broker start 9092
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
//!   cargo run -p es-kafka --example first_service
//! ```
//!
//! `docs/first-service.md` walks through this file; `tests/first_service.rs` runs it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    dead_code,
    unreachable_pub
)]

use std::error::Error;
use std::future::Future;
use std::sync::Arc;

use es_core::relay::Relay;
use es_core::{
    Aggregate, AggregateHandler, DomainEvent, HandlerRegistry, InvalidStreamId, LogFilter,
    MessageType, OutboxMessage, Projection, ProjectionError, RecordedEvent, Repository, StreamId,
    encode_message,
};
use es_kafka::{ConsumerRunner, KafkaConfig, KafkaConsumer, KafkaPublisher, TopicRouter};
use es_postgres::{
    PgCheckpointStore, PgConfig, PgEventStore, PgProjectionTx, ProjectionDaemon, ProjectionOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

// ANCHOR: domain
/// An account: its balance, and the payments already credited.
#[derive(Debug, Default)]
pub struct Account {
    pub balance_cents: u64,
}

#[derive(Debug)]
pub enum AccountCommand {
    Credit { payment: String, cents: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
pub enum AccountEvent {
    #[serde(rename = "AccountCredited")]
    Credited { payment: String, cents: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("a credit must be of at least one cent")]
    Empty,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let AccountCommand::Credit { payment, cents } = command;
        if *cents == 0 {
            return Err(AccountError::Empty);
        }
        Ok(vec![AccountEvent::Credited {
            payment: payment.clone(),
            cents: *cents,
        }])
    }

    fn evolve(&mut self, event: &AccountEvent) {
        let AccountEvent::Credited { cents, .. } = event;
        self.balance_cents += cents;
    }
}
// ANCHOR_END: domain

// ANCHOR: messages
/// What the payments service announces.
#[derive(Debug, Serialize, Deserialize, MessageType)]
#[serde(rename = "PaymentReceived")]
#[message(key = "account")]
pub struct PaymentReceived {
    pub payment: String,
    pub account: String,
    pub cents: u64,
}

/// What this service announces, on the `accounts` topic.
#[derive(Debug, Serialize, Deserialize, MessageType)]
#[serde(rename = "AccountBalanceChanged")]
#[message(key = "account")]
pub struct AccountBalanceChanged {
    pub account: String,
    pub balance_cents: u64,
}

/// The answer to a payment the account refused.
#[derive(Debug, Serialize, Deserialize, MessageType)]
#[serde(rename = "PaymentRefused")]
#[message(key = "account")]
pub struct PaymentRefused {
    pub payment: String,
    pub account: String,
    pub reason: String,
}
// ANCHOR_END: messages

// ANCHOR: handler
/// A payment credits its account.
#[derive(Debug)]
pub struct CreditPayments;

impl AggregateHandler for CreditPayments {
    type Message = PaymentReceived;
    type Aggregate = Account;

    fn stream(&self, payment: &PaymentReceived) -> Result<StreamId, InvalidStreamId> {
        StreamId::for_aggregate(Account::TYPE, &payment.account)
    }

    fn command(&self, payment: &PaymentReceived) -> AccountCommand {
        let (payment, cents) = (payment.payment.clone(), payment.cents);
        AccountCommand::Credit { payment, cents }
    }

    fn rejected(&self, payment: &PaymentReceived, error: &AccountError) -> Vec<OutboxMessage> {
        let (payment, account) = (payment.payment.clone(), payment.account.clone());
        let refused = PaymentRefused {
            payment,
            account,
            reason: error.to_string(),
        };
        encode_message(&refused).into_iter().collect()
    }
}
// ANCHOR_END: handler

// ANCHOR: projection
/// Balances by account, in the table `balances_v<version>`.
#[derive(Debug)]
pub struct Balances;

#[async_trait::async_trait]
impl Projection<PgProjectionTx> for Balances {
    fn name(&self) -> &str {
        "balances"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().stream_types([Account::TYPE])
    }

    async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
        let table = tx.table("balances");
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {table} (account text PRIMARY KEY, cents bigint NOT NULL)"
        );
        tx.client()
            .batch_execute(&sql)
            .await
            .map_err(ProjectionError::apply)
    }

    async fn apply(
        &self,
        tx: &mut PgProjectionTx,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let cents = event.data["cents"].as_i64().unwrap_or_default();
        let table = tx.table("balances");
        let sql = format!(
            "INSERT INTO {table} VALUES ($1, $2) \
             ON CONFLICT (account) DO UPDATE SET cents = {table}.cents + EXCLUDED.cents"
        );
        let account = event.stream_id.as_str();
        tx.client()
            .execute(&sql, &[&account, &cents])
            .await
            .map_err(ProjectionError::apply)?;
        Ok(())
    }
}
// ANCHOR_END: projection

/// Where the service runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub postgres: PgConfig,
    pub kafka: KafkaConfig,
    /// Prefixes every topic and the consumer group (deployments sharing a broker).
    pub prefix: String,
}

// ANCHOR: wiring
/// Runs the service until `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let store = PgEventStore::connect(&settings.postgres)?;
    store.migrate().await?;
    let accounts =
        Repository::<Account, _>::new(store.clone()).with_outbox(|stream, state, events| {
            let Some((_, metadata)) = events.last() else {
                return Vec::new();
            };
            let account = stream.as_str().trim_start_matches("account-").to_owned();
            let changed = AccountBalanceChanged {
                account,
                balance_cents: state.balance_cents,
            };
            encode_message(&changed)
                .map(|m| m.caused_by(metadata))
                .into_iter()
                .collect()
        });
    let handlers = HandlerRegistry::new()
        .on::<PaymentReceived>(accounts.message_handler("accounts", CreditPayments));

    let router = TopicRouter::new().with_fallback(format!("{}accounts", settings.prefix));
    let publisher = Arc::new(KafkaPublisher::new(&settings.kafka, router)?);
    let mut relay = Relay::new(
        "accounts",
        store.clone(),
        PgCheckpointStore::new(&store),
        publisher,
    )
    .with_signal(store.append_signal().clone());
    let consumer = KafkaConsumer::builder(settings.kafka.clone(), "accounts")
        .topic_prefix(&settings.prefix) // the group too: `<prefix>accounts`
        .subscribe(["payments"])
        .build()?;
    let mut payments = ConsumerRunner::new(consumer, handlers);
    let daemon = ProjectionDaemon::new(&store).register(Balances, ProjectionOptions::default())?;
    daemon.start()?;

    let (stop, stopped) = watch::channel(());
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move { while stopped.changed().await.is_ok() {} }
    };
    let (relayed, consumed, ()) = tokio::join!(
        relay.run(until_stopped()),
        payments.run(until_stopped()),
        async move {
            shutdown.await;
            drop(stop);
        },
    );
    daemon.shutdown().await;
    relayed?;
    consumed?;
    Ok(())
}
// ANCHOR_END: wiring

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let settings = Settings {
        postgres: PgConfig::from_env()?.schema("first_service"),
        kafka: KafkaConfig::from_env()?,
        prefix: String::new(),
    };
    run(settings, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
