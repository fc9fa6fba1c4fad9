//! What a relay reports about itself.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::ids::Position;
use crate::memory::lock;

/// A snapshot of a relay's progress, from [`RelayStatsHandle::snapshot`].
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct RelayStats {
    /// Messages the broker acknowledged since the relay started (re-publications counted
    /// again).
    pub published: u64,
    /// Batches that published at least one message.
    pub batches: u64,
    /// Failed batches (read, publish or checkpoint failures).
    pub errors: u64,
    /// Publishers created by the factory (1 after the first batch; each fatal error adds one).
    pub publishers_created: u64,
    /// Messages deleted by retention.
    pub deleted: u64,
    /// The relay's checkpoint, as last written or loaded.
    pub checkpoint: Option<Position>,
    /// How far the broker acknowledged: the checkpoint, or past it while its write waits
    /// ([`RelayOptions::checkpoint_interval`](super::RelayOptions::checkpoint_interval)).
    pub relayed: Option<Position>,
    /// Messages the last batch read but did not publish, plus everything after them when the
    /// batch did not reach the end of the outbox (then this is a lower bound: see
    /// [`backlog_is_lower_bound`](Self::backlog_is_lower_bound)).
    pub backlog: usize,
    /// Whether there may be more unpublished messages than [`backlog`](Self::backlog).
    pub backlog_is_lower_bound: bool,
    /// When the oldest message not yet published happened (`occurred_at`); `None` when the
    /// relay has caught up.
    pub oldest_unpublished_at: Option<DateTime<Utc>>,
    /// Messages published per second, over the last full second or more.
    pub publish_rate: f64,
}

impl RelayStats {
    /// How long the oldest unpublished message has waited at `now`; zero when caught up.
    pub fn oldest_unpublished_age(&self, now: DateTime<Utc>) -> chrono::Duration {
        self.oldest_unpublished_at
            .map_or(chrono::Duration::zero(), |at| {
                (now - at).max(chrono::Duration::zero())
            })
    }
}

/// A shared, live view of a relay's [`RelayStats`]; clones see the same relay.
#[derive(Debug, Clone, Default)]
pub struct RelayStatsHandle {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    stats: RelayStats,
    window_start: Option<Instant>,
    window_count: u64,
}

impl RelayStatsHandle {
    /// The current figures.
    pub fn snapshot(&self) -> RelayStats {
        lock(&self.inner).stats.clone()
    }

    pub(super) fn update(&self, change: impl FnOnce(&mut RelayStats)) {
        change(&mut lock(&self.inner).stats);
    }

    /// Counts `count` acknowledged messages into the totals and the rate.
    pub(super) fn published(&self, count: usize) {
        let mut inner = lock(&self.inner);
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        inner.stats.published = inner.stats.published.saturating_add(count);
        if count > 0 {
            inner.stats.batches += 1;
        }
        let now = Instant::now();
        let start = *inner.window_start.get_or_insert(now);
        inner.window_count = inner.window_count.saturating_add(count);
        let elapsed = now.duration_since(start).as_secs_f64();
        if elapsed >= 1.0 {
            inner.stats.publish_rate = inner.window_count as f64 / elapsed;
            inner.window_start = Some(now);
            inner.window_count = 0;
        }
    }
}
