//! Consumer lag: how far each assigned partition's committed offset is behind its end.

use std::sync::Arc;
use std::time::Duration;

use es_core::ConsumerError;
use rdkafka::consumer::Consumer as _;
use rdkafka::topic_partition_list::Offset;

use rdkafka::consumer::StreamConsumer;

use super::context::GroupContext;
use super::{KafkaConsumer, backend, blocking_on};

/// How long the broker may take to answer a lag query.
const LAG_TIMEOUT: Duration = Duration::from_secs(10);

/// The lag of one assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset the next produced record will get.
    pub high_watermark: i64,
    /// The group's committed offset (the next to read); the partition's low watermark when
    /// the group never committed.
    pub committed: i64,
    /// `high_watermark - committed`: records not yet handled by the group.
    pub lag: i64,
}

/// Measures a [`KafkaConsumer`]'s lag from anywhere (a status endpoint, a metrics task) while
/// the consumer itself is busy in its loop. Cheap to clone; it keeps the consumer's client
/// alive, and so does any blocking call in flight (a measurement, a commit whose caller was
/// cancelled): [`settle`](Self::settle) waits for them, so that whoever drops the last handle
/// closes the consumer then, not later (a member that leaves its group late, while its
/// replacement joins, can wedge the group on the test broker). [`close`](Self::close) does
/// both for the members a process holds when it stops.
#[derive(Clone)]
pub struct LagProbe {
    consumer: Arc<StreamConsumer<GroupContext>>,
    /// Read-held by every blocking call in flight on the consumer.
    in_flight: Arc<tokio::sync::RwLock<()>>,
}

impl std::fmt::Debug for LagProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagProbe").finish_non_exhaustive()
    }
}

impl LagProbe {
    /// The lag of every partition assigned to the member right now (high watermark −
    /// committed); empty while it has no partitions.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when the broker does not answer.
    pub async fn lag(&self) -> Result<Vec<PartitionLag>, ConsumerError> {
        blocking_on(&self.consumer, &self.in_flight, measure).await?
    }

    /// Waits until no blocking call on the member is in flight.
    pub async fn settle(&self) {
        drop(self.in_flight.write().await);
    }

    /// Closes the members these handles hold (their loops must have returned and dropped
    /// their consumers), one after another, each on a thread of its own, waiting at most
    /// `each` for a member to have left its group before closing the next. Returns how many
    /// did not close in time.
    ///
    /// One after another, because on the test broker members of one group that leave at
    /// the same moment can wedge it for good (docs/kafka.md, "Consumer groups on the test
    /// broker"). The wait is bounded because librdkafka can wait forever for an answer its
    /// group coordinator drops once the member's group state has ended (librdkafka issue
    /// 4041, seen on the test broker about once in fifteen restarts): such a member has
    /// left already, and its thread is left behind with a warning instead of stopping the
    /// process.
    pub async fn close(members: Vec<LagProbe>, each: Duration) -> usize {
        let mut late = 0;
        for member in members {
            member.settle().await;
            let (closed, done) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("es-kafka-close".to_owned())
                .spawn(move || {
                    member.consumer.context().close();
                    drop(member);
                    let _ = closed.send(());
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "no thread to close a Kafka member on");
                continue;
            }
            if tokio::time::timeout(each, done).await.is_err() {
                late += 1;
                tracing::warn!(
                    ?each,
                    "a Kafka member did not close in time; its thread is left behind"
                );
            }
        }
        late
    }
}

/// The lag of every partition assigned to `consumer` (see [`LagProbe::lag`]).
fn measure(consumer: &StreamConsumer<GroupContext>) -> Result<Vec<PartitionLag>, ConsumerError> {
    let assignment = consumer.assignment().map_err(backend)?;
    let committed = consumer
        .committed_offsets(assignment, LAG_TIMEOUT)
        .map_err(backend)?;
    let mut lags = Vec::new();
    for element in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(element.topic(), element.partition(), LAG_TIMEOUT)
            .map_err(backend)?;
        let committed = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => low,
        };
        lags.push(PartitionLag {
            topic: element.topic().to_owned(),
            partition: u32::try_from(element.partition()).map_err(backend)?,
            high_watermark: high,
            committed,
            lag: (high - committed).max(0),
        });
    }
    Ok(lags)
}

impl KafkaConsumer {
    /// The lag of every partition assigned to this member (high watermark − committed).
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when the broker does not answer.
    pub async fn lag(&self) -> Result<Vec<PartitionLag>, ConsumerError> {
        self.lag_probe().lag().await
    }

    /// A handle measuring this member's lag while the consumer is busy elsewhere (inside a
    /// [`ConsumerRunner`](crate::ConsumerRunner), say).
    pub fn lag_probe(&self) -> LagProbe {
        LagProbe {
            consumer: Arc::clone(&self.consumer),
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

impl KafkaConsumer {
    /// A runtime service that measures this member's lag every `interval` and records it in
    /// the `es_consumer_lag` gauge (labels `group`, `topic`, `partition`; see
    /// `es_core::telemetry`), for the partitions the member holds at the time. Run it beside
    /// the member's consumer loop.
    pub fn lag_reporter(&self, interval: Duration) -> LagReporter {
        LagReporter {
            name: format!("{}-lag", self.group_id()),
            group: self.group_id().to_owned(),
            probe: self.lag_probe(),
            interval,
        }
    }
}

/// Records a member's lag in the `es_consumer_lag` gauge, periodically
/// ([`KafkaConsumer::lag_reporter`]).
#[derive(Debug)]
pub struct LagReporter {
    name: String,
    group: String,
    probe: LagProbe,
    interval: Duration,
}

#[async_trait::async_trait]
impl es_core::runtime::Service for LagReporter {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &mut self,
        context: es_core::runtime::ServiceContext,
    ) -> Result<(), es_core::BoxError> {
        let shutdown = context.shutdown();
        let measuring = async {
            loop {
                match self.probe.lag().await {
                    Ok(partitions) => {
                        let total: i64 = partitions.iter().map(|p| p.lag).sum();
                        for partition in &partitions {
                            es_core::telemetry::metrics().consumer_lag.record(
                                partition.lag,
                                &[
                                    es_core::telemetry::label("group", self.group.clone()),
                                    es_core::telemetry::label("topic", partition.topic.clone()),
                                    es_core::telemetry::label(
                                        "partition",
                                        i64::from(partition.partition),
                                    ),
                                ],
                            );
                        }
                        context.set_detail(Some(format!("lag {total}")));
                    }
                    Err(error) => tracing::debug!(group = %self.group, %error, "lag not measured"),
                }
                tokio::time::sleep(self.interval).await;
            }
        };
        tokio::select! {
            () = shutdown.wait() => Ok(()),
            () = measuring => Ok(()),
        }
    }
}
