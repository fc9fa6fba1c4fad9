//! The deadline store contract: every backend's tests run these properties against a fresh
//! store each (see [`deadline_contract_tests!`](crate::deadline_contract_tests)).
//!
//! Time never passes for real: every claim is made at a `now` the property chooses, and leases
//! are measured against it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::saga::{Deadline, DeadlineStore};

/// The lease every property claims with.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// The current time in whole seconds, so that it survives any backend's timestamp precision.
pub(crate) fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("a representable time")
}

pub(crate) fn seconds(seconds: i64) -> TimeDelta {
    TimeDelta::seconds(seconds)
}

fn saga_name(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// Claims at `now` and keeps the deadlines of `saga` (a backend's tests may share a store).
pub(crate) async fn claim<S: DeadlineStore>(
    store: &S,
    now: DateTime<Utc>,
    saga: &str,
) -> Vec<Deadline> {
    let mut claimed = store.claim_due(now, LEASE, 1000).await.expect("claim due");
    claimed.retain(|deadline| deadline.saga == saga);
    claimed
}

async fn schedule<S: DeadlineStore>(
    store: &S,
    saga: &str,
    step: &str,
    due_at: DateTime<Utc>,
) -> Deadline {
    let deadline = Deadline::new(saga, "key-1", step, due_at, json!({ "step": step }));
    store
        .schedule(deadline.clone())
        .await
        .expect("schedule a deadline");
    deadline
}

/// A due deadline is claimed, unchanged, and not claimed again while its lease runs.
pub async fn due_deadline_is_claimed_once<S: DeadlineStore>(store: S) {
    let saga = saga_name("once");
    let now = base_time();
    let deadline = schedule(&store, &saga, "awaiting-payment", now - seconds(1)).await;
    assert_eq!(claim(&store, now, &saga).await, vec![deadline]);
    assert_eq!(
        claim(&store, now + seconds(10), &saga).await,
        vec![],
        "a claimed deadline is not claimed again within its lease"
    );
}

/// A claimed deadline not completed is claimed again once its lease has expired.
pub async fn expired_claim_is_claimed_again<S: DeadlineStore>(store: S) {
    let saga = saga_name("lease");
    let now = base_time();
    let deadline = schedule(&store, &saga, "awaiting-payment", now).await;
    assert_eq!(claim(&store, now, &saga).await, vec![deadline.clone()]);
    let later = now + seconds(31);
    assert_eq!(
        claim(&store, later, &saga).await,
        vec![deadline.clone()],
        "a crashed scheduler's deadline is claimed again after the lease"
    );
    assert_eq!(claim(&store, later + seconds(1), &saga).await, vec![]);
}

/// A completed deadline is never claimed again; completing it twice reports it was done.
pub async fn completed_deadline_never_returns<S: DeadlineStore>(store: S) {
    let saga = saga_name("complete");
    let now = base_time();
    let deadline = schedule(&store, &saga, "awaiting-payment", now - seconds(5)).await;
    assert_eq!(claim(&store, now, &saga).await, vec![deadline.clone()]);
    assert!(store.complete(deadline.id).await.expect("complete"));
    assert!(!store.complete(deadline.id).await.expect("complete again"));
    assert_eq!(claim(&store, now + seconds(3600), &saga).await, vec![]);
}

/// A cancelled deadline is never claimed, whether it was claimed before or not; other steps
/// are untouched.
pub async fn cancelled_deadline_never_returns<S: DeadlineStore>(store: S) {
    let saga = saga_name("cancel");
    let now = base_time();
    schedule(&store, &saga, "awaiting-payment", now - seconds(5)).await;
    let kept = schedule(&store, &saga, "awaiting-stock", now + seconds(100)).await;
    let cancel = |step| store.cancel(&saga, "key-1", step);
    assert!(cancel("awaiting-payment").await.expect("cancel"));
    assert!(!cancel("awaiting-payment").await.expect("cancel again"));
    assert!(!cancel("never-set").await.expect("cancel a step never set"));
    assert_eq!(claim(&store, now, &saga).await, vec![]);

    let claimed = schedule(&store, &saga, "awaiting-shipment", now).await;
    assert_eq!(claim(&store, now, &saga).await, vec![claimed]);
    assert!(
        cancel("awaiting-shipment")
            .await
            .expect("cancel a claimed one")
    );
    assert_eq!(
        claim(&store, now + seconds(100), &saga).await,
        vec![kept],
        "only the deadline never cancelled fires"
    );
}

/// A deadline is not claimed before it is due, and is claimed at its due time.
pub async fn future_deadline_waits_until_due<S: DeadlineStore>(store: S) {
    let saga = saga_name("future");
    let now = base_time();
    let deadline = schedule(&store, &saga, "awaiting-payment", now + seconds(60)).await;
    assert_eq!(claim(&store, now, &saga).await, vec![]);
    assert_eq!(claim(&store, now + seconds(59), &saga).await, vec![]);
    assert_eq!(
        claim(&store, now + seconds(60), &saga).await,
        vec![deadline]
    );
}

/// Scheduling a step that has a deadline replaces it (and releases a claim on it).
pub async fn rescheduling_replaces<S: DeadlineStore>(store: S) {
    let saga = saga_name("reschedule");
    let now = base_time();
    let first = schedule(&store, &saga, "awaiting-payment", now + seconds(10)).await;
    let second = schedule(&store, &saga, "awaiting-payment", now + seconds(60)).await;
    assert_eq!(claim(&store, now + seconds(20), &saga).await, vec![]);
    assert_eq!(
        claim(&store, now + seconds(60), &saga).await,
        vec![second.clone()]
    );
    assert!(!store.complete(first.id).await.expect("complete replaced"));

    let claimed = schedule(&store, &saga, "awaiting-stock", now).await;
    assert_eq!(claim(&store, now + seconds(61), &saga).await, vec![claimed]);
    let replacement = schedule(&store, &saga, "awaiting-stock", now).await;
    assert_eq!(
        claim(&store, now + seconds(62), &saga).await,
        vec![replacement],
        "a replacement is claimable even while the deadline it replaced is claimed"
    );
}

/// Claims return at most `limit` deadlines, earliest due first.
pub async fn claims_respect_limit_and_order<S: DeadlineStore>(store: S) {
    let saga = saga_name("limit");
    let now = base_time();
    let late = schedule(&store, &saga, "c", now - seconds(1)).await;
    let early = schedule(&store, &saga, "a", now - seconds(3)).await;
    let middle = schedule(&store, &saga, "b", now - seconds(2)).await;
    let mut claimed = Vec::new();
    loop {
        let batch = store.claim_due(now, LEASE, 2).await.expect("claim due");
        assert!(batch.len() <= 2, "claimed more than the limit: {batch:?}");
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch.into_iter().filter(|deadline| deadline.saga == saga));
    }
    assert_eq!(claimed, vec![early, middle, late]);
}

