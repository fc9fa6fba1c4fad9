//! Where the contexts keep their data, chosen once at start-up: the embedded default (in
//! memory) or PostgreSQL, one schema per context. The application is written once, generic
//! over [`ShopBackend`]; the choice is made when the app starts.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::memory::{MemoryBackend, MemoryEventStore, MemorySagaStore};
use es_core::privacy::{KeyStore, MasterKeys, MemoryKeyStore, Privacy};
use es_core::{AppendSignal, Backend as Ports, BoxError};
use es_postgres::{PgBackend, PgConfig, PgError, PgEventStore, PgSagaStore};

/// Cross-process wake-ups of one store (PostgreSQL's `LISTEN`/`NOTIFY`).
pub type Wakeups = es_postgres::PgWakeups;

use crate::catalog::{MemoryProducts, PgProducts, ProductTable};
use crate::orders::{MemoryOrdersView, OrdersReadModel, PgOrdersView};
use crate::storage::StorageError;

/// The storage every context is wired to.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Everything in memory: nothing survives a restart.
    Memory,
    /// PostgreSQL: each context gets the schema `{prefix}_{context}` in one database.
    Postgres(PgBackend),
}

/// How often a relay's lease is checked by its holder and tried by a standby.
const LEASE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

impl Backend {
    /// Connects to PostgreSQL at `url` with a pool of `pool_size` connections, each context
    /// in the schema `{prefix}_{context}`.
    ///
    /// # Errors
    /// [`PgError`] when the URL does not parse.
    pub fn postgres(url: &str, pool_size: usize, prefix: &str) -> Result<Self, PgError> {
        let config = PgConfig::new(url).pool_size(pool_size).schema(prefix);
        Ok(Backend::Postgres(PgBackend::new(&config)?))
    }

    /// The name of this backend, for logs and `/ready`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether the storage answers.
    ///
    /// # Errors
    /// [`StorageError`] when the database does not answer.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            Backend::Memory => Ok(()),
            Backend::Postgres(pg) => ShopBackend::check(pg).await,
        }
    }
}

/// What the application needs of a backend beyond the framework's ports: where the catalog's
/// table and the orders read model live, and whether relays take turns through leases.
#[async_trait]
pub trait ShopBackend: Ports<Store: Sync> + std::fmt::Debug {
    /// Its name, for logs and `/ready`.
    const NAME: &'static str;

    /// Whether the storage answers.
    ///
    /// # Errors
    /// [`StorageError`] when the storage does not answer.
    async fn check(&self) -> Result<(), StorageError>;

    /// The catalog's table, created and seeded.
    ///
    /// # Errors
    /// When the table cannot be prepared.
    async fn products(&self) -> Result<Arc<dyn ProductTable>, BoxError>;

    /// The orders read model over the orders store, reading events through `privacy`.
    fn orders_view(&self, store: &Self::Store, privacy: &Privacy) -> Arc<dyn OrdersReadModel>;

    /// The leases relays take turns by (`None`: one process, every relay runs).
    fn relay_leases(&self, store: &Self::Store) -> Option<Self::Leases>;

    /// The in-process signal fired after each committed append of `store` (wakes its relay).
    fn append_signal(store: &Self::Store) -> AppendSignal;

    /// The signal fired after each saga commit in this process.
    fn saga_signal(sagas: &Self::Sagas) -> AppendSignal;

    /// What wakes the readers of `store` in other processes sharing its storage when this
    /// one commits, and the readers here when they do (`None`: nothing else shares it).
    ///
    /// # Errors
    /// When it cannot be configured.
    fn wakeups(&self, store: &Self::Store) -> Result<Option<Wakeups>, BoxError>;

    /// As [`wakeups`](Self::wakeups), for the saga store.
    ///
    /// # Errors
    /// When it cannot be configured.
    fn saga_wakeups(&self, sagas: &Self::Sagas) -> Result<Option<Wakeups>, BoxError>;

