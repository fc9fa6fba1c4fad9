//! The orders read model on PostgreSQL: two tables in the orders schema, kept by the
//! projection daemon (exactly once, one node leading, rebuildable into a new version), and a
//! poller that pushes each committed notification to this process's live subscribers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::privacy::Privacy;
use es_core::{EventRegistry, LogFilter, Position, Projection, ProjectionError, RecordedEvent};
use es_postgres::{
    DaemonOptions, PgEventStore, PgProjectionTx, ProjectionDaemon, ProjectionOptions,
};
use rust_decimal::Decimal;
use tokio::sync::broadcast;
use tokio_postgres::Row;
use uuid::Uuid;

use super::order::{Order, OrderEvent, OrderStatus};
use super::view::{Notification, OrderSummary, RebuildError};
use crate::messages::total;
use crate::storage::StorageError;

/// The projection's name (its checkpoints are `orders-view@v<version>`).
pub(super) const NAME: &str = "orders-view";
/// The summaries table (suffixed by the version).
const SUMMARIES: &str = "order_summary";
/// The notifications table (suffixed by the version).
const NOTIFICATIONS: &str = "order_notification";
/// How often new notifications are looked for when the daemon here says nothing (it leads
/// on another node, or nothing happens), to push them to live subscribers.
const PUSH_POLL: Duration = Duration::from_secs(2);

/// The daemon's options: it wakes on every append to the orders store, of this process and of
/// others (the store's `PgWakeups`), so its slow poll only bounds how late a lost wake-up is
/// made up for, and its leadership check how late it sees a lost lock (its checkpoint is a
/// compare-and-set either way).
fn daemon_options() -> DaemonOptions {
    DaemonOptions {
        max_poll: Duration::from_secs(30),
        leader_check: Duration::from_secs(5),
        ..DaemonOptions::default()
    }
}

fn table(schema: &str, base: &str, version: u32) -> String {
    format!("\"{schema}\".\"{base}_v{version}\"")
}

fn ddl(summaries: &str, notifications: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {summaries} (
             seq                 bigserial   NOT NULL UNIQUE,
             order_id            uuid        PRIMARY KEY,
             quote_id            uuid        NOT NULL,
             customer_id         uuid        NOT NULL,
             created_at          timestamptz NOT NULL,
             status              text        NOT NULL,
             cancellation_reason text,
             lines               jsonb       NOT NULL,
             currency            text        NOT NULL,
             total               text        NOT NULL,
             statuses            jsonb       NOT NULL
         );
         CREATE INDEX IF NOT EXISTS \"{}_by_customer\" ON {summaries} (customer_id, seq);
         CREATE TABLE IF NOT EXISTS {notifications} (
             id          bigserial   PRIMARY KEY,
             customer_id uuid        NOT NULL,
             order_id    uuid        NOT NULL,
             status      text        NOT NULL,
             reason      text,
             at          timestamptz NOT NULL
         );
         CREATE INDEX IF NOT EXISTS \"{}_by_customer\" ON {notifications} (customer_id, id);",
        index_name(summaries),
        index_name(notifications),
    )
}

/// An index name from a qualified table name (`"s"."t_v1"` → `t_v1`).
fn index_name(qualified: &str) -> String {
    qualified
        .rsplit('.')
        .next()
        .unwrap_or(qualified)
        .trim_matches('"')
        .to_owned()
}

fn apply_error(error: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::apply(error.to_string())
}

/// Projects order events into the summaries and notifications tables, in the daemon's batch
/// transaction.
#[derive(Debug, Clone, Copy)]
pub struct OrdersTables;

