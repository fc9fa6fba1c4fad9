//! `PgEventStore`: the event store on PostgreSQL.

mod append;
mod outbox;
mod read;
mod snapshot;

use std::fmt;
use std::sync::Arc;

use deadpool_postgres::Pool;
use es_core::{AppendSignal, SubscriptionOptions};

use crate::config::{PgConfig, Schema};
use crate::error::PgError;

pub(crate) use append::append_on;

/// The SQL of every statement, rendered for one schema.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) append: String,
    pub(crate) delete_stream: String,
    pub(crate) lock_streams: String,
    pub(crate) read_forward: String,
    pub(crate) read_backward: String,
    pub(crate) stream_version: String,
    pub(crate) read_log: String,
    pub(crate) read_outbox: String,
    pub(crate) delete_outbox: String,
    pub(crate) load_snapshot: String,
    pub(crate) save_snapshot: String,
    pub(crate) is_handled: String,
    pub(crate) record_handled: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let r = |sql: &str| schema.render(sql);
        Self {
            append: r(include_str!("../../sql/append.sql")),
            delete_stream: r(
                "SELECT status, version, transaction_id, positions, detail FROM __SCHEMA__.delete_stream($1, $2, $3, $4, $5)",
            ),
            lock_streams: r("SELECT __SCHEMA__.lock_streams($1)"),
            read_forward: r(include_str!("../../sql/read_forward.sql")),
            read_backward: r(include_str!("../../sql/read_backward.sql")),
            stream_version: r("SELECT max(version) FROM __SCHEMA__.events WHERE stream_id = $1"),
            read_log: r(include_str!("../../sql/read_log.sql")),
            read_outbox: r(include_str!("../../sql/read_outbox.sql")),
            delete_outbox: r(
                "DELETE FROM __SCHEMA__.outbox WHERE (transaction_id, position) <= ($1::text::xid8, $2)",
            ),
            load_snapshot: r(
                "SELECT version, snapshot_version, state, taken_at FROM __SCHEMA__.snapshots WHERE stream_id = $1",
            ),
            save_snapshot: r(include_str!("../../sql/save_snapshot.sql")),
            is_handled: r(
                "SELECT EXISTS (SELECT 1 FROM __SCHEMA__.inbox WHERE subscriber = $1 AND message_id = $2)",
            ),
            record_handled: r(
                "INSERT INTO __SCHEMA__.inbox (subscriber, message_id) VALUES ($1, $2) ON CONFLICT (subscriber, message_id) DO NOTHING",
            ),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) schema: Schema,
    pub(crate) sql: Sql,
    pub(crate) signal: AppendSignal,
    pub(crate) max_event_bytes: usize,
    pub(crate) options: SubscriptionOptions,
}

/// The PostgreSQL event store: one-round-trip appends, a gap-safe global log, snapshots and
/// the outbox, in one schema. Cheap to clone; clones share the pool.
///
/// ```no_run
/// use es_core::{AppendRequest, EventStore, ExpectedVersion, StreamId};
/// use es_postgres::{PgConfig, PgEventStore};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PgEventStore::connect(&PgConfig::from_env()?.schema("orders"))?;
/// store.migrate().await?; // explicit and idempotent
/// let stream = StreamId::new("order-1")?;
/// store.append(AppendRequest::new(stream, ExpectedVersion::NoStream)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgEventStore {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEventStore")
            .field("schema", &self.inner.schema.name)
            .field("pool", &self.inner.pool.status())
            .finish()
    }
}

impl PgEventStore {
    /// A store for `config` (connections open lazily; call [`migrate`](Self::migrate) once
    /// before use).
    ///
    /// # Errors
    /// [`PgError::Config`] or [`PgError::InvalidSchema`].
    pub fn connect(config: &PgConfig) -> Result<Self, PgError> {
        let store = Self::with_pool(config.pool()?, &config.schema)?;
        Ok(store.with_max_event_bytes(config.max_event_bytes))
    }

    /// A store on an existing pool (for example one built with a TLS connector).
    ///
    /// # Errors
    /// [`PgError::InvalidSchema`] when `schema` is not a plain identifier.
    pub fn with_pool(pool: Pool, schema: &str) -> Result<Self, PgError> {
        let schema = Schema::new(schema)?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                sql: Sql::new(&schema),
                schema,
                signal: AppendSignal::new(),
                max_event_bytes: 1024 * 1024,
                options: SubscriptionOptions::default(),
            }),
        })
    }

    /// Refuses events whose JSON (data plus metadata) exceeds `bytes`.
    #[must_use]
    pub fn with_max_event_bytes(self, bytes: usize) -> Self {
        self.rebuild(|inner| inner.max_event_bytes = bytes)
    }

    /// Sets how subscriptions poll.
    #[must_use]
    pub fn with_subscription_options(self, options: SubscriptionOptions) -> Self {
        self.rebuild(|inner| inner.options = options)
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner,
            Err(shared) => Inner {
                pool: shared.pool.clone(),
                schema: shared.schema.clone(),
                sql: Sql::new(&shared.schema),
                signal: shared.signal.clone(),
                max_event_bytes: shared.max_event_bytes,
                options: shared.options,
            },
        };
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Creates the schema and applies missing migrations; returns the numbers applied.
    /// Idempotent; safe when several processes call it at once.
    ///
    /// # Errors
    /// [`PgError::Migration`] naming the failed migration, or a connection error.
    pub async fn migrate(&self) -> Result<Vec<i32>, PgError> {
        crate::migrate::migrate(&self.inner.pool, &self.inner.schema).await
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.inner.schema.name
    }

    /// The in-process signal fired after each committed append.
    pub fn append_signal(&self) -> &AppendSignal {
        &self.inner.signal
    }
}
