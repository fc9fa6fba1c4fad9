//! The running workflow: a relay from every outbox to the bus, a consumer per context and for
//! the saga, and the deadline scheduler, stopped together.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::memory::MemoryBus;
use es_core::relay::{Relay, RelayOptions, RelayStatsHandle};
use es_core::{
    CheckpointStore, Consumer, ConsumerError, Delivery, MessageHandler, OutboxSource, Publisher,
};
use es_saga::{DeadlineScheduler, SagaRunner};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::saga::OrderSaga;
use super::stores::SagaStores;

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
    bus: MemoryBus,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
    relays: Mutex<Vec<(String, RelayStatsHandle)>>,
    consumers: Mutex<Vec<(String, Arc<ConsumerStats>)>>,
}

impl Runtime {
    /// A runtime on `bus` with nothing running yet.
    pub fn new(bus: MemoryBus) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            bus,
            stop,
            tasks: Mutex::new(Vec::new()),
            dead_letters: Arc::new(Mutex::new(Vec::new())),
            relays: Mutex::new(Vec::new()),
            consumers: Mutex::new(Vec::new()),
        }
    }

    /// The bus.
    pub fn bus(&self) -> &MemoryBus {
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

    /// Relays `source`'s outbox to the bus, checkpointed under `name`.
    pub fn relay<S, C>(&self, name: &str, source: S, checkpoints: C)
    where
        S: OutboxSource + 'static,
        C: CheckpointStore + 'static,
    {
        let publisher: Arc<dyn Publisher> = Arc::new(self.bus.clone());
        let mut relay = Relay::new(name, source, checkpoints, publisher).with_options(
            RelayOptions::default()
                .batch_size(500)
                .poll_interval(Duration::from_millis(2), Duration::from_millis(50)),
        );
        lock(&self.relays).push((name.to_owned(), relay.stats()));
        let stopped = self.stopped();
        let name = name.to_owned();
        self.spawn(async move {
            if let Err(error) = relay.run(stopped).await {
                tracing::error!(relay = %name, %error, "relay stopped");
            }
        });
    }

    /// Runs `handler` on `topics` as consumer group `group`.
    pub fn consume(&self, group: &str, topics: &[&str], handler: Arc<dyn MessageHandler>) {
        let consumer = self.bus.consumer(group, topics);
        let stats = Arc::new(ConsumerStats::default());
        lock(&self.consumers).push((group.to_owned(), stats.clone()));
        let stopped = self.stopped();
        let dead_letters = self.dead_letters.clone();
        let group = group.to_owned();
        self.spawn(consume(
            consumer,
            handler,
            group,
            stats,
            dead_letters,
            stopped,
        ));
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

    /// Runs `task` until the runtime stops.
    pub fn run_until_stopped(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stopped = self.stopped();
        self.spawn(async move {
            tokio::select! {
                () = stopped => {}
                () = task => {}
            }
        });
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

    /// Stops every task and waits for them: in-flight messages finish, nothing new starts.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Handles each delivery in order: commits after success, rewinds after a transient failure
/// (with a back-off growing with the attempt), records and commits a permanent one.
async fn consume(
    mut consumer: impl Consumer + 'static,
    handler: Arc<dyn MessageHandler>,
    group: String,
    stats: Arc<ConsumerStats>,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
    stopped: impl Future<Output = ()> + Send,
) {
    use std::sync::atomic::Ordering::Relaxed;
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
            Ok(()) => {
                stats.handled.fetch_add(1, Relaxed);
                consumer.commit(&delivery).await
            }
            Err(error) if error.is_transient() => {
                stats.retried.fetch_add(1, Relaxed);
                let backoff = Duration::from_millis(5 << delivery.attempt.min(7));
                tracing::debug!(%group, %error, attempt = delivery.attempt, "retrying");
                tokio::time::sleep(backoff).await;
                consumer.retry(&delivery).await
            }
            Err(error) => {
                tracing::error!(%group, %error, message_type = %delivery.message.message_type, message_id = %delivery.message.message_id, "dead-lettered");
                lock(&dead_letters).push(DeadLetter {
                    group: group.clone(),
                    delivery: delivery.clone(),
                    reason: error.to_string(),
                    at: Utc::now(),
                });
                consumer.commit(&delivery).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%group, %error, "commit or rewind failed; the message comes again");
        }
    }
}
