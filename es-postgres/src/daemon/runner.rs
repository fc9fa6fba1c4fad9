//! One projection's task: compete for leadership, then follow the log while leading.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::{CheckpointStore, EventStore, LogBatch, LogFilter, Position, Projection};
use tokio::sync::watch;

use super::Shared;
use super::apply::Applied;
use super::catalog::Row;
use super::error::DaemonError;
use super::live::Live;
use super::options::ProjectionOptions;
use super::status::ProjectionState;
use super::target::{PgProjectionTx, checkpoint_name};
use crate::leader::Leader;

/// How long a projection's row is trusted while events flow.
const ROW_TTL: Duration = Duration::from_millis(200);

/// Why leading ended.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The daemon is shutting down.
    Shutdown,
    /// The lock's connection died or no longer holds the lock: another node may lead.
    Deposed,
    /// A checkpoint compare-and-set failed: the checkpoint moved under this node. Either
    /// another node leads, or (when this node still holds the lock) the previous leader
    /// committed a last batch after this node loaded the checkpoint.
    Stale,
    /// The database failed; leadership is given up and sought again after a delay.
    Failed(DaemonError),
    /// This node's code owns neither the active version nor the one being rebuilt (an older
    /// node in a fleet being upgraded, or a newer one while another's rebuild runs): it applies
    /// nothing and leaves the projection to a node whose code does.
    Mismatch {
        /// The version this node's code declares.
        declared: u32,
        /// The code version owning the active version.
        active: u32,
        /// The code version owning the version being rebuilt, if any.
        rebuild: Option<u32>,
    },
}

impl<E: Into<DaemonError>> From<E> for Stop {
    fn from(error: E) -> Self {
        Stop::Failed(error.into())
    }
}

/// Which role a version plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Active,
    Rebuild,
}

pub(crate) struct Runner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) projection: Arc<dyn Projection<PgProjectionTx>>,
    pub(crate) options: ProjectionOptions,
    pub(crate) live: Arc<Live>,
    shutdown: watch::Receiver<bool>,
    pub(crate) name: String,
    pub(crate) filter: LogFilter,
    /// How far each version has gone through the log while leading: past what it applied
    /// and past what its filter skips (in memory until the next write).
    pub(crate) cursors: HashMap<u32, Option<Position>>,
    /// Each version's checkpoint as stored (what its next compare-and-set expects), and when
    /// this node last loaded or wrote it.
    pub(crate) stored: HashMap<u32, (Option<Position>, Instant)>,
    /// The next batch of a version, read while the previous one was committing, with the
    /// checkpoint it was read from.
    read_ahead: HashMap<u32, (Position, LogBatch)>,
    rebuild_meter: Option<(u32, Instant, u64, Instant)>,
}