    /// What tells the consumers of other processes sharing the storage that a relay here
    /// published (and the consumers here when one there did), on the channel of `name`
    /// (`None`: nothing else shares it).
    ///
    /// # Errors
    /// When it cannot be configured.
    fn published_wakeups(
        &self,
        name: &str,
        published: &AppendSignal,
    ) -> Result<Option<Wakeups>, BoxError>;

    /// The key store of the customers' personal data, its keys wrapped by `masters` at rest.
    ///
    /// # Errors
    /// When its storage cannot be prepared.
    async fn key_store(&self, masters: MasterKeys) -> Result<Arc<dyn KeyStore>, BoxError>;
}

#[async_trait]
impl ShopBackend for MemoryBackend {
    const NAME: &'static str = "memory";

    async fn check(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn products(&self) -> Result<Arc<dyn ProductTable>, BoxError> {
        Ok(Arc::new(MemoryProducts::default()))
    }

    fn orders_view(&self, store: &MemoryEventStore, privacy: &Privacy) -> Arc<dyn OrdersReadModel> {
        Arc::new(MemoryOrdersView::new(store.clone(), privacy.clone()))
    }

    fn relay_leases(&self, _store: &MemoryEventStore) -> Option<Self::Leases> {
        None
    }

    fn append_signal(store: &MemoryEventStore) -> AppendSignal {
        store.append_signal().clone()
    }

    fn saga_signal(sagas: &MemorySagaStore) -> AppendSignal {
        sagas.append_signal().clone()
    }

    fn wakeups(&self, _store: &MemoryEventStore) -> Result<Option<Wakeups>, BoxError> {
        Ok(None)
    }

    fn published_wakeups(
        &self,
        _name: &str,
        _published: &AppendSignal,
    ) -> Result<Option<Wakeups>, BoxError> {
        Ok(None)
    }

    fn saga_wakeups(&self, _sagas: &MemorySagaStore) -> Result<Option<Wakeups>, BoxError> {
        Ok(None)
    }

    async fn key_store(&self, _masters: MasterKeys) -> Result<Arc<dyn KeyStore>, BoxError> {
        Ok(Arc::new(MemoryKeyStore::new()))
    }
}

#[async_trait]
impl ShopBackend for PgBackend {
    const NAME: &'static str = "postgres";

    async fn check(&self) -> Result<(), StorageError> {
        PgBackend::check(self).await.map_err(StorageError::other)
    }

    async fn products(&self) -> Result<Arc<dyn ProductTable>, BoxError> {
        let store = self.store("catalog").await?;
        Ok(Arc::new(PgProducts::open(&store).await?))
    }

    fn orders_view(&self, store: &PgEventStore, privacy: &Privacy) -> Arc<dyn OrdersReadModel> {
        Arc::new(PgOrdersView::new(store.clone(), privacy.clone()))
    }

    fn relay_leases(&self, store: &PgEventStore) -> Option<Self::Leases> {
        // A holder checks its lock this often: a relay's checkpoint is a compare-and-set, so a
        // holder that lost its lock unknowingly cannot overwrite its successor's work.
        Some(self.leases(store).with_poll(LEASE_POLL))
    }

    fn append_signal(store: &PgEventStore) -> AppendSignal {
        store.append_signal().clone()
    }

    fn saga_signal(sagas: &PgSagaStore) -> AppendSignal {
        sagas.append_signal().clone()
    }

    fn wakeups(&self, store: &PgEventStore) -> Result<Option<Wakeups>, BoxError> {
        Ok(Some(PgBackend::wakeups(self, store)?))
    }

    fn published_wakeups(
        &self,
        name: &str,
        published: &AppendSignal,
    ) -> Result<Option<Wakeups>, BoxError> {
        Ok(Some(self.signal_wakeups(name, published.clone())?))
    }

    fn saga_wakeups(&self, sagas: &PgSagaStore) -> Result<Option<Wakeups>, BoxError> {
        Ok(Some(PgBackend::wakeups(self, sagas.event_store())?))
    }

    async fn key_store(&self, masters: MasterKeys) -> Result<Arc<dyn KeyStore>, BoxError> {
        Ok(Arc::new(self.store("privacy").await?.keys(masters)))
    }
}
