//! The messaging ports: publishing integration messages to a broker and consuming them back,
//! modelled on Kafka's partitioned topics and consumer groups.

use std::fmt;

use uuid::Uuid;

use crate::error::{BoxError, Conflict, StoreError};
use crate::ids::StreamId;
use crate::outbox::OutboxMessage;
use crate::unit::{Rerun, UnitError};

/// One message as a consumer received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The message; its `topic` is the topic it was read from.
    pub message: OutboxMessage,
    /// The topic it was read from.
    pub topic: String,
    /// The partition of `topic` it was read from.
    pub partition: u32,
    /// Its offset in that partition (the first message of a partition is at offset 0).
    pub offset: u64,
    /// 1 on the first delivery of this offset to this consumer, one more for each redelivery
    /// asked for with [`Consumer::retry`].
    pub attempt: u32,
}

/// Why a message could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The message names no topic and the publisher has no routing rule for it.
    #[error("message {message_id} names no topic and no routing rule chooses one")]
    Unroutable {
        /// The message.
        message_id: Uuid,
    },
    /// The broker refused the message for good (too large, not authorized, ...): publishing it
    /// again will fail again.
    #[error("the broker rejected message {message_id}: {reason}")]
    Rejected {
        /// The message.
        message_id: Uuid,
        /// The broker's reason.
        reason: String,
    },
    /// The backend failed (connection, timeout, broker error); publishing again may succeed.
    #[error("publisher backend failed: {0}")]
    Backend(#[source] BoxError),
    /// The publisher is unusable for good (for example a Kafka idempotent producer that
    /// raised a fatal error to keep its ordering guarantee): create a new one, and publish
    /// again from the last checkpoint.
    #[error("publisher failed fatally and must be recreated: {0}")]
    Fatal(#[source] BoxError),
}

impl PublishError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }

    /// Wraps the error that made the publisher unusable.
    pub fn fatal(error: impl Into<BoxError>) -> Self {
        Self::Fatal(error.into())
    }

    /// Whether the publisher must be recreated before publishing again.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Fatal(_))
    }
}

/// A failed [`Publisher::publish`]: how many messages were acknowledged before the failure,
/// and why the next one was not.
#[derive(Debug, thiserror::Error)]
#[error("publishing failed after {acknowledged} acknowledged messages: {error}")]
pub struct PublishFailure {
    /// The length of the prefix of the batch that the broker durably acknowledged; the
    /// outbox relay moves its checkpoint past these messages only.
    pub acknowledged: usize,
    /// Why the message at index `acknowledged` was not published.
    #[source]
    pub error: PublishError,
}

impl PublishFailure {
    /// A failure after the first `acknowledged` messages of the batch were acknowledged.
    pub fn new(acknowledged: usize, error: PublishError) -> Self {
        Self {
            acknowledged,
            error,
        }
    }
}

/// Sends integration messages to a broker: the outbox relay's sink.
///
/// Messages with the same `partition_key` (and topic) must reach the broker in the order of
/// the batch, and a batch published after another one succeeded comes after it.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `messages` in order and returns once the broker durably acknowledged all of
    /// them.
    ///
    /// # Errors
    /// A [`PublishFailure`] telling how long a prefix of `messages` was acknowledged before
    /// the failure; messages after that prefix may or may not have been published (a retry
    /// can duplicate them, never reorder a key).
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure>;
}

/// Failure of a [`Consumer`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The consumer was shut down.
    #[error("the consumer is closed")]
    Closed,
    /// The delivery was not (or is no longer) delivered to this consumer: its offset was never
    /// received, or was rewound by [`Consumer::retry`] and not received again since.
    #[error("{topic}/{partition} offset {offset} is not a delivery this consumer holds")]
    UnknownDelivery {
        /// The delivery's topic.
        topic: String,
        /// The delivery's partition.
        partition: u32,
        /// The delivery's offset.
        offset: u64,
    },
    /// The delivery's partition is no longer assigned to this consumer (a rebalance gave it
    /// to another member of the group, which resumes at the last committed offset).
    #[error("{topic}/{partition} is not assigned to this consumer")]
    PartitionNotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The backend failed.
    #[error("consumer backend failed: {0}")]
    Backend(#[source] BoxError),
}

