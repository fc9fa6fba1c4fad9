//! The running workflow: a relay from every outbox to the bus, a consumer per context and for
//! the saga, and the deadline scheduler, stopped together.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::memory::MemoryPausedPartitions;
use es_core::relay::{Relay, RelayOptions, RelayStatsHandle};
use es_core::{
    CheckpointStore, Consumer, ConsumerError, Delivery, HandlerError, MessageHandler, OutboxSource,
    Publisher,
};
use es_core::{PausedPartition, PausedPartitions};
use es_kafka::{ConsumerRunner, KafkaConsumer, LagProbe, RunnerOptions};
use es_saga::{DeadlineScheduler, SagaRunner};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::bus::{Bus, Routed};
use super::saga::OrderSaga;
use super::stores::{PausedStore, SagaStores};

/// A message a handler refused for good (malformed, unknown type): recorded, not retried.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The consumer group that refused it.
    pub group: String,
    /// The delivery.
    pub delivery: Delivery,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The statistics of a relay's current run (none while it waits for leadership).
type SharedStats = Arc<Mutex<Option<RelayStatsHandle>>>;

/// Completes when the runtime stops.
pub type Stopped = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The saga runner of the workflow.
pub type OrderSagaRunner = SagaRunner<OrderSaga, SagaStores>;

/// Counters of one consumer.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages handled (committed).
    pub handled: std::sync::atomic::AtomicU64,
    /// Transient failures retried.
    pub retried: std::sync::atomic::AtomicU64,
}

/// The workflow's background tasks.
#[derive(Debug)]
pub struct Runtime {
    bus: Bus,
    duplicate_delivery: bool,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
    relays: Mutex<Vec<(String, SharedStats)>>,
    consumers: Mutex<Vec<(String, Arc<ConsumerStats>)>>,
    /// Each Kafka member's group and lag probe.
    probes: Mutex<Vec<(String, LagProbe)>>,
    paused: PausedStore,
}

