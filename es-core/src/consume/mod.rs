//! The consumer loop: handles each delivery, retries in place with backoff, dead-letters or
//! pauses by policy, and commits what was handled.

mod options;
mod service;
mod stats;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument as _;

pub use self::options::{FailurePolicy, RunnerOptions};
pub use self::stats::RunnerStats;
use crate::memory::MemoryPausedPartitions;
use crate::messaging::{Consumer, ConsumerError, Delivery, MessageHandler};
use crate::paused::{PausedPartition, PausedPartitions, PausedPartitionsError};
use crate::subscription::AppendSignal;
use crate::telemetry;

/// How long to wait after the consumer reports a backend error before polling again.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How long an idle loop fetches when it looks again after
/// [`RunnerOptions::idle_recheck`] without being woken (unless a message arrives meanwhile,
/// which makes it active), once each of its partitions has a fetch position: it delivered a
/// message, or was fetched for a whole idle window. Until then a look lasts the whole window:
/// a partition without a position first asks for it, and a pause before the answer comes
/// discards the answer. Long enough for a resumed fetch to come back with what waits.
pub const IDLE_LOOK: Duration = Duration::from_millis(200);

/// Why a consumer loop stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The consumer failed for good (or the final commit failed).
    #[error("consumer failed: {0}")]
    Consumer(#[from] ConsumerError),
    /// The paused-partitions store failed.
    #[error(transparent)]
    Paused(#[from] PausedPartitionsError),
}

type Key = (String, u32);

/// The consumer loop, written once for every [`Consumer`] (the in-memory bus's, Kafka's):
/// drives the consumer with a [`MessageHandler`], in order per partition, storing a message's
/// offset only after its handler succeeded or its dead letter was acknowledged.
///
/// A transient failure rewinds the partition to the message (so later messages already
/// fetched are dropped and come again after it) and pauses it for a backoff doubling from
/// [`RunnerOptions::initial_backoff`]; the loop keeps polling other partitions meanwhile, so
/// the group does not evict the member. After [`RunnerOptions::max_attempts`], the
/// [`FailurePolicy`] applies: a dead letter, or the partition held paused (recorded in a
/// [`PausedPartitions`] store) until an operator resumes it. A
/// [`HandlerError::Permanent`](crate::HandlerError::Permanent) failure (unknown type,
/// malformed payload) is dead-lettered at once. Stored offsets are committed every
/// [`RunnerOptions::commit_interval`] and at the shutdown.
///
/// ```
/// use std::time::Duration;
/// use es_core::consume::{ConsumerLoop, RunnerOptions};
/// use es_core::memory::MemoryBus;
/// use es_core::{Delivery, HandlerError, MessageHandler, OutboxMessage, Publisher};
///
/// /// Fails every message once.
/// #[derive(Default)]
/// struct FailOnce(std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>);
///
/// #[async_trait::async_trait]
/// impl MessageHandler for FailOnce {
///     async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
///         if self.0.lock().unwrap().insert(delivery.message.message_id) {
///             return Err(HandlerError::transient("not yet"));
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = MemoryBus::new();
/// bus.publish(&[OutboxMessage::new("Ping", "k", serde_json::json!({})).with_topic("pings")]).await?;
/// let options = RunnerOptions::default().backoff(Duration::from_millis(1), Duration::from_millis(5));
/// let mut pings = ConsumerLoop::new(bus.consumer("pinger", &["pings"]), FailOnce::default()).with_options(options);
/// let stats = pings.stats();
/// pings.run(async { while stats.handled() < 1 { tokio::time::sleep(Duration::from_millis(1)).await } }).await?;
/// assert_eq!((pings.stats().retried(), pings.stats().handled()), (1, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ConsumerLoop<C, H, P = MemoryPausedPartitions> {
    consumer: C,
    handler: H,
    options: RunnerOptions,
    paused: P,
    stats: RunnerStats,
    /// Partitions waiting out a backoff, and when they resume.
    waiting: HashMap<Key, Instant>,
    /// Partitions held paused by policy.
    held: HashSet<Key>,
    /// Fired when there may be new messages (a relay published): wakes an idle loop.
    wake: Option<AppendSignal>,
    /// While idle: the partitions this loop paused to stop fetching.
    idle: Option<Vec<Key>>,
    /// The partitions resumed for a whole idle window ([`RunnerOptions::idle_after`]), while
    /// it lasts.
    window: Option<Vec<Key>>,
    /// Partitions known to have a fetch position: they delivered a message, or were fetched
    /// for a whole idle window. Only when all of them do, a recheck looks for [`IDLE_LOOK`]
    /// alone: a partition without one first asks for it (its committed offset), and a pause
    /// before the answer comes discards it, so short looks alone could leave it unread.
    established: HashSet<Key>,
}

