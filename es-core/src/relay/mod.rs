//! The outbox relay: reads the outbox gap-safely from a checkpoint, publishes, and moves the
//! checkpoint by compare-and-set past what the broker acknowledged.

mod error;
mod factory;
mod options;
mod run;
mod service;
mod stats;

use std::fmt;
use std::sync::Arc;

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::clock::{Clock, SystemClock};
use crate::ids::Position;
use crate::local::{LocalRoute, just_before};
use crate::messaging::{PublishError, PublishFailure, Publisher};
use crate::outbox::{OutboxBatch, OutboxMessage, OutboxSource, StoredOutboxMessage};
use crate::subscription::AppendSignal;
use crate::telemetry;

pub use self::error::RelayError;
pub use self::factory::PublisherFactory;
pub use self::options::RelayOptions;
pub use self::stats::{RelayStats, RelayStatsHandle};

/// What one batch did, from [`Relay::run_once`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RelayBatch {
    /// Messages read from the outbox.
    pub read: usize,
    /// Messages the broker acknowledged (all of `read` when the batch succeeded).
    pub published: usize,
    /// Whether the read reached everything currently readable.
    pub reached_end: bool,
}

/// The outbox relay: moves integration messages from an [`OutboxSource`] to a
/// [`Publisher`], at least once and in order per key.
///
/// Each batch reads up to [`RelayOptions::batch_size`] messages after the relay's checkpoint
/// (named by the relay's name in a [`CheckpointStore`]), publishes them, and moves the
/// checkpoint by compare-and-set past the prefix the broker acknowledged, never further. A
/// crash between publishing and the checkpoint write means those messages are published again
/// (duplicates, which consumers deduplicate by message id), never lost. When the
/// compare-and-set finds the checkpoint moved by someone else, the relay is
/// [deposed](RelayError::Deposed) and stops. While a full batch is being published, the
/// relay reads the next one (it never publishes ahead: order per key does not depend on the
/// broker's answer); a failed batch discards that read.
///
/// The publisher comes from a [`PublisherFactory`]; after a fatal publisher error
/// ([`PublishError::Fatal`]) the relay drops it, makes a new one,
/// and resumes from the checkpoint.
///
/// **Leadership.** Run one relay per outbox: elect it (for example with
/// `es_postgres::Leader`), and pass [`run`](Self::run) a shutdown future that completes when
/// leadership is lost, so a standby can take over. The checkpoint's compare-and-set fences a
/// deposed leader that has not noticed yet.
///
/// ```
/// use std::sync::Arc;
/// use es_core::memory::{MemoryBus, MemoryCheckpointStore, MemoryOutbox};
/// use es_core::relay::Relay;
/// use es_core::{OutboxMessage, Publisher};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let outbox = MemoryOutbox::new();
/// let bus = MemoryBus::new().with_default_topic("orders");
/// outbox.push(vec![OutboxMessage::new("OrderPlaced", "order-7", json!({}))]);
///
/// let publisher: Arc<dyn Publisher> = Arc::new(bus.clone());
/// let mut relay = Relay::new("orders-relay", outbox, MemoryCheckpointStore::new(), publisher);
/// let batch = relay.run_once().await?;
/// assert_eq!(batch.published, 1);
/// assert_eq!(bus.published("orders").len(), 1);
/// # Ok(())
/// # }
/// ```
pub struct Relay<S, C> {
    name: String,
    source: S,
    checkpoints: C,
    factory: Arc<dyn PublisherFactory>,
    publisher: Option<Arc<dyn Publisher>>,
    /// The checkpoint as this relay last loaded or wrote it; `None` until loaded.
    checkpoint: Option<Option<Position>>,
    /// How far the broker acknowledged past the written checkpoint, not written yet
    /// ([`RelayOptions::checkpoint_interval`]).
    relayed: Option<Position>,
    /// When the checkpoint was last written (or loaded).
    written_at: std::time::Instant,
    /// The next batch, read while the previous one was being published, with the position
    /// it was read after.
    read_ahead: Option<(Position, OutboxBatch)>,
    options: RelayOptions,
    signal: Option<AppendSignal>,
    published: Option<AppendSignal>,
    /// Where the messages of its topics are handed over instead of published.
    local: Option<LocalRoute>,
    /// Whether the last batch found the local route full (and read nothing).
    waiting_for_room: bool,
    clock: Arc<dyn Clock>,
    stats: RelayStatsHandle,
}