impl ConsumerError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }

    /// The [`ConsumerError::UnknownDelivery`] error for `delivery`.
    pub fn unknown_delivery(delivery: &Delivery) -> Self {
        Self::UnknownDelivery {
            topic: delivery.topic.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
        }
    }
}

/// One member of a consumer group reading some topics, at least once.
///
/// Modelled on a Kafka consumer with automatic commits off: the group's members share its
/// committed offsets and split the subscribed topics' partitions among themselves, one member
/// per partition at a time, so messages of one partition (and so of one key) are handled in
/// order. A member that joins, or takes over a partition, resumes at the group's committed
/// offset: what was delivered but not committed is delivered again, never skipped.
#[async_trait::async_trait]
pub trait Consumer: Send {
    /// Waits for the next message of the partitions assigned to this consumer; messages of
    /// one partition come in offset order.
    ///
    /// Implementations should be cancel-safe: dropping the future before it completes loses
    /// no message.
    ///
    /// # Errors
    /// [`ConsumerError::Closed`] once the consumer is shut down, or
    /// [`ConsumerError::Backend`] when the backend fails.
    async fn recv(&mut self) -> Result<Delivery, ConsumerError>;

    /// Records that `delivery`, and everything before it in its partition, is handled. Once
    /// this returns, the commit is durable for the group: a member that takes the partition
    /// over resumes after `delivery`.
    ///
    /// # Errors
    /// [`ConsumerError::PartitionNotAssigned`] when the partition was revoked (its new owner
    /// will deliver the message again), [`ConsumerError::UnknownDelivery`] when this consumer
    /// does not hold the delivery, or [`ConsumerError::Backend`].
    async fn commit(&mut self, delivery: &Delivery) -> Result<(), ConsumerError>;

    /// Rewinds `delivery`'s partition so that its offset is the next one this consumer
    /// receives from that partition, with `attempt` one higher. Later messages of the partition
    /// already fetched (or received) are discarded and delivered again after it, so they are
    /// never taken for handled ones.
    ///
    /// # Errors
    /// [`ConsumerError::PartitionNotAssigned`], [`ConsumerError::UnknownDelivery`] or
    /// [`ConsumerError::Backend`], as for [`Consumer::commit`].
    async fn retry(&mut self, delivery: &Delivery) -> Result<(), ConsumerError>;

    /// The consumer group this member belongs to.
    fn group_id(&self) -> &str;

    /// The (topic, partition) pairs assigned to this member now (empty until it has joined
    /// its group and been given partitions).
    fn assignment(&self) -> Vec<(String, u32)>;

    /// Rewinds `delivery`'s partition to it, to be received again with `attempt` (what
    /// [`retry`](Consumer::retry) does with one more than the delivery's attempt).
    ///
    /// # Errors
    /// As [`Consumer::retry`].
    fn rewind(&mut self, delivery: &Delivery, attempt: u32) -> Result<(), ConsumerError>;

