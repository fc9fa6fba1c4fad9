//! `PgSagaStore`: saga state, its history and deadlines, committed with outbox and inbox rows.

mod commit;
mod deadline;

use std::fmt;
use std::sync::Arc;

use es_core::{
    Clock, OutboxBatch, OutboxSource, Position, SagaInstance, SagaStore, SagaStoreError,
    StoreError, SystemClock,
};
use tokio_postgres::Row;

use crate::config::Schema;
use crate::error::{PgError, boxed, from_bigint};
use crate::inbox::PgInbox;
use crate::store::PgEventStore;

/// The SQL of the saga store, rendered for one schema.
#[derive(Debug)]
struct Sql {
    commit: String,
    load: String,
    history: String,
    list: String,
    claim_due: String,
    next_due: String,
    complete: String,
    cancel: String,
    schedule: String,
}

const COLUMNS: &str = "saga, key, version, state, completed, updated_at";

impl Sql {
    fn new(schema: &Schema) -> Self {
        let r = |sql: &str| schema.render(sql);
        Self {
            commit: r(include_str!("../../sql/saga_commit.sql")),
            load: r(&format!(
                "SELECT {COLUMNS} FROM __SCHEMA__.saga_instances WHERE saga = $1 AND key = $2"
            )),
            history: r(&format!(
                "SELECT {COLUMNS} FROM __SCHEMA__.saga_history WHERE saga = $1 AND key = $2 \
                 ORDER BY version"
            )),
            list: r(&format!(
                "SELECT {COLUMNS} FROM __SCHEMA__.saga_instances \
                 WHERE saga = $1 AND ($2::boolean IS NULL OR completed = $2) ORDER BY key"
            )),
            claim_due: r(include_str!("../../sql/claim_deadlines.sql")),
            next_due: r(
                "SELECT min(greatest(due_at, coalesce(claimed_until, due_at))) FROM __SCHEMA__.deadlines \
                 WHERE completed_at IS NULL AND cancelled_at IS NULL",
            ),
            complete: r("UPDATE __SCHEMA__.deadlines SET completed_at = $2 \
                 WHERE id = $1 AND completed_at IS NULL AND cancelled_at IS NULL"),
            cancel: r("UPDATE __SCHEMA__.deadlines SET cancelled_at = $4 \
                 WHERE saga = $1 AND key = $2 AND step = $3 \
                 AND completed_at IS NULL AND cancelled_at IS NULL"),
            schedule: r("SELECT __SCHEMA__.set_deadlines($1, $2, $3, $4, $5, $6)"),
        }
    }
}

/// The PostgreSQL [`SagaStore`] and [`DeadlineStore`](es_core::DeadlineStore), in the schema of
/// a [`PgEventStore`] and on its pool. Cheap to clone.
///
/// A [`commit`](SagaStore::commit) is one statement, so one transaction and one round trip: it
/// records the inbox record first (waiting while another transaction holds it; a duplicate
/// writes nothing), moves the instance's version by compare-and-set, appends the history row,
/// writes the outbox rows to the same `outbox` table the event store's appends write (so one
/// relay reads both), then cancels and sets deadlines. No unique violation can abort it: a
/// lost race is a [`SagaStoreError::Conflict`] with the stored version.
///
/// A commit first locks its instance with a transaction-scoped advisory lock, which assigns no
/// transaction id; so the commits of one instance take their transaction ids in version order,
/// and their outbox rows reach the relay in that order. No stream is locked: a commit appends
/// no events. As an [`OutboxSource`] it reads that outbox, gap-safely, like the event store.
///
/// Deadline decisions use only the times passed in (`claim_due`'s `now`); the clock given with
/// [`with_clock`](Self::with_clock) stamps commits, completions and cancellations.
///
/// ```no_run
/// use es_core::{SagaCommit, SagaCommitOutcome, SagaStore};
/// use es_postgres::{PgEventStore, PgSagaStore};
/// use serde_json::json;
/// use uuid::Uuid;
///
/// # async fn demo(store: &PgEventStore, message_id: Uuid) -> Result<(), Box<dyn std::error::Error>> {
/// let sagas = PgSagaStore::new(store);
/// let commit = SagaCommit::new("fulfilment", "order-7", 0, json!({ "step": "paying" }))
///     .with_inbox("fulfilment", message_id);
/// match sagas.commit(commit).await? {
///     SagaCommitOutcome::Committed { version } => assert_eq!(version, 1),
///     SagaCommitOutcome::Duplicate => {} // handled before
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgSagaStore {
    store: PgEventStore,
    sql: Arc<Sql>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for PgSagaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSagaStore")
            .field("schema", &self.store.schema())
            .field("clock", &self.clock)
            .finish()
    }
}

