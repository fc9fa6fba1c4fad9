//! The key-store contract: every [`KeyStore`] runs these properties against a fresh store
//! each (see [`key_store_contract_tests!`](crate::key_store_contract_tests)).

use std::sync::Arc;

use futures::future::join_all;
use uuid::Uuid;

use crate::privacy::{KeyStore, SubjectId};

fn subject() -> SubjectId {
    SubjectId::from_uuid(Uuid::new_v4())
}

/// A subject's first key is made on first use, is version 1, and is the same key afterwards;
/// two subjects never share a key.
pub async fn a_key_is_made_once_per_subject<S: KeyStore>(store: S) {
    let (ada, bob) = (subject(), subject());
    assert_eq!(store.key(&ada, 1).await.expect("key"), None);
    let first = store
        .current_key(&ada)
        .await
        .expect("current")
        .expect("a key");
    assert_eq!(first.version(), 1);
    let again = store
        .current_key(&ada)
        .await
        .expect("current")
        .expect("a key");
    assert_eq!(again, first);
    assert_eq!(store.key(&ada, 1).await.expect("key"), Some(first.clone()));
    let other = store
        .current_key(&bob)
        .await
        .expect("current")
        .expect("a key");
    assert_ne!(other.bytes(), first.bytes());
    assert!(!store.is_forgotten(&ada).await.expect("is forgotten"));
}

/// Many first uses at once agree on one key.
pub async fn concurrent_first_uses_agree_on_one_key<S: KeyStore>(store: S) {
    let ada = subject();
    let store = Arc::new(store);
    let keys = join_all((0..8).map(|_| {
        let (store, ada) = (store.clone(), ada.clone());
        async move {
            store
                .current_key(&ada)
                .await
                .expect("current")
                .expect("a key")
        }
    }))
    .await;
    assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
    assert_eq!(keys[0].version(), 1);
}

/// Rotation makes a new current version; older versions stay readable.
pub async fn rotation_keeps_older_versions<S: KeyStore>(store: S) {
    let ada = subject();
    let first = store
        .current_key(&ada)
        .await
        .expect("current")
        .expect("a key");
    let second = store.rotate(&ada).await.expect("rotate").expect("a key");
    assert_eq!(second.version(), 2);
    assert_ne!(second.bytes(), first.bytes());
    assert_eq!(
        store.current_key(&ada).await.expect("current"),
        Some(second.clone())
    );
    assert_eq!(store.key(&ada, 1).await.expect("key"), Some(first));
    assert_eq!(store.key(&ada, 2).await.expect("key"), Some(second));
}

/// Forgetting destroys every version, for good: no key is made for the subject again, and
/// forgetting again reports the first forgetting. Other subjects keep theirs.
pub async fn forgetting_destroys_every_version_for_good<S: KeyStore>(store: S) {
    let (ada, bob) = (subject(), subject());
    store.current_key(&ada).await.expect("current");
    store.rotate(&ada).await.expect("rotate");
    let bobs = store.current_key(&bob).await.expect("current");
    let forgetting = store.forget(&ada, "operator-1").await.expect("forget");
    assert_eq!(forgetting.subject, ada);
    assert_eq!(forgetting.by, "operator-1");
    assert!(!forgetting.already);
    assert!(store.is_forgotten(&ada).await.expect("is forgotten"));
    for version in [1, 2] {
        assert_eq!(store.key(&ada, version).await.expect("key"), None);
    }
    assert_eq!(store.current_key(&ada).await.expect("current"), None);
    assert_eq!(store.rotate(&ada).await.expect("rotate"), None);
    let again = store.forget(&ada, "someone else").await.expect("forget");
    assert!(again.already);
    assert_eq!((again.by.as_str(), again.at), ("operator-1", forgetting.at));
    assert_eq!(store.current_key(&bob).await.expect("current"), bobs);
    assert!(!store.is_forgotten(&bob).await.expect("is forgotten"));
}

/// A subject never seen can be forgotten (a request for someone with no data yet), and then
/// gets no key.
pub async fn an_unknown_subject_can_be_forgotten<S: KeyStore>(store: S) {
    let ada = subject();
    let forgetting = store.forget(&ada, "operator-1").await.expect("forget");
    assert!(!forgetting.already);
    assert_eq!(store.current_key(&ada).await.expect("current"), None);
}

/// Several keys read at once are those read one by one: every version of every subject
/// asked for that exists, nothing for a version never made, an unknown subject or a
/// forgotten one, and an empty request is an empty answer.
pub async fn keys_are_read_many_at_once<S: KeyStore>(store: S) {
    let (ada, bob, cyd, unknown) = (subject(), subject(), subject(), subject());
    let ada1 = store
        .current_key(&ada)
        .await
        .expect("current")
        .expect("a key");
    let ada2 = store.rotate(&ada).await.expect("rotate").expect("a key");
    let bob1 = store
        .current_key(&bob)
        .await
        .expect("current")
        .expect("a key");
    store.current_key(&cyd).await.expect("current");
    store.forget(&cyd, "operator-1").await.expect("forget");
    assert!(store.keys(&[]).await.expect("keys").is_empty());
    let wanted = [
        (ada.clone(), 1),
        (ada.clone(), 2),
        (ada.clone(), 3),
        (bob.clone(), 1),
        (cyd.clone(), 1),
        (unknown.clone(), 1),
    ];
    let found = store.keys(&wanted).await.expect("keys");
    let expected = std::collections::HashMap::from([
        ((ada.clone(), 1), ada1),
        ((ada.clone(), 2), ada2),
        ((bob.clone(), 1), bob1),
    ]);
    assert_eq!(found, expected);
    for (subject, version) in &wanted {
        assert_eq!(
            store.key(subject, *version).await.expect("key").as_ref(),
            found.get(&(subject.clone(), *version))
        );
    }
}

/// Runs every property, each on a fresh store from `new_store`.
pub async fn key_store_contract<S, F, Fut>(new_store: F)
where
    S: KeyStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    a_key_is_made_once_per_subject(new_store().await).await;
    concurrent_first_uses_agree_on_one_key(new_store().await).await;
    rotation_keeps_older_versions(new_store().await).await;
    forgetting_destroys_every_version_for_good(new_store().await).await;
    an_unknown_subject_can_be_forgotten(new_store().await).await;
    keys_are_read_many_at_once(new_store().await).await;
}

/// Generates one `#[tokio::test]` per key-store property; `$new_store` is an expression
/// evaluating to a future of a fresh store, evaluated once per test.
///
/// ```text
/// es_core::key_store_contract_tests!(fresh_pg_keys());
/// ```
#[macro_export]
macro_rules! key_store_contract_tests {
    ($new_store:expr) => {
        $crate::key_store_contract_tests!(@each $new_store;
            a_key_is_made_once_per_subject,
            concurrent_first_uses_agree_on_one_key,
            rotation_keeps_older_versions,
            forgetting_destroys_every_version_for_good,
            an_unknown_subject_can_be_forgotten,
            keys_are_read_many_at_once
        );
    };
    (@each $new_store:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::key_store_contract::$property($new_store.await).await;
            }
        )+
    };
}