/// Runs every property, each on a fresh store from `new_store`.
pub async fn run_all<S, F, Fut>(new_store: F)
where
    S: DeadlineStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    due_deadline_is_claimed_once(new_store().await).await;
    expired_claim_is_claimed_again(new_store().await).await;
    completed_deadline_never_returns(new_store().await).await;
    cancelled_deadline_never_returns(new_store().await).await;
    future_deadline_waits_until_due(new_store().await).await;
    rescheduling_replaces(new_store().await).await;
    claims_respect_limit_and_order(new_store().await).await;
}

/// Generates one `#[tokio::test]` per deadline-contract property; `$new_store` is an
/// expression evaluating to a future of a fresh store, evaluated once per test.
///
/// ```text
/// es_core::deadline_contract_tests!(fresh_pg_saga_store());
/// ```
#[macro_export]
macro_rules! deadline_contract_tests {
    ($new_store:expr) => {
        $crate::deadline_contract_tests!(@each $new_store;
            due_deadline_is_claimed_once,
            expired_claim_is_claimed_again,
            completed_deadline_never_returns,
            cancelled_deadline_never_returns,
            future_deadline_waits_until_due,
            rescheduling_replaces,
            claims_respect_limit_and_order
        );
    };
    (@each $new_store:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::deadline_contract::$property($new_store.await).await;
            }
        )+
    };
}
