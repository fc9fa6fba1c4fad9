//! The saga, deadline and checkpoint stores of the workflow, in memory or on PostgreSQL.

use chrono::{DateTime, Utc};
use es_core::memory::MemoryPausedPartitions;
use es_core::memory::{MemoryCheckpointStore, MemorySagaStore};
use es_core::{
    CheckpointError, CheckpointStore, Deadline, DeadlineStore, DeadlineStoreError, OutboxBatch,
    OutboxSource, Position, SagaCommit, SagaCommitOutcome, SagaInstance, SagaStore, SagaStoreError,
    StoreError,
};
use es_core::{PausedPartition, PausedPartitions, PausedPartitionsError};
use es_postgres::{PgCheckpointStore, PgPausedPartitions, PgSagaStore};
use uuid::Uuid;

/// Saga state, deadlines and the saga's outbox.
#[derive(Debug, Clone)]
pub enum SagaStores {
    /// In memory.
    Memory(MemorySagaStore),
    /// On PostgreSQL.
    Postgres(PgSagaStore),
}

impl SagaStore for SagaStores {
    async fn load(&self, saga: &str, key: &str) -> Result<Option<SagaInstance>, SagaStoreError> {
        match self {
            Self::Memory(s) => s.load(saga, key).await,
            Self::Postgres(s) => s.load(saga, key).await,
        }
    }

    async fn commit(&self, commit: SagaCommit) -> Result<SagaCommitOutcome, SagaStoreError> {
        match self {
            Self::Memory(s) => s.commit(commit).await,
            Self::Postgres(s) => s.commit(commit).await,
        }
    }

    async fn history(&self, saga: &str, key: &str) -> Result<Vec<SagaInstance>, SagaStoreError> {
        match self {
            Self::Memory(s) => s.history(saga, key).await,
            Self::Postgres(s) => s.history(saga, key).await,
        }
    }

    async fn list(
        &self,
        saga: &str,
        completed: Option<bool>,
    ) -> Result<Vec<SagaInstance>, SagaStoreError> {
        match self {
            Self::Memory(s) => s.list(saga, completed).await,
            Self::Postgres(s) => s.list(saga, completed).await,
        }
    }
}

impl DeadlineStore for SagaStores {
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Deadline>, DeadlineStoreError> {
        match self {
            Self::Memory(s) => s.claim_due(now, lease, limit).await,
            Self::Postgres(s) => s.claim_due(now, lease, limit).await,
        }
    }

    async fn complete(&self, id: Uuid) -> Result<bool, DeadlineStoreError> {
        match self {
            Self::Memory(s) => s.complete(id).await,
            Self::Postgres(s) => s.complete(id).await,
        }
    }

    async fn cancel(&self, saga: &str, key: &str, step: &str) -> Result<bool, DeadlineStoreError> {
        match self {
            Self::Memory(s) => s.cancel(saga, key, step).await,
            Self::Postgres(s) => s.cancel(saga, key, step).await,
        }
    }

    async fn schedule(&self, deadline: Deadline) -> Result<(), DeadlineStoreError> {
        match self {
            Self::Memory(s) => s.schedule(deadline).await,
            Self::Postgres(s) => s.schedule(deadline).await,
        }
    }
}

impl OutboxSource for SagaStores {
    async fn read_outbox(&self, after: Position, limit: usize) -> Result<OutboxBatch, StoreError> {
        match self {
            Self::Memory(s) => s.read_outbox(after, limit).await,
            Self::Postgres(s) => s.read_outbox(after, limit).await,
        }
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, StoreError> {
        match self {
            Self::Memory(s) => s.delete_outbox_up_to(up_to).await,
            Self::Postgres(s) => s.delete_outbox_up_to(up_to).await,
        }
    }
}

/// The relays' checkpoints.
#[derive(Debug, Clone)]
pub enum Checkpoints {
    /// In memory.
    Memory(MemoryCheckpointStore),
    /// On PostgreSQL.
    Postgres(PgCheckpointStore),
}

impl CheckpointStore for Checkpoints {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, CheckpointError> {
        match self {
            Self::Memory(s) => s.load_checkpoint(name).await,
            Self::Postgres(s) => s.load_checkpoint(name).await,
        }
    }

    async fn compare_and_set_checkpoint(
        &self,
        name: &str,
        expected: Option<Position>,
        new: Position,
    ) -> Result<(), CheckpointError> {
        match self {
            Self::Memory(s) => s.compare_and_set_checkpoint(name, expected, new).await,
            Self::Postgres(s) => s.compare_and_set_checkpoint(name, expected, new).await,
        }
    }
}

/// Consumer partitions paused by policy: in memory, or in the saga schema's
/// `paused_partitions` table.
#[derive(Debug, Clone)]
pub enum PausedStore {
    /// In memory.
    Memory(MemoryPausedPartitions),
    /// On PostgreSQL.
    Postgres(PgPausedPartitions),
}

impl PausedPartitions for PausedStore {
    async fn pause(&self, paused: PausedPartition) -> Result<(), PausedPartitionsError> {
        match self {
            Self::Memory(s) => s.pause(paused).await,
            Self::Postgres(s) => s.pause(paused).await,
        }
    }

    async fn resume(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(), PausedPartitionsError> {
        match self {
            Self::Memory(s) => s.resume(group, topic, partition).await,
            Self::Postgres(s) => s.resume(group, topic, partition).await,
        }
    }

    async fn list(&self, group: &str) -> Result<Vec<PausedPartition>, PausedPartitionsError> {
        match self {
            Self::Memory(s) => s.list(group).await,
            Self::Postgres(s) => s.list(group).await,
        }
    }
}
