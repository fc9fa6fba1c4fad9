//! `KafkaConsumer`: a member of a consumer group that commits only what was handled.

mod builder;
mod context;
mod lag;
pub(crate) mod track;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{Consumer, ConsumerError, Delivery};
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

pub use self::builder::{GROUP_ID_ENV, KafkaConsumerBuilder, TOPIC_PREFIX_ENV};
use self::context::{GroupContext, lock, nothing_to_commit};
pub use self::lag::{LagProbe, LagReporter, PartitionLag};
use self::track::{Admit, PartitionKey, Tracker, key_of};
use crate::dead_letter::{DeadLetterRoute, DeadLetters, RawRecord};
use crate::envelope;

/// How long a seek may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the request that wakes the fetcher after a resume may take (its answer is not
/// used; see [`KafkaConsumer::resume_all`]).
const WAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`Consumer`] of Kafka topics: one member of a consumer group, at least once and never
/// skipping.
///
/// Automatic commits and automatic offset storing are off (`enable.auto.commit=false`,
/// `enable.auto.offset.store=false`): an offset is stored only for a handled message
/// ([`Consumer::commit`], [`KafkaConsumer::store`]) or an acknowledged dead letter, and
/// committed by [`Consumer::commit`], [`KafkaConsumer::commit_stored`], or before a rebalance
/// revokes partitions. [`Consumer::retry`] seeks back to the failed offset and drops every
/// later record of its partition already fetched until the failed one comes again.
///
/// A record that is not a valid envelope is never handed out: it is published to the
/// dead-letter topic ([`DeadLetterRoute`], `<topic>.dlq` by default) with the reason, logged,
/// and passed.
///
/// ```no_run
/// use es_core::Consumer;
/// use es_kafka::{KafkaConfig, KafkaConsumer};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let mut consumer = KafkaConsumer::builder(KafkaConfig::from_env()?, "billing")
///     .subscribe(["shop.order"])
///     .build()?;
/// let delivery = consumer.recv().await?;
/// // ... handle it ...
/// consumer.commit(&delivery).await?;
/// # Ok(())
/// # }
/// ```
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer<GroupContext>>,
    tracker: Arc<Mutex<Tracker>>,
    dead_letters: DeadLetters,
    group_id: String,
    /// A malformed record whose dead letter is not yet acknowledged (kept across a cancelled
    /// `recv`).
    pending: Option<(RawRecord, String)>,
    /// Wakes librdkafka's fetcher after a resume (started on the first one).
    waker: Mutex<Option<FetchWaker>>,
    /// Read-held by every blocking call in flight that holds the consumer (a commit, a lag
    /// measurement), so that [`LagProbe::settle`] can wait until none does.
    in_flight: Arc<tokio::sync::RwLock<()>>,
}

/// A thread that sends the requests that wake librdkafka's fetcher after a resume (see
/// [`KafkaConsumer::resume_all`]). It holds the consumer while it works, so the consumer
/// joins it before it goes: a consumer must never outlive its loop, since one that leaves its
/// group later, while new members join, can wedge the group on the test broker (docs/kafka.md,
/// "Consumer groups on the test broker").
struct FetchWaker {
    requests: std::sync::mpsc::Sender<TopicPartitionList>,
    thread: std::thread::JoinHandle<()>,
}

impl FetchWaker {
    fn start(consumer: Arc<StreamConsumer<GroupContext>>) -> std::io::Result<Self> {
        let (requests, received) = std::sync::mpsc::channel::<TopicPartitionList>();
        let thread = std::thread::Builder::new()
            .name("es-kafka-waker".to_owned())
            .spawn(move || {
                while let Ok(partitions) = received.recv() {
                    if let Err(error) = consumer.offsets_for_times(partitions, WAKE_TIMEOUT) {
                        tracing::debug!(%error, "waking the fetcher after a resume failed");
                    }
                }
            })?;
        Ok(Self { requests, thread })
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // The loop is done with the member: whoever drops the client last closes it.
        self.consumer.context().close();
        // Let a wake-up in flight finish (at most WAKE_TIMEOUT) and the thread let go of the
        // consumer, so that the consumer closes now, with its loop.
        let waker = self
            .waker
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(FetchWaker { requests, thread }) = waker {
            drop(requests);
            if thread.join().is_err() {
                tracing::warn!("the fetcher's waker panicked");
            }
        }
    }
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group_id", &self.group_id)
            .field("dead_letters", self.dead_letters.route())
            .finish_non_exhaustive()
    }
}

