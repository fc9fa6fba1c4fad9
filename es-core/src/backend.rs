//! A backend chosen once: an application generic over [`Backend`] runs on memory or on
//! PostgreSQL without a forwarding type per port.

use std::future::Future;

use crate::checkpoint::CheckpointStore;
use crate::error::BoxError;
use crate::outbox::OutboxSource;
use crate::paused::PausedPartitions;
use crate::runtime::Lease;
use crate::saga::{DeadlineStore, SagaStore};
use crate::transaction::TransactionalStore;

/// Every port an application needs, from one backend: event stores (one per bounded
/// context), checkpoints, saga and deadline stores, paused partitions and leases. Write the
/// application as a function generic over `B: Backend` and call it with the backend chosen
/// at start-up (`es_core::memory::MemoryBackend` or `es_postgres::PgBackend`): each port is
/// the backend's own type, with no enum forwarding every method.
///
/// ```
/// use es_core::memory::MemoryBackend;
/// use es_core::{AppendRequest, Backend, EventStore, ExpectedVersion, StreamId};
///
/// /// The application: written once, for any backend.
/// async fn open_account<B: Backend>(backend: &B) -> Result<u64, es_core::BoxError> {
///     let accounts = backend.store("accounts").await?;
///     let id = StreamId::new("account-1")?;
///     accounts.append(AppendRequest::new(id.clone(), ExpectedVersion::Any)).await?;
///     Ok(accounts.stream_version(&id).await?.get())
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // Chosen once, at start-up (with PostgreSQL: `es_postgres::PgBackend::new(config)`).
/// let backend = MemoryBackend::new();
/// assert_eq!(open_account(&backend).await?, 0);
/// # Ok::<(), es_core::BoxError>(())
/// # }).unwrap();
/// ```
pub trait Backend: Clone + Send + Sync + 'static {
    /// The event store of one context (events, snapshots, outbox, records of handled
    /// messages), with transactions.
    type Store: TransactionalStore + OutboxSource;
    /// Checkpoints of relays and subscriptions.
    type Checkpoints: CheckpointStore + Clone + 'static;
    /// Saga instances and deadlines (and the saga commands' outbox).
    type Sagas: SagaStore + DeadlineStore + OutboxSource + Clone + 'static;
    /// Consumer partitions held paused by policy.
    type PausedPartitions: PausedPartitions + Clone + 'static;
    /// Leases for leader-only services.
    type Leases: Lease + Clone;

    /// The store of bounded context `context` (a schema of its own on PostgreSQL, created and
    /// migrated on first use; a store of its own in memory). The same context gives the same
    /// data.
    ///
    /// # Errors
    /// The backend's failure to reach or migrate the store.
    fn store(&self, context: &str) -> impl Future<Output = Result<Self::Store, BoxError>> + Send;

    /// Checkpoints kept beside `store`.
    fn checkpoints(&self, store: &Self::Store) -> Self::Checkpoints;

    /// The saga and deadline store beside `store`.
    fn sagas(&self, store: &Self::Store) -> Self::Sagas;

    /// Paused partitions kept beside `store`.
    fn paused_partitions(&self, store: &Self::Store) -> Self::PausedPartitions;

    /// Leases shared by every runtime on this backend (every process on the same database).
    fn leases(&self, store: &Self::Store) -> Self::Leases;
}
