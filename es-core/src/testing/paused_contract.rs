//! The paused-partitions contract: every backend's tests run these properties against a fresh
//! store each (see [`paused_partitions_contract_tests!`](crate::paused_partitions_contract_tests)).

use uuid::Uuid;

use crate::paused::{PausedPartition, PausedPartitions};

fn group(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

async fn list<S: PausedPartitions>(store: &S, group: &str) -> Vec<PausedPartition> {
    let mut paused = store.list(group).await.expect("list paused partitions");
    paused.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    paused
}

/// A paused partition is listed with everything recorded about it (the time to the
/// microsecond), for its group only.
pub async fn pause_is_listed_for_its_group<S: PausedPartitions>(store: S) {
    let (billing, shipping) = (group("billing"), group("shipping"));
    assert!(list(&store, &billing).await.is_empty());
    let paused = PausedPartition::new(
        &billing,
        "shop.order",
        3,
        41,
        Uuid::new_v4(),
        "the database is down: 'quoted' \"text\" ✓",
    );
    store.pause(paused.clone()).await.expect("pause");
    let listed = list(&store, &billing).await;
    assert_eq!(listed.len(), 1);
    let got = &listed[0];
    assert_eq!(
        (&got.group, &got.topic, got.partition, got.offset),
        (&paused.group, &paused.topic, 3, 41)
    );
    assert_eq!(
        (got.message_id, &got.reason),
        (paused.message_id, &paused.reason)
    );
    let drift = (got.paused_at - paused.paused_at).num_microseconds();
    assert!(
        drift.is_some_and(|d| d.abs() <= 1),
        "paused_at kept: {} against {}",
        got.paused_at,
        paused.paused_at
    );
    assert!(
        list(&store, &shipping).await.is_empty(),
        "other groups see nothing"
    );
}

/// Pausing a partition again replaces its record; other partitions keep theirs.
pub async fn pausing_again_replaces_the_record<S: PausedPartitions>(store: S) {
    let group = group("replace");
    let first = PausedPartition::new(&group, "orders", 0, 10, Uuid::new_v4(), "first");
    let other = PausedPartition::new(&group, "orders", 1, 7, Uuid::new_v4(), "other");
    let again = PausedPartition::new(&group, "orders", 0, 12, Uuid::new_v4(), "again");
    for paused in [first, other.clone(), again.clone()] {
        store.pause(paused).await.expect("pause");
    }
    let listed = list(&store, &group).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].offset, &listed[0].reason, listed[0].message_id),
        (12, &again.reason, again.message_id)
    );
    assert_eq!((listed[1].partition, listed[1].offset), (1, other.offset));
}

/// Resuming removes exactly that partition's record; resuming one that is not paused is not
/// an error.
pub async fn resume_removes_only_that_partition<S: PausedPartitions>(store: S) {
    let group = group("resume");
    for (topic, partition) in [("orders", 0), ("orders", 1), ("payments", 0)] {
        let paused = PausedPartition::new(&group, topic, partition, 5, Uuid::new_v4(), "down");
        store.pause(paused).await.expect("pause");
    }
    store.resume(&group, "orders", 0).await.expect("resume");
    let left: Vec<(String, u32)> = list(&store, &group)
        .await
        .into_iter()
        .map(|p| (p.topic, p.partition))
        .collect();
    assert_eq!(left, [("orders".to_owned(), 1), ("payments".to_owned(), 0)]);
    store
        .resume(&group, "orders", 0)
        .await
        .expect("resuming twice is fine");
    store
        .resume(&group, "unknown", 9)
        .await
        .expect("resuming what was never paused is fine");
    assert_eq!(list(&store, &group).await.len(), 2);
}

/// Generates one `#[tokio::test]` per paused-partitions contract property; `$new_store` is an
/// expression (usually an `async` call) evaluated afresh for each test, yielding a
/// [`PausedPartitions`].
///
/// ```text
/// es_core::paused_partitions_contract_tests!(async { MemoryPausedPartitions::new() });
/// ```
#[macro_export]
macro_rules! paused_partitions_contract_tests {
    ($new_store:expr) => {
        $crate::paused_partitions_contract_tests!(@each $new_store;
            pause_is_listed_for_its_group,
            pausing_again_replaces_the_record,
            resume_removes_only_that_partition
        );
    };
    (@each $new_store:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::paused_contract::$property($new_store.await).await;
            }
        )+
    };
}