impl Runtime {
    /// A runtime on `bus` with nothing running yet; on Kafka, `duplicate_delivery` publishes
    /// every message twice (the in-memory bus duplicates deliveries itself).
    pub fn new(bus: Bus, duplicate_delivery: bool) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            bus,
            duplicate_delivery,
            stop,
            tasks: Mutex::new(Vec::new()),
            dead_letters: Arc::new(Mutex::new(Vec::new())),
            relays: Mutex::new(Vec::new()),
            consumers: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            paused: PausedStore::Memory(MemoryPausedPartitions::new()),
        }
    }

    /// Keeps partitions paused by policy in `paused` (in memory unless set).
    #[must_use]
    pub fn with_paused(mut self, paused: PausedStore) -> Self {
        self.paused = paused;
        self
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        lock(&self.tasks).push(handle);
    }

    /// Relays `source`'s outbox to the bus, checkpointed under `name`. With `election`
    /// (a pool and a schema), the relay first wins leadership of `name` (an advisory lock), so
    /// that one instance relays at a time, and a standby takes over when the leader's
    /// connection dies; without, it relays at once (one process, or the in-memory outbox).
    pub fn relay<S, C>(
        &self,
        name: &str,
        source: S,
        checkpoints: C,
        election: Option<Election>,
        signal: Option<es_core::AppendSignal>,
    ) where
        S: OutboxSource + Clone + 'static,
        C: CheckpointStore + Clone + 'static,
    {
        let stats: SharedStats = Arc::new(Mutex::new(None));
        lock(&self.relays).push((name.to_owned(), stats.clone()));
        let bus = self.bus.clone();
        let twice = self.duplicate_delivery;
        let name = name.to_owned();
        let stop = self.stop.subscribe();
        let make = move || {
            let options = RelayOptions::default()
                .batch_size(500)
                .poll_interval(Duration::from_millis(2), Duration::from_millis(50));
            let relay = match &bus {
                Bus::Memory(bus) => {
                    let publisher: Arc<dyn Publisher> = Arc::new(bus.clone());
                    Relay::new(name.clone(), source.clone(), checkpoints.clone(), publisher)
                }
                Bus::Kafka { config, prefix } => {
                    let factory = Routed::kafka_factory(config.clone(), prefix.clone(), twice);
                    Relay::with_factory(name.clone(), source.clone(), checkpoints.clone(), factory)
                }
            };
            let relay = relay.with_options(options);
            match &signal {
                Some(signal) => relay.with_signal(signal.clone()),
                None => relay,
            }
        };
        self.spawn(run_relay(make, stats, election, stop));
    }

    /// Runs `handler` on `topics` as consumer group `group`.
    ///
    /// # Errors
    /// When the Kafka consumer cannot be created (bad configuration).
    pub fn consume(
        &self,
        group: &str,
        topics: &[&str],
        handler: Arc<dyn MessageHandler>,
    ) -> Result<(), String> {
        let stats = Arc::new(ConsumerStats::default());
        lock(&self.consumers).push((group.to_owned(), stats.clone()));
        let counted = Counted {
            inner: handler,
            stats,
            group: group.to_owned(),
            dead_letters: self.dead_letters.clone(),
        };
        let stopped = self.stopped();
        match &self.bus {
            Bus::Memory(bus) => {
                let consumer = bus.consumer(group, topics);
                self.spawn(consume(consumer, counted, group.to_owned(), stopped));
            }
            Bus::Kafka { config, prefix } => {
                let mut builder = KafkaConsumer::builder(config.clone(), group)
                    .topic_prefix(prefix.clone())
                    .subscribe(topics.iter().copied());
                // A member that crashed without leaving is replaced within seconds, not
                // Kafka's default 45 s, unless the configuration says otherwise.
                for (name, value) in [
                    ("session.timeout.ms", "6000"),
                    ("heartbeat.interval.ms", "1000"),
                    ("max.poll.interval.ms", "30000"),
                    // A fetch answers as soon as a record arrives, not after 500 ms: each hop
                    // of the workflow is a fetch.
                    ("fetch.wait.max.ms", "10"),
                ] {
                    if !config.settings.contains_key(name) {
                        builder = builder.set(name, value);
                    }
                }
                let consumer = builder
                    .build()
                    .map_err(|e| format!("consumer {group}: {e}"))?;
                let options = RunnerOptions::default()
                    .max_attempts(20)
                    .backoff(Duration::from_millis(20), Duration::from_secs(2))
                    .commit_interval(Duration::from_millis(200));
                lock(&self.probes).push((group.to_owned(), consumer.lag_probe()));
                let mut runner = ConsumerRunner::new(consumer, counted)
                    .with_options(options)
                    .with_paused_store(self.paused.clone());
                let group = group.to_owned();
                self.spawn(async move {
                    if let Err(error) = runner.run(stopped).await {
                        tracing::error!(%group, %error, "consumer stopped");
                    }
                });
            }
        }
        Ok(())
    }

    /// Runs several handlers in one consumer group of `members` members over all their
    /// topics (the partitions are split among the members), each message going to the handler
    /// of its topic. On Kafka one group joins once, where five would join five
    /// times (and some brokers serialize joins).
    ///
    /// # Errors
    /// As [`consume`](Self::consume).
    pub fn consume_together(
        &self,
        group: &str,
        routes: &[(&'static [&'static str], Arc<dyn MessageHandler>)],
        members: usize,
    ) -> Result<(), String> {
        let prefix = match &self.bus {
            Bus::Kafka { prefix, .. } => prefix.clone(),
            Bus::Memory(_) => String::new(),
        };
        let mut by_topic = std::collections::HashMap::new();
        let mut topics = Vec::new();
        for (route_topics, handler) in routes {
            for topic in *route_topics {
                by_topic.insert(format!("{prefix}{topic}"), handler.clone());
                topics.push(*topic);
            }
        }
        let dispatch: Arc<dyn MessageHandler> = Arc::new(ByTopic { by_topic });
        for _ in 0..members.max(1) {
            self.consume(group, &topics, dispatch.clone())?;
        }
        Ok(())
    }

    /// Fires the saga's deadlines through `runner`.
    pub fn schedule(&self, runner: Arc<OrderSagaRunner>, store: SagaStores, poll: Duration) {
        let scheduler = DeadlineScheduler::new(store)
            .with_poll_interval(poll)
            .register(OrderSagaRunner::clone(&runner));
        let stopped = self.stopped();
        self.spawn(async move {
            if let Err(error) = scheduler.run(stopped).await {
                tracing::error!(%error, "deadline scheduler stopped");
            }
        });
    }

    /// Runs the task `start` makes from the runtime's stop signal: it winds down on its own
    /// when the signal completes, and [`shutdown`](Self::shutdown) waits for it.
    pub fn run_until_stopped<F>(&self, start: impl FnOnce(Stopped) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stopped: Stopped = Box::pin(self.stopped());
        self.spawn(start(stopped));
    }

    /// Messages refused for good.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.dead_letters).clone()
    }

    /// Each relay's name and statistics.
    pub fn relay_stats(&self) -> Vec<(String, es_core::relay::RelayStats)> {
        lock(&self.relays)
            .iter()
            .filter_map(|(name, stats)| {
                lock(stats)
                    .as_ref()
                    .map(|stats| (name.clone(), stats.snapshot()))
            })
            .collect()
    }

    /// Each consumer group's handled and retried counts.
    pub fn consumer_stats(&self) -> Vec<(String, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        lock(&self.consumers)
            .iter()
            .map(|(group, s)| {
                (
                    group.clone(),
                    s.handled.load(Relaxed),
                    s.retried.load(Relaxed),
                )
            })
            .collect()
    }

    /// Each consumer group's lag on the broker: records published to the partitions its
    /// members hold that the group has not committed (`None` on the in-process bus; an error
    /// when the broker does not answer).
    pub async fn consumer_lag(&self) -> BTreeMap<String, Result<Option<i64>, String>> {
        let mut lags: BTreeMap<String, Result<Option<i64>, String>> = self
            .groups()
            .into_iter()
            .map(|group| (group, Ok(None)))
            .collect();
        let probes = lock(&self.probes).clone();
        for (group, probe) in probes {
            let measured = probe
                .lag()
                .await
                .map(|partitions| partitions.iter().map(|p| p.lag).sum::<i64>())
                .map_err(|e| e.to_string());
            let total = lags.entry(group).or_insert(Ok(None));
            // The first error stands for the group.
            if let Ok(sum) = total {
                *total = measured.map(|lag| Some(sum.unwrap_or(0) + lag));
            }
        }
        lags
    }

    /// The partitions paused by policy, of every consumer group.
    ///
    /// # Errors
    /// When the paused-partitions store cannot be read.
    pub async fn paused_partitions(&self) -> Result<Vec<PausedPartition>, String> {
        let mut paused = Vec::new();
        for group in self.groups() {
            paused.extend(self.paused.list(&group).await.map_err(|e| e.to_string())?);
        }
        Ok(paused)
    }

    /// Every consumer group this runtime runs members of.
    fn groups(&self) -> BTreeSet<String> {
        lock(&self.consumers)
            .iter()
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// Stops every task and waits for them: in-flight messages finish, nothing new starts.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Runtime {
    /// Stops every task at once, mid-message, as a crash would, and waits until they are
    /// gone (their connections closed), as a crashed process would be.
    pub async fn abort(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where relays compete for leadership: a pool and the schema their locks are keyed by.
#[derive(Debug, Clone)]
pub struct Election {
    /// The pool the leader's connection comes from.
    pub pool: deadpool_postgres::Pool,
    /// The schema of the locks.
    pub schema: String,
}

/// Completes once `stop` says so (the guard `wait_for` returns is not held across awaits).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs relays made by `make` until `stop`: with an election, only while leading.
async fn run_relay<S, C>(
    make: impl Fn() -> Relay<S, C> + Send + 'static,
    stats: SharedStats,
    election: Option<Election>,
    mut stop: watch::Receiver<bool>,
) where
    S: OutboxSource + 'static,
    C: CheckpointStore + 'static,
{
    loop {
        let mut relay = make();
        let name = relay.name().to_owned();
        let leader = match &election {
            None => None,
            Some(election) => {
                let acquire = es_postgres::Leader::acquire(
                    &election.pool,
                    &election.schema,
                    &name,
                    Duration::from_secs(1),
                );
                tokio::select! {
                    () = until_stopped(&mut stop) => return,
                    leader = acquire => match leader {
                        Ok(leader) => Some(leader),
                        Err(error) => {
                            tracing::warn!(relay = %name, %error, "cannot compete for leadership");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                }
            }
        };
        *lock(&stats) = Some(relay.stats());
        let mut stopped = stop.clone();
        let ended = relay.run(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        let outcome = match leader {
            None => ended.await,
            Some(mut leader) => {
                let lost = async {
                    while leader.is_leader().await {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                };
                tokio::select! {
                    outcome = ended => outcome,
                    () = lost => {
                        tracing::warn!(relay = %name, "leadership lost; competing again");
                        continue;
                    }
                }
            }
        };
        match outcome {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(relay = %name, %error, "relay stopped; starting again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Hands each delivery to the handler of the topic it was read from.
struct ByTopic {
    by_topic: std::collections::HashMap<String, Arc<dyn MessageHandler>>,
}

#[async_trait]
impl MessageHandler for ByTopic {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        match self.by_topic.get(&delivery.topic) {
            Some(handler) => handler.handle(delivery).await,
            None => Err(HandlerError::permanent(format!(
                "no handler reads topic {}",
                delivery.topic
            ))),
        }
    }
}

/// A handler that counts what it handled and records what it refused for good.
struct Counted {
    inner: Arc<dyn MessageHandler>,
    stats: Arc<ConsumerStats>,
    group: String,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
}

#[async_trait]
impl MessageHandler for Counted {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        use std::sync::atomic::Ordering::Relaxed;
        let outcome = self.inner.handle(delivery).await;
        match &outcome {
            Ok(()) => {
                self.stats.handled.fetch_add(1, Relaxed);
            }
            Err(error) if error.is_transient() => {
                self.stats.retried.fetch_add(1, Relaxed);
            }
            Err(error) => {
                tracing::error!(group = %self.group, %error, message_type = %delivery.message.message_type, message_id = %delivery.message.message_id, "dead-lettered");
                lock(&self.dead_letters).push(DeadLetter {
                    group: self.group.clone(),
                    delivery: delivery.clone(),
                    reason: error.to_string(),
                    at: Utc::now(),
                });
            }
        }
        outcome
    }
}

/// Handles each delivery of the in-memory bus in order: commits after success, rewinds after
/// a transient failure (with a back-off growing with the attempt), commits a permanent one
/// (recorded as a dead letter by [`Counted`]).
async fn consume(
    mut consumer: impl Consumer + 'static,
    handler: Counted,
    group: String,
    stopped: impl Future<Output = ()> + Send,
) {
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let delivery = tokio::select! {
            biased;
            () = &mut stopped => return,
            delivery = consumer.recv() => delivery,
        };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(ConsumerError::Closed) => return,
            Err(error) => {
                tracing::warn!(%group, %error, "consumer failed; polling again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let outcome = handler.handle(&delivery).await;
        let settled = match outcome {
            Ok(()) => consumer.commit(&delivery).await,
            Err(error) if error.is_transient() => {
                let backoff = Duration::from_millis(5 << delivery.attempt.min(7));
                tracing::debug!(%group, %error, attempt = delivery.attempt, "retrying");
                tokio::time::sleep(backoff).await;
                consumer.retry(&delivery).await
            }
            Err(_) => consumer.commit(&delivery).await,
        };
        if let Err(error) = settled {
            tracing::warn!(%group, %error, "commit or rewind failed; the message comes again");
        }
    }
}
