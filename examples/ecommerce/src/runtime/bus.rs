//! Where integration messages travel: the in-process bus of the embedded default, or Kafka.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::memory::MemoryBus;
use es_core::{OutboxMessage, PublishError, PublishFailure, Publisher};
use es_kafka::{KafkaConfig, KafkaPublisher, TopicRouter};
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use super::{WorkflowConfig, lock};
use crate::messages::topics;

/// The message bus the workflow runs on.
#[derive(Debug, Clone)]
pub enum Bus {
    /// The in-process bus (Kafka's semantics, in memory).
    Memory(MemoryBus),
    /// A Kafka cluster; every topic name is prefixed with `prefix`.
    Kafka {
        /// The cluster.
        config: KafkaConfig,
        /// The prefix of every topic (for several apps, or tests, on one cluster).
        prefix: String,
        /// The client `/ready` asks for metadata, created once.
        probe: Probe,
    },
}

/// A long-lived client for readiness checks.
#[derive(Clone, Default)]
pub struct Probe(Arc<std::sync::Mutex<Option<Arc<BaseConsumer>>>>);

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

/// The broker did not answer, or refused.
#[derive(Debug, thiserror::Error)]
#[error("broker: {0}")]
pub struct BusError(#[source] pub es_core::BoxError);

impl Bus {
    /// The in-process bus (with the workflow's partitions, duplicating deliveries when asked),
    /// or Kafka at `kafka` (its configuration and topic prefix).
    pub fn new(kafka: Option<(es_kafka::KafkaConfig, String)>, workflow: &WorkflowConfig) -> Self {
        match kafka {
            None => Bus::Memory(
                MemoryBus::new()
                    .with_partitions(workflow.partitions)
                    .with_duplicate_delivery(workflow.duplicate_delivery),
            ),
            Some((config, prefix)) => Bus::Kafka {
                config,
                prefix,
                probe: Probe::default(),
            },
        }
    }

    /// The bus's name, for logs and `/ready`.
    pub fn name(&self) -> &'static str {
        match self {
            Bus::Memory(_) => "memory",
            Bus::Kafka { .. } => "kafka",
        }
    }

    /// Creates the workflow's topics (and their dead-letter topics), on Kafka or in memory:
    /// consumers have their partitions before the first message.
    ///
    /// # Errors
    /// When the cluster cannot create them.
    pub async fn prepare(&self, partitions: u32) -> Result<(), BusError> {
        let (config, prefix) = match self {
            Bus::Memory(bus) => {
                bus.create_topics(&topics::ALL);
                return Ok(());
            }
            Bus::Kafka { config, prefix, .. } => (config, prefix),
        };
        let partitions = i32::try_from(partitions).unwrap_or(8);
        let names: Vec<String> = topics::ALL
            .iter()
            .flat_map(|t| [format!("{prefix}{t}"), format!("{prefix}{t}.dlq")])
            .collect();
        let wanted: Vec<(&str, i32)> = names.iter().map(|n| (n.as_str(), partitions)).collect();
        es_kafka::ensure_topics(config, &wanted)
            .await
            .map_err(|e| BusError(e.into()))
    }

    /// Whether the bus answers.
    ///
    /// # Errors
    /// [`BusError`] when the broker does not answer.
    pub async fn check(&self) -> Result<(), BusError> {
        let Bus::Kafka { config, probe, .. } = self else {
            return Ok(());
        };
        let (config, probe) = (config.clone(), probe.clone());
        tokio::task::spawn_blocking(move || {
            // One client for the life of the process, created on first use.
            let mut held = probe
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if held.is_none() {
                let client: BaseConsumer = config
                    .client_config()
                    .create()
                    .map_err(|e| BusError(e.into()))?;
                *held = Some(Arc::new(client));
            }
            let client = held.clone().ok_or_else(|| BusError("no client".into()))?;
            drop(held);
            client
                .fetch_metadata(None, Duration::from_secs(3))
                .map(|_| ())
                .map_err(|e| BusError(e.into()))
        })
        .await
        .map_err(|e| BusError(e.into()))?
    }
}

/// Puts a prefix before each message's topic, then publishes through `inner`; publishes every
/// batch twice when `twice` (to show that consumers are idempotent).
pub struct Routed {
    inner: Arc<dyn Publisher>,
    prefix: String,
    twice: bool,
}

