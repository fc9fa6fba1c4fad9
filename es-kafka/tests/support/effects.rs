//! Test support for consumers: a handler whose effects are rows in PostgreSQL, written in the
//! transaction that records the message, and checks over those rows.

use std::collections::HashMap;

use es_core::{Delivery, HandlerError, TransactionalHandler};
use es_postgres::{PgEventStore, PgTransaction};

/// Inserts one `effects` row per handled message: (message id, key, n, member), numbered in
/// handling order by `seq`.
#[derive(Clone)]
pub struct Effects {
    table: String,
    member: String,
}

impl Effects {
    /// Creates the `effects` table in `store`'s schema.
    pub async fn create(store: &PgEventStore) -> Self {
        let table = format!("{}.effects", store.schema());
        let client = store.pool().get().await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (seq bigserial PRIMARY KEY, message_id uuid NOT NULL, \
                 key text NOT NULL, n bigint NOT NULL, member text NOT NULL)"
            ))
            .await
            .unwrap();
        Self {
            table,
            member: "member".into(),
        }
    }

    /// The same effects, recorded as done by `member`.
    pub fn by(&self, member: &str) -> Self {
        Self {
            table: self.table.clone(),
            member: member.into(),
        }
    }

    /// Every effect as (message id, key, n, member), in handling order.
    pub async fn rows(&self, store: &PgEventStore) -> Vec<(uuid::Uuid, String, i64, String)> {
        let client = store.pool().get().await.unwrap();
        client
            .query(
                &format!(
                    "SELECT message_id, key, n, member FROM {} ORDER BY seq",
                    self.table
                ),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect()
    }

    /// How many effects were recorded.
    pub async fn count(&self, store: &PgEventStore) -> usize {
        let client = store.pool().get().await.unwrap();
        let row = client
            .query_one(&format!("SELECT count(*) FROM {}", self.table), &[])
            .await
            .unwrap();
        usize::try_from(row.get::<_, i64>(0)).unwrap()
    }
}

#[async_trait::async_trait]
impl TransactionalHandler<PgTransaction> for Effects {
    type Message = serde_json::Value;

    async fn handle(
        &self,
        tx: &mut PgTransaction,
        payload: &serde_json::Value,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let message = &delivery.message;
        let n = payload["n"]
            .as_i64()
            .ok_or_else(|| HandlerError::permanent("no n"))?;
        tx.client()
            .execute(
                &format!(
                    "INSERT INTO {} (message_id, key, n, member) VALUES ($1, $2, $3, $4)",
                    self.table
                ),
                &[
                    &message.message_id,
                    &message.partition_key,
                    &n,
                    &self.member,
                ],
            )
            .await
            .map_err(HandlerError::transient)?;
        Ok(())
    }
}

/// Asserts every message has exactly one effect, `total` over `keys` keys, each key's
/// numbers 1, 2, 3 ... in handling order.
pub fn assert_once_in_order(rows: &[(uuid::Uuid, String, i64, String)], keys: usize, total: usize) {
    let mut ids = std::collections::HashSet::new();
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (id, key, n, member) in rows {
        assert!(
            ids.insert(*id),
            "message {id} (key {key}, n {n}) had its effects twice"
        );
        let previous = last.entry(key).or_default();
        assert_eq!(
            *n,
            *previous + 1,
            "key {key}: {n} handled after {previous} (by {member})"
        );
        *previous = *n;
    }
    assert_eq!(last.len(), keys, "every key was handled");
    assert_eq!(rows.len(), total, "every message was handled once");
}
