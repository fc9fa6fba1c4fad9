//! Live counters of a consumer loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a [`ConsumerLoop`](crate::consume::ConsumerLoop); clones share them.
#[derive(Debug, Clone, Default)]
pub struct RunnerStats {
    counters: Arc<[AtomicU64; 5]>,
}

const HANDLED: usize = 0;
const RETRIED: usize = 1;
const DEAD_LETTERED: usize = 2;
const PAUSED: usize = 3;
const ASSIGNED: usize = 4;

impl RunnerStats {
    fn get(&self, index: usize) -> u64 {
        self.counters[index].load(Ordering::Relaxed)
    }

    fn bump(&self, index: usize) {
        self.counters[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages whose handler succeeded.
    pub fn handled(&self) -> u64 {
        self.get(HANDLED)
    }

    /// Failed attempts that were retried.
    pub fn retried(&self) -> u64 {
        self.get(RETRIED)
    }

    /// Messages published to a dead-letter topic.
    pub fn dead_lettered(&self) -> u64 {
        self.get(DEAD_LETTERED)
    }

    /// Partitions paused by policy.
    pub fn paused(&self) -> u64 {
        self.get(PAUSED)
    }

    /// Partitions assigned to the member when the loop last looked (it looks at least every
    /// commit interval, and every 100 ms while it has none).
    pub fn assigned_partitions(&self) -> u64 {
        self.get(ASSIGNED)
    }

    pub(super) fn set_assigned(&self, partitions: usize) {
        self.counters[ASSIGNED].store(partitions as u64, Ordering::Relaxed);
    }

    pub(super) fn count_handled(&self) {
        self.bump(HANDLED);
    }

    pub(super) fn count_retried(&self) {
        self.bump(RETRIED);
    }

    pub(super) fn count_dead_lettered(&self) {
        self.bump(DEAD_LETTERED);
    }

    pub(super) fn count_paused(&self) {
        self.bump(PAUSED);
    }
}
