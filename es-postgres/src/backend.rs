//! `PgBackend`: every es-core port on one PostgreSQL database.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::Pool;
use es_core::{Backend, BoxError};

use crate::checkpoint::PgCheckpointStore;
use crate::config::PgConfig;
use crate::error::PgError;
use crate::lease::PgLeases;
use crate::paused::PgPausedPartitions;
use crate::saga::PgSagaStore;
use crate::store::PgEventStore;
use crate::wakeup::PgWakeups;

/// Every port on one PostgreSQL database ([`Backend`]): each context's store in a schema of its
/// own, `<schema>_<context>` (the configuration's schema as the prefix), created and migrated
/// on first use, all on one connection pool. The same context gives the same store (so its
/// in-process wake-ups reach every reader). Clones share everything.
///
/// ```no_run
/// use es_core::Backend;
/// use es_postgres::{PgBackend, PgConfig};
///
/// # async fn demo() -> Result<(), es_core::BoxError> {
/// let backend = PgBackend::new(&PgConfig::from_env()?.schema("shop"))?;
/// let orders = backend.store("orders").await?; // schema shop_orders
/// let relay_checkpoints = backend.checkpoints(&orders);
/// # let _ = relay_checkpoints;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgBackend {
    url: String,
    pool: Pool,
    prefix: String,
    max_event_bytes: usize,
    stores: Arc<Mutex<HashMap<String, PgEventStore>>>,
    migrations: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// A backend on `config`'s database; its schema is the prefix of every context's schema.
    ///
    /// # Errors
    /// [`PgError::Config`] when the pool cannot be built.
    pub fn new(config: &PgConfig) -> Result<Self, PgError> {
        Ok(Self {
            url: config.url.clone(),
            pool: config.pool()?,
            prefix: config.schema.clone(),
            max_event_bytes: config.max_event_bytes,
            stores: Arc::default(),
            migrations: Arc::default(),
        })
    }

    /// Whether the database answers (`SELECT 1` on a pooled connection): touches no schema,
    /// so it holds for a role that may use only its own.
    ///
    /// # Errors
    /// [`PgError`] when no connection can be had or the statement fails.
    pub async fn check(&self) -> Result<(), PgError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The schema of `context`.
    pub fn schema_of(&self, context: &str) -> String {
        format!("{}_{context}", self.prefix)
    }

    /// Wake-ups across processes for `store`, listening on a connection to this backend's
    /// database (see [`PgWakeups`]).
    ///
    /// # Errors
    /// [`PgError::Config`] when the URL does not parse.
    pub fn wakeups(&self, store: &PgEventStore) -> Result<PgWakeups, PgError> {
        PgWakeups::new(&self.url, store)
    }

    /// Wake-ups across processes for `signal` on the channel `es:<name>` (see
    /// [`PgWakeups::for_signal`]), on this backend's database.
    ///
    /// # Errors
    /// [`PgError::Config`] when the URL does not parse.
    pub fn signal_wakeups(
        &self,
        name: &str,
        signal: es_core::AppendSignal,
    ) -> Result<PgWakeups, PgError> {
        PgWakeups::for_signal(&self.url, self.pool.clone(), name, signal)
    }

    fn cached(&self, context: &str) -> Option<PgEventStore> {
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(context)
            .cloned()
    }
}

impl Backend for PgBackend {
    type Store = PgEventStore;
    type Checkpoints = PgCheckpointStore;
    type Sagas = PgSagaStore;
    type PausedPartitions = PgPausedPartitions;
    type Leases = PgLeases;

    async fn store(&self, context: &str) -> Result<PgEventStore, BoxError> {
        if let Some(store) = self.cached(context) {
            return Ok(store);
        }
        // One migration at a time per backend: the same context asked twice at once is
        // migrated once and shared.
        let _migrating = self.migrations.lock().await;
        if let Some(store) = self.cached(context) {
            return Ok(store);
        }
        let store = PgEventStore::with_pool(self.pool.clone(), &self.schema_of(context))?
            .with_max_event_bytes(self.max_event_bytes);
        store.migrate().await?;
        self.stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(context.to_owned(), store.clone());
        Ok(store)
    }

    fn checkpoints(&self, store: &PgEventStore) -> PgCheckpointStore {
        store.checkpoints()
    }

    fn sagas(&self, store: &PgEventStore) -> PgSagaStore {
        store.saga_store()
    }

    fn paused_partitions(&self, store: &PgEventStore) -> PgPausedPartitions {
        store.paused_partitions()
    }

    fn leases(&self, store: &PgEventStore) -> PgLeases {
        store.leases()
    }
}
