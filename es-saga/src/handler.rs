//! The runner as a consumer's [`MessageHandler`] and as a scheduler's [`DeadlineTarget`].

use es_core::{Deadline, Delivery, HandlerError, MessageHandler, SagaStore};

use crate::error::SagaError;
use crate::runner::SagaRunner;
use crate::saga::Saga;

#[async_trait::async_trait]
impl<S: Saga, St: SagaStore + 'static> MessageHandler for SagaRunner<S, St> {
    /// Handles the delivered message; errors map to [`HandlerError::Transient`] (not started
    /// yet, contention, store failure: the consumer retries) or [`HandlerError::Permanent`].
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        SagaRunner::handle(self, &delivery.message)
            .await
            .map(|_| ())
            .map_err(HandlerError::from)
    }
}

/// Where a [`DeadlineScheduler`](crate::DeadlineScheduler) delivers the deadlines of one saga.
#[async_trait::async_trait]
pub trait DeadlineTarget: Send + Sync {
    /// The persisted name of the saga whose deadlines this target takes.
    fn saga_name(&self) -> &str;

    /// Delivers `deadline` effectively once (a second delivery of the same deadline is a
    /// no-op).
    ///
    /// # Errors
    /// A [`SagaError`]; the deadline is then delivered again once its lease ends.
    async fn fire(&self, deadline: &Deadline) -> Result<(), SagaError>;
}

#[async_trait::async_trait]
impl<S: Saga, St: SagaStore + 'static> DeadlineTarget for SagaRunner<S, St> {
    fn saga_name(&self) -> &str {
        S::NAME
    }

    async fn fire(&self, deadline: &Deadline) -> Result<(), SagaError> {
        SagaRunner::fire(self, deadline).await.map(|_| ())
    }
}
