//! In-process state of a projection this daemon runs: leadership, rate, wake-ups.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::status::ProjectionStatus;

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    leader_pid: Option<i32>,
    rebuild_rate: Option<f64>,
    /// While this node leads: how far the active version has gone through the log (past
    /// what it applied and past what its filter skips, which is not always written).
    reached: Option<es_core::Position>,
}

/// Shared between a runner and the daemon's handle.
#[derive(Debug)]
pub(crate) struct Live {
    figures: Mutex<Figures>,
    progress: watch::Sender<u64>,
    wake: Notify,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            figures: Mutex::new(Figures::default()),
            progress: watch::channel(0).0,
            wake: Notify::new(),
        }
    }
}

impl Live {
    fn figures(&self) -> std::sync::MutexGuard<'_, Figures> {
        self.figures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_leader(&self, pid: Option<i32>) {
        let mut figures = self.figures();
        figures.leader_pid = pid;
        if pid.is_none() {
            figures.reached = None;
        }
    }

    /// The active version went through the log up to `position` here.
    pub(crate) fn reached(&self, position: es_core::Position) {
        let moved = {
            let mut figures = self.figures();
            let moved = figures.reached.is_none_or(|at| at < position);
            if moved {
                figures.reached = Some(position);
            }
            moved
        };
        if moved {
            self.committed();
        }
    }

    /// How far the active version went, when this node leads it.
    pub(crate) fn local_reach(&self) -> Option<es_core::Position> {
        let figures = *self.figures();
        figures.leader_pid.and(figures.reached)
    }

    pub(crate) fn set_rebuild_rate(&self, rate: Option<f64>) {
        self.figures().rebuild_rate = rate;
    }

    /// Tells waiters that a batch committed.
    pub(crate) fn committed(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Wakes the runner (after a resume or a rebuild request).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    pub(crate) fn fill(&self, status: &mut ProjectionStatus) {
        let figures = *self.figures();
        status.leading_here = figures.leader_pid.is_some();
        status.leader_backend_pid = figures.leader_pid;
        if let (Some(rebuild), Some(rate)) = (status.rebuild.as_mut(), figures.rebuild_rate) {
            rebuild.rate = Some(rate);
            let left = rebuild.total.saturating_sub(rebuild.done) as f64;
            if rate > 0.0 {
                rebuild.eta = Some(Duration::from_secs_f64(left / rate));
            }
        }
    }
}
