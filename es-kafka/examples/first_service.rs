//! A first service on PostgreSQL and Kafka: it credits accounts for the payments another
//! service announces on Kafka, exactly once however often a payment message arrives, tells
//! the world through its outbox, keeps a table of balances with the projection daemon, and
//! sends each account a statement once its balance has stayed still for a second (a saga
//! with a deadline).
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

use chrono::TimeDelta;
use es_core::relay::Relay;
use es_core::runtime::{LeaderOnly, Runtime};
use es_core::{
    Aggregate, AggregateHandler, DomainEvent, HandlerRegistry, InvalidStreamId, LogFilter,
    MessageType, Metadata, OutboxMessage, Projection, ProjectionError, RecordedEvent, Repository,
    StreamId, encode_message,
};
use es_kafka::{ConsumerRunner, KafkaConfig, KafkaConsumer, KafkaPublisher, TopicRouter};
use es_postgres::{
    PgCheckpointStore, PgConfig, PgEventStore, PgProjectionTx, ProjectionDaemon, ProjectionOptions,
};
use es_saga::{CodecError, DeadlineScheduler, Decision, Input, Route, Saga, SagaRunner};
use serde::{Deserialize, Serialize};

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

// ANCHOR: saga
/// The command the statements saga sends, on the `statements` topic.
#[derive(Debug, Serialize, Deserialize, MessageType)]
#[serde(rename = "SendStatement")]
#[message(key = "account")]
pub struct SendStatement {
    pub account: String,
    pub balance_cents: u64,
}

/// Sends an account its statement once its balance has stayed still for a second: each
/// change sets the `quiet` deadline again (replacing the one before), and the deadline that
/// fires sends the statement.
#[derive(Debug)]
pub struct Statements;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Statement {
    pub balance_cents: u64,
}

impl Saga for Statements {
    const NAME: &'static str = "statements";
    type State = Statement;
    type Error = CodecError;

    fn route(&self, message: &OutboxMessage) -> Route {
        match message.message_type.as_str() {
            AccountBalanceChanged::MESSAGE_TYPE => Route::Start(message.partition_key.clone()),
            _ => Route::Ignore,
        }
    }

    fn handle(
        &self,
        state: Statement,
        input: &Input<'_>,
    ) -> Result<Decision<Statement>, CodecError> {
        if let Some(changed) = input.decode::<AccountBalanceChanged>()? {
            let state = Statement {
                balance_cents: changed.balance_cents,
            };
            return Ok(Decision::new(state).set_deadline("quiet", TimeDelta::seconds(1)));
        }
        // The `quiet` deadline fired: no change for a second.
        let statement = SendStatement {
            account: input.key.to_owned(),
            balance_cents: state.balance_cents,
        };
        Decision::new(state).command(&statement)
    }
}
// ANCHOR_END: saga

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
    let prefix = &settings.prefix;
    let accounts = Repository::<Account, _>::new(store.clone()).with_outbox(announce_balance);
    let statements = SagaRunner::new(Statements, store.saga_store())
        .with_command_topic(format!("{prefix}statements"));
    let handlers = HandlerRegistry::new()
        .on::<PaymentReceived>(accounts.message_handler("accounts", CreditPayments))
        .on::<AccountBalanceChanged>(statements.clone())
        .ignore::<PaymentRefused>();
    let consumer = KafkaConsumer::builder(settings.kafka.clone(), "accounts")
        .topic_prefix(prefix) // the group too: `<prefix>accounts`
        .subscribe(["payments", "accounts"])
        .build()?;
    let router = TopicRouter::new().with_fallback(format!("{prefix}accounts"));
    let publisher = Arc::new(KafkaPublisher::new(&settings.kafka, router)?);
    let checkpoints = PgCheckpointStore::new(&store);
    let relay = Relay::new("accounts", store.clone(), checkpoints, publisher)
        .with_signal(store.append_signal().clone());
    let daemon = ProjectionDaemon::new(&store).register(Balances, ProjectionOptions::default())?;
    let scheduler = DeadlineScheduler::new(store.saga_store()).register(statements);

    let running = Runtime::new()
        .service(LeaderOnly::new(store.leases(), relay)) // one relay per outbox
        .service(ConsumerRunner::new(consumer, handlers))
        .service(daemon)
        .service(scheduler)
        .start();
    for stopped in running.run_until(shutdown).await {
        tracing::info!(service = %stopped.name, state = ?stopped.state, "stopped");
    }
    Ok(())
}

/// The outbox message of a command: the account's new balance.
fn announce_balance(
    stream: &StreamId,
    account: &Account,
    events: &[(AccountEvent, Metadata)],
) -> Vec<OutboxMessage> {
    let Some((_, metadata)) = events.last() else {
        return Vec::new();
    };
    let changed = AccountBalanceChanged {
        account: stream.as_str().trim_start_matches("account-").to_owned(),
        balance_cents: account.balance_cents,
    };
    let message = encode_message(&changed).map(|m| m.caused_by(metadata));
    message.into_iter().collect()
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