#[async_trait]
impl Projection<PgProjectionTx> for OrdersTables {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().stream_types([<Order as es_core::Aggregate>::TYPE])
    }

    async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
        let sql = ddl(&tx.table(SUMMARIES), &tx.table(NOTIFICATIONS));
        tx.client().batch_execute(&sql).await.map_err(apply_error)
    }

    async fn apply(
        &self,
        tx: &mut PgProjectionTx,
        recorded: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(recorded)).await
    }

    /// Each event is one statement (a summary written and its notification recorded
    /// together), prepared once per connection, and the batch's statements go to the server
    /// together: one round trip for the batch, which the server runs in order.
    async fn apply_batch(
        &self,
        tx: &mut PgProjectionTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let writes = events
            .iter()
            .map(Write::of)
            .collect::<Result<Vec<_>, _>>()?;
        let (summaries, notifications) = (tx.table(SUMMARIES), tx.table(NOTIFICATIONS));
        let (placed, changed) = (
            placed_sql(&summaries, &notifications),
            changed_sql(&summaries, &notifications),
        );
        let (placed, changed) =
            tokio::try_join!(tx.prepare_cached(&placed), tx.prepare_cached(&changed))
                .map_err(apply_error)?;
        let client = tx.client();
        let runs = writes.iter().flatten().map(|write| {
            let (placed, changed) = (&placed, &changed);
            async move {
                match write {
                    Write::Placed(p) => client
                        .execute(
                            placed,
                            &[
                                &p.order_id,
                                &p.quote_id,
                                &p.customer_id,
                                &p.placed_at,
                                &p.status,
                                &p.lines,
                                &p.currency,
                                &p.total,
                                &p.at,
                            ],
                        )
                        .await
                        .map_err(apply_error)
                        .map(drop),
                    Write::Changed(c) => {
                        let rows = client
                            .execute(
                                changed,
                                &[&c.order_id, &c.status, &c.total, &c.reason, &c.at],
                            )
                            .await
                            .map_err(apply_error)?;
                        if rows == 0 {
                            return Err(ProjectionError::apply(format!(
                                "order {} changed before it was placed",
                                c.order_id
                            )));
                        }
                        Ok(())
                    }
                }
            }
        });
        futures::future::try_join_all(runs).await.map(drop)
    }
}

/// A placement: its summary, with its first status, and its notification, unless the order
/// is there already (a rebuild, or a batch applied again).
fn placed_sql(summaries: &str, notifications: &str) -> String {
    format!(
        "WITH placed AS ( \
             INSERT INTO {summaries} (order_id, quote_id, customer_id, created_at, status, \
                 lines, currency, total, statuses) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, jsonb_build_array($5::text)) \
             ON CONFLICT (order_id) DO NOTHING RETURNING customer_id, order_id) \
         INSERT INTO {notifications} (customer_id, order_id, status, reason, at) \
         SELECT customer_id, order_id, $5, NULL, $9 FROM placed"
    )
}

/// A later status: the summary's status, its status history, the total once processed and
/// the reason once cancelled, and the notification; no row when the order is not there.
fn changed_sql(summaries: &str, notifications: &str) -> String {
    format!(
        "WITH changed AS ( \
             UPDATE {summaries} SET status = $2, statuses = statuses || to_jsonb($2::text), \
                 total = coalesce($3, total), \
                 cancellation_reason = coalesce($4, cancellation_reason) \
             WHERE order_id = $1 RETURNING customer_id, cancellation_reason) \
         INSERT INTO {notifications} (customer_id, order_id, status, reason, at) \
         SELECT customer_id, $1, $2, cancellation_reason, $5 FROM changed"
    )
}

/// What one order event writes.
enum Write {
    Placed(PlacedRow),
    Changed(ChangedRow),
}

/// The parameters of [`placed_sql`].
struct PlacedRow {
    order_id: Uuid,
    quote_id: Uuid,
    customer_id: Uuid,
    placed_at: DateTime<Utc>,
    status: &'static str,
    lines: serde_json::Value,
    currency: &'static str,
    total: String,
    at: DateTime<Utc>,
}

/// The parameters of [`changed_sql`].
struct ChangedRow {
    order_id: Uuid,
    status: &'static str,
    total: Option<String>,
    reason: Option<String>,
    at: DateTime<Utc>,
}

