//! The workflow's services, whatever the backend: the relays of every outbox, the consumers
//! (but held ones), the deadline scheduler and the orders view, started together and started
//! again after a restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::MessageHandler;
use es_core::local::LocalRoute;

use super::bus::Bus;
use super::{OrderSagaRunner, Runtime, RuntimeError, lock};
use crate::backend::ShopBackend;
use crate::failures::FailureRules;
use crate::orders::Orders;
use crate::storage::StorageError;

/// The ordering workflow's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// How long a step may go unanswered before the order is cancelled.
    pub step_timeout: Duration,
    /// How often the deadline scheduler looks for due deadlines at most: it sleeps until the
    /// next one is due and wakes on each saga commit (of this process, and of others through
    /// the saga store's wake-ups on PostgreSQL), so this is a fallback for a lost wake-up.
    pub deadline_poll: Duration,
    /// Orders that fail on purpose.
    pub failures: FailureRules,
    /// Deliver every message twice (to show handlers are idempotent).
    pub duplicate_delivery: bool,
    /// Partitions per topic of the bus.
    pub partitions: u32,
    /// Members of the workflow's consumer group on Kafka (each handles its share of the
    /// partitions, in order per partition).
    pub consumers: usize,
    /// On Kafka, send every message through the broker, even those whose handlers run in
    /// this process (by default those are handed over in memory, as durably: the relay's
    /// checkpoint waits for their handlers, [`es_core::local`]).
    pub through_broker: bool,
    /// Members of each consumer group on the local route, one per partition of its topics
    /// there (the unit of order per key): they cost nothing at rest, and handling a group's
    /// messages 16 at a time rather than 4 halved the place → final status p99 at
    /// saturation (docs/benchmarks.md).
    pub local_members: usize,
    /// Consumer groups not started until [`App::release`](crate::app::App::release) (to hold a context back in tests
    /// and demos: its commands wait on the bus, as if it were down).
    pub held: &'static [&'static str],
}

impl WorkflowConfig {
    /// Partitions per topic unless configured: one per member of the default group. Each
    /// partition is checked on every fetch by the test broker: with 8, its CPU while orders
    /// flowed at 40/s was 52% of a core, with 4, 41%, at the same latency
    /// (docs/benchmarks.md).
    pub const DEFAULT_PARTITIONS: u32 = 4;

    /// Members of each consumer group on the local route unless configured.
    pub const DEFAULT_LOCAL_MEMBERS: usize = 16;
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(60),
            deadline_poll: Duration::from_secs(30),
            failures: FailureRules::default(),
            duplicate_delivery: false,
            partitions: Self::DEFAULT_PARTITIONS,
            consumers: 4,
            through_broker: false,
            local_members: Self::DEFAULT_LOCAL_MEMBERS,
            held: &[],
        }
    }
}

/// What the application does with its workflow, whatever the backend.
#[async_trait::async_trait]
pub trait Workflow: Send + Sync + std::fmt::Debug {
    /// Starts the relays, the consumers (but held ones), the deadline scheduler and the
    /// orders view.
    fn start(&self) -> Result<Arc<Runtime>, RuntimeError>;
    /// Starts held consumer group `group` on `runtime`; false when it was not held.
    fn release(&self, runtime: &Runtime, group: &str) -> bool;
    /// Whether the storage answers.
    async fn check(&self) -> Result<(), StorageError>;
}

/// A consumer: its group, its topics and its handler.
pub(crate) type Consumer = (
    &'static str,
    &'static [&'static str],
    Arc<dyn MessageHandler>,
);

/// The consumer of `topics` in group `group`, handled by `handler`.
pub(crate) fn consumer(
    group: &'static str,
    topics: &'static [&'static str],
    handler: impl MessageHandler + 'static,
) -> Consumer {
    (group, topics, Arc::new(handler))
}

/// The order saga of a process: its store (with its outbox) and its runner.
pub(crate) struct SagaParts<B: ShopBackend> {
    pub(crate) sagas: B::Sagas,
    pub(crate) runner: Arc<OrderSagaRunner<B::Sagas>>,
}

