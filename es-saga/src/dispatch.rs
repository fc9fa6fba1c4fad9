//! Commands sent by a user-supplied dispatcher (internal HTTP, for example) instead of a
//! broker: dispatched after commit, from the outbox, with the message id as idempotency key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    BoxError, CheckpointError, CheckpointStore, OutboxMessage, OutboxSource, Position, StoreError,
};
use uuid::Uuid;

/// Failure of a command dispatch, or of the dispatch loop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The receiver may accept the command later (timeout, unavailable): retried.
    #[error("command {message_id} not dispatched yet: {source}")]
    Transient {
        /// The command.
        message_id: Uuid,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The receiver refused the command for good; the loop stops before it.
    #[error("command {message_id} refused: {source}")]
    Permanent {
        /// The command.
        message_id: Uuid,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Reading the outbox failed.
    #[error(transparent)]
    Outbox(#[from] StoreError),
    /// The checkpoint could not be read or moved (another loop took over, if stale).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Sends one command to its receiver, for example by internal HTTP with an M2M token.
///
/// The receiver must deduplicate on `idempotency_key` (the outbox message id): a command is
/// dispatched at least once, and again after a crash before the loop's checkpoint moved.
#[async_trait::async_trait]
pub trait CommandDispatcher: Send + Sync {
    /// Dispatches `command`.
    ///
    /// # Errors
    /// [`DispatchError::Transient`] to have it retried, [`DispatchError::Permanent`] to stop.
    async fn dispatch(
        &self,
        command: &OutboxMessage,
        idempotency_key: Uuid,
    ) -> Result<(), DispatchError>;
}

/// Reads the outbox after the saga commits and hands the commands it selects to a
/// [`CommandDispatcher`], in outbox order, each retried with backoff, keeping its place under
/// a named checkpoint (compare-and-set, so a second loop under the same name stops).
///
/// Together with the saga commit this is effectively once: a command exists only once its
/// decision committed, and is dispatched until acknowledged, with its message id as the
/// idempotency key. Run one loop per name; select the commands with
/// [`with_filter`](Self::with_filter) (by default, those whose topic is `commands.dispatch`).
pub struct DispatchLoop<O, C> {
    outbox: O,
    checkpoints: C,
    name: String,
    dispatcher: Arc<dyn CommandDispatcher>,
    filter: Arc<dyn Fn(&OutboxMessage) -> bool + Send + Sync>,
    batch_size: usize,
    max_attempts: u32,
    backoff: Duration,
}

/// The default topic of commands the dispatch loop sends.
pub const DISPATCH_TOPIC: &str = "commands.dispatch";

impl<O, C> fmt::Debug for DispatchLoop<O, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchLoop")
            .field("name", &self.name)
            .field("batch_size", &self.batch_size)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl<O: OutboxSource, C: CheckpointStore> DispatchLoop<O, C> {
    /// A loop named `name` (its checkpoint's name) reading `outbox`, dispatching through
    /// `dispatcher` the messages of topic [`DISPATCH_TOPIC`], batches of 100, 5 attempts
    /// 100 ms apart (doubling).
    pub fn new(
        name: impl Into<String>,
        outbox: O,
        checkpoints: C,
        dispatcher: impl CommandDispatcher + 'static,
    ) -> Self {
        Self {
            outbox,
            checkpoints,
            name: name.into(),
            dispatcher: Arc::new(dispatcher),
            filter: Arc::new(|message| message.topic.as_deref() == Some(DISPATCH_TOPIC)),
            batch_size: 100,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
        }
    }

    /// Dispatches only the messages `filter` selects; the others are passed over.
    #[must_use]
    pub fn with_filter(
        mut self,
        filter: impl Fn(&OutboxMessage) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter = Arc::new(filter);
        self
    }

    /// Tries a command at most `attempts` times per run (at least once), waiting `backoff`,
    /// doubled each time, between tries.
    #[must_use]
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.max_attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// Reads at most `batch_size` messages per run (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Dispatches the next batch after the checkpoint; returns how many commands were
    /// dispatched. The checkpoint moves past the prefix that was dispatched (or passed over),
    /// also when a command fails.
    ///
    /// # Errors
    /// The [`DispatchError`] of the command that failed after its retries (it is dispatched
    /// again by the next run), or of the outbox or checkpoint store.
    pub async fn run_once(&self) -> Result<usize, DispatchError> {
        let start = self.checkpoints.load_checkpoint(&self.name).await?;
        let batch = self
            .outbox
            .read_outbox(start.unwrap_or(Position::START), self.batch_size)
            .await?;
        let mut reached = start;
        let mut dispatched = 0;
        let mut failure = None;
        for stored in &batch.messages {
            if (self.filter)(&stored.message) {
                if let Err(error) = self.dispatch_with_retries(&stored.message).await {
                    failure = Some(error);
                    break;
                }
                dispatched += 1;
            }
            reached = Some(stored.position);
        }
        if let Some(position) = reached.filter(|position| Some(*position) != start) {
            self.checkpoints
                .compare_and_set_checkpoint(&self.name, start, position)
                .await?;
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(dispatched),
        }
    }

    async fn dispatch_with_retries(&self, message: &OutboxMessage) -> Result<(), DispatchError> {
        let mut backoff = self.backoff;
        let mut attempt = 1;
        loop {
            match self.dispatcher.dispatch(message, message.message_id).await {
                Ok(()) => return Ok(()),
                Err(DispatchError::Transient { .. }) if attempt < self.max_attempts => {
                    tracing::debug!(message_id = %message.message_id, attempt, "dispatch retried");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}
