//! The relay's loop: batches while busy, waits (signal or polling) when idle, backs off on
//! failures, applies retention.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::options::Backoff;
use super::{Relay, RelayBatch, RelayError};
use crate::checkpoint::CheckpointStore;
use crate::outbox::OutboxSource;

/// How often a relay whose local route is full looks whether there is room again.
const ROOM_POLL: Duration = Duration::from_millis(10);

/// How long a shutdown waits for the checkpoint's last write.
const FLUSH_AT_STOP: Duration = Duration::from_secs(2);

/// How one turn of the loop ended.
enum Turn {
    Shutdown,
    Batch(Result<RelayBatch, RelayError>),
}

impl<S: OutboxSource, C: CheckpointStore> Relay<S, C> {
    /// Relays until `shutdown` completes (then returns `Ok`) or the relay is deposed.
    ///
    /// While batches fill up it reads the next one at once; otherwise it waits
    /// [`RelayOptions::min_poll_interval`](super::RelayOptions::min_poll_interval), doubling
    /// while idle, cut short by the [signal](Self::with_signal) (after a batch that published,
    /// not before [`RelayOptions::linger`](super::RelayOptions::linger) has passed). A failed batch (broker or
    /// database unreachable, a fatal publisher error) is retried from the checkpoint after a
    /// back-off, so nothing is lost. Pass a `shutdown` that also completes when leadership is
    /// lost.
    ///
    /// # Errors
    /// [`RelayError::Deposed`] when the checkpoint's compare-and-set shows that another relay
    /// took over; every other error is logged, counted in [`RelayStats::errors`](super::RelayStats)
    /// and retried.
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RelayError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut idle = Backoff::new(
            self.options.min_poll_interval,
            self.options.max_poll_interval,
        );
        let mut failing = Backoff::new(self.options.min_retry_delay, self.options.max_retry_delay);
        let mut waiter = self.signal.as_ref().map(crate::AppendSignal::waiter);
        let mut last_retention = Instant::now();
        tracing::info!(relay = %self.name, "relay started");
        loop {
            if let Some(waiter) = waiter.as_mut() {
                waiter.borrow_and_update();
            }
            let turn = tokio::select! {
                biased;
                () = &mut shutdown => Turn::Shutdown,
                batch = self.run_once() => Turn::Batch(batch),
            };
            let wait = match turn {
                Turn::Shutdown => {
                    self.stop().await;
                    return Ok(());
                }
                Turn::Batch(Ok(batch)) => {
                    failing.reset();
                    if batch.read > 0 {
                        idle.reset();
                    }
                    match (batch.read, batch.reached_end) {
                        // Looks again soon, without reading the outbox until there is room.
                        (0, _) if self.waiting_for_room() => Some(ROOM_POLL),
                        (0, _) => Some(idle.next_wait()),
                        (_, true) if !self.options.linger.is_zero() => {
                            // Commits signalled meanwhile are read together after it.
                            tokio::select! {
                                biased;
                                () = &mut shutdown => {
                                    self.stop().await;
                                    return Ok(());
                                },
                                () = tokio::time::sleep(self.options.linger) => {}
                            }
                            let signalled = waiter
                                .as_ref()
                                .is_some_and(|w| w.has_changed().unwrap_or(false));
                            (!signalled).then(|| {
                                self.options
                                    .min_poll_interval
                                    .saturating_sub(self.options.linger)
                            })
                        }
                        (_, true) => Some(self.options.min_poll_interval),
                        (_, false) => None,
                    }
                }
                Turn::Batch(Err(error)) if error.is_deposed() => return Err(error),
                Turn::Batch(Err(error)) => {
                    self.stats.update(|stats| stats.errors += 1);
                    let delay = failing.next_wait();
                    tracing::warn!(relay = %self.name, %error, ?delay, "relay batch failed; retrying from the checkpoint");
                    // A failure is waited out in full: the signal does not cut it short.
                    tokio::select! {
                                biased;
                                () = &mut shutdown => {
                        self.stop().await;
                        return Ok(());
                    },
                                () = tokio::time::sleep(delay) => {}
                            }
                    continue;
                }
            };
            self.apply_retention(&mut last_retention).await;
            let Some(wait) = wait else {
                continue;
            };
            // While messages handed over to the local route hold the checkpoint back, it is
            // written as they are handled, without reading the outbox again.
            let until = Instant::now() + wait;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                let step = if self.held_back() {
                    left.min(self.options.checkpoint_interval)
                } else {
                    left
                };
                let signalled = tokio::select! {
                    biased;
                    () = &mut shutdown => {
                        self.stop().await;
                        return Ok(());
                    },
                    signalled = wait_for(waiter.as_mut(), step) => signalled,
                };
                if signalled || Instant::now() >= until {
                    break;
                }
                match self.flush_checkpoint().await {
                    Ok(()) => {}
                    Err(error) if error.is_deposed() => return Err(error),
                    Err(error) => {
                        tracing::warn!(relay = %self.name, %error, "writing the checkpoint failed");
                        break;
                    }
                }
            }
        }
    }

    /// At a shutdown: writes a checkpoint left behind (for at most [`FLUSH_AT_STOP`]), then
    /// forgets it.
    async fn stop(&mut self) {
        if self.relayed.is_some() {
            match tokio::time::timeout(FLUSH_AT_STOP, self.flush_checkpoint()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(relay = %self.name, %error, "writing the checkpoint at the shutdown failed; what followed it is published again");
                }
                Err(_) => {
                    tracing::warn!(relay = %self.name, "writing the checkpoint at the shutdown timed out; what followed it is published again");
                }
            }
        }
        self.stopped();
    }

    /// After a shutdown that may have cut a checkpoint write short: load it again if the
    /// relay is reused.
    fn stopped(&mut self) {
        self.checkpoint = None;
        self.relayed = None;
        self.read_ahead = None;
        tracing::info!(relay = %self.name, "relay stopped");
    }

    async fn apply_retention(&mut self, last: &mut Instant) {
        let Some(interval) = self.options.retention_interval else {
            return;
        };
        let Some(Some(checkpoint)) = self.checkpoint else {
            return;
        };
        if last.elapsed() < interval {
            return;
        }
        *last = Instant::now();
        match self.source.delete_outbox_up_to(checkpoint).await {
            Ok(deleted) => {
                self.stats.update(|stats| stats.deleted += deleted);
                tracing::debug!(relay = %self.name, deleted, "outbox retention");
            }
            Err(error) => tracing::warn!(relay = %self.name, %error, "outbox retention failed"),
        }
    }
}

/// Waits `wait`, or less when the signal fires; returns whether it fired.
async fn wait_for(waiter: Option<&mut watch::Receiver<u64>>, wait: Duration) -> bool {
    match waiter {
        Some(waiter) => tokio::time::timeout(wait, waiter.changed()).await.is_ok(),
        None => {
            tokio::time::sleep(wait).await;
            false
        }
    }
}
