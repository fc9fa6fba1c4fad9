//! `PgPausedPartitions`: consumer partitions paused by policy, kept across restarts.

use std::fmt;
use std::sync::Arc;

use es_core::{PausedPartition, PausedPartitions, PausedPartitionsError};

use crate::error::{PgError, boxed};
use crate::store::PgEventStore;

#[derive(Debug)]
struct Sql {
    pause: String,
    resume: String,
    list: String,
}

/// The PostgreSQL [`PausedPartitions`] store: the `paused_partitions` table of a
/// [`PgEventStore`]'s schema. A partition paused here stays paused across restarts and
/// rebalances until [`resume`](PausedPartitions::resume) removes its row; every member of the
/// group notices within its refresh interval. Cheap to clone.
///
/// ```no_run
/// use es_core::PausedPartitions;
/// use es_postgres::{PgEventStore, PgPausedPartitions};
///
/// # async fn demo(store: &PgEventStore) -> Result<(), es_core::PausedPartitionsError> {
/// let paused = PgPausedPartitions::new(store);
/// for partition in paused.list("billing").await? {
///     println!("{} {} at {}: {}", partition.topic, partition.partition, partition.offset, partition.reason);
/// }
/// paused.resume("billing", "shop.order", 3).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgPausedPartitions {
    store: PgEventStore,
    sql: Arc<Sql>,
}

impl fmt::Debug for PgPausedPartitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPausedPartitions")
            .field("schema", &self.store.schema())
            .finish()
    }
}

fn paused_error(error: impl Into<PgError>) -> PausedPartitionsError {
    PausedPartitionsError::Backend(boxed(error))
}

fn column<T, U: TryFrom<T>>(what: &str, value: T) -> Result<U, PausedPartitionsError>
where
    U::Error: std::error::Error + Send + Sync + 'static,
{
    U::try_from(value).map_err(|error| {
        PausedPartitionsError::Backend(
            format!("paused partition {what} out of range: {error}").into(),
        )
    })
}

impl PgPausedPartitions {
    /// The paused partitions of `store`'s schema, on its pool.
    pub fn new(store: &PgEventStore) -> Self {
        let r = |sql: &str| store.inner.schema.render(sql);
        let sql = Sql {
            pause: r("INSERT INTO __SCHEMA__.paused_partitions \
                 (group_id, topic, partition, \"offset\", message_id, reason, paused_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (group_id, topic, partition) DO UPDATE SET \
                 \"offset\" = EXCLUDED.\"offset\", message_id = EXCLUDED.message_id, \
                 reason = EXCLUDED.reason, paused_at = EXCLUDED.paused_at"),
            resume: r("DELETE FROM __SCHEMA__.paused_partitions \
                 WHERE group_id = $1 AND topic = $2 AND partition = $3"),
            list: r(
                "SELECT topic, partition, \"offset\", message_id, reason, paused_at \
                 FROM __SCHEMA__.paused_partitions WHERE group_id = $1 ORDER BY topic, partition",
            ),
        };
        Self {
            store: store.clone(),
            sql: Arc::new(sql),
        }
    }
}

impl PgEventStore {
    /// The paused consumer partitions in this store's schema (see [`PgPausedPartitions`]).
    pub fn paused_partitions(&self) -> PgPausedPartitions {
        PgPausedPartitions::new(self)
    }
}

impl PausedPartitions for PgPausedPartitions {
    async fn pause(&self, paused: PausedPartition) -> Result<(), PausedPartitionsError> {
        let partition: i32 = column("partition", paused.partition)?;
        let offset: i64 = column("offset", paused.offset)?;
        let client = self.store.inner.pool.get().await.map_err(paused_error)?;
        let statement = client
            .prepare_cached(&self.sql.pause)
            .await
            .map_err(paused_error)?;
        client
            .execute(
                &statement,
                &[
                    &paused.group,
                    &paused.topic,
                    &partition,
                    &offset,
                    &paused.message_id,
                    &paused.reason,
                    &paused.paused_at,
                ],
            )
            .await
            .map_err(paused_error)?;
        Ok(())
    }

    async fn resume(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(), PausedPartitionsError> {
        let partition: i32 = column("partition", partition)?;
        let client = self.store.inner.pool.get().await.map_err(paused_error)?;
        let statement = client
            .prepare_cached(&self.sql.resume)
            .await
            .map_err(paused_error)?;
        client
            .execute(&statement, &[&group, &topic, &partition])
            .await
            .map_err(paused_error)?;
        Ok(())
    }

    async fn list(&self, group: &str) -> Result<Vec<PausedPartition>, PausedPartitionsError> {
        let client = self.store.inner.pool.get().await.map_err(paused_error)?;
        let statement = client
            .prepare_cached(&self.sql.list)
            .await
            .map_err(paused_error)?;
        let rows = client
            .query(&statement, &[&group])
            .await
            .map_err(paused_error)?;
        rows.iter()
            .map(|row| {
                let partition: i32 = row.try_get(1).map_err(paused_error)?;
                let offset: i64 = row.try_get(2).map_err(paused_error)?;
                let mut paused = PausedPartition::new(
                    group,
                    row.try_get::<_, String>(0).map_err(paused_error)?,
                    column("partition", partition)?,
                    column("offset", offset)?,
                    row.try_get(3).map_err(paused_error)?,
                    row.try_get::<_, String>(4).map_err(paused_error)?,
                );
                paused.paused_at = row.try_get(5).map_err(paused_error)?;
                Ok(paused)
            })
            .collect()
    }
}
