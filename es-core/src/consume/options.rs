//! What a consumer loop does with failures, and how often it commits.

use std::time::Duration;

/// What happens to a message whose handler failed transiently `max_attempts` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Publish it to the dead-letter topic and go on with the partition (the default).
    #[default]
    DeadLetter,
    /// Keep the partition paused at the message (recorded in a
    /// [`PausedPartitions`](crate::PausedPartitions) store) until an operator resumes it.
    PausePartition,
}

/// Tuning of a [`ConsumerLoop`](crate::consume::ConsumerLoop). Loadable with serde, and from the
/// environment with [`from_env`](Self::from_env).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RunnerOptions {
    /// How many times a message is handled before the failure policy applies (default 5).
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles with each attempt (default 100 ms).
    #[serde(with = "crate::config::duration")]
    pub initial_backoff: Duration,
    /// The longest wait between attempts (default 10 s).
    #[serde(with = "crate::config::duration")]
    pub max_backoff: Duration,
    /// What to do after `max_attempts` transient failures.
    pub policy: FailurePolicy,
    /// How often stored offsets are committed (default 1 s); they are also committed before
    /// a rebalance and at shutdown.
    #[serde(with = "crate::config::duration")]
    pub commit_interval: Duration,
    /// How often the paused-partitions store is read for partitions resumed by an operator
    /// (default 1 s).
    #[serde(with = "crate::config::duration")]
    pub paused_refresh: Duration,
    /// After this long without a message (and with no retry waiting), the loop stops
    /// fetching every partition until it is woken ([`ConsumerLoop::with_wake`]) or
    /// [`idle_recheck`](Self::idle_recheck) passes, so that a member at rest costs the broker
    /// nothing. `None` (the default) keeps fetching: right on Apache Kafka, whose waiting
    /// fetch costs nothing; see docs/kafka.md for the test broker.
    ///
    /// [`ConsumerLoop::with_wake`]: crate::consume::ConsumerLoop::with_wake
    #[serde(with = "crate::config::duration::option")]
    pub idle_after: Option<Duration>,
    /// How long an idle loop stays paused without being woken before it looks again (for
    /// messages whose producer does not wake it; default 10 s). Such a look fetches for
    /// [`IDLE_LOOK`](crate::consume::IDLE_LOOK) (or `idle_after` if shorter) unless a message
    /// arrives, once every partition has a fetch position (until then, for `idle_after`).
    #[serde(with = "crate::config::duration")]
    pub idle_recheck: Duration,
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
            idle_after: None,
            idle_recheck: Duration::from_secs(10),
        }
    }
}

impl RunnerOptions {
    /// The variables that [`from_env`](Self::from_env) reads: `ES_CONSUMER_MAX_ATTEMPTS`,
    /// `ES_CONSUMER_INITIAL_BACKOFF`, `ES_CONSUMER_POLICY` (`dead_letter` or
    /// `pause_partition`), ...
    pub const ENV_PREFIX: &'static str = "ES_CONSUMER_";

    /// The defaults, overridden by every `ES_CONSUMER_<FIELD>` variable set.
    ///
    /// # Errors
    /// [`OptionsError`](crate::OptionsError) for an unknown variable or a bad value.
    pub fn from_env() -> Result<Self, crate::OptionsError> {
        crate::options_from_env(Self::ENV_PREFIX)
    }

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

    /// Stops fetching after `after` without a message, until woken or `recheck` passes (see
    /// [`idle_after`](Self::idle_after)).
    #[must_use]
    pub fn idle(mut self, after: Duration, recheck: Duration) -> Self {
        self.idle_after = Some(after);
        self.idle_recheck = recheck;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{FailurePolicy, RunnerOptions};

    #[test]
    fn loads_from_variables_with_its_prefix() {
        let options: RunnerOptions = crate::options_from_vars(
            RunnerOptions::ENV_PREFIX,
            [
                ("ES_CONSUMER_MAX_ATTEMPTS", "3"),
                ("ES_CONSUMER_POLICY", "pause_partition"),
                ("ES_CONSUMER_COMMIT_INTERVAL", "250ms"),
            ],
        )
        .unwrap();
        assert_eq!(options.max_attempts, 3);
        assert_eq!(options.policy, FailurePolicy::PausePartition);
        assert_eq!(options.commit_interval, Duration::from_millis(250));
        assert_eq!(options.max_backoff, RunnerOptions::default().max_backoff);
    }
}
