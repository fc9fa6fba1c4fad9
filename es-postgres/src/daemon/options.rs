//! How the daemon and each projection run.

use std::time::Duration;

/// What to do with an event that still fails after [`ProjectionOptions::max_attempts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PoisonPolicy {
    /// Pause the projection before the event, record why, and wait for
    /// [`resume`](crate::ProjectionDaemon::resume) (the default): nothing is skipped.
    #[default]
    Pause,
    /// Record the event in `projection_dead_letters` and move past it, in one transaction.
    Skip,
}

/// How one projection runs. Loadable with serde, and from the environment with
/// [`from_env`](Self::from_env).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectionOptions {
    /// Events read and applied per transaction.
    pub batch_size: usize,
    /// Attempts at a failing event before the policy applies (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    #[serde(with = "es_core::duration")]
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
    /// The variables that [`from_env`](Self::from_env) reads: `ES_PROJECTION_BATCH_SIZE`,
    /// `ES_PROJECTION_MAX_ATTEMPTS`, `ES_PROJECTION_RETRY_BACKOFF`, `ES_PROJECTION_ON_POISON`
    /// (`pause` or `skip`).
    pub const ENV_PREFIX: &'static str = "ES_PROJECTION_";

    /// The defaults, overridden by every `ES_PROJECTION_<FIELD>` variable set.
    ///
    /// # Errors
    /// [`OptionsError`](es_core::OptionsError) for an unknown variable or a bad value.
    pub fn from_env() -> Result<Self, es_core::OptionsError> {
        es_core::options_from_env(Self::ENV_PREFIX)
    }

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

/// How the daemon polls, elects and reports. Loadable with serde, and from the environment
/// with [`from_env`](Self::from_env).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonOptions {
    /// How often a standby tries to take leadership of a projection.
    #[serde(with = "es_core::duration")]
    pub standby_poll: Duration,
    /// How often a leader checks that it still holds its lock.
    #[serde(with = "es_core::duration")]
    pub leader_check: Duration,
    /// The re-poll interval while an open transaction holds events back, and the first wait
    /// when idle.
    #[serde(with = "es_core::duration")]
    pub min_poll: Duration,
    /// The longest wait when idle (waits double up to it); an in-process append wakes the
    /// daemon at once.
    #[serde(with = "es_core::duration")]
    pub max_poll: Duration,
    /// The wait after a database failure before trying again.
    #[serde(with = "es_core::duration")]
    pub retry_delay: Duration,
    /// How often rebuild progress is logged.
    #[serde(with = "es_core::duration")]
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

impl DaemonOptions {
    /// The variables that [`from_env`](Self::from_env) reads: `ES_DAEMON_STANDBY_POLL`,
    /// `ES_DAEMON_LEADER_CHECK`, `ES_DAEMON_MIN_POLL`, ... (durations in milliseconds or with a
    /// unit: `1s`).
    pub const ENV_PREFIX: &'static str = "ES_DAEMON_";

    /// The defaults, overridden by every `ES_DAEMON_<FIELD>` variable set.
    ///
    /// # Errors
    /// [`OptionsError`](es_core::OptionsError) for an unknown variable or a bad value.
    pub fn from_env() -> Result<Self, es_core::OptionsError> {
        es_core::options_from_env(Self::ENV_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{DaemonOptions, PoisonPolicy, ProjectionOptions};

    #[test]
    fn load_from_variables_with_their_prefixes() {
        let projection: ProjectionOptions = es_core::options_from_vars(
            ProjectionOptions::ENV_PREFIX,
            [
                ("ES_PROJECTION_ON_POISON", "skip"),
                ("ES_PROJECTION_BATCH_SIZE", "50"),
            ],
        )
        .unwrap();
        assert_eq!(
            (projection.on_poison, projection.batch_size),
            (PoisonPolicy::Skip, 50)
        );
        let daemon: DaemonOptions = es_core::options_from_vars(
            DaemonOptions::ENV_PREFIX,
            [("ES_DAEMON_STANDBY_POLL", "2s")],
        )
        .unwrap();
        assert_eq!(daemon.standby_poll, Duration::from_secs(2));
        assert_eq!(daemon.max_poll, DaemonOptions::default().max_poll);
    }
}
