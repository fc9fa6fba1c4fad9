//! Projections: read models fed by events.
//!
//! A projection names the events it handles ([`Projection::filter`]) and applies them to a
//! target: the backend's transaction for a database read model, or a value in memory. The same
//! projection can run inline (in the append's transaction), async (a runner following the
//! global log from a checkpoint) or live (folded on read with [`fold`]).
//!
//! **The checkpoint contract.** An async runner applies a batch and moves the projection's
//! checkpoint in one unit of work (one transaction; one critical section in memory), so after
//! any crash the read model reflects exactly the events up to its checkpoint: each event is
//! applied once. A runner moves the checkpoint by compare-and-set
//! ([`CheckpointStore`](crate::CheckpointStore)), so a deposed runner cannot overwrite the work
//! of the one that replaced it. A filtered projection's checkpoint still advances past the
//! events it skips.

use async_trait::async_trait;
use futures::{Stream, TryStreamExt};

use crate::error::{BoxError, StoreError};
use crate::event::{DecodeError, RecordedEvent};
use crate::store::LogFilter;

/// Failure to apply an event to a read model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// The event could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The read model refused or failed to take the event.
    #[error("projection failed: {0}")]
    Apply(#[source] BoxError),
    /// Reading events failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ProjectionError {
    /// Wraps any error raised while applying.
    pub fn apply(error: impl Into<BoxError>) -> Self {
        Self::Apply(error.into())
    }
}

/// A read model fed by events, applied to a target of type `T` (a transaction, or an in-memory
/// model).
///
/// ```
/// use std::collections::HashMap;
/// use es_core::{LogFilter, Projection, ProjectionError, RecordedEvent};
///
/// /// Counts events per stream.
/// #[derive(Debug)]
/// struct EventsPerStream;
///
/// #[async_trait::async_trait]
/// impl Projection<HashMap<String, u64>> for EventsPerStream {
///     fn name(&self) -> &str { "events-per-stream" }
///     fn filter(&self) -> LogFilter { LogFilter::all() }
///     async fn apply(&self, model: &mut HashMap<String, u64>, event: &RecordedEvent) -> Result<(), ProjectionError> {
///         *model.entry(event.stream_id.to_string()).or_default() += 1;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projection<T: Send + ?Sized>: Send + Sync {
    /// A stable name: the key of its checkpoint.
    fn name(&self) -> &str;

    /// The events it handles; others are skipped (its checkpoint still passes them).
    fn filter(&self) -> LogFilter;

    /// The oldest version of the read model this code can write (default 1). A runner that
    /// finds an older version active rebuilds into this one while the old one keeps serving
    /// reads, then switches (see the runner's documentation). Bump it when the read model's
    /// shape changes.
    fn version(&self) -> u32 {
        1
    }

    /// Prepares `target` before events of a (possibly new) version are applied: creates
    /// tables, for example. Called by runners once per version each time they start; it must
    /// be idempotent. The default does nothing.
    ///
    /// # Errors
    /// [`ProjectionError`] when the read model cannot be prepared.
    async fn prepare(&self, target: &mut T) -> Result<(), ProjectionError> {
        let _ = target;
        Ok(())
    }

    /// Applies one event to `target`. In memory, mutate `target` only once the event is known
    /// to apply, so a failure leaves the model as it was.
    ///
    /// # Errors
    /// [`ProjectionError`] when the event cannot be applied; the runner then retries or stops,
    /// never skipping it silently.
    async fn apply(&self, target: &mut T, event: &RecordedEvent) -> Result<(), ProjectionError>;

    /// Applies a batch of events, in order, that pass [`filter`](Self::filter). The default
    /// applies them one by one; override it to write a batch at once (one multi-row statement,
    /// say). A runner that sees a batch fail rolls it back and applies its events one by one
    /// with [`apply`](Self::apply) to find the failing one, so both must agree.
    ///
    /// # Errors
    /// [`ProjectionError`] when any event cannot be applied; the whole batch is then
    /// discarded by the runner.
    async fn apply_batch(
        &self,
        target: &mut T,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(target, event).await?;
        }
        Ok(())
    }

    /// Removes what the read model holds of a forgotten data subject: overwrite or delete
    /// the personal values it copied in clear (a customer's name in a search table, say). A
    /// projection wrapped by [`Privacy::revealing`](crate::privacy::Privacy::revealing) gets
    /// this call for each
    /// [`SUBJECT_FORGOTTEN`](crate::privacy::SUBJECT_FORGOTTEN) record in the log, in log
    /// order and in the same unit of work as the events around it; it must be idempotent (a
    /// rebuild replays the records, and a subject may be recorded twice). The default does
    /// nothing: right for a projection that keeps no personal data, or keeps it only sealed.
    ///
    /// # Errors
    /// [`ProjectionError`] when the read model cannot be patched; runners treat it as a
    /// failing event.
    async fn forget(
        &self,
        target: &mut T,
        subject: &crate::privacy::SubjectId,
    ) -> Result<(), ProjectionError> {
        let _ = (target, subject);
        Ok(())
    }
}

/// Live projection: folds `events` (for example a stream read, or a global-log batch) into
/// `target`, applying those the projection's filter accepts by event type.
///
/// # Errors
/// The first read or apply error.
pub async fn fold<T, P, S>(projection: &P, target: &mut T, events: S) -> Result<(), ProjectionError>
where
    T: Send + ?Sized,
    P: Projection<T> + ?Sized,
    S: Stream<Item = Result<RecordedEvent, StoreError>>,
{
    let filter = projection.filter();
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.try_next().await? {
        if filter.event_types.is_empty() || filter.event_types.contains(&event.event_type) {
            projection.apply(target, &event).await?;
        }
    }
    Ok(())
}
