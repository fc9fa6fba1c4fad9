//! The running workflow on the framework's runtime: a relay from every outbox to the bus
//! (leader-only on PostgreSQL), the consumer loops (the same loop on the in-process bus and on
//! Kafka, with the same retries, dead letters and pauses), the deadline scheduler and the
//! orders view, each a service that is restarted after a failure and drained at the stop.

pub mod bus;
mod services;

pub(crate) use services::{SagaParts, WorkflowServices, consumer};
pub use services::{Workflow, WorkflowConfig};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::consume::{ConsumerLoop, RunnerOptions, RunnerStats};
use es_core::local::LocalRoute;
use es_core::memory::MemoryPausedPartitions;
use es_core::relay::{Relay, RelayOptions, RelayStatsHandle};
use es_core::runtime::Lease;
use es_core::runtime::{
    LeaderOnly, RunningRuntime, Runtime as Services, ServiceStatus, service_fn,
};
use es_core::{
    CheckpointStore, DeadlineStore, Delivery, HandlerError, MessageHandler, OutboxSource,
    PausedPartition, PausedPartitions, PausedPartitionsError, Publisher, SagaStore,
};
use es_kafka::{KafkaConsumer, LagProbe};
use es_saga::{DeadlineScheduler, SagaRunner};

use self::bus::Bus;
use crate::workflow::saga::OrderSaga;

/// A message refused for good (malformed, unknown type, or failing every attempt): recorded
/// here and sent to its topic's dead-letter topic.
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

/// Why a workflow service could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A Kafka consumer could not be created (bad configuration).
    #[error("consumer {group}: {source}")]
    Consumer {
        /// Its group.
        group: String,
        /// Why.
        #[source]
        source: es_core::BoxError,
    },
    /// The cross-process wake-ups of a store could not be configured.
    #[error("wake-ups of {store}: {source}")]
    Wakeups {
        /// The store (its outbox's name, or `saga`).
        store: String,
        /// Why.
        #[source]
        source: es_core::BoxError,
    },
}

/// Completes when the runtime stops.
pub type Stopped = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The saga runner of the workflow, on the saga store `G`.
pub type OrderSagaRunner<G> = SagaRunner<OrderSaga, G>;

/// How long a Kafka member goes on fetching after its last message before it stops.
const IDLE_AFTER: Duration = Duration::from_millis(1500);

/// How long a Kafka member's fetch may wait on the broker for records
/// (`fetch.wait.max.ms`, unless `KAFKA_CONFIG_FETCH_WAIT_MAX_MS` sets it). The test broker
/// answers a fetch that found nothing only when a wait under 250 ms runs out, so the wait is
/// the delay of every message on it (about half of it on average): with 50 ms a record reached
/// its member a median 23 ms after it was produced, most of the 27 ms of each broker hop of an
/// order. A short wait costs fetches only while a member is
/// active: an idle one stops fetching ([`IDLE_AFTER`]). Apache Kafka answers as soon as a
/// record arrives; there, 500 fetches less often at the same latency.
const FETCH_WAIT_MS: &str = "5";

/// How long an idle Kafka member waits before it looks again without being woken.
const IDLE_RECHECK: Duration = Duration::from_secs(10);

/// How often an idle relay looks at its outbox without being woken: its process's commits
/// wake it, and other processes' commits too on PostgreSQL (the store's `PgWakeups`), so this
/// only bounds how late a lost wake-up is made up for.
const RELAY_IDLE_POLL: Duration = Duration::from_secs(30);

/// How long a relay's checkpoint may stay behind the broker's acknowledgements while
/// messages flow: one write per relay at most this often instead of one per batch (each a
/// committed transaction). A crash publishes again what followed the last write, which the
/// consumers' inboxes discard.
const RELAY_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// How often a handler is tried before its message is dead-lettered.
const MAX_ATTEMPTS: u32 = 20;

