//! The async projection daemon: many projections, each led by one node, applied exactly once.

mod apply;
mod catalog;
mod error;
mod live;
mod options;
mod runner;
mod service;
mod status;
mod target;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use es_core::{CheckpointStore, Position, Projection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::catalog::CatalogSql;
use self::live::Live;
use self::runner::Runner;
use crate::checkpoint::PgCheckpointStore;
use crate::store::PgEventStore;

pub use self::error::DaemonError;
pub use self::options::{DaemonOptions, PoisonPolicy, ProjectionOptions};
pub use self::status::{DeadLetter, ProjectionState, ProjectionStatus, RebuildProgress};
pub use self::target::{PgProjectionTx, project_inline, recorded_events};

/// A projection the daemon runs, with its options and in-process state.
struct Registered {
    projection: Arc<dyn Projection<PgProjectionTx>>,
    options: ProjectionOptions,
    live: Arc<Live>,
}

pub(crate) struct Shared {
    pub(crate) store: PgEventStore,
    pub(crate) checkpoints: PgCheckpointStore,
    pub(crate) sql: CatalogSql,
    pub(crate) options: DaemonOptions,
}

struct Inner {
    shared: Arc<Shared>,
    projections: Vec<Registered>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Option<Vec<JoinHandle<()>>>>,
}

/// Runs projections asynchronously, each a [`Projection<PgProjectionTx>`], following the
/// global log of a [`PgEventStore`].
///
/// For each projection, one node at a time leads (a [`Leader`](crate::Leader) lock keyed
/// `projection:<name>`); standbys take over within [`DaemonOptions::standby_poll`] of the
/// leader's connection dying. The leader reads the log through the fence from the
/// projection's checkpoint (`<name>@v<version>` in `checkpoints`), applies each batch and moves
/// the checkpoint by compare-and-set in one transaction (exactly once), catches up, then
/// follows new events (woken by the store's in-process signal, polling otherwise). A deposed
/// leader's checkpoint write fails as stale and it goes back to standby.
///
/// Versions: a projection whose [`version`](Projection::version) is newer than the active one
/// recorded in `projections`, or one asked to [`rebuild`](Self::rebuild), is replayed into the
/// new version under its own checkpoint while the active one serves reads; once caught up, the
/// new version becomes active in the same transaction as its last batch.
///
/// Poison events are retried with backoff, then the projection pauses (default) or skips the
/// event into `projection_dead_letters` ([`PoisonPolicy`]).
///
/// ```no_run
/// # use es_core::Projection;
/// # use es_postgres::PgProjectionTx;
/// # async fn demo(store: es_postgres::PgEventStore,
/// #     counts: impl Projection<PgProjectionTx> + 'static,
/// #     position: es_core::Position) -> Result<(), es_postgres::DaemonError> {
/// use std::time::Duration;
/// use es_postgres::{ProjectionDaemon, ProjectionOptions};
///
/// let daemon = ProjectionDaemon::new(&store).register(counts, ProjectionOptions::default())?;
/// daemon.start()?;
/// // Read-your-writes: wait until "counts" has applied an append's position.
/// let applied = daemon.wait_for("counts", position, Duration::from_secs(5)).await?;
/// # let _ = applied;
/// daemon.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProjectionDaemon {
    inner: Arc<Inner>,
}

impl fmt::Debug for ProjectionDaemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .inner
            .projections
            .iter()
            .map(|p| p.projection.name())
            .collect();
        f.debug_struct("ProjectionDaemon")
            .field("schema", &self.inner.shared.store.schema())
            .field("projections", &names)
            .finish()
    }
}

