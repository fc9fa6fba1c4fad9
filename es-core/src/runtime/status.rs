//! What the runtime reports about each service.

use std::time::SystemTime;

/// The state of a service in a runtime.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum ServiceState {
    /// Not started yet.
    Starting,
    /// Running.
    Running,
    /// Running and holding its lease (a leader-only service).
    Leading,
    /// Waiting for its lease, held by another runtime.
    Standby,
    /// Failed; runs again after a backoff.
    Restarting {
        /// How many times in a row it failed.
        attempt: u32,
        /// The last failure.
        error: String,
    },
    /// Returned before the shutdown: done, not run again.
    Completed,
    /// Stopped by the shutdown, within the drain deadline.
    Stopped,
    /// Still running when the drain deadline passed: aborted.
    Aborted,
}

impl ServiceState {
    /// The state's name, as it is serialized (`running`, `restarting`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Leading => "leading",
            Self::Standby => "standby",
            Self::Restarting { .. } => "restarting",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
            Self::Aborted => "aborted",
        }
    }
}

/// One service's entry in a runtime's status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// Its state.
    #[serde(flatten)]
    pub state: ServiceState,
    /// How many times it was restarted since the runtime started.
    pub restarts: u32,
    /// The last error it failed with, if any.
    pub last_error: Option<String>,
    /// When it last failed.
    #[serde(skip)]
    pub last_failure: Option<SystemTime>,
    /// A detail the service reported (a lag, a checkpoint).
    pub detail: Option<String>,
    /// Whether the service can do its work (a consumer: it has partitions). A runtime is
    /// ready when every service is.
    pub ready: bool,
}

impl ServiceStatus {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            state: ServiceState::Starting,
            restarts: 0,
            last_error: None,
            last_failure: None,
            detail: None,
            ready: false,
        }
    }
}