impl Write {
    /// The write of `recorded`; none for an event that changes no status.
    fn of(recorded: &RecordedEvent) -> Result<Option<Self>, ProjectionError> {
        let event: OrderEvent = recorded
            .decode(&EventRegistry::new())
            .map_err(ProjectionError::apply)?;
        let at = recorded.metadata.timestamp;
        let Some(status) = event.status() else {
            return Ok(None);
        };
        Ok(Some(match event {
            OrderEvent::Placed(placement) => Write::Placed(PlacedRow {
                order_id: placement.order_id,
                quote_id: placement.quote_id,
                customer_id: placement.customer_id,
                placed_at: placement.placed_at,
                status: status.text(),
                lines: serde_json::to_value(&placement.lines).map_err(apply_error)?,
                currency: placement.currency.code(),
                total: total(&placement.lines).to_string(),
                at,
            }),
            event => Write::Changed(ChangedRow {
                order_id: event.order_id(),
                status: status.text(),
                total: match &event {
                    OrderEvent::Processed { total, .. } => Some(total.to_string()),
                    _ => None,
                },
                reason: match event {
                    OrderEvent::Cancelled { reason, .. } => Some(reason),
                    _ => None,
                },
                at,
            }),
        }))
    }
}

fn status_of(text: &str) -> Result<OrderStatus, StorageError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| StorageError::other(format!("stored order status {text:?}: {e}")))
}

fn summary(row: &Row) -> Result<OrderSummary, StorageError> {
    let statuses: Vec<String> =
        serde_json::from_value(row.try_get(9).map_err(StorageError::other)?)
            .map_err(StorageError::other)?;
    let currency: String = row.try_get(7).map_err(StorageError::other)?;
    let total: String = row.try_get(8).map_err(StorageError::other)?;
    Ok(OrderSummary {
        order_id: row.try_get(0).map_err(StorageError::other)?,
        quote_id: row.try_get(1).map_err(StorageError::other)?,
        customer_id: row.try_get(2).map_err(StorageError::other)?,
        created_at: row.try_get(3).map_err(StorageError::other)?,
        status: status_of(row.try_get(4).map_err(StorageError::other)?)?,
        cancellation_reason: row.try_get(5).map_err(StorageError::other)?,
        lines: serde_json::from_value(row.try_get(6).map_err(StorageError::other)?)
            .map_err(StorageError::other)?,
        currency: currency.parse().map_err(StorageError::other)?,
        total: total.parse::<Decimal>().map_err(StorageError::other)?,
        statuses: statuses
            .iter()
            .map(|s| status_of(s))
            .collect::<Result<_, _>>()?,
    })
}

fn notification(row: &Row) -> Result<Notification, StorageError> {
    let id: i64 = row.try_get(0).map_err(StorageError::other)?;
    let at: DateTime<Utc> = row.try_get(5).map_err(StorageError::other)?;
    Ok(Notification {
        id: u64::try_from(id).map_err(StorageError::other)?,
        customer_id: row.try_get(1).map_err(StorageError::other)?,
        order_id: row.try_get(2).map_err(StorageError::other)?,
        status: row.try_get(3).map_err(StorageError::other)?,
        reason: row.try_get(4).map_err(StorageError::other)?,
        at,
    })
}

const SUMMARY_COLUMNS: &str = "order_id, quote_id, customer_id, created_at, status, \
     cancellation_reason, lines, currency, total, statuses";
const NOTIFICATION_COLUMNS: &str = "id, customer_id, order_id, status, reason, at";

/// The orders read model on PostgreSQL.
pub struct PgOrdersView {
    store: PgEventStore,
    /// Decrypts the orders' events for the projection.
    privacy: Privacy,
    /// The daemon of the current run (a new one per run: a stopped daemon does not restart).
    daemon: Mutex<ProjectionDaemon>,
    /// The active version as last read (0: not read yet).
    version: AtomicU32,
    /// This process's live subscribers.
    push: broadcast::Sender<Notification>,
}

impl std::fmt::Debug for PgOrdersView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrdersView")
            .field("schema", &self.store.schema())
            .finish_non_exhaustive()
    }
}

