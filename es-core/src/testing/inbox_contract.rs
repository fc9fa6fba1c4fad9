//! The inbox contract: every backend's tests run these properties against a fresh inbox each
//! (see [`inbox_contract_tests!`](crate::inbox_contract_tests)).
//!
//! The properties that hold a transaction open while another waits need a Tokio runtime with
//! timers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::join_all;
use uuid::Uuid;

use crate::inbox::Inbox;

/// How long a property lets a second transaction wait before ending the first.
const HOLD: Duration = Duration::from_millis(100);

fn subscriber(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

async fn record_and_commit<I: Inbox>(inbox: &I, subscriber: &str, message_id: Uuid) -> bool {
    let mut tx = inbox.begin().await.expect("begin");
    let new = inbox
        .record(&mut tx, subscriber, message_id)
        .await
        .expect("record");
    inbox.commit(tx).await.expect("commit");
    new
}

/// Recording the same (subscriber, message id) twice reports a duplicate, within one
/// transaction and in later transactions once it committed.
pub async fn duplicate_is_reported<I: Inbox>(inbox: I) {
    let subscriber = subscriber("dup");
    let message_id = Uuid::now_v7();
    let mut tx = inbox.begin().await.expect("begin");
    assert!(
        inbox
            .record(&mut tx, &subscriber, message_id)
            .await
            .expect("record"),
        "a first record is new"
    );
    assert!(
        !inbox
            .record(&mut tx, &subscriber, message_id)
            .await
            .expect("record again"),
        "a second record in the same transaction is a duplicate"
    );
    inbox.commit(tx).await.expect("commit");
    assert!(
        !record_and_commit(&inbox, &subscriber, message_id).await,
        "a record committed earlier is a duplicate"
    );
    assert!(
        record_and_commit(&inbox, &subscriber, Uuid::now_v7()).await,
        "another message id is new"
    );
}

/// The same message id recorded for another subscriber is new.
pub async fn subscribers_are_independent<I: Inbox>(inbox: I) {
    let (billing, shipping) = (subscriber("billing"), subscriber("shipping"));
    let message_id = Uuid::now_v7();
    assert!(record_and_commit(&inbox, &billing, message_id).await);
    assert!(
        record_and_commit(&inbox, &shipping, message_id).await,
        "each subscriber handles every message once"
    );
    assert!(!record_and_commit(&inbox, &shipping, message_id).await);
}

/// A transaction dropped without commit records nothing: recording again is new.
pub async fn rollback_records_nothing<I: Inbox>(inbox: I) {
    let subscriber = subscriber("rollback");
    let message_id = Uuid::now_v7();
    let mut tx = inbox.begin().await.expect("begin");
    assert!(
        inbox
            .record(&mut tx, &subscriber, message_id)
            .await
            .expect("record")
    );
    drop(tx);
    assert!(
        record_and_commit(&inbox, &subscriber, message_id).await,
        "a rolled-back record is not kept"
    );
    assert!(!record_and_commit(&inbox, &subscriber, message_id).await);
}

/// Holds a transaction that recorded a pair open while a second transaction records the same
/// pair, checks that the second waits, then commits (or rolls back) the first; returns what
/// the second recorded.
async fn second_record_while_first_open<I: Inbox>(inbox: &I, commit_first: bool) -> bool {
    let subscriber = subscriber("wait");
    let message_id = Uuid::now_v7();
    let mut first = inbox.begin().await.expect("begin first");
    assert!(
        inbox
            .record(&mut first, &subscriber, message_id)
            .await
            .expect("record first")
    );
    let second_done = AtomicBool::new(false);
    let second = async {
        let mut tx = inbox.begin().await.expect("begin second");
        let new = inbox
            .record(&mut tx, &subscriber, message_id)
            .await
            .expect("record second");
        second_done.store(true, Ordering::SeqCst);
        inbox.commit(tx).await.expect("commit second");
        new
    };
    let end_first = async {
        tokio::time::sleep(HOLD).await;
        assert!(
            !second_done.load(Ordering::SeqCst),
            "recording a pair another open transaction holds must wait for it"
        );
        if commit_first {
            inbox.commit(first).await.expect("commit first");
        } else {
            drop(first);
        }
    };
    let (new, ()) = futures::join!(second, end_first);
    new
}

/// A second transaction recording a pair an open transaction holds waits; when the first
/// commits, the second reports a duplicate.
pub async fn waiting_record_sees_commit<I: Inbox>(inbox: I) {
    assert!(
        !second_record_while_first_open(&inbox, true).await,
        "after the holder commits, the waiting record is a duplicate"
    );
}

/// A second transaction recording a pair an open transaction holds waits; when the first
/// rolls back, the second records it.
pub async fn waiting_record_proceeds_after_rollback<I: Inbox>(inbox: I) {
    assert!(
        second_record_while_first_open(&inbox, false).await,
        "after the holder rolls back, the waiting record is new"
    );
}

/// Concurrent transactions recording the same pair: exactly one records it.
pub async fn concurrent_records_have_one_winner<I: Inbox>(inbox: I) {
    let subscriber = subscriber("race");
    let message_id = Uuid::now_v7();
    let attempts = (0..4).map(|_| async {
        let mut tx = inbox.begin().await.expect("begin");
        let new = inbox
            .record(&mut tx, &subscriber, message_id)
            .await
            .expect("record");
        tokio::task::yield_now().await;
        inbox.commit(tx).await.expect("commit");
        new
    });
    let results = join_all(attempts).await;
    assert_eq!(
        results.iter().filter(|new| **new).count(),
        1,
        "exactly one concurrent record is new: {results:?}"
    );
}

/// Runs every property, each on a fresh inbox from `new_inbox`.
pub async fn run_all<I, F, Fut>(new_inbox: F)
where
    I: Inbox,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = I>,
{
    duplicate_is_reported(new_inbox().await).await;
    subscribers_are_independent(new_inbox().await).await;
    rollback_records_nothing(new_inbox().await).await;
    waiting_record_sees_commit(new_inbox().await).await;
    waiting_record_proceeds_after_rollback(new_inbox().await).await;
    concurrent_records_have_one_winner(new_inbox().await).await;
}

/// Generates one `#[tokio::test]` per inbox-contract property; `$new_inbox` is an expression
/// evaluating to a future of a fresh inbox, evaluated once per test.
///
/// ```text
/// es_core::inbox_contract_tests!(fresh_pg_inbox());
/// ```
#[macro_export]
macro_rules! inbox_contract_tests {
    ($new_inbox:expr) => {
        $crate::inbox_contract_tests!(@each $new_inbox;
            duplicate_is_reported,
            subscribers_are_independent,
            rollback_records_nothing,
            waiting_record_sees_commit,
            waiting_record_proceeds_after_rollback,
            concurrent_records_have_one_winner
        );
    };
    (@each $new_inbox:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::inbox_contract::$property($new_inbox.await).await;
            }
        )+
    };
}
