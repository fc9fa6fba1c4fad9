//! The es-core saga contract against PostgreSQL, one property at a time.
//!
//! Several properties read the outbox right after committing and expect their messages there.
//! The PostgreSQL outbox is read gap-safely: only rows of transactions below the oldest one
//! still running anywhere in the cluster are readable, so any concurrent transaction that holds
//! a transaction id (another test's migration, a held inbox record) hides a message committed
//! after it began. So these properties run alone: under `scripts/test` by their `alone_`
//! module name, and within this binary one after another, each holding [`TURN`] from its
//! store's migration to its end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::future::Future;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use es_core::{
    Deadline, DeadlineStore, DeadlineStoreError, OutboxBatch, OutboxSource, Position, SagaCommit,
    SagaCommitOutcome, SagaInstance, SagaStore, SagaStoreError, StoreError,
};
use es_postgres::PgSagaStore;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

/// Taken by each property for its whole run.
static TURN: LazyLock<Arc<Mutex<()>>> = LazyLock::new(Arc::default);

/// A saga store in a fresh schema that holds this binary's turn until it is dropped.
struct OneAtATime {
    store: PgSagaStore,
    _turn: OwnedMutexGuard<()>,
}

async fn fresh() -> OneAtATime {
    let turn = Arc::clone(&TURN).lock_owned().await;
    OneAtATime {
        store: common::fresh_store().await.saga_store(),
        _turn: turn,
    }
}

mod alone_saga_contract {
    es_core::saga_contract_tests!(super::fresh());
}

impl SagaStore for OneAtATime {
    fn load(
        &self,
        saga: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<SagaInstance>, SagaStoreError>> + Send {
        self.store.load(saga, key)
    }

    fn commit(
        &self,
        commit: SagaCommit,
    ) -> impl Future<Output = Result<SagaCommitOutcome, SagaStoreError>> + Send {
        self.store.commit(commit)
    }

    fn history(
        &self,
        saga: &str,
        key: &str,
    ) -> impl Future<Output = Result<Vec<SagaInstance>, SagaStoreError>> + Send {
        self.store.history(saga, key)
    }

    fn list(
        &self,
        saga: &str,
        completed: Option<bool>,
    ) -> impl Future<Output = Result<Vec<SagaInstance>, SagaStoreError>> + Send {
        self.store.list(saga, completed)
    }
}

impl DeadlineStore for OneAtATime {
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Deadline>, DeadlineStoreError>> + Send {
        self.store.claim_due(now, lease, limit)
    }

    fn complete(&self, id: Uuid) -> impl Future<Output = Result<bool, DeadlineStoreError>> + Send {
        self.store.complete(id)
    }

    fn cancel(
        &self,
        saga: &str,
        key: &str,
        step: &str,
    ) -> impl Future<Output = Result<bool, DeadlineStoreError>> + Send {
        self.store.cancel(saga, key, step)
    }

    fn schedule(
        &self,
        deadline: Deadline,
    ) -> impl Future<Output = Result<(), DeadlineStoreError>> + Send {
        self.store.schedule(deadline)
    }
}

impl OutboxSource for OneAtATime {
    fn read_outbox(
        &self,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<OutboxBatch, StoreError>> + Send {
        self.store.read_outbox(after, limit)
    }

    fn delete_outbox_up_to(
        &self,
        up_to: Position,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.store.delete_outbox_up_to(up_to)
    }
}