fn backend(error: impl Into<es_core::BoxError>) -> ConsumerError {
    ConsumerError::backend(error)
}

fn one(key: &PartitionKey, offset: Option<u64>) -> Result<TopicPartitionList, ConsumerError> {
    let mut tpl = TopicPartitionList::new();
    let mut entry = tpl.add_partition(&key.0, key.1);
    if let Some(offset) = offset {
        let offset = i64::try_from(offset).map_err(backend)?;
        entry.set_offset(Offset::Offset(offset)).map_err(backend)?;
    }
    Ok(tpl)
}

/// Runs `call` on the consumer on the blocking pool, holding `in_flight` (read) until the
/// consumer's handle is dropped: a call still running after its caller was cancelled (a loop
/// aborted mid-commit) keeps the consumer open, and [`LagProbe::settle`] waits for it.
async fn blocking_on<T: Send + 'static>(
    consumer: &Arc<StreamConsumer<GroupContext>>,
    in_flight: &Arc<tokio::sync::RwLock<()>>,
    call: impl FnOnce(&StreamConsumer<GroupContext>) -> T + Send + 'static,
) -> Result<T, ConsumerError> {
    let held = Arc::clone(in_flight).read_owned().await;
    let consumer = Arc::clone(consumer);
    tokio::task::spawn_blocking(move || {
        let result = call(&consumer);
        // The consumer goes before the guard does.
        drop(consumer);
        drop(held);
        result
    })
    .await
    .map_err(backend)
}

