//! A store runs as a role that owns its schema and nothing else: it migrates a schema made for
//! it beforehand without the right to create schemas, and a role cannot read another role's
//! schema (services split apart, each with its own role).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::{AppendRequest, EventStore, ExpectedVersion, StreamId};
use es_postgres::{PgConfig, PgEventStore};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// `DATABASE_URL` with `role` as its user (no password: the test server trusts loopback).
fn url_as(role: &str) -> String {
    let url = common::database_url();
    let (scheme, rest) = url.split_once("://").expect("DATABASE_URL is a URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

async fn connect_as(role: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url_as(role), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting as {role}: {e}"));
    tokio::spawn(connection);
    client
}

/// A login role owning one fresh schema; dropped with it at the end.
struct Owned {
    role: String,
    schema: String,
}

async fn owned(admin: &tokio_postgres::Client, name: &str) -> Owned {
    let id = Uuid::new_v4().simple().to_string();
    let owned = Owned {
        role: format!("es_test_role_{id}_{name}"),
        schema: format!("es_test_{id}_{name}"),
    };
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN; CREATE SCHEMA \"{schema}\" AUTHORIZATION \"{role}\";",
            role = owned.role,
            schema = owned.schema
        ))
        .await
        .unwrap();
    owned
}

async fn drop_owned(admin: &tokio_postgres::Client, owned: &Owned) {
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; DROP OWNED BY \"{role}\"; DROP ROLE IF EXISTS \"{role}\";",
            role = owned.role,
            schema = owned.schema
        ))
        .await
        .unwrap();
}

fn store_as(owned: &Owned, schema: &str) -> PgEventStore {
    PgEventStore::connect(
        &PgConfig::new(url_as(&owned.role))
            .schema(schema)
            .pool_size(2),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_migrates_its_own_schema_and_cannot_read_another() {
    let admin = common::raw_client().await;
    let (orders, customers) = (
        owned(&admin, "orders").await,
        owned(&admin, "customers").await,
    );

    // The role may not create schemas: only use the one made for it.
    let as_orders = connect_as(&orders.role).await;
    let refused = as_orders
        .batch_execute(&format!("CREATE SCHEMA \"{}_more\"", orders.schema))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    // Each store migrates its schema as its owner, and works.
    let orders_store = store_as(&orders, &orders.schema);
    orders_store.migrate().await.unwrap();
    let customers_store = store_as(&customers, &customers.schema);
    customers_store.migrate().await.unwrap();
    let stream = StreamId::new("customer-7").unwrap();
    customers_store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_stream_type("customer")
                .with_events([common::event(1)]),
        )
        .await
        .unwrap();

    // The orders role cannot read the customers' tables, nor use their schema's functions.
    for sql in [
        format!("SELECT count(*) FROM \"{}\".events", customers.schema),
        format!("SELECT count(*) FROM \"{}\".outbox", customers.schema),
    ] {
        let error = as_orders.query(&sql, &[]).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}"
        );
    }
    let trespassing = store_as(&orders, &customers.schema);
    assert!(trespassing.stream_version(&stream).await.is_err());
    let appended = trespassing
        .append(
            AppendRequest::new(
                StreamId::new("customer-8").unwrap(),
                ExpectedVersion::NoStream,
            )
            .with_stream_type("customer")
            .with_events([common::event(1)]),
        )
        .await;
    assert!(appended.is_err(), "{appended:?}");
    // Its owner still reads it.
    assert_eq!(
        customers_store.stream_version(&stream).await.unwrap(),
        es_core::Version::new(1)
    );

    drop(orders_store);
    drop(customers_store);
    drop(trespassing);
    drop(as_orders);
    drop_owned(&admin, &orders).await;
    drop_owned(&admin, &customers).await;
}