impl<S, C> fmt::Debug for Relay<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("name", &self.name)
            .field("checkpoint", &self.checkpoint)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: OutboxSource, C: CheckpointStore> Relay<S, C> {
    /// A relay named `name` (its checkpoint's name) from `source` to `publisher`, with default
    /// [`RelayOptions`]. After a fatal error it keeps using the same publisher: use
    /// [`with_factory`](Self::with_factory) for publishers that can fail fatally.
    pub fn new(
        name: impl Into<String>,
        source: S,
        checkpoints: C,
        publisher: Arc<dyn Publisher>,
    ) -> Self {
        let factory =
            move || -> Result<Arc<dyn Publisher>, PublishError> { Ok(Arc::clone(&publisher)) };
        Self::with_factory(name, source, checkpoints, factory)
    }

    /// A relay named `name` (its checkpoint's name) from `source` to the publishers `factory`
    /// makes (one before the first batch, and a new one after each fatal publisher error),
    /// with default [`RelayOptions`].
    pub fn with_factory(
        name: impl Into<String>,
        source: S,
        checkpoints: C,
        factory: impl PublisherFactory + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            source,
            checkpoints,
            factory: Arc::new(factory),
            publisher: None,
            checkpoint: None,
            relayed: None,
            written_at: std::time::Instant::now(),
            read_ahead: None,
            options: RelayOptions::default(),
            signal: None,
            published: None,
            local: None,
            waiting_for_room: false,
            clock: Arc::new(SystemClock),
            stats: RelayStatsHandle::default(),
        }
    }

    /// Sets the batching, polling and back-off options.
    #[must_use]
    pub fn with_options(mut self, options: RelayOptions) -> Self {
        self.options = options;
        self
    }

    /// Wakes the relay at once when `signal` fires (the in-process signal of the store the
    /// outbox is written by); without one it polls.
    #[must_use]
    pub fn with_signal(mut self, signal: AppendSignal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Fires `signal` after each batch the broker acknowledged: consumer loops in this
    /// process that stop fetching when idle wake on it
    /// ([`ConsumerLoop::with_wake`](crate::consume::ConsumerLoop::with_wake)).
    #[must_use]
    pub fn with_published_signal(mut self, signal: AppendSignal) -> Self {
        self.published = Some(signal);
        self
    }

    /// Hands the messages of `route`'s topics to it instead of publishing them (their
    /// consumer groups run in this process); the others are published as before. The
    /// checkpoint then never passes a message handed over that its groups have not handled
    /// yet, so a crash hands it over again at the next start: the route is as durable as the
    /// outbox ([`local`](crate::local)). Without another topic to publish, the relay makes no
    /// publisher at all.
    #[must_use]
    pub fn with_local_route(mut self, route: LocalRoute) -> Self {
        self.local = Some(route);
        self
    }

    /// Sets the clock the oldest-unpublished age is measured with.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Opts in to retention: every `interval`, [`run`](Self::run) deletes the outbox up to
    /// this relay's checkpoint. Only for an outbox this relay alone reads: another reader
    /// would lose the messages it has not reached yet.
    #[must_use]
    pub fn with_retention(mut self, interval: std::time::Duration) -> Self {
        self.options.retention_interval = Some(interval);
        self
    }

    /// The relay's name, which is its checkpoint's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A live view of the relay's figures.
    pub fn stats(&self) -> RelayStatsHandle {
        self.stats.clone()
    }

    /// Relays one batch: reads up to [`RelayOptions::batch_size`] messages after the
    /// checkpoint, publishes them, and moves the checkpoint past the acknowledged prefix.
    ///
    /// # Errors
    /// [`RelayError::Deposed`] when the checkpoint moved under the relay (stop);
    /// [`RelayError::Read`], [`RelayError::CreatePublisher`], [`RelayError::Publish`] (after
    /// moving the checkpoint past the acknowledged prefix; a fatal error drops the publisher
    /// so the next batch makes a new one) or [`RelayError::Checkpoint`]: retry later, from the
    /// checkpoint.
    pub async fn run_once(&mut self) -> Result<RelayBatch, RelayError> {
        let result = self.relay_batch().await;
        if result.is_err() {
            // Whatever was read ahead may follow messages that were not acknowledged.
            self.read_ahead = None;
        }
        result
    }

    async fn relay_batch(&mut self) -> Result<RelayBatch, RelayError> {
        let checkpoint = self.checkpoint().await?;
        self.waiting_for_room = self.local.as_ref().is_some_and(LocalRoute::is_full);
        if self.waiting_for_room {
            // The route's members are behind: the outbox keeps what follows until they
            // catch up.
            self.flush_checkpoint().await?;
            return Ok(RelayBatch {
                read: 0,
                published: 0,
                reached_end: false,
            });
        }
        let after = self.relayed.or(checkpoint).unwrap_or(Position::START);
        let batch = match self.read_ahead.take() {
            Some((from, batch)) if from == after => batch,
            _ => self.read(after).await?,
        };
        let read = batch.messages.len();
        let reached_end = batch.reached_end;
        let (positions, mut messages): (Vec<Position>, Vec<OutboxMessage>) = batch
            .messages
            .into_iter()
            .map(|StoredOutboxMessage { position, message }| (position, message))
            .unzip();
        // Each traced message is published from a span of its trace, which its headers then
        // name as the parent of what consumes it; the spans end with the batch's publish.
        let publishing = publish_spans(&self.name, &mut messages);
        // Until the broker answers, the whole batch is the backlog.
        self.record_backlog(&messages, reached_end);
        let Some(&last) = positions.last() else {
            // The outbox ran dry: write down how far it was relayed.
            self.flush_checkpoint().await?;
            self.stats.published(0);
            return Ok(RelayBatch {
                read,
                published: 0,
                reached_end,
            });
        };
        // The messages of the local route's topics are handed over first (in memory, at
        // once); the broker gets the others, and `remote` their places in the batch.
        let (remote, remote_at) = self.hand_over(&positions, &messages)?;
        let to_publish: &[OutboxMessage] = remote.as_deref().unwrap_or(&messages);
        let publisher = if to_publish.is_empty() {
            None
        } else {
            Some(self.publisher()?)
        };
        let publish = async {
            match &publisher {
                Some(publisher) => publisher.publish(to_publish).await,
                None => Ok(()),
            }
        };
        // A full batch means more is waiting: read the next batch while the broker works on
        // this one. Publishing stays one batch at a time, so order per key holds whatever
        // the broker answers.
        let (outcome, next) = if reached_end {
            (publish.await, None)
        } else {
            let limit = self.options.batch_size;
            let (outcome, next) = tokio::join!(publish, self.source.read_outbox(last, limit));
            (outcome, Some(next))
        };
        // The prefix of the batch behind the broker's acknowledgements (what was handed
        // over after an unacknowledged message is handed over again with it).
        let acknowledged = match &outcome {
            Ok(()) => read,
            Err(failure) => match &remote_at {
                Some(at) => at.get(failure.acknowledged).copied().unwrap_or(read),
                None => failure.acknowledged.min(read),
            },
        };
        drop(publishing);
        self.stats.published(acknowledged);
        if acknowledged > 0
            && let Some(published) = &self.published
        {
            published.notify();
        }
        self.count_published(messages.get(..acknowledged).unwrap_or_default());
        if let Some(&position) = acknowledged.checked_sub(1).and_then(|i| positions.get(i)) {
            self.relayed = Some(position);
            self.stats.update(|stats| stats.relayed = Some(position));
            if self.written_at.elapsed() >= self.options.checkpoint_interval {
                self.flush_checkpoint().await?;
            }
        }
        let unpublished = messages.get(acknowledged..).unwrap_or_default();
        self.record_backlog(unpublished, reached_end);
        match outcome {
            Ok(()) => {
                match next {
                    Some(Ok(next)) => self.read_ahead = Some((last, next)),
                    // Read again, and report it then, on the next batch.
                    Some(Err(error)) => {
                        tracing::debug!(relay = %self.name, %error, "reading ahead failed");
                    }
                    None => {}
                }
                tracing::debug!(relay = %self.name, published = read, "relayed a batch");
                Ok(RelayBatch {
                    read,
                    published: read,
                    reached_end,
                })
            }
            Err(failure) => Err(self.publish_failed(failure)),
        }
    }

    async fn read(&self, after: Position) -> Result<OutboxBatch, RelayError> {
        self.source
            .read_outbox(after, self.options.batch_size)
            .await
            .map_err(|source| RelayError::Read {
                name: self.name.clone(),
                source,
            })
    }

    /// The checkpoint, loaded on first use (and after a failed write, whose outcome is
    /// unknown).
    async fn checkpoint(&mut self) -> Result<Option<Position>, RelayError> {
        if let Some(checkpoint) = self.checkpoint {
            return Ok(checkpoint);
        }
        let loaded = self
            .checkpoints
            .load_checkpoint(&self.name)
            .await
            .map_err(|source| RelayError::Checkpoint {
                name: self.name.clone(),
                source,
            })?;
        self.checkpoint = Some(loaded);
        self.relayed = None;
        self.written_at = std::time::Instant::now();
        self.stats.update(|stats| {
            stats.checkpoint = loaded;
            stats.relayed = loaded;
        });
        Ok(loaded)
    }

    /// Writes the checkpoint where the broker's acknowledgements reached, if it is behind
    /// ([`RelayOptions::checkpoint_interval`]); [`run`](Self::run) does it when the outbox
    /// runs dry and at a shutdown.
    ///
    /// # Errors
    /// [`RelayError::Deposed`] when another relay moved the checkpoint;
    /// [`RelayError::Checkpoint`] when it could not be written (the next batch loads it
    /// again, and publishes again what followed it).
    pub async fn flush_checkpoint(&mut self) -> Result<(), RelayError> {
        let (Some(stored), Some(relayed)) = (self.checkpoint, self.relayed) else {
            return Ok(());
        };
        let to = self.checkpoint_for(relayed);
        if stored.is_some_and(|stored| to <= stored) {
            return Ok(());
        }
        self.advance(stored, to).await
    }

    /// Where the checkpoint may go when the broker acknowledged up to `relayed`: there, or
    /// just before the first message handed over to the local route and not handled yet.
    fn checkpoint_for(&self, relayed: Position) -> Position {
        match self
            .local
            .as_ref()
            .and_then(|route| route.lowest_pending(&self.name))
        {
            Some(pending) => relayed.min(just_before(pending)),
            None => relayed,
        }
    }

    /// Whether the last batch read nothing because the local route was full.
    pub(crate) fn waiting_for_room(&self) -> bool {
        self.waiting_for_room
    }

    /// Whether the checkpoint is held back by messages handed over and not handled yet.
    pub(crate) fn held_back(&self) -> bool {
        self.local.is_some() && self.relayed.is_some()
    }

    /// Hands the messages of the local route's topics over; returns the others and their
    /// places in the batch (`None`: no route, everything is published).
    fn hand_over(
        &self,
        positions: &[Position],
        messages: &[OutboxMessage],
    ) -> Result<Split, RelayError> {
        let Some(route) = &self.local else {
            return Ok((None, None));
        };
        let routed = |message: &OutboxMessage| {
            message
                .topic
                .as_deref()
                .is_some_and(|topic| route.routes(topic))
        };
        if !messages.iter().any(routed) {
            // Nothing to hand over: the batch goes to the broker as it is, uncopied.
            return Ok((None, None));
        }
        let mut local = Vec::new();
        let mut remote = Vec::new();
        let mut remote_at = Vec::new();
        for (at, (position, message)) in positions.iter().zip(messages).enumerate() {
            if message
                .topic
                .as_deref()
                .is_some_and(|topic| route.routes(topic))
            {
                local.push((*position, message.clone()));
            } else {
                remote.push(message.clone());
                remote_at.push(at);
            }
        }
        route
            .hand_over(&self.name, local)
            .map_err(|source| RelayError::Publish {
                name: self.name.clone(),
                source,
            })?;
        Ok((Some(remote), Some(remote_at)))
    }

    fn publisher(&mut self) -> Result<Arc<dyn Publisher>, RelayError> {
        if let Some(publisher) = &self.publisher {
            return Ok(Arc::clone(publisher));
        }
        let publisher =
            self.factory
                .create_publisher()
                .map_err(|source| RelayError::CreatePublisher {
                    name: self.name.clone(),
                    source,
                })?;
        self.stats.update(|stats| stats.publishers_created += 1);
        tracing::info!(relay = %self.name, "created a publisher");
        self.publisher = Some(Arc::clone(&publisher));
        Ok(publisher)
    }

    async fn advance(&mut self, from: Option<Position>, to: Position) -> Result<(), RelayError> {
        match self
            .checkpoints
            .compare_and_set_checkpoint(&self.name, from, to)
            .await
        {
            Ok(()) => {
                self.checkpoint = Some(Some(to));
                // Held back by the local route, the relay goes on reading after what it
                // relayed.
                let relayed = self.relayed.filter(|relayed| *relayed > to);
                self.relayed = relayed;
                self.written_at = std::time::Instant::now();
                self.stats.update(|stats| {
                    stats.checkpoint = Some(to);
                    stats.relayed = Some(relayed.unwrap_or(to));
                });
                Ok(())
            }
            Err(CheckpointError::Stale {
                expected, actual, ..
            }) => {
                tracing::warn!(relay = %self.name, ?expected, ?actual, "deposed: the checkpoint moved");
                Err(RelayError::Deposed {
                    name: self.name.clone(),
                    expected,
                    actual,
                })
            }
            Err(source) => {
                // The write may or may not have happened: load it again before the next batch
                // (and publish again from there).
                self.checkpoint = None;
                self.relayed = None;
                Err(RelayError::Checkpoint {
                    name: self.name.clone(),
                    source,
                })
            }
        }
    }

    /// Counts `published` in `es_relay_published_total`, by topic.
    fn count_published(&self, published: &[OutboxMessage]) {
        let mut by_topic: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for message in published {
            *by_topic
                .entry(message.topic.as_deref().unwrap_or(""))
                .or_default() += 1;
        }
        for (topic, count) in by_topic {
            telemetry::metrics().relay_published.add(
                count,
                &[
                    telemetry::label("relay", self.name.clone()),
                    telemetry::label("topic", topic.to_owned()),
                ],
            );
        }
    }

    fn record_backlog(&self, unpublished: &[OutboxMessage], reached_end: bool) {
        let oldest = unpublished.first().map(|m| m.occurred_at);
        let relay = [telemetry::label("relay", self.name.clone())];
        let metrics = telemetry::metrics();
        metrics
            .outbox_backlog
            .record(u64::try_from(unpublished.len()).unwrap_or(u64::MAX), &relay);
        let lag = oldest.map_or(0.0, |at| {
            (self.clock.now() - at)
                .to_std()
                .unwrap_or_default()
                .as_secs_f64()
        });
        metrics.relay_lag.record(lag, &relay);
        self.stats.update(|stats| {
            stats.backlog = unpublished.len();
            stats.backlog_is_lower_bound = !reached_end;
            stats.oldest_unpublished_at = oldest;
        });
    }

    fn publish_failed(&mut self, failure: PublishFailure) -> RelayError {
        if failure.error.is_fatal() {
            tracing::warn!(relay = %self.name, error = %failure, "the publisher failed fatally; it will be recreated");
            self.publisher = None;
        } else {
            tracing::warn!(relay = %self.name, error = %failure, "publishing failed");
        }
        RelayError::Publish {
            name: self.name.clone(),
            source: failure,
        }
    }
}

/// The messages of a batch for the broker and their places in it (`None`: no local route,
/// the whole batch is for the broker).
type Split = (Option<Vec<OutboxMessage>>, Option<Vec<usize>>);

/// Opens a `publish` span for each message that carries a trace context, as a child of it,
/// and writes the span's context into the message's headers in its place. Returns the
/// spans: they end when dropped.
fn publish_spans(relay: &str, messages: &mut [OutboxMessage]) -> Vec<tracing::Span> {
    let mut spans = Vec::new();
    for message in messages {
        if !message.headers.contains_key(telemetry::TRACEPARENT) {
            continue;
        }
        let topic = message.topic.as_deref().unwrap_or_default();
        let span = tracing::info_span!(
            "publish",
            otel.name = %format_args!("publish {topic}"),
            otel.kind = "producer",
            messaging.operation.type = "send",
            messaging.destination.name = %topic,
            messaging.message.id = %message.message_id,
            es.message_type = %message.message_type,
            es.relay = %relay,
        );
        if span.is_disabled() {
            continue;
        }
        telemetry::continue_trace(&span, &message.headers);
        telemetry::inject(&span, &mut message.headers);
        spans.push(span);
    }
    spans
}
