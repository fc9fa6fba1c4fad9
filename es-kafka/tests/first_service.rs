//! The first service of `docs/first-service.md` (`examples/first_service.rs`), run on
//! PostgreSQL and the broker: every payment message is published twice, each account is
//! credited once per payment, the balances read model and the announced messages agree, and
//! each account's last statement (sent by the saga once the balance stays still) carries its
//! final balance.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

#[path = "../examples/first_service.rs"]
mod first_service;

use std::collections::HashMap;
use std::time::Duration;

use es_core::{Consumer, MessageType, encode_message};
use es_kafka::KafkaConfig;
use es_postgres::PgConfig;
use first_service::{
    AccountBalanceChanged, PaymentReceived, PaymentRefused, SendStatement, Settings,
};
use support::outbox as ob;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_published_twice_credit_each_account_once() {
    let bootstrap = support::shared_bootstrap_servers();
    let prefix = format!("{}.", support::unique("first"));
    support::create_topic(&bootstrap, &format!("{prefix}payments"), 4).await;
    support::create_topic(&bootstrap, &format!("{prefix}accounts"), 4).await;
    support::create_topic(&bootstrap, &format!("{prefix}statements"), 2).await;
    let store = ob::fresh_store().await;
    let schema = store.schema().to_owned();
    let settings = Settings {
        postgres: PgConfig::new(es_postgres::database_url().unwrap()).schema(&schema),
        kafka: KafkaConfig::new(&bootstrap)
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500"),
        prefix: prefix.clone(),
    };
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut payments = Vec::new();
    for n in 0..30_u64 {
        let account = format!("acc-{}", n % 3);
        // Every tenth payment is of zero cents: the account refuses it, and says so.
        let cents = if n % 10 == 9 { 0 } else { 100 + n };
        *expected.entry(format!("account-{account}")).or_default() += cents as i64;
        let payment = PaymentReceived {
            payment: format!("pay-{n}"),
            account,
            cents,
        };
        let message = encode_message(&payment)
            .unwrap()
            .with_topic(format!("{prefix}payments"));
        payments.push(message);
    }
    // The readers of the announced messages and of the statements start first, so that their
    // groups' joins (half a session on the test broker: docs/kafka.md) run while the service
    // starts.
    let announced = tokio::spawn({
        let (bootstrap, topic) = (bootstrap.clone(), format!("{prefix}accounts"));
        async move { ob::consume(&bootstrap, &topic, 30, Duration::from_secs(120)).await }
    });
    let statements = tokio::spawn(last_statements(
        bootstrap.clone(),
        format!("{prefix}statements"),
        expected.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(first_service::run(settings, async {
        let _ = stopped.await;
    }));

    for batch in payments.chunks(10) {
        support::publish(&bootstrap, batch).await;
        support::publish(&bootstrap, batch).await;
    }

    let client = store.pool().get().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = client
            .query(
                &format!("SELECT account, cents FROM \"{schema}\".balances_v1"),
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
                    .collect::<HashMap<_, _>>()
            })
            .unwrap_or_default();
        if rows == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "balances {rows:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The saga sends each account's statement a second after its last change.
    let statements = statements.await.unwrap();
    assert!(
        statements >= 3,
        "at least one statement per account: {statements}"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("the service stops when told")
        .unwrap()
        .unwrap();
    let announced = announced.await.unwrap();
    let changed = announced
        .iter()
        .filter(|m| m.message_type == AccountBalanceChanged::MESSAGE_TYPE)
        .count();
    let refused = announced
        .iter()
        .filter(|m| m.message_type == PaymentRefused::MESSAGE_TYPE)
        .count();
    assert_eq!(
        (changed, refused),
        (27, 3),
        "one message per payment: {announced:?}"
    );
}

/// Reads the statements until each account's latest one carries its balance in `expected`
/// (keyed `account-<id>`), failing after a minute; returns how many statements arrived.
async fn last_statements(
    bootstrap: String,
    topic: String,
    expected: HashMap<String, i64>,
) -> usize {
    let mut reader = support::consumer(&bootstrap, &support::unique("statements"), &[&topic]);
    let mut latest: HashMap<String, i64> = HashMap::new();
    let mut count = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while latest != expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let delivery = tokio::time::timeout(left, reader.recv())
            .await
            .unwrap_or_else(|_| panic!("statements {latest:?}, expected {expected:?}"))
            .unwrap();
        let statement: SendStatement = es_core::decode_message(&delivery.message).unwrap().unwrap();
        count += 1;
        let cents = i64::try_from(statement.balance_cents).unwrap();
        latest.insert(format!("account-{}", statement.account), cents);
    }
    count
}
