//! The in-memory backend: every port, thread-safe, with the same semantics as the real
//! backends. It is the embedded default and the fast test backend; it keeps nothing across
//! restarts.

mod backend;
mod bus;
mod checkpoint;
mod inbox;
mod lease;
mod outbox;
mod paused;
mod projection;
mod saga;
mod store;
mod transaction;

use std::sync::{Mutex, MutexGuard};

pub use backend::MemoryBackend;
pub use bus::{MemoryBus, MemoryConsumer};
pub use checkpoint::MemoryCheckpointStore;
pub use inbox::{MemoryInbox, MemoryTransaction};
pub use lease::MemoryLeases;
pub use outbox::MemoryOutbox;
pub use paused::MemoryPausedPartitions;
pub use projection::MemoryReadModel;
pub use saga::MemorySagaStore;
pub use store::{DEFAULT_MAX_EVENT_SIZE, MemoryEventStore};
pub use transaction::MemoryStoreTransaction;

/// Locks `mutex`, recovering the data if a panicking thread poisoned it (every critical
/// section here leaves the state consistent before anything can panic).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
