//! Snapshots: an aggregate's state saved at a version, so loads need not replay everything.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::StoreError;
use crate::ids::{StreamId, Version};

/// An aggregate's serialized state after the event at `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The stream.
    pub stream_id: StreamId,
    /// The stream version the state includes.
    pub version: Version,
    /// The aggregate's snapshot schema version: a snapshot taken under another one is ignored.
    pub snapshot_version: u32,
    /// The state as JSON.
    pub state: Value,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// When a repository takes a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotPolicy {
    /// Never.
    #[default]
    Never,
    /// When a save crosses a multiple of this many events (for example every 100).
    EveryNEvents(u64),
}

impl SnapshotPolicy {
    /// Whether a save that moved a stream from `before` to `after` should snapshot.
    pub fn due(&self, before: Version, after: Version) -> bool {
        match *self {
            Self::Never => false,
            Self::EveryNEvents(0) => false,
            Self::EveryNEvents(n) => before.get() / n != after.get() / n,
        }
    }
}

/// Stores the latest snapshot per stream.
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of `stream_id`, if any.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn load_snapshot(
        &self,
        stream_id: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Saves `snapshot`, replacing an older one of the same stream. Ignored when the stored
    /// one is newer (same snapshot version, higher stream version), and when the stream does
    /// not exist at that version or is deleted (so a late save cannot undo an erasure).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn save_snapshot(
        &self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
