//! Where the contexts keep their data: the embedded default (in memory) or PostgreSQL, one
//! schema per context. The application code sees only [`ContextStore`] and is the same on both.

use es_core::memory::MemoryEventStore;
use es_core::{
    AppendOutcome, AppendRequest, DeleteMode, EventStore, ExpectedVersion, LogBatch, LogFilter,
    OutboxBatch, OutboxSource, Position, RecordedEvent, Snapshot, SnapshotStore, StoreError,
    StreamId, StreamRead, SubscriptionItem, Version,
};
use es_postgres::{PgConfig, PgError, PgEventStore};
use futures::stream::BoxStream;

/// The storage every context is wired to.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Everything in memory: nothing survives a restart.
    Memory,
    /// PostgreSQL: each context gets the schema `{prefix}_{context}` in one database.
    Postgres {
        /// The shared connection pool.
        pool: deadpool_postgres::Pool,
        /// The prefix of every context's schema.
        prefix: String,
    },
}

impl Backend {
    /// Connects to PostgreSQL at `url` with a pool of `pool_size` connections.
    ///
    /// # Errors
    /// [`PgError`] when the URL does not parse.
    pub fn postgres(url: &str, pool_size: usize, prefix: &str) -> Result<Self, PgError> {
        let pool = PgConfig::new(url).pool_size(pool_size).pool()?;
        Ok(Backend::Postgres {
            pool,
            prefix: prefix.to_owned(),
        })
    }

    /// The name of this backend, for logs and `/ready`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// The event store of one context, migrated.
    ///
    /// # Errors
    /// [`PgError`] when the schema cannot be created or migrated.
    pub async fn event_store(&self, context: &str) -> Result<ContextStore, PgError> {
        match self {
            Backend::Memory => Ok(ContextStore::Memory(MemoryEventStore::new())),
            Backend::Postgres { pool, .. } => {
                let store = PgEventStore::with_pool(pool.clone(), &self.schema(context))?;
                store.migrate().await?;
                Ok(ContextStore::Postgres(store))
            }
        }
    }

    /// The PostgreSQL schema of `context` (meaningful for [`Backend::Postgres`] only).
    pub fn schema(&self, context: &str) -> String {
        match self {
            Backend::Memory => context.to_owned(),
            Backend::Postgres { prefix, .. } => format!("{prefix}_{context}"),
        }
    }

    /// Whether the storage answers.
    ///
    /// # Errors
    /// A message saying what does not answer.
    pub async fn check(&self) -> Result<(), String> {
        match self {
            Backend::Memory => Ok(()),
            Backend::Postgres { pool, .. } => {
                let client = pool.get().await.map_err(|e| format!("database: {e}"))?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| format!("database: {e}"))?;
                Ok(())
            }
        }
    }
}

/// One context's event store, in memory or on PostgreSQL.
#[derive(Debug, Clone)]
pub enum ContextStore {
    /// The in-memory store of the embedded default.
    Memory(MemoryEventStore),
    /// A PostgreSQL store in the context's own schema.
    Postgres(PgEventStore),
}

impl ContextStore {
    /// The in-process signal fired after each committed append (wakes relays and
    /// subscriptions at once instead of at their next poll).
    pub fn append_signal(&self) -> es_core::AppendSignal {
        match self {
            ContextStore::Memory(store) => store.append_signal().clone(),
            ContextStore::Postgres(store) => store.append_signal().clone(),
        }
    }
}

impl EventStore for ContextStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        match self {
            ContextStore::Memory(store) => store.append(request).await,
            ContextStore::Postgres(store) => store.append(request).await,
        }
    }

    async fn delete_stream(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<Option<Position>, StoreError> {
        match self {
            ContextStore::Memory(store) => store.delete_stream(stream_id, expected, mode).await,
            ContextStore::Postgres(store) => store.delete_stream(stream_id, expected, mode).await,
        }
    }

    fn read_stream<'a>(
        &'a self,
        stream_id: &'a StreamId,
        read: StreamRead,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>> {
        match self {
            ContextStore::Memory(store) => store.read_stream(stream_id, read),
            ContextStore::Postgres(store) => store.read_stream(stream_id, read),
        }
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<Version, StoreError> {
        match self {
            ContextStore::Memory(store) => store.stream_version(stream_id).await,
            ContextStore::Postgres(store) => store.stream_version(stream_id).await,
        }
    }

    async fn read_log(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogBatch, StoreError> {
        match self {
            ContextStore::Memory(store) => store.read_log(after, filter, limit).await,
            ContextStore::Postgres(store) => store.read_log(after, filter, limit).await,
        }
    }

    fn subscribe(
        &self,
        after: Position,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<SubscriptionItem, StoreError>> {
        match self {
            ContextStore::Memory(store) => store.subscribe(after, filter),
            ContextStore::Postgres(store) => store.subscribe(after, filter),
        }
    }
}

impl SnapshotStore for ContextStore {
    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        match self {
            ContextStore::Memory(store) => store.load_snapshot(stream_id).await,
            ContextStore::Postgres(store) => store.load_snapshot(stream_id).await,
        }
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        match self {
            ContextStore::Memory(store) => store.save_snapshot(snapshot).await,
            ContextStore::Postgres(store) => store.save_snapshot(snapshot).await,
        }
    }
}

impl OutboxSource for ContextStore {
    async fn read_outbox(&self, after: Position, limit: usize) -> Result<OutboxBatch, StoreError> {
        match self {
            ContextStore::Memory(store) => store.read_outbox(after, limit).await,
            ContextStore::Postgres(store) => store.read_outbox(after, limit).await,
        }
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, StoreError> {
        match self {
            ContextStore::Memory(store) => store.delete_outbox_up_to(up_to).await,
            ContextStore::Postgres(store) => store.delete_outbox_up_to(up_to).await,
        }
    }
}