/// How long stopping waits for each Kafka member to leave its group (a close takes a round
/// trip or two; librdkafka can wait forever on one, see [`LagProbe::close`]).
const MEMBER_CLOSE: Duration = Duration::from_secs(5);

/// The consumer loops' options, the same on both buses.
fn runner_options() -> RunnerOptions {
    RunnerOptions::default()
        .max_attempts(MAX_ATTEMPTS)
        .backoff(Duration::from_millis(20), Duration::from_secs(2))
        .commit_interval(Duration::from_millis(200))
        // Partitions held paused by policy are read again this often (an operator's resume
        // is seen within it and PAUSED_SHARED_FOR).
        .paused_refresh(Duration::from_secs(10))
}

/// The workflow's services: added, then started together ([`start`](Self::start)); a
/// service added later (a released consumer) starts with the next `start`.
#[derive(Debug)]
pub struct Runtime {
    bus: Bus,
    duplicate_delivery: bool,
    pending: Mutex<Services>,
    running: Mutex<Vec<RunningRuntime>>,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
    relays: Mutex<Vec<(String, RelayStatsHandle)>>,
    consumers: Mutex<Vec<(String, RunnerStats)>>,
    /// Each Kafka member's group and lag probe.
    probes: Mutex<Vec<(String, LagProbe)>>,
    paused: SharedPaused,
    /// Fired by every relay after a batch the broker took: wakes idle consumer loops.
    published: es_core::AppendSignal,
    /// The Kafka producer the relays share, made with the first Kafka relay.
    producer: std::sync::OnceLock<Arc<bus::SharedProducer>>,
    /// On Kafka, the topics whose messages are handed over in this process instead
    /// ([`with_local_route`](Self::with_local_route)).
    local: Option<(LocalRoute, usize)>,
}

impl Runtime {
    /// The signal fired after each batch a relay here published (its consumers wake on it
    /// when idle).
    pub fn published(&self) -> &es_core::AppendSignal {
        &self.published
    }

    /// A runtime on `bus` with nothing running yet; on Kafka, `duplicate_delivery` publishes
    /// every message twice (the in-memory bus duplicates deliveries itself).
    pub fn new(bus: Bus, duplicate_delivery: bool) -> Self {
        Self {
            bus,
            duplicate_delivery,
            pending: Mutex::new(Services::new()),
            running: Mutex::new(Vec::new()),
            dead_letters: Arc::new(Mutex::new(Vec::new())),
            relays: Mutex::new(Vec::new()),
            consumers: Mutex::new(Vec::new()),
            probes: Mutex::new(Vec::new()),
            paused: SharedPaused::new(MemoryPausedPartitions::new()),
            published: es_core::AppendSignal::new(),
            producer: std::sync::OnceLock::new(),
            local: None,
        }
    }

    /// On Kafka, hands the messages of `route`'s topics from the relays to the consumers of
    /// this process in memory (durably: a relay's checkpoint waits for their handlers,
    /// [`es_core::local`]), and publishes the others; dead letters still go to Kafka. The
    /// route's groups must be the prefixed names of the groups that consume its topics here;
    /// each runs `members` members on it (one per partition of the route).
    #[must_use]
    pub fn with_local_route(mut self, route: LocalRoute, members: usize) -> Self {
        if let Bus::Kafka { config, prefix, .. } = &self.bus {
            let producer = self.shared_producer(config, prefix);
            let dead_letters: Arc<dyn Publisher> = Arc::new(bus::DeadLetters::new(producer));
            self.local = Some((route.with_dead_letters(dead_letters), members.max(1)));
        }
        self
    }

    /// The Kafka producer the relays (and the local route's dead letters) share.
    fn shared_producer(
        &self,
        config: &es_kafka::KafkaConfig,
        prefix: &str,
    ) -> Arc<bus::SharedProducer> {
        let twice = self.duplicate_delivery;
        self.producer
            .get_or_init(|| bus::SharedProducer::new(config.clone(), prefix.to_owned(), twice))
            .clone()
    }

