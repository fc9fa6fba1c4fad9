//! How the daemon and each projection run.

use std::time::Duration;

/// What to do with an event that still fails after [`ProjectionOptions::max_attempts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PoisonPolicy {
    /// Pause the projection before the event, record why, and wait for
    /// [`resume`](crate::ProjectionDaemon::resume) (the default): nothing is skipped.
    #[default]
    Pause,
    /// Record the event in `projection_dead_letters` and move past it, in one transaction.
    Skip,
}

/// How one projection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionOptions {
    /// Events read and applied per transaction.
    pub batch_size: usize,
    /// Attempts at a failing event before the policy applies (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub retry_backoff: Duration,
    /// What to do with an event that keeps failing.
    pub on_poison: PoisonPolicy,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(100),
            on_poison: PoisonPolicy::Pause,
        }
    }
}

impl ProjectionOptions {
    /// Sets the batch size.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets the attempts and the first backoff.
    #[must_use]
    pub fn retries(mut self, max_attempts: u32, backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.retry_backoff = backoff;
        self
    }

    /// Sets the poison-event policy.
    #[must_use]
    pub fn on_poison(mut self, policy: PoisonPolicy) -> Self {
        self.on_poison = policy;
        self
    }
}

/// How the daemon polls, elects and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonOptions {
    /// How often a standby tries to take leadership of a projection.
    pub standby_poll: Duration,
    /// How often a leader checks that it still holds its lock.
    pub leader_check: Duration,
    /// The re-poll interval while an open transaction holds events back, and the first wait
    /// when idle.
    pub min_poll: Duration,
    /// The longest wait when idle (waits double up to it); an in-process append wakes the
    /// daemon at once.
    pub max_poll: Duration,
    /// The wait after a database failure before trying again.
    pub retry_delay: Duration,
    /// How often rebuild progress is logged.
    pub progress_interval: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            standby_poll: Duration::from_secs(1),
            leader_check: Duration::from_secs(1),
            min_poll: Duration::from_millis(5),
            max_poll: Duration::from_millis(500),
            retry_delay: Duration::from_millis(500),
            progress_interval: Duration::from_secs(2),
        }
    }
}
