//! The consumer loop on Kafka: es-core's [`ConsumerLoop`](es_core::consume::ConsumerLoop) over
//! a [`KafkaConsumer`], the same loop the in-memory bus runs.

mod paused;

use std::future::Future;

pub use es_core::consume::{FailurePolicy, RunnerError, RunnerOptions, RunnerStats};
use es_core::{MessageHandler, consume};

pub use self::paused::{
    MemoryPausedPartitions, PausedPartition, PausedPartitions, PausedPartitionsError,
};
use crate::consumer::KafkaConsumer;

/// es-core's consumer loop on a [`KafkaConsumer`]: in order per partition, an offset stored
/// only after its handler succeeded or its dead letter was acknowledged, retries in place with
/// backoff, then a dead letter or a paused partition by policy (see
/// [`ConsumerLoop`](es_core::consume::ConsumerLoop)); stored offsets are committed
/// periodically, before a rebalance revokes partitions, and at the shutdown.
///
/// ```no_run
/// use es_core::{Delivery, HandlerError, MessageHandler};
/// use es_kafka::{ConsumerRunner, KafkaConfig, KafkaConsumer, RunnerOptions};
///
/// struct Print;
/// #[async_trait::async_trait]
/// impl MessageHandler for Print {
///     async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
///         println!("{}", delivery.message.message_type);
///         Ok(())
///     }
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let consumer = KafkaConsumer::builder(KafkaConfig::from_env()?, "printer")
///     .subscribe(["shop.order"])
///     .build()?;
/// ConsumerRunner::new(consumer, Print)
///     .with_options(RunnerOptions::default().max_attempts(3))
///     .run(std::future::pending())
///     .await?;
/// # Ok(())
/// # }
/// ```
pub type ConsumerRunner<H, P = MemoryPausedPartitions> = consume::ConsumerLoop<KafkaConsumer, H, P>;

/// Runs `handler` on `consumer` with default options until `shutdown` completes.
///
/// # Errors
/// As [`ConsumerLoop::run`](es_core::consume::ConsumerLoop::run).
pub async fn run_consumer<H: MessageHandler>(
    consumer: KafkaConsumer,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunnerError> {
    consume::run_consumer(consumer, handler, shutdown).await
}
