//! What the daemon reports: state, versions, lag and rebuild progress.

use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::Position;

/// The state of a projection, as recorded in the `projections` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProjectionState {
    /// Applying events to its active version.
    Running,
    /// Stopped before a failing event; see [`ProjectionStatus::error`].
    Paused,
    /// Rebuilding a new version while the active one serves.
    Rebuilding,
}

impl ProjectionState {
    pub(crate) fn parse(text: &str) -> Self {
        match text {
            "paused" => Self::Paused,
            "rebuilding" => Self::Rebuilding,
            _ => Self::Running,
        }
    }

    /// The name stored in the table.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Rebuilding => "rebuilding",
        }
    }
}

/// A rebuild in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildProgress {
    /// The version being built.
    pub version: u32,
    /// Events applied so far.
    pub done: u64,
    /// Events to apply (counted when the rebuild started; the log may have grown since).
    pub total: u64,
    /// Events per second, measured by the node running it (`None` elsewhere).
    pub rate: Option<f64>,
    /// Estimated time left at that rate.
    pub eta: Option<Duration>,
}

/// The status of one projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Its state.
    pub state: ProjectionState,
    /// The version readers should use.
    pub active_version: u32,
    /// The active version's checkpoint.
    pub checkpoint: Option<Position>,
    /// Events in the log past the checkpoint (lag in events).
    pub lag_events: u64,
    /// When the last applied event was recorded.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Time between the last applied event's recording and now, while events are pending
    /// (zero when caught up).
    pub lag_time: Duration,
    /// Events applied to the active version since it was created.
    pub applied_events: u64,
    /// A rebuild in progress.
    pub rebuild: Option<RebuildProgress>,
    /// Why it is paused.
    pub paused_reason: Option<String>,
    /// The error that paused it.
    pub error: Option<String>,
    /// The stream and version of the event it is paused before.
    pub paused_at: Option<(String, u64)>,
    /// Whether this daemon leads it now.
    pub leading_here: bool,
    /// The backend process holding the leadership lock, when this daemon leads.
    pub leader_backend_pid: Option<i32>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// An event skipped by [`PoisonPolicy::Skip`](crate::PoisonPolicy::Skip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The projection that skipped it.
    pub projection: String,
    /// The version being written.
    pub version: u32,
    /// The event's position.
    pub position: Position,
    /// The event's stream.
    pub stream_id: String,
    /// The event's version in its stream.
    pub stream_version: u64,
    /// The event's type.
    pub event_type: String,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}
