//! Migrations: explicit, idempotent, and safe when several processes migrate at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::{AppendRequest, EventStore, ExpectedVersion, Version};
use es_postgres::{LATEST_MIGRATION, PgConfig, PgError, PgEventStore};

fn every_migration() -> Vec<i32> {
    (1..=LATEST_MIGRATION).collect()
}

fn store_in(schema: &str) -> PgEventStore {
    PgEventStore::connect(
        &PgConfig::new(common::database_url())
            .schema(schema)
            .pool_size(2),
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

async fn applied_versions(schema: &str) -> Vec<(i32, i64)> {
    common::raw_client()
        .await
        .query(
            &format!(
                "SELECT version, count(*) FROM \"{schema}\".schema_versions GROUP BY version ORDER BY version"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_everything_once_then_nothing() {
    let schema = common::schema_name();
    let store = store_in(&schema);
    assert_eq!(
        store.migrate().await.expect("first migrate"),
        every_migration()
    );
    assert_eq!(
        store.migrate().await.expect("second migrate"),
        Vec::<i32>::new()
    );
    let once: Vec<(i32, i64)> = every_migration().into_iter().map(|v| (v, 1)).collect();
    assert_eq!(applied_versions(&schema).await, once);

    // A second store on the same schema finds nothing to do and works.
    let other = store_in(&schema);
    assert_eq!(other.migrate().await.unwrap(), Vec::<i32>::new());
    let stream = common::stream("migrated");
    let outcome = other
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([common::event(1)]),
        )
        .await
        .expect("append after migrating");
    assert_eq!(outcome.last_version, Version::new(1));
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        Version::new(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_of_one_schema_apply_each_migration_once() {
    let schema = common::schema_name();
    let stores: Vec<PgEventStore> = (0..4).map(|_| store_in(&schema)).collect();
    let results = futures::future::join_all(stores.iter().map(|store| store.migrate())).await;
    let mut applied = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        let versions = result.unwrap_or_else(|error| panic!("migrate #{i} failed: {error}"));
        applied.extend(versions);
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        every_migration(),
        "together the calls applied each migration exactly once"
    );
    let once: Vec<(i32, i64)> = every_migration().into_iter().map(|v| (v, 1)).collect();
    assert_eq!(applied_versions(&schema).await, once);
    for store in &stores {
        assert_eq!(store.migrate().await.unwrap(), Vec::<i32>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schema_name_is_refused_before_any_sql() {
    for name in [
        "",
        "1abc",
        "a-b",
        "x\"; DROP SCHEMA public; --",
        &"s".repeat(64),
    ] {
        let error = PgEventStore::connect(&PgConfig::new(common::database_url()).schema(name))
            .expect_err("an invalid schema name");
        assert!(
            matches!(error, PgError::InvalidSchema(ref refused) if refused == name),
            "{name:?}: {error}"
        );
    }
}
