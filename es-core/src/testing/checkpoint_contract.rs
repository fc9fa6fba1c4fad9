//! The checkpoint contract: every backend's tests run these properties against a fresh store
//! each (see [`checkpoint_contract_tests!`](crate::checkpoint_contract_tests)).

use futures::future::join_all;
use uuid::Uuid;

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::ids::Position;

fn name(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

async fn load<S: CheckpointStore>(store: &S, name: &str) -> Option<Position> {
    store.load_checkpoint(name).await.expect("load checkpoint")
}

fn assert_stale(
    result: Result<(), CheckpointError>,
    name: &str,
    expected: Option<Position>,
    actual: Option<Position>,
) {
    match result {
        Err(CheckpointError::Stale {
            name: stale_name,
            expected: stale_expected,
            actual: stale_actual,
        }) => {
            assert_eq!(stale_name, name);
            assert_eq!(stale_expected, expected);
            assert_eq!(stale_actual, actual);
        }
        other => panic!("expected a stale checkpoint error, got {other:?}"),
    }
}

/// A checkpoint never written loads as `None` and is first set by expecting `None`; expecting
/// `None` again then fails.
pub async fn first_set_expects_none<S: CheckpointStore>(store: S) {
    let name = name("first");
    assert_eq!(load(&store, &name).await, None);
    let first = Position::new(1, 10);
    store
        .compare_and_set_checkpoint(&name, None, first)
        .await
        .expect("set from None");
    assert_eq!(load(&store, &name).await, Some(first));
    let result = store
        .compare_and_set_checkpoint(&name, None, Position::new(2, 20))
        .await;
    assert_stale(result, &name, None, Some(first));
    assert_eq!(load(&store, &name).await, Some(first));
}

/// A checkpoint moves from the value it holds, any number of times, without touching others.
pub async fn set_from_current_value<S: CheckpointStore>(store: S) {
    let (name, other) = (name("current"), name("other"));
    let positions = [
        Position::new(1, 10),
        Position::new(2, 11),
        Position::new(3, 5),
    ];
    let mut expected = None;
    for position in positions {
        store
            .compare_and_set_checkpoint(&name, expected, position)
            .await
            .expect("set from the current value");
        assert_eq!(load(&store, &name).await, Some(position));
        expected = Some(position);
    }
    assert_eq!(load(&store, &other).await, None, "names are independent");
}

/// A compare-and-set from a stale value fails with `Stale`, carrying the stored value, and
/// leaves the checkpoint unchanged.
pub async fn stale_set_fails_and_changes_nothing<S: CheckpointStore>(store: S) {
    let name = name("stale");
    let (first, second) = (Position::new(1, 1), Position::new(2, 2));
    store
        .compare_and_set_checkpoint(&name, None, first)
        .await
        .expect("first set");
    store
        .compare_and_set_checkpoint(&name, Some(first), second)
        .await
        .expect("second set");
    let result = store
        .compare_and_set_checkpoint(&name, Some(first), Position::new(3, 3))
        .await;
    assert_stale(result, &name, Some(first), Some(second));
    assert_eq!(load(&store, &name).await, Some(second));

    let missing = self::name("missing");
    let result = store
        .compare_and_set_checkpoint(&missing, Some(first), second)
        .await;
    assert_stale(result, &missing, Some(first), None);
    assert_eq!(load(&store, &missing).await, None);
}

/// Concurrent compare-and-sets from the same value: exactly one wins.
pub async fn concurrent_sets_have_one_winner<S: CheckpointStore>(store: S) {
    let name = name("race");
    let start = Position::new(1, 1);
    store
        .compare_and_set_checkpoint(&name, None, start)
        .await
        .expect("first set");
    let attempts =
        (2..6).map(|n| store.compare_and_set_checkpoint(&name, Some(start), Position::new(n, n)));
    let results = join_all(attempts).await;
    assert_eq!(
        results.iter().filter(|result| result.is_ok()).count(),
        1,
        "exactly one concurrent compare-and-set wins: {results:?}"
    );
    let winner = (2..6)
        .zip(&results)
        .find_map(|(n, result)| result.is_ok().then(|| Position::new(n, n)));
    assert_eq!(load(&store, &name).await, winner);
}

/// Runs every property, each on a fresh store from `new_store`.
pub async fn run_all<S, F, Fut>(new_store: F)
where
    S: CheckpointStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    first_set_expects_none(new_store().await).await;
    set_from_current_value(new_store().await).await;
    stale_set_fails_and_changes_nothing(new_store().await).await;
    concurrent_sets_have_one_winner(new_store().await).await;
}

/// Generates one `#[tokio::test]` per checkpoint-contract property; `$new_store` is an
/// expression evaluating to a future of a fresh store, evaluated once per test.
///
/// ```text
/// es_core::checkpoint_contract_tests!(fresh_pg_checkpoints());
/// ```
#[macro_export]
macro_rules! checkpoint_contract_tests {
    ($new_store:expr) => {
        $crate::checkpoint_contract_tests!(@each $new_store;
            first_set_expects_none,
            set_from_current_value,
            stale_set_fails_and_changes_nothing,
            concurrent_sets_have_one_winner
        );
    };
    (@each $new_store:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::checkpoint_contract::$property($new_store.await).await;
            }
        )+
    };
}