/// Runs `handler` on `consumer` with default options until `shutdown` completes.
///
/// # Errors
/// As [`ConsumerLoop::run`].
pub async fn run_consumer<C: Consumer, H: MessageHandler>(
    consumer: C,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunnerError> {
    ConsumerLoop::new(consumer, handler).run(shutdown).await
}

impl<C: Consumer, H: MessageHandler> ConsumerLoop<C, H> {
    /// A loop running `handler` on `consumer`, with default options and paused partitions
    /// kept in memory.
    pub fn new(consumer: C, handler: H) -> Self {
        Self {
            consumer,
            handler,
            options: RunnerOptions::default(),
            paused: MemoryPausedPartitions::new(),
            stats: RunnerStats::default(),
            waiting: HashMap::new(),
            held: HashSet::new(),
            wake: None,
            idle: None,
            window: None,
            established: HashSet::new(),
        }
    }
}

impl<C: Consumer, H: MessageHandler, P: PausedPartitions> ConsumerLoop<C, H, P> {
    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Persists paused partitions in `store` (for [`FailurePolicy::PausePartition`]).
    pub fn with_paused_store<Q: PausedPartitions>(self, store: Q) -> ConsumerLoop<C, H, Q> {
        ConsumerLoop {
            consumer: self.consumer,
            handler: self.handler,
            options: self.options,
            paused: store,
            stats: self.stats,
            waiting: self.waiting,
            held: self.held,
            wake: self.wake,
            idle: self.idle,
            window: self.window,
            established: self.established,
        }
    }

    /// Wakes the loop from idle ([`RunnerOptions::idle_after`]) when `signal` fires: give it
    /// the signal the relays publishing to its topics fire after each batch.
    #[must_use]
    pub fn with_wake(mut self, signal: AppendSignal) -> Self {
        self.wake = Some(signal);
        self
    }

    /// Live counters of this loop.
    pub fn stats(&self) -> RunnerStats {
        self.stats.clone()
    }

    /// The consumer (for a backend's own figures, such as Kafka's lag).
    pub fn consumer(&self) -> &C {
        &self.consumer
    }

    /// Handles messages until `shutdown` completes, then commits what was handled and
    /// returns (dropping the runner leaves the group).
    ///
    /// # Errors
    /// [`RunnerError::Consumer`] when the consumer is closed or the final commit fails,
    /// [`RunnerError::Paused`] when the paused-partitions store cannot be read at the start
    /// (later failures to read it are logged and retried).
    pub async fn run(
        &mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RunnerError> {
        self.refresh_paused().await?;
        let mut commit = tokio::time::interval(self.options.commit_interval);
        commit.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(self.options.paused_refresh);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut readiness = tokio::time::interval(Duration::from_millis(10));
        readiness.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.look_at_assignment();
        let mut woken = self.wake.as_ref().map(AppendSignal::waiter);
        let mut active_at = Instant::now();
        // Whether the loop is only looking again after the recheck interval.
        let mut looking = false;
        tokio::pin!(shutdown);
        loop {
            let due = self.waiting.values().min().copied();
            let wake = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            // Fetching stops this long after the last message (after a short look when the
            // recheck interval, not a signal or a message, made it fetch again); an idle loop
            // looks again after the recheck interval, or at once when woken.
            let idle_check = match (self.options.idle_after, &self.idle) {
                (Some(after), None) if looking => Some(active_at + after.min(IDLE_LOOK)),
                (Some(after), None) => Some(active_at + after),
                (Some(_), Some(_)) => Some(active_at + self.options.idle_recheck),
                (None, _) => None,
            };
            let signalled = async {
                match woken.as_mut() {
                    Some(woken) if self.idle.is_some() => {
                        if woken.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = signalled => {
                    if let Some(woken) = woken.as_mut() {
                        woken.borrow_and_update();
                    }
                    self.leave_idle(true);
                    looking = false;
                    active_at = Instant::now();
                }
                () = tokio::time::sleep_until(idle_check.unwrap_or(wake)), if idle_check.is_some() => {
                    looking = false;
                    if let Some(paused) = &self.idle {
                        looking = paused.iter().all(|key| self.established.contains(key));
                        self.leave_idle(!looking);
                    } else {
                        self.go_idle();
                    }
                    active_at = Instant::now();
                }
                () = tokio::time::sleep_until(wake), if due.is_some() => self.resume_due(),
                _ = commit.tick() => {
                    self.look_at_assignment();
                    if let Err(error) = self.consumer.commit_stored_in_background() {
                        tracing::warn!(%error, "periodic commit failed");
                    }
                }
                _ = readiness.tick(), if self.stats.assigned_partitions() == 0 => {
                    self.look_at_assignment();
                }
                _ = refresh.tick() => {
                    // The held set stays as it was; the next refresh tries again.
                    if let Err(error) = self.refresh_paused().await {
                        tracing::warn!(%error, "reading paused partitions failed");
                    }
                }
                received = self.consumer.recv() => match received {
                    Ok(delivery) => {
                        active_at = Instant::now();
                        looking = false;
                        self.established
                            .insert((delivery.topic.clone(), delivery.partition));
                        // Fetched before the pause: messages flow, fetch again.
                        self.leave_idle(true);
                        if self.stats.assigned_partitions() == 0 {
                            // A delivery means an assignment: readiness need not wait a tick.
                            self.look_at_assignment();
                        }
                        self.dispatch(delivery).await;
                    }
                    Err(ConsumerError::Closed) => return Err(ConsumerError::Closed.into()),
                    Err(error) => {
                        tracing::warn!(%error, "consumer error; polling again");
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                },
            }
        }
        self.consumer.commit_stored().await?;
        Ok(())
    }

    /// Stops fetching every assigned partition that is not already paused (waiting out a
    /// backoff, or held): nothing arrived for [`RunnerOptions::idle_after`]. Not before the
    /// member has partitions, nor while a retry waits.
    fn go_idle(&mut self) {
        let assignment = self.consumer.assignment();
        if !self.waiting.is_empty() || assignment.is_empty() {
            return;
        }
        // What was fetched for a whole window (and is still assigned) has its position.
        self.established.retain(|key| assignment.contains(key));
        if let Some(window) = self.window.take() {
            self.established
                .extend(window.into_iter().filter(|key| assignment.contains(key)));
        }
        let mut paused = Vec::new();
        for (topic, partition) in assignment {
            let key = (topic, partition);
            if self.held.contains(&key) {
                continue;
            }
            match self.consumer.pause(&key.0, key.1) {
                Ok(()) => paused.push(key),
                Err(error) => tracing::debug!(%error, "pausing an idle partition failed"),
            }
        }
        tracing::debug!(partitions = paused.len(), "idle: fetching stopped");
        self.idle = Some(paused);
    }

    /// Fetches again what [`go_idle`](Self::go_idle) paused (a partition revoked meanwhile is
    /// skipped), for a whole idle window when `whole`, else for a look.
    fn leave_idle(&mut self, whole: bool) {
        let Some(paused) = self.idle.take() else {
            return;
        };
        tracing::debug!(partitions = paused.len(), "idle no more: fetching again");
        let resumed: Vec<_> = paused
            .into_iter()
            .filter(|key| !self.held.contains(key))
            .collect();
        if let Err(error) = self.consumer.resume_all(&resumed) {
            tracing::debug!(%error, "resuming an idle partition failed");
        }
        self.window = whole.then_some(resumed);
    }

    /// Records how many partitions the member has.
    fn look_at_assignment(&self) {
        self.stats.set_assigned(self.consumer.assignment().len());
    }

    /// Handles one delivery, in a span continuing the trace its message carries, and decides
    /// what happens to its partition.
    async fn dispatch(&mut self, delivery: Delivery) {
        let key = (delivery.topic.clone(), delivery.partition);
        if self.held.contains(&key) {
            self.hold_at(&delivery, delivery.attempt);
            return;
        }
        let span = tracing::info_span!(
            "process",
            otel.name = %format_args!("process {}", delivery.topic),
            otel.kind = "consumer",
            messaging.operation.type = "process",
            messaging.destination.name = %delivery.topic,
            messaging.destination.partition.id = delivery.partition,
            messaging.kafka.offset = delivery.offset,
            messaging.message.id = %delivery.message.message_id,
            messaging.consumer.group.name = %self.consumer.group_id(),
            messaging.message.conversation_id = tracing::field::Empty,
            es.message_type = %delivery.message.message_type,
            es.attempt = delivery.attempt,
        );
        if let Some(correlation) = delivery.message.correlation_id {
            span.record(
                "messaging.message.conversation_id",
                tracing::field::display(correlation),
            );
        }
        telemetry::continue_trace(&span, &delivery.message.headers);
        let (handled, duplicate) =
            telemetry::watch_duplicate(self.handler.handle(&delivery).instrument(span)).await;
        let error = match handled {
            Ok(()) => {
                self.stats.count_handled();
                self.count(&delivery, if duplicate { "duplicate" } else { "ok" });
                let stored = self.consumer.store(&delivery);
                return self.report(stored, &delivery);
            }
            Err(error) => error,
        };
        let reason = error.to_string();
        if !error.is_transient() {
            self.count(&delivery, "dead_lettered");
            return self.dead_letter(&delivery, &reason).await;
        }
        if delivery.attempt < self.options.max_attempts {
            tracing::info!(
                topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset,
                attempt = delivery.attempt, "handler failed, retrying: {reason}"
            );
            self.count(&delivery, "retried");
            return self.retry_later(&delivery);
        }
        match self.options.policy {
            FailurePolicy::PausePartition => {
                self.count(&delivery, "paused");
                self.pause_for_good(&delivery, &reason).await;
            }
            _ => {
                self.count(&delivery, "dead_lettered");
                self.dead_letter(&delivery, &reason).await;
            }
        }
    }

    /// Counts a delivery's result in `es_consumer_handled_total`.
    fn count(&self, delivery: &Delivery, result: &'static str) {
        telemetry::metrics().consumer_handled.add(
            1,
            &[
                telemetry::label("group", self.consumer.group_id().to_owned()),
                telemetry::label("topic", delivery.topic.clone()),
                telemetry::label("result", result),
            ],
        );
    }

    async fn dead_letter(&mut self, delivery: &Delivery, reason: &str) {
        match self
            .consumer
            .dead_letter(delivery, reason, delivery.attempt)
            .await
        {
            Ok(_) => self.stats.count_dead_lettered(),
            Err(error @ ConsumerError::Backend(_)) => {
                tracing::warn!(%error, "dead-letter publish failed; retrying the message");
                self.retry_later(delivery);
            }
            Err(error) => self.report(Err(error), delivery),
        }
    }

    /// Rewinds to `delivery`, pauses its partition, and resumes it after the backoff.
    fn retry_later(&mut self, delivery: &Delivery) {
        self.stats.count_retried();
        let rewound = self
            .consumer
            .rewind(delivery, delivery.attempt.saturating_add(1))
            .and_then(|()| self.consumer.pause(&delivery.topic, delivery.partition));
        if rewound.is_ok() {
            let backoff = self.options.backoff_after(delivery.attempt);
            self.waiting.insert(
                (delivery.topic.clone(), delivery.partition),
                Instant::now() + backoff,
            );
        }
        self.report(rewound, delivery);
    }

    /// Rewinds to `delivery` and keeps its partition paused until the store says otherwise.
    fn hold_at(&mut self, delivery: &Delivery, attempt: u32) {
        let held = self
            .consumer
            .rewind(delivery, attempt)
            .and_then(|()| self.consumer.pause(&delivery.topic, delivery.partition));
        self.report(held, delivery);
    }

    async fn pause_for_good(&mut self, delivery: &Delivery, reason: &str) {
        let record = PausedPartition::new(
            self.consumer.group_id(),
            &delivery.topic,
            delivery.partition,
            delivery.offset,
            delivery.message.message_id,
            reason,
        );
        if let Err(error) = self.paused.pause(record).await {
            tracing::warn!(%error, "recording a paused partition failed; retrying the message");
            return self.retry_later(delivery);
        }
        tracing::error!(
            topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset,
            message_id = %delivery.message.message_id, "partition paused after {} attempts: {reason}",
            delivery.attempt
        );
        self.stats.count_paused();
        self.held
            .insert((delivery.topic.clone(), delivery.partition));
        self.hold_at(delivery, delivery.attempt.saturating_add(1));
    }

    /// Resumes the partitions whose backoff is over.
    fn resume_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Key> = self
            .waiting
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            self.waiting.remove(&key);
            if let Err(error) = self.consumer.resume(&key.0, key.1) {
                tracing::debug!(%error, topic = %key.0, partition = key.1, "resume refused (revoked?)");
            }
        }
    }

    /// Reads the paused-partitions store; resumes partitions an operator resumed.
    async fn refresh_paused(&mut self) -> Result<(), RunnerError> {
        let listed = self.paused.list(self.consumer.group_id()).await?;
        let now: HashSet<Key> = listed
            .into_iter()
            .map(|paused| (paused.topic, paused.partition))
            .collect();
        for key in self.held.difference(&now) {
            tracing::info!(topic = %key.0, partition = key.1, "paused partition resumed");
            if let Err(error) = self.consumer.resume(&key.0, key.1) {
                tracing::debug!(%error, "resume refused (revoked?)");
            }
        }
        self.held = now;
        Ok(())
    }

    /// Logs a refused consumer operation: a revoked partition is normal during a rebalance.
    fn report(&self, result: Result<(), ConsumerError>, delivery: &Delivery) {
        match result {
            Ok(()) => {}
            Err(
                error @ (ConsumerError::PartitionNotAssigned { .. }
                | ConsumerError::UnknownDelivery { .. }),
            ) => {
                tracing::debug!(%error, offset = delivery.offset, "partition moved; its new owner redelivers");
            }
            Err(error) => {
                tracing::error!(%error, offset = delivery.offset, "consumer operation failed")
            }
        }
    }
}
