#![doc = include_str!("../README.md")]

mod aggregate;
mod aggregate_handler;
mod backend;
mod checkpoint;
mod clock;
mod config;
pub mod consume;
pub mod dead_letter;
mod dispatch;
mod error;
mod event;
mod exactly_once;
mod ids;
mod inbox;
pub mod local;
pub mod memory;
mod message_type;
mod messaging;
mod metadata;
mod outbox;
mod paused;
pub mod privacy;
mod projection;
mod registry;
pub mod relay;
mod repository;
pub mod runtime;
mod saga;
mod snapshot;
mod store;
mod subscription;
pub mod telemetry;
pub mod testing;
mod timestamp;
mod transaction;
mod unit;

pub use aggregate::Aggregate;
pub use aggregate_handler::{AggregateHandler, AggregateMessageHandler};
pub use backend::Backend;
pub use checkpoint::{CheckpointError, CheckpointStore};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{OptionsError, duration, options_from_env, options_from_vars};
pub use dispatch::{HandlerRegistry, Typed, TypedHandler};
pub use error::{BoxError, Conflict, StoreError};
pub use es_macros::{DomainEvent, MessageType};
pub use event::{
    CodecError, DecodeError, DomainEvent, EventType, NewEvent, RecordedEvent, decode_data,
};
pub use exactly_once::{DEFAULT_CONFLICT_RETRIES, Handled, InboxHandler, TransactionalHandler};
pub use ids::{
    EventId, ExpectedVersion, InvalidStreamId, MAX_STREAM_ID_LEN, Position, StreamId, Version,
};
pub use inbox::{Inbox, InboxError};
pub use message_type::{MessageType, decode_message, encode_message};
pub use messaging::{
    Consumer, ConsumerError, Delivery, HandlerError, MessageHandler, PublishError, PublishFailure,
    Publisher,
};
pub use metadata::{CommandContext, Metadata};
pub use outbox::{OutboxBatch, OutboxMessage, OutboxSource, StoredOutboxMessage};
pub use paused::{PausedPartition, PausedPartitions, PausedPartitionsError};
pub use projection::{Projection, ProjectionError, fold};
pub use registry::{EventRegistry, RegistryError};
pub use repository::{Executed, Loaded, Repository, RepositoryError};
pub use saga::{
    Deadline, DeadlineStore, DeadlineStoreError, SagaCommit, SagaCommitOutcome, SagaInstance,
    SagaStore, SagaStoreError,
};
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
pub use store::{
    AppendOutcome, AppendRequest, AppendStatus, DeleteMode, Direction, EventStore, LogBatch,
    LogFilter, StreamRead, SubscriptionItem, TOMBSTONE_EVENT_TYPE,
};
pub use subscription::{AppendSignal, SubscriptionOptions, poll_subscription};
pub use transaction::{Committed, StoreTransaction, TransactionalStore};
pub use unit::{Done, Rerun, UnitError, UnitOfWork};