    /// Keeps partitions paused by policy in `paused` (in memory unless set).
    #[must_use]
    pub fn with_paused(mut self, paused: impl PausedPartitions + 'static) -> Self {
        self.paused = SharedPaused::new(paused);
        self
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    fn add(&self, service: impl es_core::runtime::Service) {
        let mut pending = lock(&self.pending);
        let services = std::mem::take(&mut *pending);
        *pending = services.service(service);
    }

    /// Starts every service added since the last start.
    pub fn start(&self) {
        let services = std::mem::take(&mut *lock(&self.pending));
        lock(&self.running).push(services.start());
    }

    /// Relays `source`'s outbox to the bus, checkpointed under `name`. With `leases` (on
    /// PostgreSQL), the relay runs only while this process holds the lease `name`, so that
    /// one instance relays at a time and a standby takes over when the leader's connection
    /// dies; without, it relays at once (one process, or the in-memory outbox).
    pub fn relay<S, C, L>(
        &self,
        name: &str,
        source: S,
        checkpoints: C,
        leases: Option<L>,
        signal: Option<es_core::AppendSignal>,
    ) where
        S: OutboxSource + 'static,
        C: CheckpointStore + 'static,
        L: Lease + Clone,
    {
        let relay = match &self.bus {
            Bus::Memory(bus) => {
                let publisher: Arc<dyn Publisher> = Arc::new(bus.clone());
                Relay::new(name, source, checkpoints, publisher)
            }
            Bus::Kafka { config, prefix, .. } => {
                let producer = self.shared_producer(config, prefix);
                let relay = Relay::with_factory(name, source, checkpoints, producer.factory());
                match &self.local {
                    Some((route, _)) => relay.with_local_route(route.clone()),
                    None => relay,
                }
            }
        };
        // Woken by its store's signal on each commit in this process; the slow poll is a
        // fallback for other processes' commits. While orders flow, its checkpoint is written
        // at most every RELAY_CHECKPOINT_INTERVAL (and when the outbox runs dry).
        let options = RelayOptions::default()
            .batch_size(500)
            .poll_interval(Duration::from_millis(2), RELAY_IDLE_POLL)
            .checkpoint_interval(RELAY_CHECKPOINT_INTERVAL);
        let relay = relay
            .with_options(options)
            .with_published_signal(self.published.clone());
        let relay = match signal {
            Some(signal) => relay.with_signal(signal),
            None => relay,
        };
        lock(&self.relays).push((name.to_owned(), relay.stats()));
        match leases {
            Some(leases) => self.add(LeaderOnly::new(leases, relay)),
            None => self.add(relay),
        }
    }

    /// Runs `handler` on `topics` as consumer group `group` (one member; on the local route,
    /// its members).
    ///
    /// # Errors
    /// When the Kafka consumer cannot be created (bad configuration).
    pub fn consume(
        &self,
        group: &str,
        topics: &[&str],
        handler: Arc<dyn MessageHandler>,
    ) -> Result<(), RuntimeError> {
        self.consume_members(group, topics, handler, 1)
    }

    /// Runs `handler` on `topics` as consumer group `group`: `members` members on Kafka or
    /// the in-process bus, and the local route's members for its topics.
    fn consume_members(
        &self,
        group: &str,
        topics: &[&str],
        handler: Arc<dyn MessageHandler>,
        members: usize,
    ) -> Result<(), RuntimeError> {
        let counted = Refusals {
            inner: handler,
            group: group.to_owned(),
            dead_letters: self.dead_letters.clone(),
        };
        match &self.bus {
            Bus::Memory(bus) => {
                for _ in 0..members.max(1) {
                    let consumer = bus.consumer(group, topics);
                    let runner = ConsumerLoop::new(consumer, counted.clone())
                        .with_options(runner_options())
                        .with_paused_store(self.paused.clone());
                    lock(&self.consumers).push((group.to_owned(), runner.stats()));
                    self.add(runner);
                }
                Ok(())
            }
            Bus::Kafka { config, prefix, .. } => {
                let (local, remote): (Vec<&str>, Vec<&str>) = topics
                    .iter()
                    .partition(|topic| self.local.as_ref().is_some_and(|(r, _)| r.routes(topic)));
                if let Some((route, local_members)) = &self.local
                    && !local.is_empty()
                {
                    // Handed over by the relays here: loops on the route, one per partition,
                    // each woken by a hand-over, cost nothing at rest.
                    // A route member commits as it stores, so its loop's periodic commit only
                    // looks at the assignment: once a second is plenty.
                    let options = runner_options().commit_interval(Duration::from_secs(1));
                    for _ in 0..*local_members {
                        let consumer = route.consumer(&format!("{prefix}{group}"), &local);
                        let runner = ConsumerLoop::new(consumer, counted.clone())
                            .with_options(options.clone())
                            .with_paused_store(self.paused.clone());
                        lock(&self.consumers).push((group.to_owned(), runner.stats()));
                        self.add(runner);
                    }
                }
                for _ in 0..members.max(1) {
                    if !remote.is_empty() {
                        self.consume_kafka(group, &remote, counted.clone(), config, prefix)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Adds a Kafka member of `group` reading `topics`.
    fn consume_kafka(
        &self,
        group: &str,
        topics: &[&str],
        counted: Refusals,
        config: &es_kafka::KafkaConfig,
        prefix: &str,
    ) -> Result<(), RuntimeError> {
        // The preset's settings (es_kafka::KafkaConsumerBuilder): joins in seconds on
        // Apache Kafka and the test broker; the group is prefixed like the topics. A
        // member fetches with a short wait while active (FETCH_WAIT) unless the
        // configuration sets one.
        let mut config = config.clone();
        config
            .settings
            .entry("fetch.wait.max.ms".to_owned())
            .or_insert_with(|| FETCH_WAIT_MS.to_owned());
        let consumer = KafkaConsumer::builder(config, group)
            .topic_prefix(prefix.to_owned())
            .subscribe(topics.iter().copied())
            .build()
            .map_err(|e| RuntimeError::Consumer {
                group: group.to_owned(),
                source: e.into(),
            })?;
        lock(&self.probes).push((group.to_owned(), consumer.lag_probe()));
        // es_consumer_lag for /metrics, measured every 5 s.
        self.add(consumer.lag_reporter(Duration::from_secs(5)));
        // At rest a member stops fetching (a waiting fetch costs the test broker a
        // re-check of every partition, again and again); the relays here wake it when
        // they publish, and it looks again every 10 s for other producers.
        let options = runner_options().idle(IDLE_AFTER, IDLE_RECHECK);
        let runner = ConsumerLoop::new(consumer, counted)
            .with_options(options)
            .with_wake(self.published.clone())
            .with_paused_store(self.paused.clone());
        lock(&self.consumers).push((group.to_owned(), runner.stats()));
        self.add(runner);
        Ok(())
    }

    /// Runs several handlers in one consumer group of `members` members over all their
    /// topics (the partitions are split among the members), each message going to the handler
    /// of its topic: one group joins once, where five would join five times.
    ///
    /// # Errors
    /// As [`consume`](Self::consume).
    pub fn consume_together(
        &self,
        group: &str,
        routes: &[(&'static [&'static str], Arc<dyn MessageHandler>)],
        members: usize,
    ) -> Result<(), RuntimeError> {
        let prefix = match &self.bus {
            Bus::Kafka { prefix, .. } => prefix.clone(),
            Bus::Memory(_) => String::new(),
        };
        let mut by_topic = std::collections::HashMap::new();
        let mut topics = Vec::new();
        for (route_topics, handler) in routes {
            for topic in *route_topics {
                // Kafka's deliveries name the prefixed topic, the local route's the topic.
                by_topic.insert(format!("{prefix}{topic}"), handler.clone());
                by_topic.insert((*topic).to_owned(), handler.clone());
                topics.push(*topic);
            }
        }
        let dispatch: Arc<dyn MessageHandler> = Arc::new(ByTopic { by_topic });
        self.consume_members(group, &topics, dispatch, members)
    }

    /// Fires the saga's deadlines through `runner`, looking again when `signal` fires (a
    /// saga commit) and otherwise when the next deadline is due, or after `poll` at most.
    pub fn schedule<G>(
        &self,
        runner: &OrderSagaRunner<G>,
        store: G,
        poll: Duration,
        signal: es_core::AppendSignal,
    ) where
        G: SagaStore + DeadlineStore + Clone + 'static,
    {
        let scheduler = DeadlineScheduler::new(store)
            .with_poll_interval(poll)
            .with_signal(signal)
            .register(runner.clone());
        self.add(scheduler);
    }

    /// Runs the service `name` whose runs `run` makes from the stop signal: each run winds
    /// down on its own when the signal completes.
    pub fn run_until_stopped<F>(&self, name: &str, run: impl Fn(Stopped) -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.add(service_fn(name, move |context| {
            let ran = run(Box::pin(context.shutdown().wait()));
            async move {
                ran.await;
                Ok(())
            }
        }));
    }

    /// Every service's status: its state, readiness, restarts and last error.
    pub fn services(&self) -> Vec<ServiceStatus> {
        lock(&self.running)
            .iter()
            .flat_map(RunningRuntime::status)
            .collect()
    }

    /// Whether every service runs and is ready (consumers once they have partitions).
    pub fn is_ready(&self) -> bool {
        let running = lock(&self.running);
        !running.is_empty() && running.iter().all(RunningRuntime::is_ready)
    }

    /// Messages refused for good.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.dead_letters).clone()
    }

    /// Each relay's name and statistics.
    pub fn relay_stats(&self) -> Vec<(String, es_core::relay::RelayStats)> {
        lock(&self.relays)
            .iter()
            .map(|(name, stats)| (name.clone(), stats.snapshot()))
            .collect()
    }

    /// Each consumer group's handled and retried counts (its members' sums).
    pub fn consumer_stats(&self) -> Vec<(String, u64, u64)> {
        let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (group, stats) in lock(&self.consumers).iter() {
            let counts = groups.entry(group.clone()).or_default();
            counts.0 += stats.handled();
            counts.1 += stats.retried();
        }
        groups
            .into_iter()
            .map(|(group, (handled, retried))| (group, handled, retried))
            .collect()
    }

    /// Each consumer group's lag on the broker: records published to the partitions its
    /// members hold that the group has not committed, plus the messages handed over to it on
    /// the local route and not handled yet (`None` on the in-process bus; an error when the
    /// broker does not answer).
    pub async fn consumer_lag(&self) -> BTreeMap<String, Result<Option<i64>, String>> {
        let mut lags: BTreeMap<String, Result<Option<i64>, String>> = self
            .groups()
            .into_iter()
            .map(|group| (group, Ok(None)))
            .collect();
        if let Some((route, _)) = &self.local {
            // Handed over by the relays here and not handled yet (by a held group too).
            let prefix = self.group_id("");
            for named in route.groups() {
                let group = named.strip_prefix(&prefix).unwrap_or(named).to_owned();
                let lag = i64::try_from(route.lag(named)).unwrap_or(i64::MAX);
                lags.insert(group, Ok(Some(lag)));
            }
        }
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
    pub async fn paused_partitions(&self) -> Result<Vec<PausedPartition>, PausedPartitionsError> {
        let mut paused = Vec::new();
        for group in self.groups() {
            let group = self.group_id(&group);
            paused.extend(PausedPartitions::list(&self.paused, &group).await?);
        }
        Ok(paused)
    }

    /// The group id on the bus (prefixed like the topics on Kafka).
    fn group_id(&self, group: &str) -> String {
        match &self.bus {
            Bus::Kafka { prefix, .. } => format!("{prefix}{group}"),
            Bus::Memory(_) => group.to_owned(),
        }
    }

    /// Every consumer group this runtime runs members of.
    fn groups(&self) -> BTreeSet<String> {
        lock(&self.consumers)
            .iter()
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// Stops every service and waits for them: in-flight messages finish and offsets are
    /// committed, nothing new starts.
    pub async fn shutdown(&self) {
        let running: Vec<RunningRuntime> = lock(&self.running).drain(..).collect();
        for running in running {
            running.shutdown().await;
        }
        self.close_members().await;
    }

    /// Closes the Kafka members the lag probes still hold (their loops have returned), and
    /// waits until each has left its group (at most [`MEMBER_CLOSE`] each): a member that left
    /// only after its replacement joined would leave while the group rebalances, which wedges
    /// the group for good on the test broker (docs/kafka.md, "Consumer groups on the test
    /// broker").
    async fn close_members(&self) {
        let probes: Vec<LagProbe> = std::mem::take(&mut *lock(&self.probes))
            .into_iter()
            .map(|(_, probe)| probe)
            .collect();
        if !probes.is_empty() {
            LagProbe::close(probes, MEMBER_CLOSE).await;
        }
    }

    /// Stops every service at once, mid-message, as a crash would, and waits until they are
    /// gone (their connections closed), as a crashed process would be.
    pub async fn abort(&self) {
        let running: Vec<RunningRuntime> = lock(&self.running).drain(..).collect();
        for running in running {
            running.abort().await;
        }
        self.close_members().await;
    }
}

/// Locks `mutex`, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// A handler that records the messages the consumer loop is about to dead-letter: refused
/// for good, or failing their last attempt.
#[derive(Clone)]
struct Refusals {
    inner: Arc<dyn MessageHandler>,
    group: String,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
}

#[async_trait]
impl MessageHandler for Refusals {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let outcome = self.inner.handle(delivery).await;
        if let Err(error) = &outcome
            && (!error.is_transient() || delivery.attempt >= MAX_ATTEMPTS)
        {
            tracing::error!(group = %self.group, %error, message_type = %delivery.message.message_type, message_id = %delivery.message.message_id, "dead-lettered");
            lock(&self.dead_letters).push(DeadLetter {
                group: self.group.clone(),
                delivery: delivery.clone(),
                reason: error.to_string(),
                at: Utc::now(),
            });
        }
        outcome
    }
}

/// Paused partitions of whichever backend, behind one type, so that the runtime (and the
/// application above it) is not generic over the backend. A group's list is read once for
/// all its members within [`PAUSED_SHARED_FOR`] (each member refreshes it every 10 s: 16
/// members on the local route made 1.6 reads a second at rest), and read again at once after
/// a pause or a resume through this process.
#[derive(Clone)]
struct SharedPaused {
    store: Arc<dyn ErasedPaused>,
    lists: Arc<Mutex<Lists>>,
}

/// Each group's list of paused partitions as read, and when; and a count of the changes made
/// through this process, so that a read that overlapped a change is not kept.
#[derive(Default)]
struct Lists {
    read: BTreeMap<String, (tokio::time::Instant, Vec<PausedPartition>)>,
    changes: u64,
}

/// How long a group's list of paused partitions serves its members (an operator's resume
/// from another process is seen within this and the members' refresh interval).
const PAUSED_SHARED_FOR: Duration = Duration::from_secs(5);

impl SharedPaused {
    fn new(store: impl PausedPartitions + 'static) -> Self {
        Self {
            store: Arc::new(store),
            lists: Arc::new(Mutex::new(Lists::default())),
        }
    }

    /// Forgets `group`'s list: it changed.
    fn forget(&self, group: &str) {
        let mut lists = lock(&self.lists);
        lists.read.remove(group);
        lists.changes += 1;
    }
}

impl std::fmt::Debug for SharedPaused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedPaused")
    }
}

#[async_trait]
trait ErasedPaused: Send + Sync {
    async fn pause(&self, paused: PausedPartition) -> Result<(), PausedPartitionsError>;
    async fn resume(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(), PausedPartitionsError>;
    async fn list(&self, group: &str) -> Result<Vec<PausedPartition>, PausedPartitionsError>;
}

#[async_trait]
impl<P: PausedPartitions + 'static> ErasedPaused for P {
    async fn pause(&self, paused: PausedPartition) -> Result<(), PausedPartitionsError> {
        PausedPartitions::pause(self, paused).await
    }

    async fn resume(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(), PausedPartitionsError> {
        PausedPartitions::resume(self, group, topic, partition).await
    }

    async fn list(&self, group: &str) -> Result<Vec<PausedPartition>, PausedPartitionsError> {
        PausedPartitions::list(self, group).await
    }
}

impl PausedPartitions for SharedPaused {
    async fn pause(&self, paused: PausedPartition) -> Result<(), PausedPartitionsError> {
        let group = paused.group.clone();
        let done = self.store.pause(paused).await;
        self.forget(&group);
        done
    }

    async fn resume(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(), PausedPartitionsError> {
        let done = self.store.resume(group, topic, partition).await;
        self.forget(group);
        done
    }

    async fn list(&self, group: &str) -> Result<Vec<PausedPartition>, PausedPartitionsError> {
        let changes = {
            let lists = lock(&self.lists);
            if let Some((at, list)) = lists.read.get(group)
                && at.elapsed() < PAUSED_SHARED_FOR
            {
                return Ok(list.clone());
            }
            lists.changes
        };
        let list = self.store.list(group).await?;
        let mut lists = lock(&self.lists);
        if lists.changes == changes {
            lists.read.insert(
                group.to_owned(),
                (tokio::time::Instant::now(), list.clone()),
            );
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use es_core::memory::MemoryPausedPartitions;
    use es_core::{PausedPartition, PausedPartitions, PausedPartitionsError};

    use super::SharedPaused;

    /// Counts the reads of the store under it.
    #[derive(Clone, Default)]
    struct Counted(MemoryPausedPartitions, Arc<AtomicUsize>);

    impl PausedPartitions for Counted {
        async fn pause(&self, paused: PausedPartition) -> Result<(), PausedPartitionsError> {
            self.0.pause(paused).await
        }

        async fn resume(
            &self,
            group: &str,
            topic: &str,
            partition: u32,
        ) -> Result<(), PausedPartitionsError> {
            self.0.resume(group, topic, partition).await
        }

        async fn list(&self, group: &str) -> Result<Vec<PausedPartition>, PausedPartitionsError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.list(group).await
        }
    }

    #[tokio::test]
    async fn a_group_s_members_share_one_read_and_a_change_here_is_seen_at_once() {
        let store = Counted::default();
        let shared = SharedPaused::new(store.clone());
        for _ in 0..16 {
            assert!(shared.list("g").await.unwrap().is_empty());
        }
        assert_eq!(store.1.load(Ordering::SeqCst), 1, "16 members, one read");
        let paused = PausedPartition::new("g", "t", 2, 7, uuid::Uuid::nil(), "failing");
        shared.pause(paused).await.unwrap();
        assert_eq!(
            shared.list("g").await.unwrap().len(),
            1,
            "the pause is seen"
        );
        shared.resume("g", "t", 2).await.unwrap();
        assert!(
            shared.list("g").await.unwrap().is_empty(),
            "the resume is seen"
        );
        assert_eq!(store.1.load(Ordering::SeqCst), 3);
        assert!(shared.list("other").await.unwrap().is_empty());
        assert_eq!(store.1.load(Ordering::SeqCst), 4, "each group its own list");
    }
}