impl PgSagaStore {
    /// The saga store of `store`'s schema, on its pool and the system clock.
    pub fn new(store: &PgEventStore) -> Self {
        Self {
            store: store.clone(),
            sql: Arc::new(Sql::new(&store.inner.schema)),
            clock: Arc::new(SystemClock),
        }
    }

    /// The signal fired after each commit in this process (the store's append signal): it
    /// wakes the relay of the saga outbox and a deadline scheduler.
    pub fn append_signal(&self) -> &es_core::AppendSignal {
        self.store.append_signal()
    }

    /// Stamps commits, completions and cancellations with the time of `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The event store whose schema, pool and outbox this store uses.
    pub fn event_store(&self) -> &PgEventStore {
        &self.store
    }

    /// The inbox commits record in (the same table as [`PgEventStore::inbox`]).
    pub fn inbox(&self) -> PgInbox {
        PgInbox::new(&self.store)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        let client = crate::conn::Conn::get(&self.store.inner.pool).await?;
        let statement = client.prepare_cached(sql).await?;
        client.query(&statement, params).await
    }

    async fn instances(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<SagaInstance>, SagaStoreError> {
        let rows = self.query(sql, params).await.map_err(saga_error)?;
        rows.iter()
            .map(decode_instance)
            .collect::<Result<_, _>>()
            .map_err(saga_error)
    }
}

impl PgEventStore {
    /// The saga and deadline store in this store's schema (see [`PgSagaStore`]).
    pub fn saga_store(&self) -> PgSagaStore {
        PgSagaStore::new(self)
    }
}

fn saga_error(error: impl Into<PgError>) -> SagaStoreError {
    SagaStoreError::Backend(boxed(error))
}

fn decode_instance(row: &Row) -> Result<SagaInstance, tokio_postgres::Error> {
    Ok(SagaInstance {
        saga: row.try_get(0)?,
        key: row.try_get(1)?,
        version: from_bigint(row.try_get(2)?),
        state: row.try_get(3)?,
        completed: row.try_get(4)?,
        updated_at: row.try_get(5)?,
    })
}

impl SagaStore for PgSagaStore {
    async fn load(&self, saga: &str, key: &str) -> Result<Option<SagaInstance>, SagaStoreError> {
        let mut found = self.instances(&self.sql.load, &[&saga, &key]).await?;
        Ok(found.pop())
    }

    async fn commit(
        &self,
        commit: es_core::SagaCommit,
    ) -> Result<es_core::SagaCommitOutcome, SagaStoreError> {
        self.commit_one(commit).await
    }

    async fn history(&self, saga: &str, key: &str) -> Result<Vec<SagaInstance>, SagaStoreError> {
        self.instances(&self.sql.history, &[&saga, &key]).await
    }

    async fn list(
        &self,
        saga: &str,
        completed: Option<bool>,
    ) -> Result<Vec<SagaInstance>, SagaStoreError> {
        self.instances(&self.sql.list, &[&saga, &completed]).await
    }
}

impl OutboxSource for PgSagaStore {
    async fn read_outbox(&self, after: Position, limit: usize) -> Result<OutboxBatch, StoreError> {
        self.store.read_outbox(after, limit).await
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, StoreError> {
        self.store.delete_outbox_up_to(up_to).await
    }
}
