//! Event sourcing vocabulary and ports.

mod checkpoint;
mod clock;
mod error;
mod event;
mod ids;
mod inbox;
pub mod memory;
mod metadata;
mod outbox;
mod registry;
mod saga;
pub mod testing;

pub use checkpoint::{CheckpointError, CheckpointStore};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{BoxError, Conflict, StoreError};
pub use event::{
    CodecError, DecodeError, DomainEvent, EventType, NewEvent, RecordedEvent, decode_data,
};
pub use ids::{
    EventId, ExpectedVersion, InvalidStreamId, MAX_STREAM_ID_LEN, Position, StreamId, Version,
};
pub use inbox::{Inbox, InboxError};
pub use metadata::{CommandContext, Metadata};
pub use outbox::{OutboxBatch, OutboxMessage, OutboxSource, StoredOutboxMessage};
pub use registry::{EventRegistry, RegistryError};
pub use saga::{
    Deadline, DeadlineStore, DeadlineStoreError, SagaCommit, SagaCommitOutcome, SagaInstance,
    SagaStore, SagaStoreError,
};