impl KafkaConsumer {
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&StreamConsumer<GroupContext>) -> T + Send + 'static,
    ) -> Result<T, ConsumerError> {
        blocking_on(&self.consumer, &self.in_flight, call).await
    }
    /// A builder for a member of `group_id` on `config`'s cluster.
    pub fn builder(
        config: crate::KafkaConfig,
        group_id: impl Into<String>,
    ) -> KafkaConsumerBuilder {
        KafkaConsumerBuilder::new(config, group_id.into())
    }

    /// The consumer group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// Where dead letters go.
    pub fn dead_letter_route(&self) -> &DeadLetterRoute {
        self.dead_letters.route()
    }

    /// The underlying rdkafka consumer (for metrics or metadata).
    pub fn inner(&self) -> &StreamConsumer<impl rdkafka::consumer::ConsumerContext> {
        &self.consumer
    }

    /// The partitions currently assigned to this member.
    pub fn assigned(&self) -> Vec<(String, u32)> {
        lock(&self.tracker)
            .assigned()
            .into_iter()
            .map(|(topic, partition)| (topic, u32::try_from(partition).unwrap_or_default()))
            .collect()
    }

    /// Stores the offset after `delivery` (handled, with everything before it in its
    /// partition) without committing it: the next [`commit_stored`](Self::commit_stored),
    /// [`Consumer::commit`] or rebalance commits it. Cheaper than [`Consumer::commit`].
    ///
    /// # Errors
    /// [`ConsumerError::PartitionNotAssigned`], [`ConsumerError::UnknownDelivery`] or
    /// [`ConsumerError::Backend`].
    pub fn store(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        let store = lock(&self.tracker).handled(delivery)?;
        self.store_offset(&key_of(delivery), store)
    }

    fn store_offset(&self, key: &PartitionKey, next: u64) -> Result<(), ConsumerError> {
        self.consumer
            .store_offsets(&one(key, Some(next))?)
            .map_err(|error| match error.rdkafka_error_code() {
                Some(rdkafka::types::RDKafkaErrorCode::State) => {
                    ConsumerError::PartitionNotAssigned {
                        topic: key.0.clone(),
                        partition: u32::try_from(key.1).unwrap_or_default(),
                    }
                }
                _ => backend(error),
            })
    }

    /// Commits every stored offset and waits until the group has them.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when the commit fails.
    pub async fn commit_stored(&self) -> Result<(), ConsumerError> {
        let result = self
            .blocking(|consumer| consumer.commit_consumer_state(CommitMode::Sync))
            .await?;
        match result {
            Err(error) if !nothing_to_commit(&error) => Err(backend(error)),
            _ => Ok(()),
        }
    }

    /// Starts committing every stored offset without waiting.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when the commit cannot be started.
    pub fn commit_stored_in_background(&self) -> Result<(), ConsumerError> {
        match self.consumer.commit_consumer_state(CommitMode::Async) {
            Err(error) if !nothing_to_commit(&error) => Err(backend(error)),
            _ => Ok(()),
        }
    }

    /// Stops fetching `topic`/`partition` (messages already received stay valid).
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when librdkafka refuses (for example, not assigned).
    pub fn pause(&self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        let key = (topic.to_owned(), i32::try_from(partition).map_err(backend)?);
        self.consumer.pause(&one(&key, None)?).map_err(backend)
    }

    /// Resumes fetching a paused partition (see [`resume_all`](Self::resume_all)).
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when librdkafka refuses (for example, not assigned).
    pub fn resume(&self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        self.resume_all(&[(topic.to_owned(), partition)])
    }

    /// Resumes fetching paused partitions, and wakes the threads that fetch them.
    ///
    /// librdkafka applies a resume at once, but the broker thread that fetches the partition
    /// notices it only when it next wakes up, up to a second later when nothing else is going
    /// on (`rd_kafka_toppar_op_pause_resume` sends no wake-up). So after resuming, this asks
    /// the leaders of the partitions for their end offsets from a thread of the consumer's
    /// own, one request per leader: sending it and receiving its answer wake the thread,
    /// which then fetches. The answer itself is not used. Dropping the consumer waits for a
    /// request in flight.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when librdkafka refuses (for example, not assigned).
    pub fn resume_all(&self, partitions: &[(String, u32)]) -> Result<(), ConsumerError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in partitions {
            tpl.add_partition(topic, i32::try_from(*partition).map_err(backend)?);
        }
        self.consumer.resume(&tpl).map_err(backend)?;
        // A timestamp of -1 asks for the end offset.
        tpl.set_all_offsets(Offset::End).map_err(backend)?;
        let mut waker = self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if waker.is_none() {
            match FetchWaker::start(Arc::clone(&self.consumer)) {
                Ok(started) => *waker = Some(started),
                Err(error) => {
                    tracing::debug!(%error, "no thread to wake the fetcher after a resume");
                    return Ok(());
                }
            }
        }
        if let Some(waker) = waker.as_ref() {
            // The thread ends only when the consumer goes: a send cannot fail before.
            let _ = waker.requests.send(tpl);
        }
        Ok(())
    }

    /// Rewinds `delivery`'s partition to it, to be delivered again with `attempt`, dropping
    /// later records already fetched (see [`Consumer::retry`], which passes one more than the
    /// delivery's attempt).
    ///
    /// # Errors
    /// As [`Consumer::retry`].
    pub fn rewind(&mut self, delivery: &Delivery, attempt: u32) -> Result<(), ConsumerError> {
        lock(&self.tracker).rewind(delivery, attempt)?;
        let offset = i64::try_from(delivery.offset).map_err(backend)?;
        let key = key_of(delivery);
        self.consumer
            .seek(&key.0, key.1, Offset::Offset(offset), SEEK_TIMEOUT)
            .map_err(backend)
    }

    /// Publishes `delivery` to its dead-letter topic with `reason` and `attempts` in its
    /// headers, waits for the acknowledgement, then stores the offset after it. Returns the
    /// dead-letter topic.
    ///
    /// # Errors
    /// [`ConsumerError::Backend`] when the publish fails (nothing is stored then), or as
    /// [`KafkaConsumer::store`].
    pub async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Result<String, ConsumerError> {
        lock(&self.tracker).check_held(delivery)?;
        let encoded = envelope::encode(&delivery.message).map_err(backend)?;
        let record = RawRecord {
            topic: delivery.topic.clone(),
            partition: i32::try_from(delivery.partition).map_err(backend)?,
            offset: i64::try_from(delivery.offset).map_err(backend)?,
            key: Some(encoded.key.into_bytes()),
            payload: Some(encoded.payload),
            headers: RawRecord::headers_of(&encoded.headers),
        };
        let topic = self
            .dead_letters
            .send(&record, reason, attempts)
            .await
            .map_err(backend)?;
        tracing::warn!(
            topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset,
            message_id = %delivery.message.message_id, dead_letter_topic = %topic, attempts,
            "dead-lettered: {reason}"
        );
        self.store(delivery)?;
        Ok(topic)
    }

    /// Dead-letters a record that is not a valid envelope, then stores past it when nothing
    /// before it is outstanding.
    async fn dead_letter_malformed(&mut self) -> Result<(), ConsumerError> {
        let Some((record, reason)) = &self.pending else {
            return Ok(());
        };
        let topic = self
            .dead_letters
            .send(record, reason, 1)
            .await
            .map_err(backend)?;
        tracing::warn!(
            topic = %record.topic, partition = record.partition, offset = record.offset,
            dead_letter_topic = %topic, "malformed record dead-lettered: {reason}"
        );
        let key = (record.topic.clone(), record.partition);
        let offset = u64::try_from(record.offset).map_err(backend)?;
        self.pending = None;
        if let Some(store) = lock(&self.tracker).dead_lettered(&key, offset) {
            self.store_offset(&key, store)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Result<Delivery, ConsumerError> {
        loop {
            self.dead_letter_malformed().await?;
            let record = self.consumer.recv().await.map_err(backend)?;
            let key = (record.topic().to_owned(), record.partition());
            let offset = u64::try_from(record.offset()).map_err(backend)?;
            let Admit::Deliver(attempt) = lock(&self.tracker).admit(&key, offset) else {
                continue;
            };
            match envelope::decode_delivery(&record) {
                Ok(mut delivery) => {
                    delivery.attempt = attempt;
                    return Ok(delivery);
                }
                Err(error) => {
                    self.pending =
                        Some((RawRecord::of(&record), format!("malformed record: {error}")));
                }
            }
        }
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        let store = lock(&self.tracker).handled(delivery)?;
        let key = key_of(delivery);
        self.store_offset(&key, store)?;
        let tpl = one(&key, Some(store))?;
        self.blocking(move |consumer| consumer.commit(&tpl, CommitMode::Sync))
            .await?
            .map_err(backend)
    }

    async fn retry(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        KafkaConsumer::rewind(self, delivery, delivery.attempt.saturating_add(1))
    }

    fn group_id(&self) -> &str {
        KafkaConsumer::group_id(self)
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned()
    }

    fn rewind(&mut self, delivery: &Delivery, attempt: u32) -> Result<(), ConsumerError> {
        KafkaConsumer::rewind(self, delivery, attempt)
    }

    fn pause(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        KafkaConsumer::pause(self, topic, partition)
    }

    fn resume(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        KafkaConsumer::resume(self, topic, partition)
    }

    fn resume_all(&mut self, partitions: &[(String, u32)]) -> Result<(), ConsumerError> {
        KafkaConsumer::resume_all(self, partitions)
    }

    fn store(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        KafkaConsumer::store(self, delivery)
    }

    async fn commit_stored(&mut self) -> Result<(), ConsumerError> {
        KafkaConsumer::commit_stored(self).await
    }

    fn commit_stored_in_background(&mut self) -> Result<(), ConsumerError> {
        KafkaConsumer::commit_stored_in_background(self)
    }

    async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumerError> {
        KafkaConsumer::dead_letter(self, delivery, reason, attempts)
            .await
            .map(drop)
    }
}