/// Aborts the daemon of a run when the run's task is dropped.
struct Running(ProjectionDaemon);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn new_daemon(store: &PgEventStore, privacy: &Privacy) -> ProjectionDaemon {
    // Valid options and one projection on a fresh daemon cannot fail.
    ProjectionDaemon::new(store)
        .with_options(daemon_options())
        .unwrap_or_else(|_| ProjectionDaemon::new(store))
        .register(
            privacy.revealing(OrdersTables),
            ProjectionOptions::default().batch_size(500),
        )
        .unwrap_or_else(|_| ProjectionDaemon::new(store))
}

impl PgOrdersView {
    /// The read model in `store`'s schema, reading events through `privacy`.
    pub fn new(store: PgEventStore, privacy: Privacy) -> Self {
        let daemon = new_daemon(&store, &privacy);
        Self {
            store,
            privacy,
            daemon: Mutex::new(daemon),
            version: AtomicU32::new(0),
            push: broadcast::channel(4096).0,
        }
    }

    /// Live notifications of every customer, pushed while [`run`](Self::run) runs.
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.push.subscribe()
    }

    fn daemon(&self) -> ProjectionDaemon {
        lock(&self.daemon).clone()
    }

    /// Creates the tables of the first version, so that reads work before the daemon first
    /// leads.
    pub async fn prepare(&self) -> Result<(), StorageError> {
        let client = self.store.pool().get().await.map_err(StorageError::other)?;
        let schema = self.store.schema();
        client
            .batch_execute(&ddl(
                &table(schema, SUMMARIES, 1),
                &table(schema, NOTIFICATIONS, 1),
            ))
            .await
            .map_err(StorageError::other)
    }

    async fn active_version(&self) -> Result<u32, StorageError> {
        match self.version.load(Ordering::Relaxed) {
            0 => self.refresh_version().await,
            version => Ok(version),
        }
    }

    async fn refresh_version(&self) -> Result<u32, StorageError> {
        let version = match self.daemon().active_version(NAME).await {
            Ok(version) => version.max(1),
            // Not recorded before the daemon first leads: version 1.
            Err(es_postgres::DaemonError::UnknownProjection(_)) => 1,
            Err(error) => return Err(StorageError::other(error)),
        };
        self.version.store(version, Ordering::Relaxed);
        Ok(version)
    }

    async fn query(
        &self,
        base: &str,
        sql: impl Fn(&str) -> String,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StorageError> {
        let version = self.active_version().await?;
        let client = self.store.pool().get().await.map_err(StorageError::other)?;
        let statement = client
            .prepare_cached(&sql(&table(self.store.schema(), base, version)))
            .await
            .map_err(StorageError::other)?;
        client
            .query(&statement, params)
            .await
            .map_err(StorageError::other)
    }

    /// A customer's orders, oldest first.
    pub async fn for_customer(&self, customer_id: Uuid) -> Result<Vec<OrderSummary>, StorageError> {
        let rows = self
            .query(
                SUMMARIES,
                |t| {
                    format!("SELECT {SUMMARY_COLUMNS} FROM {t} WHERE customer_id = $1 ORDER BY seq")
                },
                &[&customer_id],
            )
            .await?;
        rows.iter().map(summary).collect()
    }

    /// Every order.
    pub async fn all(&self) -> Result<Vec<OrderSummary>, StorageError> {
        let rows = self
            .query(
                SUMMARIES,
                |t| format!("SELECT {SUMMARY_COLUMNS} FROM {t} ORDER BY seq"),
                &[],
            )
            .await?;
        rows.iter().map(summary).collect()
    }

    /// A customer's notifications with an id above `after`.
    pub async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, StorageError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = self
            .query(
                NOTIFICATIONS,
                |t| {
                    format!(
                        "SELECT {NOTIFICATION_COLUMNS} FROM {t} \
                         WHERE customer_id = $1 AND id > $2 ORDER BY id"
                    )
                },
                &[&customer_id, &after],
            )
            .await?;
        rows.iter().map(notification).collect()
    }

    /// Every notification with an id above `after`, oldest first, at most `limit`.
    async fn notifications_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Notification>, StorageError> {
        let rows = self
            .query(
                NOTIFICATIONS,
                |t| {
                    format!(
                        "SELECT {NOTIFICATION_COLUMNS} FROM {t} WHERE id > $1 ORDER BY id LIMIT $2"
                    )
                },
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(notification).collect()
    }

    /// Waits until the read model has applied `position`; false after `timeout`.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        match self.daemon().wait_for(NAME, position, timeout).await {
            Ok(reached) => reached,
            Err(error) => {
                tracing::warn!(%error, "waiting for the orders view failed");
                false
            }
        }
    }

    /// Rebuilds the read model into a new version while the current one serves; the daemon
    /// switches once it caught up. Returns the new version.
    ///
    /// # Errors
    /// [`RebuildError::AlreadyRebuilding`], or the daemon's catalog could not be written.
    pub async fn rebuild(&self) -> Result<u32, RebuildError> {
        match self.daemon().rebuild(NAME).await {
            Ok(version) => Ok(version),
            Err(es_postgres::DaemonError::AlreadyRebuilding { version, .. }) => {
                Err(RebuildError::AlreadyRebuilding(version))
            }
            Err(error) => Err(StorageError::other(error).into()),
        }
    }

    /// The daemon's view of the projection: state, lag, pause.
    pub async fn status(&self) -> Result<Option<es_postgres::ProjectionStatus>, StorageError> {
        match self.daemon().projection_status(NAME).await {
            Ok(status) => Ok(Some(status)),
            Err(es_postgres::DaemonError::UnknownProjection(_)) => Ok(None),
            Err(error) => Err(StorageError::other(error)),
        }
    }

    /// Runs a daemon for the projection (leading it when no other node does) and pushes each
    /// notification committed from now on to its subscribers, until `stopped` completes: then the
    /// daemon finishes its current batch and gives up leadership. Dropped instead (a crash),
    /// it aborts the daemon: a batch in flight rolls back and the next leader applies it.
    pub async fn run(self: Arc<Self>, stopped: impl Future<Output = ()> + Send) {
        let daemon = new_daemon(&self.store, &self.privacy);
        *lock(&self.daemon) = daemon.clone();
        if let Err(error) = daemon.start() {
            tracing::error!(%error, "the orders view daemon did not start");
            return;
        }
        let running = Running(daemon.clone());
        tokio::select! {
            () = stopped => daemon.shutdown().await,
            () = self.push_new(self.push.clone()) => {}
        }
        drop(running);
    }

    /// Pushes every notification committed from now on, forever.
    async fn push_new(&self, push: broadcast::Sender<Notification>) {
        let mut last = loop {
            match self.last_notification().await {
                Ok(last) => break last,
                Err(error) => {
                    tracing::warn!(%error, "reading the notifications failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut version = self.active_version().await.unwrap_or(1);
        let mut progress = self.daemon().progress(NAME);
        loop {
            let written = async {
                match progress.as_mut() {
                    Some(progress) => progress.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let daemon_gone = tokio::select! {
                () = tokio::time::sleep(PUSH_POLL) => false,
                alive = written => !alive,
            };
            if daemon_gone {
                progress = None;
            }
            match self.refresh_version().await {
                // A rebuilt version numbers its notifications afresh: push only new ones.
                Ok(now) if now != version => {
                    version = now;
                    last = self.last_notification().await.unwrap_or(last);
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "reading the orders view version failed"),
            }
            match self.notifications_after(last, 1_000).await {
                Ok(new) => {
                    for notification in new {
                        last = i64::try_from(notification.id).unwrap_or(last);
                        // Nobody listening is fine: the feed keeps it.
                        let _ = push.send(notification);
                    }
                }
                Err(error) => tracing::debug!(%error, "reading new notifications failed"),
            }
        }
    }

    async fn last_notification(&self) -> Result<i64, StorageError> {
        let rows = self
            .query(
                NOTIFICATIONS,
                |t| format!("SELECT coalesce(max(id), 0) FROM {t}"),
                &[],
            )
            .await?;
        rows.first()
            .map(|row| row.try_get::<_, i64>(0).map_err(StorageError::other))
            .unwrap_or(Ok(0))
    }
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
