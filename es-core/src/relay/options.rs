//! How a relay batches, waits and retries.

use std::time::Duration;

/// How a [`Relay`](super::Relay) batches, waits for new messages and backs off.
///
/// Loadable with serde, and from the environment with [`from_env`](Self::from_env).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RelayOptions {
    /// Messages read and published per batch.
    pub batch_size: usize,
    /// The wait after a batch that did not fill up (messages may still be held back by an
    /// open transaction); also the first wait when idle.
    #[serde(with = "crate::config::duration")]
    pub min_poll_interval: Duration,
    /// The longest wait when idle: waits double from the minimum up to this. An
    /// [`AppendSignal`](crate::AppendSignal) cuts any wait short.
    #[serde(with = "crate::config::duration")]
    pub max_poll_interval: Duration,
    /// The first wait after a failed batch; doubles on each further failure.
    #[serde(with = "crate::config::duration")]
    pub min_retry_delay: Duration,
    /// The longest wait after failed batches.
    #[serde(with = "crate::config::duration")]
    pub max_retry_delay: Duration,
    /// When set, delete the relayed part of the outbox at most this often (see
    /// [`Relay::with_retention`](super::Relay::with_retention)).
    #[serde(default, with = "crate::config::duration::option")]
    pub retention_interval: Option<Duration>,
    /// How long the checkpoint may stay behind what the broker acknowledged while messages
    /// flow: zero (the default) writes it after every batch; longer writes it at most this
    /// often, and at once when the outbox runs dry and at a shutdown. Each write is a
    /// committed transaction on the relay's path; the price of fewer is that a crash
    /// publishes again what was acknowledged since the last write (which inboxes discard).
    #[serde(with = "crate::config::duration")]
    pub checkpoint_interval: Duration,
    /// After a batch that published messages and reached the end of the outbox, the relay
    /// reads again no sooner than this, even when signalled: while commits come faster than
    /// this, one read takes several of them (fewer reads of the outbox, fuller batches),
    /// and a message committed meanwhile waits at most this long. A relay at rest still
    /// reads at once when signalled. Zero (the default) reads on every signal.
    #[serde(with = "crate::config::duration")]
    pub linger: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            min_poll_interval: Duration::from_millis(5),
            max_poll_interval: Duration::from_millis(500),
            min_retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(10),
            retention_interval: None,
            checkpoint_interval: Duration::ZERO,
            linger: Duration::ZERO,
        }
    }
}

impl RelayOptions {
    /// The variables that [`from_env`](Self::from_env) reads: `ES_RELAY_BATCH_SIZE`,
    /// `ES_RELAY_MIN_POLL_INTERVAL`, ... (durations in milliseconds or with a unit: `5s`).
    pub const ENV_PREFIX: &'static str = "ES_RELAY_";

    /// The defaults, overridden by every `ES_RELAY_<FIELD>` variable set.
    ///
    /// # Errors
    /// [`OptionsError`](crate::OptionsError) for an unknown variable or a bad value.
    pub fn from_env() -> Result<Self, crate::OptionsError> {
        crate::options_from_env(Self::ENV_PREFIX)
    }

    /// Sets the batch size (zero counts as one).
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Sets the shortest and longest idle waits.
    #[must_use]
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.min_poll_interval = min;
        self.max_poll_interval = max.max(min);
        self
    }

    /// Sets how long the checkpoint may stay behind while messages flow (see
    /// [`checkpoint_interval`](Self::checkpoint_interval)).
    #[must_use]
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Sets how long after a batch that published the relay waits before it reads again,
    /// signalled or not (see [`linger`](Self::linger)).
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets the shortest and longest waits after a failed batch.
    #[must_use]
    pub fn retry_delay(mut self, min: Duration, max: Duration) -> Self {
        self.min_retry_delay = min;
        self.max_retry_delay = max.max(min);
        self
    }
}

/// Doubling waits between a minimum and a maximum, reset by progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            last: None,
        }
    }

    /// The next wait: the minimum first, then twice the previous one, up to the maximum.
    pub(super) fn next_wait(&mut self) -> Duration {
        let next = self
            .last
            .map_or(self.min, |last| (last * 2).clamp(self.min, self.max));
        self.last = Some(next);
        next
    }

    pub(super) fn reset(&mut self) {
        self.last = None;
    }
}
