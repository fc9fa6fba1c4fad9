//! The target PostgreSQL projections apply to, and inline projections.

use std::ops::{Deref, DerefMut};

use chrono::Utc;
use es_core::{
    AppendOutcome, AppendRequest, AppendStatus, Projection, ProjectionError, RecordedEvent, Version,
};

use crate::transaction::PgTransaction;

/// A transaction a projection writes its read model in, with the version of the read model
/// being written.
///
/// Versioned read models live in tables suffixed by their version ([`table`](Self::table)),
/// so a rebuild can fill `counts_v2` while `counts_v1` keeps serving reads. It dereferences to
/// the [`PgTransaction`], so appends work through it too (see [`project_inline`]).
///
/// ```no_run
/// use es_core::{LogFilter, Projection, ProjectionError, RecordedEvent};
/// use es_postgres::PgProjectionTx;
///
/// /// Counts events per stream, in `event_counts_v<version>`.
/// #[derive(Debug)]
/// struct EventCounts;
///
/// #[async_trait::async_trait]
/// impl Projection<PgProjectionTx> for EventCounts {
///     fn name(&self) -> &str { "event-counts" }
///     fn filter(&self) -> LogFilter { LogFilter::all() }
///     async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
///         let sql = format!(
///             "CREATE TABLE IF NOT EXISTS {} (stream_id text PRIMARY KEY, n bigint NOT NULL)",
///             tx.table("event_counts"),
///         );
///         tx.client().batch_execute(&sql).await.map_err(ProjectionError::apply)
///     }
///     async fn apply(&self, tx: &mut PgProjectionTx, event: &RecordedEvent) -> Result<(), ProjectionError> {
///         let sql = format!(
///             "INSERT INTO {} VALUES ($1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = {0}.n + 1",
///             tx.table("event_counts"),
///         );
///         tx.client().execute(&sql, &[&event.stream_id.as_str()]).await.map_err(ProjectionError::apply)?;
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug)]
pub struct PgProjectionTx {
    transaction: PgTransaction,
    version: u32,
    schema: String,
}

impl PgProjectionTx {
    /// Wraps `transaction` for writing version `version` of a read model.
    pub fn new(transaction: PgTransaction, version: u32) -> Self {
        let schema = transaction.schema().to_owned();
        Self {
            transaction,
            version,
            schema,
        }
    }

    /// The version of the read model being written.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `base` suffixed by the version and qualified by the store's schema, quoted:
    /// `"shop"."counts_v2"`. `base` must be a plain identifier (letters, digits, `_`).
    pub fn table(&self, base: &str) -> String {
        format!("\"{}\".\"{base}_v{}\"", self.schema, self.version)
    }

    /// The transaction.
    pub fn transaction(&mut self) -> &mut PgTransaction {
        &mut self.transaction
    }

    /// The transaction back, to commit or roll back.
    pub fn into_transaction(self) -> PgTransaction {
        self.transaction
    }
}

impl Deref for PgProjectionTx {
    type Target = PgTransaction;

    fn deref(&self) -> &PgTransaction {
        &self.transaction
    }
}

impl DerefMut for PgProjectionTx {
    fn deref_mut(&mut self) -> &mut PgTransaction {
        &mut self.transaction
    }
}

/// The events `request` wrote, as recorded, from its `outcome` (their `recorded_at` is the
/// time of this call, close to the transaction's). Empty for an idempotent retry.
pub fn recorded_events(request: &AppendRequest, outcome: &AppendOutcome) -> Vec<RecordedEvent> {
    if outcome.status == AppendStatus::AlreadyAppended {
        return Vec::new();
    }
    let count = request.events.len() as u64;
    let first = outcome.last_version.get().saturating_sub(count) + 1;
    let now = Utc::now();
    request
        .events
        .iter()
        .zip(&outcome.positions)
        .enumerate()
        .map(|(i, (event, position))| RecordedEvent {
            stream_id: request.stream_id.clone(),
            version: Version::new(first + i as u64),
            position: *position,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            data: event.data.clone(),
            metadata: event.metadata.clone(),
            recorded_at: now,
        })
        .collect()
}

/// Inline projection: appends `request` in `tx` and applies the appended events that
/// `projection` handles to its read model in the same transaction, so both commit together
/// (or neither). An idempotent retry applies nothing (the original append did).
///
/// ```no_run
/// # use es_core::{AppendRequest, Projection};
/// # use es_postgres::{PgEventStore, PgProjectionTx, project_inline};
/// # async fn demo(store: &PgEventStore, projection: &dyn Projection<PgProjectionTx>,
/// #     request: AppendRequest) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = PgProjectionTx::new(store.transaction([&request.stream_id]).await?, projection.version());
/// project_inline(&mut tx, projection, request).await?;
/// tx.into_transaction().commit().await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`ProjectionError::Store`] when the append fails (a conflict, say), or the projection's
/// error; either way roll the transaction back.
pub async fn project_inline<P>(
    tx: &mut PgProjectionTx,
    projection: &P,
    request: AppendRequest,
) -> Result<AppendOutcome, ProjectionError>
where
    P: Projection<PgProjectionTx> + ?Sized,
{
    let outcome = tx.transaction.append(request.clone()).await?;
    let filter = projection.filter();
    let events: Vec<RecordedEvent> = recorded_events(&request, &outcome)
        .into_iter()
        .filter(|event| filter.accepts(&request.stream_type, &event.event_type))
        .collect();
    if !events.is_empty() {
        projection.apply_batch(tx, &events).await?;
    }
    Ok(outcome)
}

/// The checkpoint name of `version` of projection `name`: `name@v<version>`.
pub(crate) fn checkpoint_name(name: &str, version: u32) -> String {
    format!("{name}@v{version}")
}
