//! The es-core paused-partitions contract against PostgreSQL, and pauses kept across a
//! restart of the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::{PausedPartition, PausedPartitions};
use es_postgres::{PgEventStore, PgPausedPartitions};

async fn fresh() -> PgPausedPartitions {
    common::fresh_store().await.paused_partitions()
}

es_core::paused_partitions_contract_tests!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_survives_a_new_pool_and_offsets_beyond_bigint_are_refused() {
    let store = common::fresh_store().await;
    let message_id = uuid::Uuid::new_v4();
    store
        .paused_partitions()
        .pause(PausedPartition::new(
            "billing", "orders", 2, 17, message_id, "down",
        ))
        .await
        .unwrap();
    let reopened = PgEventStore::connect(
        &es_postgres::PgConfig::new(common::database_url()).schema(store.schema()),
    )
    .unwrap();
    let listed = reopened.paused_partitions().list("billing").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].offset, listed[0].message_id), (17, message_id));

    let too_far = PausedPartition::new("billing", "orders", 3, u64::MAX, message_id, "down");
    let refused = reopened.paused_partitions().pause(too_far).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        reopened
            .paused_partitions()
            .list("billing")
            .await
            .unwrap()
            .len(),
        1
    );
}