    /// Stops receiving from `topic`/`partition` while the others go on (messages already
    /// received stay valid), until [`resume`](Consumer::resume).
    ///
    /// # Errors
    /// [`ConsumerError::PartitionNotAssigned`] or [`ConsumerError::Backend`].
    fn pause(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError>;

    /// Receives from a paused partition again.
    ///
    /// # Errors
    /// [`ConsumerError::PartitionNotAssigned`] or [`ConsumerError::Backend`].
    fn resume(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError>;

    /// Receives from several paused partitions again, in one call where the backend has one
    /// (the default resumes each in turn). Every partition is tried; the first failure is
    /// returned.
    ///
    /// # Errors
    /// As [`Consumer::resume`].
    fn resume_all(&mut self, partitions: &[(String, u32)]) -> Result<(), ConsumerError> {
        let mut first = Ok(());
        for (topic, partition) in partitions {
            if let Err(error) = self.resume(topic, *partition)
                && first.is_ok()
            {
                first = Err(error);
            }
        }
        first
    }

    /// Records that `delivery` (and everything before it in its partition) is handled,
    /// without waiting: [`commit_stored`](Consumer::commit_stored), a rebalance or the
    /// shutdown commits it. Cheaper than [`commit`](Consumer::commit).
    ///
    /// # Errors
    /// As [`Consumer::commit`].
    fn store(&mut self, delivery: &Delivery) -> Result<(), ConsumerError>;

    /// Commits everything [`store`](Consumer::store)d and waits until the group has it.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`].
    async fn commit_stored(&mut self) -> Result<(), ConsumerError>;

    /// Starts committing everything stored without waiting (a consumer loop's periodic
    /// commit); by default it does nothing, for consumers whose `store` is already durable.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`].
    fn commit_stored_in_background(&mut self) -> Result<(), ConsumerError> {
        Ok(())
    }

    /// Publishes `delivery` to its dead-letter destination with `reason` and `attempts`
    /// recorded in its headers (`es-dlq-error`, `es-dlq-attempts`, the original topic,
    /// partition and offset, the group, the time), waits until it is durable, then
    /// [`store`](Consumer::store)s the delivery.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when the publish fails (nothing is stored then), or as
    /// [`Consumer::store`].
    async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumerError>;
}

/// Why a [`MessageHandler`] did not handle a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// A failure that may pass (database down, timeout): retry the message.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A failure that will not pass (malformed payload, unknown type): dead-letter the message
    /// at once.
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// A stream moved under the handler's transaction: its unit of work runs again (and a
    /// consumer loop retries the message once that gives up).
    #[error(transparent)]
    Conflict(Conflict),
    /// The handler's transaction appended, after writing, to a stream it had not locked: its
    /// unit of work runs again with the stream locked first.
    #[error("stream {0} was not locked first")]
    StreamNotLocked(StreamId),
}

impl From<StoreError> for HandlerError {
    /// Conflicts and unlocked streams stay typed (a unit of work runs again on them); a
    /// backend failure is transient; anything else (a deleted stream, an oversized or
    /// duplicate event) is permanent.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(conflict) => Self::Conflict(conflict),
            StoreError::StreamNotLocked(stream) => Self::StreamNotLocked(stream),
            StoreError::Backend(_) => Self::transient(error),
            other => Self::permanent(other),
        }
    }
}

impl UnitError for HandlerError {
    fn rerun(&self) -> Option<Rerun<'_>> {
        match self {
            Self::Conflict(conflict) => Some(Rerun::Conflict(conflict)),
            Self::StreamNotLocked(stream) => Some(Rerun::Lock(stream)),
            _ => None,
        }
    }
}

impl HandlerError {
    /// A [`HandlerError::Transient`] error described by `reason`.
    pub fn transient(reason: impl fmt::Display) -> Self {
        Self::Transient(reason.to_string())
    }

    /// A [`HandlerError::Permanent`] error described by `reason`.
    pub fn permanent(reason: impl fmt::Display) -> Self {
        Self::Permanent(reason.to_string())
    }

    /// Whether retrying may help (a conflict or an unlocked stream is worth a retry too).
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Permanent(_))
    }
}

/// Handles delivered messages; a consumer loop commits a message once its handler succeeded.
///
/// Delivery is at least once, so a handler must tolerate duplicates (for example by recording
/// the message id in an inbox in the same transaction as its effects).
///
/// ```
/// use es_core::{Delivery, HandlerError, MessageHandler};
///
/// struct PrintOrders;
///
/// #[async_trait::async_trait]
/// impl MessageHandler for PrintOrders {
///     async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
///         let order_id = delivery.message.payload["orderId"]
///             .as_str()
///             .ok_or_else(|| HandlerError::permanent("no orderId"))?;
///         println!("order {order_id} at offset {}", delivery.offset);
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait MessageHandler: Send + Sync {
    /// Handles one delivery.
    ///
    /// # Errors
    /// [`HandlerError::Transient`] to have the message retried, [`HandlerError::Permanent`] to
    /// have it dead-lettered.
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError>;
}
