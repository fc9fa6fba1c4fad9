//! An in-memory read model kept up to date by a projection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Mutex, watch};

use crate::ids::Position;
use crate::projection::{Projection, ProjectionError};
use crate::store::{EventStore, SubscriptionItem};

#[derive(Debug)]
struct Model<M> {
    model: M,
    checkpoint: Position,
}

/// A read model `M` in memory with its checkpoint, moved together: each event is applied once.
///
/// ```
/// # use std::collections::HashMap;
/// # use es_core::{LogFilter, Projection, ProjectionError, RecordedEvent};
/// # #[derive(Debug)]
/// # struct EventsPerStream;
/// # #[async_trait::async_trait]
/// # impl Projection<HashMap<String, u64>> for EventsPerStream {
/// #     fn name(&self) -> &str { "events-per-stream" }
/// #     fn filter(&self) -> LogFilter { LogFilter::all() }
/// #     async fn apply(&self, model: &mut HashMap<String, u64>, event: &RecordedEvent) -> Result<(), ProjectionError> {
/// #         *model.entry(event.stream_id.to_string()).or_default() += 1;
/// #         Ok(())
/// #     }
/// # }
/// use std::time::Duration;
/// use es_core::memory::{MemoryEventStore, MemoryReadModel};
/// use es_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamId};
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryEventStore::new();
/// let counts = MemoryReadModel::<HashMap<String, u64>>::default();
/// tokio::spawn({
///     let (store, counts) = (store.clone(), counts.clone());
///     async move { counts.run(&store, &EventsPerStream).await }
/// });
/// # let event = |n: i64| NewEvent { event_type: "Noted".into(), schema_version: 1,
/// #     data: serde_json::json!({ "n": n }), metadata: es_core::CommandContext::new().metadata(&es_core::SystemClock) };
/// let stream = StreamId::new("notes-1")?;
/// let appended = store
///     .append(AppendRequest::new(stream, ExpectedVersion::NoStream).with_events([event(1), event(2)]))
///     .await?;
/// // Read-your-writes: wait until the model has applied the append.
/// assert!(counts.wait_for(appended.positions[1], Duration::from_secs(5)).await);
/// assert_eq!(counts.read(|model| model["notes-1"]).await, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct MemoryReadModel<M> {
    inner: Arc<Mutex<Model<M>>>,
    progress: Arc<watch::Sender<Position>>,
}

/// A clone shares the model (any `M`).
impl<M> Clone for MemoryReadModel<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            progress: Arc::clone(&self.progress),
        }
    }
}

impl<M: Default> Default for MemoryReadModel<M> {
    fn default() -> Self {
        Self::new(M::default())
    }
}

impl<M> MemoryReadModel<M> {
    /// A read model starting from `model` at the start of the log.
    pub fn new(model: M) -> Self {
        let (progress, _) = watch::channel(Position::START);
        Self {
            inner: Arc::new(Mutex::new(Model {
                model,
                checkpoint: Position::START,
            })),
            progress: Arc::new(progress),
        }
    }

    /// Reads the model.
    pub async fn read<R>(&self, read: impl FnOnce(&M) -> R) -> R {
        read(&self.inner.lock().await.model)
    }

    /// The position up to which every event has been applied.
    pub fn checkpoint(&self) -> Position {
        *self.progress.borrow()
    }

    /// Waits until the model has applied everything up to `position`; false on timeout.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        let mut progress = self.progress.subscribe();
        tokio::time::timeout(timeout, progress.wait_for(|at| *at >= position))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Follows `store`'s global log from the model's checkpoint, applying `projection`'s
    /// events until an error; catch-up then live.
    ///
    /// # Errors
    /// The first error reading the log or applying an event; the checkpoint stays before that
    /// event, so running again retries it.
    pub async fn run<S, P>(&self, store: &S, projection: &P) -> Result<(), ProjectionError>
    where
        M: Send,
        S: EventStore,
        P: Projection<M> + ?Sized,
    {
        let from = self.inner.lock().await.checkpoint;
        let mut items = store.subscribe(from, projection.filter());
        while let Some(item) = items.next().await {
            let mut guard = self.inner.lock().await;
            let model = &mut *guard;
            match item? {
                SubscriptionItem::Event(event) => {
                    if event.position <= model.checkpoint {
                        continue;
                    }
                    projection.apply(&mut model.model, &event).await?;
                    model.checkpoint = event.position;
                }
                SubscriptionItem::Checkpoint { position, .. } => {
                    model.checkpoint = model.checkpoint.max(position);
                }
            }
            let checkpoint = model.checkpoint;
            drop(guard);
            self.progress.send_if_modified(|at| {
                let moved = *at < checkpoint;
                *at = checkpoint.max(*at);
                moved
            });
        }
        Ok(())
    }
}