impl Routed {
    /// A publisher prefixing topics with `prefix`.
    pub fn new(inner: Arc<dyn Publisher>, prefix: &str, twice: bool) -> Self {
        Self {
            inner,
            prefix: prefix.to_owned(),
            twice,
        }
    }
}

/// One Kafka producer for every relay of a runtime: each producer is a client with its own
/// threads and connections (at rest their polling threads cost the app most of its CPU, one
/// per relay). A relay that calls its factory again (its publisher failed fatally) gets a new
/// producer, which every relay takes when it next asks.
pub struct SharedProducer {
    config: KafkaConfig,
    prefix: String,
    twice: bool,
    current: std::sync::Mutex<Option<Arc<dyn Publisher>>>,
}

impl SharedProducer {
    /// Producers on `config`, prefixing topics with `prefix`, publishing twice when `twice`.
    pub fn new(config: KafkaConfig, prefix: String, twice: bool) -> Arc<Self> {
        Arc::new(Self {
            config,
            prefix,
            twice,
            current: std::sync::Mutex::new(None),
        })
    }

    /// The publisher factory of one relay: the shared producer, or a new one (shared from
    /// then on) when this relay already had the current one and asks again.
    pub fn factory(
        self: &Arc<Self>,
    ) -> impl Fn() -> Result<Arc<dyn Publisher>, PublishError> + Send + Sync + 'static {
        let shared = self.clone();
        let mine: std::sync::Mutex<Option<Arc<dyn Publisher>>> = std::sync::Mutex::new(None);
        move || {
            let mut current = lock(&shared.current);
            let mut mine = lock(&mine);
            let failed = match (current.as_ref(), mine.as_ref()) {
                (Some(current), Some(mine)) => {
                    std::ptr::addr_eq(Arc::as_ptr(current), Arc::as_ptr(mine))
                }
                _ => false,
            };
            let publisher = match current.as_ref() {
                Some(publisher) if !failed => publisher.clone(),
                _ => {
                    let kafka = KafkaPublisher::new(&shared.config, TopicRouter::new())
                        .map_err(PublishError::backend)?;
                    let publisher: Arc<dyn Publisher> =
                        Arc::new(Routed::new(Arc::new(kafka), &shared.prefix, shared.twice));
                    *current = Some(publisher.clone());
                    publisher
                }
            };
            *mine = Some(publisher.clone());
            Ok(publisher)
        }
    }
}

/// The dead letters of the local route: published through the relays' shared producer,
/// made on the first dead letter (a process that never refuses a message makes none).
pub struct DeadLetters {
    shared: Arc<SharedProducer>,
    made: std::sync::OnceLock<Arc<dyn Publisher>>,
}

impl DeadLetters {
    /// Dead letters through `shared`'s producer.
    pub fn new(shared: Arc<SharedProducer>) -> Self {
        Self {
            shared,
            made: std::sync::OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").finish_non_exhaustive()
    }
}

#[async_trait]
impl Publisher for DeadLetters {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        let publisher = match self.made.get() {
            Some(publisher) => publisher.clone(),
            None => {
                let made =
                    (self.shared.factory())().map_err(|error| PublishFailure::new(0, error))?;
                self.made.get_or_init(|| made).clone()
            }
        };
        publisher.publish(messages).await
    }
}

impl std::fmt::Debug for SharedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedProducer")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Routed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routed")
            .field("prefix", &self.prefix)
            .field("twice", &self.twice)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Publisher for Routed {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        let routed: Vec<OutboxMessage> = messages
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.topic = m.topic.map(|t| format!("{}{t}", self.prefix));
                m
            })
            .collect();
        self.inner.publish(&routed).await?;
        if self.twice {
            self.inner.publish(&routed).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::SharedProducer;

    fn same(a: &Arc<dyn es_core::Publisher>, b: &Arc<dyn es_core::Publisher>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
    }

    #[test]
    fn relays_share_one_producer_until_one_fails_and_then_share_its_replacement() {
        // A producer connects lazily: no broker is needed to make one.
        let config = es_kafka::KafkaConfig::new("127.0.0.1:9");
        let shared = SharedProducer::new(config, "p-".to_owned(), false);
        let (orders, payments) = (shared.factory(), shared.factory());
        let first = orders().unwrap();
        assert!(same(&first, &payments().unwrap()), "one producer for both");
        // The orders relay asks again: its producer failed; it gets a new one.
        let second = orders().unwrap();
        assert!(!same(&first, &second));
        // The payments relay, asking again, takes the new one (it does not make a third).
        assert!(same(&second, &payments().unwrap()));
    }
}
