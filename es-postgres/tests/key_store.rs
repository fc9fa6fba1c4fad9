//! The es-core key-store contract against PostgreSQL; keys at rest only wrapped by the master
//! key, master-key rotation, and forgetting that leaves no key behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::privacy::{KeyStore, MasterKey, MasterKeys, SubjectId};
use es_postgres::{PgEventStore, PgKeyStore};

fn masters(current: u32, older: &[u32]) -> MasterKeys {
    let key = |version: u32| MasterKey::new(version, [u8::try_from(version).unwrap(); 32]);
    MasterKeys::new(key(current), older.iter().map(|v| key(*v)).collect()).unwrap()
}

async fn fresh() -> PgKeyStore {
    common::fresh_store().await.keys(masters(1, &[]))
}

es_core::key_store_contract_tests!(fresh());

/// Every row of the key table, as the database holds it.
async fn rows(store: &PgEventStore) -> Vec<(String, i32, i32, Vec<u8>)> {
    let client = common::raw_client().await;
    client
        .query(
            &format!(
                "SELECT subject, version, master_version, sealed_key FROM \"{}\".subject_keys \
                 ORDER BY subject, version",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rest_wrapped_and_survive_a_master_key_rotation() {
    let store = common::fresh_store().await;
    let ada = SubjectId::new("ada").unwrap();
    let old = store.keys(masters(1, &[]));
    let first = old.current_key(&ada).await.unwrap().unwrap();
    let second = old.rotate(&ada).await.unwrap().unwrap();
    let stored = rows(&store).await;
    assert_eq!(stored.len(), 2);
    for (_, _, master, sealed) in &stored {
        assert_eq!(*master, 1);
        for key in [&first, &second] {
            assert!(
                !sealed.windows(32).any(|w| w == key.bytes()),
                "a key rests in clear"
            );
        }
    }

    // A store that does not know master key 1 cannot read them.
    let stranger = store.keys(masters(2, &[]));
    assert!(stranger.key(&ada, 1).await.is_err());

    // Rotation: 2 current, 1 still known; rewrap moves every key to 2.
    let rotating = store.keys(masters(2, &[1]));
    assert_eq!(rotating.key(&ada, 1).await.unwrap(), Some(first.clone()));
    assert_eq!(rotating.rewrap(1).await.unwrap(), 2);
    assert_eq!(rotating.rewrap(1).await.unwrap(), 0);
    assert!(
        rows(&store)
            .await
            .iter()
            .all(|(_, _, master, _)| *master == 2)
    );
    let rotated = store.keys(masters(2, &[]));
    assert_eq!(rotated.key(&ada, 1).await.unwrap(), Some(first));
    assert_eq!(rotated.current_key(&ada).await.unwrap(), Some(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_deletes_every_key_row_and_records_no_personal_data() {
    let store = common::fresh_store().await;
    let keys = store.keys(masters(1, &[]));
    let (ada, bob) = (
        SubjectId::new("ada").unwrap(),
        SubjectId::new("bob").unwrap(),
    );
    keys.current_key(&ada).await.unwrap();
    keys.rotate(&ada).await.unwrap();
    keys.current_key(&bob).await.unwrap();
    keys.forget(&ada, "operator-7").await.unwrap();
    let left: Vec<String> = rows(&store).await.into_iter().map(|r| r.0).collect();
    assert_eq!(left, ["bob"]);
    let client = common::raw_client().await;
    let record = client
        .query_one(
            &format!(
                "SELECT to_jsonb(f) FROM \"{}\".forgotten_subjects f",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let record: serde_json::Value = record.get(0);
    let fields: Vec<&String> = record.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["forgotten_at", "forgotten_by", "subject"]);
    assert_eq!(record["forgotten_by"], "operator-7");
}
