//! What a consumer loop does with failures, and how often it commits.

use std::time::Duration;

/// What happens to a message whose handler failed transiently `max_attempts` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Publish it to the dead-letter topic and go on with the partition (the default).
    #[default]
    DeadLetter,
    /// Keep the partition paused at the message (recorded in a
    /// [`PausedPartitions`](crate::PausedPartitions) store) until an operator resumes it.
    PausePartition,
}

/// Tuning of a [`ConsumerRunner`](crate::ConsumerRunner).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// How many times a message is handled before the failure policy applies (default 5).
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles with each attempt (default 100 ms).
    pub initial_backoff: Duration,
    /// The longest wait between attempts (default 10 s).
    pub max_backoff: Duration,
    /// What to do after `max_attempts` transient failures.
    pub policy: FailurePolicy,
    /// How often stored offsets are committed (default 1 s); they are also committed before
    /// a rebalance and at shutdown.
    pub commit_interval: Duration,
    /// How often the paused-partitions store is read for partitions resumed by an operator
    /// (default 1 s).
    pub paused_refresh: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            policy: FailurePolicy::DeadLetter,
            commit_interval: Duration::from_secs(1),
            paused_refresh: Duration::from_secs(1),
        }
    }
}

impl RunnerOptions {
    /// Sets [`max_attempts`](Self::max_attempts) (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the first and the longest wait between attempts.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Sets the failure policy.
    #[must_use]
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets how often stored offsets are committed.
    #[must_use]
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Sets how often the paused-partitions store is read.
    #[must_use]
    pub fn paused_refresh(mut self, interval: Duration) -> Self {
        self.paused_refresh = interval;
        self
    }

    /// The wait after failed attempt number `attempt` (1 for the first).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
        let factor = 2_u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}
