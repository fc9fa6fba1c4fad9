//! `KafkaPublisher`: the outbox relay's sink, an idempotent producer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use es_core::relay::PublisherFactory;
use es_core::{OutboxMessage, PublishError, PublishFailure, Publisher};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::Role;
use crate::config::{ConfigError, KafkaConfig};
use crate::envelope;
use crate::router::TopicRouter;

/// The producer settings the publisher enforces over any given ones: no loss, no reordering.
const ENFORCED: [(&str, &str); 5] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("enable.gapless.guarantee", "true"),
    // No message timeout: a message is retried until the broker takes it.
    ("message.timeout.ms", "0"),
    ("max.in.flight.requests.per.connection", "5"),
];

/// Settings applied unless the configuration sets them.
///
/// `linger.ms=0`: the relay hands over a whole batch at once and waits for its
/// acknowledgements, so a linger only delays every batch (librdkafka's 5 ms were about a fifth
/// of each broker hop of an order); what is enqueued while a request is in flight still goes
/// out together in the next one.
const DEFAULTS: [(&str, &str); 2] = [("linger.ms", "0"), ("compression.type", "lz4")];

/// How long to wait before retrying an enqueue when librdkafka's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

/// A [`Publisher`] to Kafka: an idempotent producer (`enable.idempotence=true`, `acks=all`,
/// `enable.gapless.guarantee=true`, no message timeout, at most 5 requests in flight), so the
/// messages of one key reach their partition once each and in order, or the producer fails
/// fatally.
///
/// [`publish`](Publisher::publish) enqueues the whole batch in order, then waits for every
/// acknowledgement; it fails with the length of the acknowledged prefix. A fatal producer
/// error is reported as [`PublishError::Fatal`]: the producer is unusable, and the relay makes
/// a new one through [`KafkaPublisher::factory`]. While the broker is unreachable, `publish`
/// waits (librdkafka retries without end).
///
/// ```no_run
/// use es_kafka::{KafkaConfig, KafkaPublisher, TopicRouter};
///
/// # fn demo() -> Result<(), es_kafka::ConfigError> {
/// let publisher = KafkaPublisher::new(&KafkaConfig::from_env()?, TopicRouter::new())?;
/// # Ok(())
/// # }
/// ```
pub struct KafkaPublisher {
    producer: FutureProducer,
    router: TopicRouter,
}

impl fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// An idempotent producer for `config`'s cluster, routing with `router`.
    ///
    /// # Errors
    /// [`ConfigError::Client`] when librdkafka refuses the configuration.
    pub fn new(config: &KafkaConfig, router: TopicRouter) -> Result<Self, ConfigError> {
        let mut client = config.client_config_for(Role::Producer);
        for (name, value) in DEFAULTS {
            if !config.settings.contains_key(name) {
                client.set(name, value);
            }
        }
        for (name, value) in ENFORCED {
            client.set(name, value);
        }
        let producer = client.create().map_err(ConfigError::Client)?;
        Ok(Self { producer, router })
    }

    /// A factory the relay calls for its first publisher and after each fatal error.
    pub fn factory(
        config: KafkaConfig,
        router: TopicRouter,
    ) -> impl PublisherFactory + Clone + 'static {
        move || -> Result<Arc<dyn Publisher>, PublishError> {
            let publisher = Self::new(&config, router.clone()).map_err(PublishError::backend)?;
            Ok(Arc::new(publisher))
        }
    }

    /// The underlying producer (for flushing, or metrics).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Enqueues one message, waiting while the local queue is full.
    async fn enqueue(&self, message: &OutboxMessage) -> Result<DeliveryFuture, PublishError> {
        let topic = self.router.route(message).ok_or(PublishError::Unroutable {
            message_id: message.message_id,
        })?;
        let encoded = envelope::encode(message).map_err(|error| PublishError::Rejected {
            message_id: message.message_id,
            reason: error.to_string(),
        })?;
        let mut record = FutureRecord::to(&topic)
            .key(&encoded.key)
            .payload(&encoded.payload)
            .headers(encoded.headers.clone());
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((error, _)) => return Err(self.classify(message, error)),
            }
        }
    }

    /// Maps a producer error: fatal when the producer raised a fatal error, rejected when
    /// the broker refuses the message for good, else a backend error.
    fn classify(&self, message: &OutboxMessage, error: KafkaError) -> PublishError {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            return PublishError::fatal(format!("fatal producer error {code:?}: {reason}"));
        }
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Fatal) => PublishError::fatal(error),
            Some(
                RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidTopic,
            ) => PublishError::Rejected {
                message_id: message.message_id,
                reason: error.to_string(),
            },
            _ => PublishError::backend(error),
        }
    }
}

#[async_trait::async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        let mut pending = Vec::with_capacity(messages.len());
        let mut enqueue_error = None;
        for message in messages {
            match self.enqueue(message).await {
                Ok(delivery) => pending.push(delivery),
                Err(error) => {
                    enqueue_error = Some(error);
                    break;
                }
            }
        }
        // Wait for every enqueued message, so none is still in flight when the relay
        // publishes again.
        let results = futures::future::join_all(pending).await;
        let mut acknowledged = 0;
        let mut first_error = None;
        for (message, result) in messages.iter().zip(results) {
            let error = match result {
                Ok(Ok(_)) if first_error.is_none() => {
                    acknowledged += 1;
                    continue;
                }
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => self.classify(message, error),
                Err(_canceled) => PublishError::backend("the producer dropped the delivery report"),
            };
            if first_error.is_none() {
                first_error = Some(error);
            }
        }
        match first_error.or(enqueue_error) {
            None => Ok(()),
            Some(error) => Err(PublishFailure::new(acknowledged, error)),
        }
    }
}