impl Runner {
    pub(crate) fn new(
        shared: Arc<Shared>,
        projection: Arc<dyn Projection<PgProjectionTx>>,
        options: ProjectionOptions,
        live: Arc<Live>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let name = projection.name().to_owned();
        let filter = projection.filter();
        Self {
            shared,
            projection,
            options,
            live,
            shutdown,
            name,
            filter,
            cursors: HashMap::new(),
            stored: HashMap::new(),
            read_ahead: HashMap::new(),
            rebuild_meter: None,
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleeps for `wait`; true when the daemon is shutting down.
    pub(crate) async fn sleep(&self, wait: Duration) -> bool {
        if self.stopping() {
            return true;
        }
        let mut shutdown = self.shutdown.clone();
        let _ = tokio::time::timeout(wait, shutdown.changed()).await;
        self.stopping()
    }

    pub(crate) async fn run(mut self) {
        let key = format!("projection:{}", self.name);
        let store = self.shared.store.clone();
        loop {
            if self.stopping() {
                return;
            }
            let mut leader = match Leader::try_acquire(store.pool(), store.schema(), &key).await {
                Ok(Some(leader)) => leader,
                Ok(None) => {
                    if self.sleep(self.shared.options.standby_poll).await {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(projection = %self.name, %error, "cannot compete for leadership");
                    if self.sleep(self.shared.options.retry_delay).await {
                        return;
                    }
                    continue;
                }
            };
            self.live.set_leader(Some(leader.backend_pid()));
            tracing::info!(projection = %self.name, "leading");
            let stop = loop {
                let stop = self.lead(&mut leader).await;
                self.forget();
                if !matches!(stop, Stop::Stale) {
                    break stop;
                }
                if !leader.is_leader().await {
                    break Stop::Deposed;
                }
                // Still the lock holder, so the move was the previous leader's last commit
                // (or an operator's reset): reload the checkpoint and go on leading.
                tracing::info!(projection = %self.name, "checkpoint moved under the lock; reloading it");
                if self.sleep(self.shared.options.min_poll).await {
                    break Stop::Shutdown;
                }
            };
            self.live.set_leader(None);
            match stop {
                Stop::Shutdown => {
                    if let Err(error) = leader.release().await {
                        tracing::warn!(projection = %self.name, %error, "releasing leadership failed");
                    }
                    return;
                }
                Stop::Deposed | Stop::Stale => {
                    tracing::warn!(projection = %self.name, "deposed: another node leads; standing by");
                    drop(leader);
                    // Let a standby that polls take over rather than racing it.
                    if self.sleep(self.shared.options.standby_poll * 5).await {
                        return;
                    }
                }
                Stop::Mismatch {
                    declared,
                    active,
                    rebuild,
                } => {
                    tracing::warn!(
                        projection = %self.name, declared, active, ?rebuild,
                        "this node's code writes another version than the active or rebuilding one: \
                         applying nothing, leaving the projection to a node whose code matches"
                    );
                    if let Err(error) = leader.release().await {
                        tracing::warn!(projection = %self.name, %error, "releasing leadership failed");
                    }
                    if self.sleep(self.shared.options.standby_poll * 5).await {
                        return;
                    }
                }
                Stop::Failed(error) => {
                    tracing::warn!(projection = %self.name, %error, "projection failed; standing by");
                    drop(leader);
                    if self.sleep(self.shared.options.retry_delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Drops what one spell of leading tracked (cursors, read-ahead, rebuild meter): the next
    /// one starts from the stored checkpoints.
    fn forget(&mut self) {
        self.live.set_rebuild_rate(None);
        self.cursors.clear();
        self.stored.clear();
        self.read_ahead.clear();
        self.rebuild_meter = None;
    }

    async fn lead(&mut self, leader: &mut Leader) -> Stop {
        match self.lead_inner(leader).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    async fn lead_inner(&mut self, leader: &mut Leader) -> Result<std::convert::Infallible, Stop> {
        let declared = self.projection.version().max(1);
        {
            let client = self.shared.store.pool().get().await?;
            self.shared
                .sql
                .ensure(&client, &self.name, declared)
                .await?;
        }
        let mut prepared: HashSet<u32> = HashSet::new();
        let mut last_check = Instant::now();
        let mut idle: Option<Duration> = None;
        let mut signal = self.shared.store.append_signal().waiter();
        let mut cached: Option<(Row, Instant)> = None;
        loop {
            if self.stopping() {
                return Err(Stop::Shutdown);
            }
            if last_check.elapsed() >= self.shared.options.leader_check {
                if !leader.is_leader().await {
                    return Err(Stop::Deposed);
                }
                last_check = Instant::now();
            }
            signal.borrow_and_update();
            // The row is re-read at most every ROW_TTL while events flow (a rebuild request
            // or a pause from another node is noticed within it), after a longer wait, and at
            // once after a resume or a rebuild request made here.
            let fresh = cached.filter(|(_, at)| at.elapsed() < ROW_TTL);
            let row = if let Some((row, _)) = fresh {
                row
            } else {
                let client = self.shared.store.pool().get().await?;
                let mut row = self.shared.sql.load(&client, &self.name).await?;
                if row.active_code < declared && row.rebuild.is_none() {
                    // The code writes a newer version than the active one: rebuild into it.
                    let filter = self.filter.clone();
                    row.rebuild = self
                        .shared
                        .sql
                        .request_rebuild(&client, &self.name, declared, Some(&filter))
                        .await?;
                    tracing::info!(projection = %self.name, version = ?row.rebuild, "rebuilding into the declared version");
                }
                cached = Some((row, Instant::now()));
                row
            };
            if row.state == ProjectionState::Paused {
                cached = None;
                let wait = self.shared.options.max_poll;
                let live = self.live.clone();
                tokio::select! {
                    () = live.woken() => {}
                    _ = self.sleep(wait) => {}
                }
                continue;
            }
            // A node applies only the versions its code owns: older code must not write into
            // a newer version's tables, nor newer code into an older one's.
            let mut work = Vec::with_capacity(2);
            if row.active_code == declared {
                work.push((row.active, Role::Active));
            }
            if let Some(version) = row.rebuild.filter(|_| row.rebuild_code == Some(declared)) {
                work.push((version, Role::Rebuild));
            }
            if work.is_empty() {
                return Err(Stop::Mismatch {
                    declared,
                    active: row.active_code,
                    rebuild: row.rebuild_code,
                });
            }
            let (mut more, mut held, mut moved) = (false, false, false);
            for (version, role) in work {
                if prepared.insert(version) {
                    self.prepare(version).await?;
                }
                let at = self.cursor(version).await?;
                let from = at.unwrap_or(Position::START);
                let batch = match self.read_ahead.remove(&version) {
                    Some((start, batch)) if start == from => batch,
                    _ => {
                        self.shared
                            .store
                            .read_log(from, &self.filter, self.options.batch_size)
                            .await?
                    }
                };
                let (reached_end, held_back) = (batch.reached_end, batch.held_back);
                let events = batch.events.len() as u64;
                let next_from = batch.checkpoint.max(from);
                let (applied, next) = if reached_end {
                    (self.apply(version, role, at, batch).await?, None)
                } else {
                    // More is waiting: read it while this batch commits.
                    let (store, filter) = (self.shared.store.clone(), self.filter.clone());
                    let size = self.options.batch_size;
                    let (applied, next) =
                        tokio::join!(self.apply(version, role, at, batch), async move {
                            store.read_log(next_from, &filter, size).await
                        });
                    (applied?, next.ok())
                };
                match applied {
                    Applied::Nothing => {}
                    Applied::Committed { switched } => {
                        if let Some(next) = next
                            && self.cursors.get(&version) == Some(&Some(next_from))
                        {
                            self.read_ahead.insert(version, (next_from, next));
                        }
                        moved = true;
                        self.live.committed();
                        if role == Role::Rebuild {
                            self.meter_rebuild(version, events, switched).await;
                        }
                        if switched {
                            cached = None;
                        }
                    }
                    Applied::Paused => {
                        cached = None;
                        more = false;
                        moved = true;
                        break;
                    }
                }
                more |= !reached_end;
                held |= held_back;
            }
            if more {
                idle = None;
                continue;
            }
            let wait = if moved || held {
                idle = None;
                self.shared.options.min_poll
            } else {
                let next = idle
                    .map_or(self.shared.options.min_poll, |last| last * 2)
                    .min(self.shared.options.max_poll);
                idle = Some(next);
                next
            };
            let live = self.live.clone();
            tokio::select! {
                _ = signal.changed() => {}
                // A resume or a rebuild request here: read the row again at once.
                () = live.woken() => cached = None,
                _ = self.sleep(wait) => {}
            }
        }
    }

    /// The checkpoint of `version`, loaded once per leadership, then tracked.
    async fn cursor(&mut self, version: u32) -> Result<Option<Position>, Stop> {
        if let Some(at) = self.cursors.get(&version) {
            return Ok(*at);
        }
        let name = checkpoint_name(&self.name, version);
        let at = self.shared.checkpoints.load_checkpoint(&name).await?;
        self.cursors.insert(version, at);
        self.stored.insert(version, (at, Instant::now()));
        Ok(at)
    }

    async fn prepare(&self, version: u32) -> Result<(), Stop> {
        let tx = self.shared.store.begin_unlocked().await?;
        let mut target = PgProjectionTx::new(tx, version);
        self.projection.prepare(&mut target).await?;
        target.into_transaction().commit().await?;
        Ok(())
    }

    /// Logs a rebuild's progress every `progress_interval`.
    async fn meter_rebuild(&mut self, version: u32, events: u64, switched: bool) {
        let now = Instant::now();
        let (_, started, done, logged) = match &mut self.rebuild_meter {
            Some(meter) if meter.0 == version => meter,
            meter => meter.insert((version, now, 0, now)),
        };
        *done += events;
        let (started, done, last_logged) = (*started, *done, *logged);
        let elapsed = now.duration_since(started).as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        self.live.set_rebuild_rate((!switched).then_some(rate));
        if switched {
            tracing::info!(projection = %self.name, version, events = done, seconds = elapsed, "rebuild caught up; version switched");
            self.rebuild_meter = None;
            return;
        }
        if now.duration_since(last_logged) >= self.shared.options.progress_interval {
            if let Some(meter) = &mut self.rebuild_meter {
                meter.3 = now;
            }
            let status = self.progress_figures().await;
            let (done_total, total) = status.unwrap_or((done, 0));
            let eta = if rate > 0.0 {
                total.saturating_sub(done_total) as f64 / rate
            } else {
                f64::INFINITY
            };
            tracing::info!(projection = %self.name, version, done = done_total, total, events_per_second = rate, eta_seconds = eta, "rebuild progress");
        }
    }

    async fn progress_figures(&self) -> Option<(u64, u64)> {
        let client = self.shared.store.pool().get().await.ok()?;
        let row = self.shared.sql.load(&client, &self.name).await.ok()?;
        Some((row.rebuild_done, row.rebuild_total))
    }
}