impl ProjectionDaemon {
    /// A daemon for `store` with no projections. Without [`start`](Self::start) it still
    /// answers [`status`](Self::status), [`resume`](Self::resume), [`rebuild`](Self::rebuild)
    /// and [`wait_for`](Self::wait_for), for tools.
    pub fn new(store: &PgEventStore) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    store: store.clone(),
                    checkpoints: store.checkpoints(),
                    sql: CatalogSql::new(&store.inner.schema),
                    options: DaemonOptions::default(),
                }),
                projections: Vec::new(),
                shutdown,
                tasks: Mutex::new(Some(Vec::new())),
            }),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Inner)) -> Result<Self, DaemonError> {
        let inner = Arc::get_mut(&mut self.inner).ok_or(DaemonError::AlreadyStarted)?;
        change(inner);
        Ok(self)
    }

    /// Sets how the daemon polls and elects.
    ///
    /// # Errors
    /// [`DaemonError::AlreadyStarted`] once the daemon has been cloned or started.
    pub fn with_options(self, options: DaemonOptions) -> Result<Self, DaemonError> {
        self.configure(|inner| {
            let shared = &inner.shared;
            inner.shared = Arc::new(Shared {
                store: shared.store.clone(),
                checkpoints: shared.checkpoints.clone(),
                sql: CatalogSql::new(&shared.store.inner.schema),
                options,
            });
        })
    }

    /// Adds a projection.
    ///
    /// # Errors
    /// [`DaemonError::DuplicateProjection`] for a name already registered;
    /// [`DaemonError::AlreadyStarted`] once the daemon has been cloned or started.
    pub fn register<P>(self, projection: P, options: ProjectionOptions) -> Result<Self, DaemonError>
    where
        P: Projection<PgProjectionTx> + 'static,
    {
        self.register_arc(Arc::new(projection), options)
    }

    /// Adds a shared projection (see [`register`](Self::register)).
    ///
    /// # Errors
    /// As [`register`](Self::register).
    pub fn register_arc(
        self,
        projection: Arc<dyn Projection<PgProjectionTx>>,
        options: ProjectionOptions,
    ) -> Result<Self, DaemonError> {
        let name = projection.name().to_owned();
        if self.registered(&name).is_some() {
            return Err(DaemonError::DuplicateProjection(name));
        }
        self.configure(|inner| {
            inner.projections.push(Registered {
                projection,
                options,
                live: Arc::new(Live::default()),
            });
        })
    }

    /// A receiver that changes each time this daemon, leading `name`, commits a batch of it
    /// or goes further through the log (to push what a projection wrote as soon as it is
    /// written); `None` for a projection not registered here. It never changes while another
    /// node leads.
    pub fn progress(&self, name: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.registered(name)
            .map(|registered| registered.live.progress())
    }

    fn registered(&self, name: &str) -> Option<&Registered> {
        self.inner
            .projections
            .iter()
            .find(|p| p.projection.name() == name)
    }

    /// Spawns one task per projection on the current Tokio runtime: each competes for its
    /// projection's leadership and, when leading, applies it.
    ///
    /// # Errors
    /// [`DaemonError::AlreadyStarted`] when called twice or after shutdown.
    pub fn start(&self) -> Result<(), DaemonError> {
        let mut tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(tasks) = tasks.as_mut().filter(|t| t.is_empty()) else {
            return Err(DaemonError::AlreadyStarted);
        };
        for registered in &self.inner.projections {
            let runner = Runner::new(
                self.inner.shared.clone(),
                registered.projection.clone(),
                registered.options,
                registered.live.clone(),
                self.inner.shutdown.subscribe(),
            );
            tasks.push(tokio::spawn(runner.run()));
        }
        let daemon = self.clone();
        let stopped = self.inner.shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            daemon.record_lag_until(stopped).await;
        }));
        Ok(())
    }

    /// Stops gracefully: each projection finishes its current batch (committing it), releases
    /// its leadership and stops. Returns once every task has ended.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        for task in tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "a projection task ended abnormally");
            }
        }
    }

    /// Aborts every projection task at once, as a crash would: open transactions roll back
    /// (their connections close), leadership is released with its connection, and nothing of
    /// an unfinished batch is kept. For emergencies and fault tests; prefer
    /// [`shutdown`](Self::shutdown).
    pub fn abort(&self) {
        self.inner.shutdown.send_replace(true);
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default();
        for task in tasks {
            task.abort();
        }
    }

    /// The status of every projection recorded in the store's schema: state, versions,
    /// checkpoint, lag in events and time, rebuild progress, and whether this daemon leads it.
    ///
    /// # Errors
    /// [`DaemonError::Postgres`] when the database fails.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, DaemonError> {
        self.status_of(None).await
    }

    /// The status of one projection.
    ///
    /// # Errors
    /// [`DaemonError::UnknownProjection`], or [`DaemonError::Postgres`].
    pub async fn projection_status(&self, name: &str) -> Result<ProjectionStatus, DaemonError> {
        self.status_of(Some(name))
            .await?
            .pop()
            .ok_or_else(|| DaemonError::UnknownProjection(name.to_owned()))
    }

    async fn status_of(&self, name: Option<&str>) -> Result<Vec<ProjectionStatus>, DaemonError> {
        let client = self.inner.shared.store.pool().get().await?;
        let mut statuses = self.inner.shared.sql.status(&client, name).await?;
        for status in &mut statuses {
            if let Some(registered) = self.registered(&status.name) {
                registered.live.fill(status);
            }
        }
        Ok(statuses)
    }

    /// Resumes a paused projection: it continues from the event it paused before (fix the
    /// projection or the data first, or switch it to [`PoisonPolicy::Skip`]). Works from any
    /// process; a leader elsewhere notices within its poll interval.
    ///
    /// # Errors
    /// [`DaemonError::NotPaused`] or [`DaemonError::UnknownProjection`];
    /// [`DaemonError::Postgres`].
    pub async fn resume(&self, name: &str) -> Result<(), DaemonError> {
        let client = self.inner.shared.store.pool().get().await?;
        if !self.inner.shared.sql.resume(&client, name).await? {
            self.inner.shared.sql.load(&client, name).await?;
            return Err(DaemonError::NotPaused(name.to_owned()));
        }
        if let Some(registered) = self.registered(name) {
            registered.live.wake();
        }
        tracing::info!(projection = name, "resumed");
        Ok(())
    }

    /// Starts a rebuild of `name` into a new version (the active one plus one, or the
    /// projection's declared version if newer): it replays the log from the start under its
    /// own checkpoint while the active version serves reads, then becomes active. Returns the
    /// new version. The node leading the projection runs it.
    ///
    /// # Errors
    /// [`DaemonError::AlreadyRebuilding`], [`DaemonError::UnknownProjection`] or
    /// [`DaemonError::Postgres`].
    pub async fn rebuild(&self, name: &str) -> Result<u32, DaemonError> {
        let shared = &self.inner.shared;
        let client = shared.store.pool().get().await?;
        let row = shared.sql.load(&client, name).await?;
        let registered = self.registered(name);
        let declared = registered.map_or(0, |r| r.projection.version());
        let filter = registered.map(|r| r.projection.filter());
        match shared
            .sql
            .request_rebuild(&client, name, declared, filter.as_ref())
            .await?
        {
            Some(version) => {
                if let Some(registered) = registered {
                    registered.live.wake();
                }
                tracing::info!(projection = name, version, "rebuild requested");
                Ok(version)
            }
            None => Err(DaemonError::AlreadyRebuilding {
                name: name.to_owned(),
                version: row.rebuild.unwrap_or(row.active),
            }),
        }
    }

    /// The version of `name`'s read model that readers should use.
    ///
    /// # Errors
    /// [`DaemonError::UnknownProjection`] or [`DaemonError::Postgres`].
    pub async fn active_version(&self, name: &str) -> Result<u32, DaemonError> {
        let client = self.inner.shared.store.pool().get().await?;
        Ok(self.inner.shared.sql.load(&client, name).await?.active)
    }

    /// The events `name` skipped by policy, oldest first.
    ///
    /// # Errors
    /// [`DaemonError::Postgres`] when the database fails.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, DaemonError> {
        let client = self.inner.shared.store.pool().get().await?;
        self.inner.shared.sql.dead_letters(&client, name).await
    }

    /// Waits until `name`'s active version has applied everything up to `position` (for
    /// read-your-writes after an append); `false` when `timeout` passes first. Works whichever
    /// node leads: it polls the checkpoint every 20 ms; a local leader wakes it at each batch
    /// and answers from memory, so that while batches commit here it reads nothing. A leader writes
    /// a move past events its filter skips only every 30 s (each write would otherwise move
    /// the log's fence and be followed by another, for ever): on another node, waiting for
    /// the position of a skipped event may take that long; here it does not.
    ///
    /// # Errors
    /// [`DaemonError::Postgres`] when the database fails.
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<bool, DaemonError> {
        let shared = &self.inner.shared;
        let deadline = tokio::time::Instant::now() + timeout;
        let local = self.registered(name).map(|r| r.live.clone());
        let mut progress = local.as_ref().map(|live| live.progress());
        // Whether the last nap passed without a batch committing here.
        let mut quiet = false;
        loop {
            // Leading here, the runner knows how far it went (past skipped events too, which
            // it does not always write down), and no checkpoint is ahead of it: the database
            // is read only when another node leads, or when no batch committed here for a
            // nap (leadership may have moved meanwhile).
            let reach = local.as_ref().and_then(|live| live.local_reach());
            if reach.is_some_and(|at| at >= position) {
                return Ok(true);
            }
            if reach.is_none() || quiet {
                let at = {
                    let client = shared.store.pool().get().await?;
                    shared.sql.active_checkpoint(&client, name).await?
                };
                if at.is_some_and(|at| at >= position) {
                    return Ok(true);
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let nap = (deadline - now).min(Duration::from_millis(20));
            quiet = match &mut progress {
                Some(progress) => tokio::time::timeout(nap, progress.changed()).await.is_err(),
                None => {
                    tokio::time::sleep(nap).await;
                    true
                }
            };
        }
    }

    /// The checkpoint of one version of `name` (`<name>@v<version>`).
    ///
    /// # Errors
    /// [`DaemonError::Checkpoint`] when the database fails.
    pub async fn checkpoint(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<Position>, DaemonError> {
        let checkpoint = target::checkpoint_name(name, version);
        Ok(self
            .inner
            .shared
            .checkpoints
            .load_checkpoint(&checkpoint)
            .await?)
    }
}
