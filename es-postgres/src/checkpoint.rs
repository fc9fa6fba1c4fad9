//! `PgCheckpointStore`: named positions moved only by compare-and-set.

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::ClientWrapper;
use es_core::{CheckpointError, CheckpointStore, Position};

use crate::config::Schema;
use crate::error::{PgError, boxed, from_bigint, to_bigint};
use crate::store::PgEventStore;
use crate::transaction::PgTransaction;

#[derive(Debug)]
struct Sql {
    load: String,
    insert: String,
    update: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let r = |sql: &str| schema.render(sql);
        Self {
            load: r("SELECT transaction_id, sequence FROM __SCHEMA__.checkpoints WHERE name = $1"),
            insert: r(
                "INSERT INTO __SCHEMA__.checkpoints (name, transaction_id, sequence) \
                 VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            ),
            update: r("UPDATE __SCHEMA__.checkpoints \
                 SET transaction_id = $4, sequence = $5, updated_at = now() \
                 WHERE name = $1 AND transaction_id = $2 AND sequence = $3"),
        }
    }
}

/// The PostgreSQL [`CheckpointStore`]: the `checkpoints` table of a [`PgEventStore`]'s
/// schema. Cheap to clone.
///
/// Every write is a compare-and-set (`INSERT … ON CONFLICT DO NOTHING` when none is expected,
/// `UPDATE … WHERE` the expected position otherwise); a write that changes no row fails with
/// [`CheckpointError::Stale`] carrying the stored position. This is what fences a deposed
/// leader (see [`Leader`](crate::Leader)): its next checkpoint write fails, and it must stop.
/// With [`compare_and_set_in`](Self::compare_and_set_in) the write commits with the rows of
/// the caller's transaction (a projection's batch, for example).
///
/// ```no_run
/// use es_core::{CheckpointError, CheckpointStore, Position};
/// use es_postgres::{PgCheckpointStore, PgEventStore};
///
/// # async fn demo(store: &PgEventStore) -> Result<(), CheckpointError> {
/// let checkpoints = PgCheckpointStore::new(store);
/// let at = checkpoints.load_checkpoint("relay").await?;
/// match checkpoints.compare_and_set_checkpoint("relay", at, Position::new(7, 42)).await {
///     Ok(()) => {}
///     Err(CheckpointError::Stale { .. }) => return Ok(()), // another node leads: stop
///     Err(other) => return Err(other),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgCheckpointStore {
    store: PgEventStore,
    sql: Arc<Sql>,
}

impl fmt::Debug for PgCheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCheckpointStore")
            .field("schema", &self.store.schema())
            .finish()
    }
}

fn checkpoint_error(error: impl Into<PgError>) -> CheckpointError {
    CheckpointError::Backend(boxed(error))
}

impl PgCheckpointStore {
    /// The checkpoints of `store`'s schema, on its pool.
    pub fn new(store: &PgEventStore) -> Self {
        Self {
            store: store.clone(),
            sql: Arc::new(Sql::new(&store.inner.schema)),
        }
    }

    /// Moves `name` from `expected` to `new` inside `tx`, committing with the transaction's
    /// other rows; on [`CheckpointError::Stale`] the caller must roll `tx` back (nothing
    /// aborted it: no unique violation is raised).
    ///
    /// # Errors
    /// [`CheckpointError::Stale`] when `name` is not at `expected`, or
    /// [`CheckpointError::Backend`].
    pub async fn compare_and_set_in(
        &self,
        tx: &mut PgTransaction,
        name: &str,
        expected: Option<Position>,
        new: Position,
    ) -> Result<(), CheckpointError> {
        let client = tx.connection().map_err(checkpoint_error)?;
        self.compare_and_set_on(client, name, expected, new).await
    }

    async fn load_on(
        &self,
        client: &ClientWrapper,
        name: &str,
    ) -> Result<Option<Position>, PgError> {
        let statement = client.prepare_cached(&self.sql.load).await?;
        let Some(row) = client.query_opt(&statement, &[&name]).await? else {
            return Ok(None);
        };
        let transaction: i64 = row.try_get(0)?;
        let sequence: i64 = row.try_get(1)?;
        Ok(Some(Position::new(
            from_bigint(transaction),
            from_bigint(sequence),
        )))
    }

    pub(crate) async fn compare_and_set_on(
        &self,
        client: &ClientWrapper,
        name: &str,
        expected: Option<Position>,
        new: Position,
    ) -> Result<(), CheckpointError> {
        let columns = |position: Position| -> Result<(i64, i64), PgError> {
            Ok((
                to_bigint("checkpoint transaction id", position.transaction())?,
                to_bigint("checkpoint sequence", position.sequence())?,
            ))
        };
        let (new_transaction, new_sequence) = columns(new).map_err(checkpoint_error)?;
        let changed = match expected {
            None => {
                let statement = client
                    .prepare_cached(&self.sql.insert)
                    .await
                    .map_err(checkpoint_error)?;
                client
                    .execute(&statement, &[&name, &new_transaction, &new_sequence])
                    .await
            }
            Some(old) => {
                let (old_transaction, old_sequence) = columns(old).map_err(checkpoint_error)?;
                let statement = client
                    .prepare_cached(&self.sql.update)
                    .await
                    .map_err(checkpoint_error)?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
                    &name,
                    &old_transaction,
                    &old_sequence,
                    &new_transaction,
                    &new_sequence,
                ];
                client.execute(&statement, &params).await
            }
        }
        .map_err(checkpoint_error)?;
        if changed == 1 {
            return Ok(());
        }
        // A fresh snapshot (read committed): what the node that moved it stored.
        let actual = self.load_on(client, name).await.map_err(checkpoint_error)?;
        Err(CheckpointError::Stale {
            name: name.to_owned(),
            expected,
            actual,
        })
    }
}

impl PgEventStore {
    /// The checkpoint store in this store's schema (see [`PgCheckpointStore`]).
    pub fn checkpoints(&self) -> PgCheckpointStore {
        PgCheckpointStore::new(self)
    }
}

impl CheckpointStore for PgCheckpointStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, CheckpointError> {
        let client = self
            .store
            .inner
            .pool
            .get()
            .await
            .map_err(checkpoint_error)?;
        self.load_on(&client, name).await.map_err(checkpoint_error)
    }

    async fn compare_and_set_checkpoint(
        &self,
        name: &str,
        expected: Option<Position>,
        new: Position,
    ) -> Result<(), CheckpointError> {
        let client = self
            .store
            .inner
            .pool
            .get()
            .await
            .map_err(checkpoint_error)?;
        self.compare_and_set_on(&client, name, expected, new).await
    }
}