/// The workflow's parts of a process (all of them in one process, a service's share when
/// split), kept to start its services again (after a restart, or a release).
pub(crate) struct WorkflowServices<B: ShopBackend> {
    pub(crate) backend: B,
    pub(crate) bus: Bus,
    pub(crate) workflow: WorkflowConfig,
    pub(crate) outboxes: Vec<(&'static str, B::Store)>,
    pub(crate) checkpoints: B::Checkpoints,
    pub(crate) paused: B::PausedPartitions,
    pub(crate) leases: Option<B::Leases>,
    /// The saga and its deadlines, where they run.
    pub(crate) saga: Option<SagaParts<B>>,
    /// The orders whose view runs here.
    pub(crate) orders: Option<Arc<Orders<B::Store>>>,
    pub(crate) consumers: Vec<Consumer>,
    /// The topics that only this process both writes (to its outboxes) and consumes: on
    /// Kafka, their messages are handed over in memory unless
    /// [`WorkflowConfig::through_broker`].
    pub(crate) local: Vec<&'static str>,
    /// The Kafka consumer group of this process's consumers.
    pub(crate) group: String,
    pub(crate) held: Mutex<HashSet<String>>,
}

impl<B: ShopBackend> std::fmt::Debug for WorkflowServices<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowServices")
            .field("backend", &self.backend)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl<B: ShopBackend> WorkflowServices<B> {
    /// On Kafka, the route of the topics only this process writes and consumes, each to the
    /// group that consumes it here (the process's group, or its own when held).
    fn local_route(&self) -> Option<LocalRoute> {
        let Bus::Kafka { prefix, .. } = &self.bus else {
            return None;
        };
        if self.workflow.through_broker || self.local.is_empty() {
            return None;
        }
        let held = lock(&self.held).clone();
        let partitions = u32::try_from(self.workflow.local_members).unwrap_or(u32::MAX);
        let mut route =
            LocalRoute::new(partitions).with_duplicate_delivery(self.workflow.duplicate_delivery);
        for (group, topics, _) in &self.consumers {
            let group = if held.contains(*group) {
                format!("{prefix}{group}")
            } else {
                format!("{prefix}{}", self.group)
            };
            for topic in topics.iter().filter(|topic| self.local.contains(topic)) {
                route = route.topic(topic, &[group.as_str()]);
            }
        }
        Some(route)
    }
}

#[async_trait::async_trait]
impl<B: ShopBackend> Workflow for WorkflowServices<B> {
    fn start(&self) -> Result<Arc<Runtime>, RuntimeError> {
        let runtime = Runtime::new(self.bus.clone(), self.workflow.duplicate_delivery)
            .with_paused(self.paused.clone());
        let runtime = Arc::new(match self.local_route() {
            Some(route) => runtime.with_local_route(route, self.workflow.local_members),
            None => runtime,
        });
        // Another process sharing the storage (a replica holding a relay's or the daemon's
        // lease) hears of this one's commits, and this one of its: one listener per store.
        let wakeups = |store: &str, made: Result<Option<_>, es_core::BoxError>| {
            made.map_err(|source| RuntimeError::Wakeups {
                store: store.to_owned(),
                source,
            })
        };
        for (name, store) in &self.outboxes {
            if let Some(listener) = wakeups(name, self.backend.wakeups(store))? {
                runtime.add(listener);
            }
        }
        if let Some(saga) = &self.saga
            && let Some(listener) = wakeups("saga", self.backend.saga_wakeups(&saga.sagas))?
        {
            runtime.add(listener);
        }
        // Consumers of other processes sharing the storage (the services of a split
        // deployment) hear of what the relays here published, and the consumers here of
        // theirs, at once rather than at their next idle recheck.
        if let Bus::Kafka { prefix, .. } = &self.bus
            && let Some(listener) = wakeups(
                "published",
                self.backend
                    .published_wakeups(&format!("published:{prefix}"), runtime.published()),
            )?
        {
            runtime.add(listener);
        }
        for (name, store) in &self.outboxes {
            let signal = Some(B::append_signal(store));
            runtime.relay(
                &format!("{name}-relay"),
                store.clone(),
                self.checkpoints.clone(),
                self.leases.clone(),
                signal,
            );
        }
        if let Some(saga) = &self.saga {
            runtime.relay(
                "saga-relay",
                saga.sagas.clone(),
                self.checkpoints.clone(),
                self.leases.clone(),
                Some(B::saga_signal(&saga.sagas)),
            );
        }
        let held = lock(&self.held).clone();
        let running = self
            .consumers
            .iter()
            .filter(|(group, _, _)| !held.contains(*group));
        match &self.bus {
            Bus::Memory(_) => {
                for (group, topics, handler) in running {
                    runtime.consume(group, topics, handler.clone())?;
                }
            }
            Bus::Kafka { .. } => {
                let routes: Vec<_> = running
                    .map(|(_, topics, handler)| (*topics, handler.clone()))
                    .collect();
                if !routes.is_empty() {
                    runtime.consume_together(&self.group, &routes, self.workflow.consumers)?;
                }
            }
        }
        if let Some(saga) = &self.saga {
            runtime.schedule(
                &saga.runner,
                saga.sagas.clone(),
                self.workflow.deadline_poll,
                B::saga_signal(&saga.sagas),
            );
        }
        if let Some(orders) = self.orders.clone() {
            runtime.run_until_stopped("orders-view", move |stopped| {
                orders.clone().run_view(stopped)
            });
        }
        runtime.start();
        Ok(runtime)
    }

    fn release(&self, runtime: &Runtime, group: &str) -> bool {
        if !lock(&self.held).remove(group) {
            return false;
        }
        for (name, topics, handler) in &self.consumers {
            if *name == group
                && let Err(error) = runtime.consume(name, topics, handler.clone())
            {
                tracing::error!(%group, %error, "held consumer not started");
                return false;
            }
        }
        runtime.start();
        true
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.backend.check().await
    }
}
