//! Replaying dead letters: publishing them back to the topic they were read from.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::config::KafkaConfig;
use crate::config::Role;
use crate::dead_letter::{self, RawRecord};
use crate::envelope;

/// How long the broker may take to answer while replaying.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Failure of [`replay_dead_letters`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A client could not be made, or the broker failed (nothing after the records already
    /// replayed was published).
    #[error("replaying dead letters failed after {replayed} records: {source}")]
    Kafka {
        /// Records published back before the failure.
        replayed: usize,
        /// The broker's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A dead letter does not say which topic it came from.
    #[error("dead letter at {dlq_topic}/{partition} offset {offset} has no {header} header")]
    NoOrigin {
        /// The dead-letter topic.
        dlq_topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// The missing header.
        header: &'static str,
    },
}

/// Which dead letters to replay; every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayFilter {
    /// Only these message ids.
    pub message_ids: Option<BTreeSet<Uuid>>,
    /// Only this message type.
    pub message_type: Option<String>,
    /// Only dead letters read from this topic.
    pub original_topic: Option<String>,
}

impl ReplayFilter {
    /// Every dead letter.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only the message `id` (may be called again to add more).
    #[must_use]
    pub fn message_id(mut self, id: Uuid) -> Self {
        self.message_ids
            .get_or_insert_with(BTreeSet::new)
            .insert(id);
        self
    }

    /// Only messages of `message_type`.
    #[must_use]
    pub fn message_type(mut self, message_type: impl Into<String>) -> Self {
        self.message_type = Some(message_type.into());
        self
    }

    /// Only dead letters read from `topic`.
    #[must_use]
    pub fn original_topic(mut self, topic: impl Into<String>) -> Self {
        self.original_topic = Some(topic.into());
        self
    }

    fn accepts(&self, headers: &BTreeMap<String, String>) -> bool {
        let header = |name: &str| headers.get(name).map(String::as_str);
        let id_ok = self.message_ids.as_ref().is_none_or(|ids| {
            header(envelope::MESSAGE_ID)
                .and_then(|id| Uuid::parse_str(id).ok())
                .is_some_and(|id| ids.contains(&id))
        });
        let type_ok = self
            .message_type
            .as_deref()
            .is_none_or(|t| header(envelope::MESSAGE_TYPE) == Some(t));
        let topic_ok = self
            .original_topic
            .as_deref()
            .is_none_or(|t| header(dead_letter::ORIGINAL_TOPIC) == Some(t));
        id_ok && type_ok && topic_ok
    }
}

/// What [`replay_dead_letters`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Dead letters published back to their topic.
    pub replayed: usize,
    /// Dead letters the filter left alone.
    pub skipped: usize,
}

/// Reads `dlq_topic` from its start up to its end as of the call, and publishes every dead
/// letter `filter` accepts back to the topic it was read from (same key, payload and headers,
/// without the `es-dlq-*` ones), waiting for each acknowledgement. Dead letters stay in
/// `dlq_topic`: replaying twice publishes twice (consumers deduplicate by message id).
///
/// ```no_run
/// use es_kafka::{KafkaConfig, ReplayFilter, replay_dead_letters};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let report = replay_dead_letters(
///     &KafkaConfig::from_env()?,
///     "shop.order.dlq",
///     &ReplayFilter::all().message_type("OrderPlaced"),
/// )
/// .await?;
/// println!("{} replayed, {} left", report.replayed, report.skipped);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`ReplayError::Kafka`] when the broker fails, [`ReplayError::NoOrigin`] when an accepted
/// dead letter lacks its origin headers.
pub async fn replay_dead_letters(
    config: &KafkaConfig,
    dlq_topic: &str,
    filter: &ReplayFilter,
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let kafka = |replayed| move |source| ReplayError::Kafka { replayed, source };
    let producer: FutureProducer = config
        .client_config_for(Role::Producer)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .map_err(kafka(0))?;
    let records = read_to_end(config, dlq_topic).await.map_err(kafka(0))?;
    for record in records {
        let headers: BTreeMap<String, String> = record
            .headers
            .iter()
            .map(|(k, v)| {
                let value = v
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                (k.clone(), value.into_owned())
            })
            .collect();
        if !filter.accepts(&headers) {
            report.skipped += 1;
            continue;
        }
        let topic =
            headers
                .get(dead_letter::ORIGINAL_TOPIC)
                .ok_or_else(|| ReplayError::NoOrigin {
                    dlq_topic: dlq_topic.to_owned(),
                    partition: record.partition,
                    offset: record.offset,
                    header: dead_letter::ORIGINAL_TOPIC,
                })?;
        let mut out_headers = OwnedHeaders::new();
        for (name, value) in &record.headers {
            if !name.starts_with(dead_letter::PREFIX) {
                out_headers = out_headers.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(topic).headers(out_headers);
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload);
        }
        producer
            .send(out, REPLAY_TIMEOUT)
            .await
            .map_err(|(source, _)| kafka(report.replayed)(source))?;
        tracing::info!(%topic, dlq_topic, offset = record.offset, "dead letter replayed");
        report.replayed += 1;
    }
    Ok(report)
}

/// Every record of `topic` from its start to its current end.
async fn read_to_end(
    config: &KafkaConfig,
    topic: &str,
) -> Result<Vec<RawRecord>, rdkafka::error::KafkaError> {
    let config = config.clone();
    let topic = topic.to_owned();
    let joined = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config
            .client_config_for(Role::Consumer)
            .set("group.id", format!("es-replay-{}", Uuid::new_v4().simple()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), REPLAY_TIMEOUT)?;
        let mut ends = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer.fetch_watermarks(&topic, partition.id(), REPLAY_TIMEOUT)?;
            if high > low {
                ends.insert(partition.id(), high);
                assignment.add_partition_offset(&topic, partition.id(), Offset::Offset(low))?;
            }
        }
        consumer.assign(&assignment)?;
        let mut records = Vec::new();
        while !ends.is_empty() {
            let Some(message) = consumer.poll(REPLAY_TIMEOUT) else {
                return Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                ));
            };
            let message = message?;
            let partition = message.partition();
            if let Some(&end) = ends.get(&partition) {
                if message.offset() < end {
                    records.push(RawRecord::of(&message));
                }
                if message.offset() + 1 >= end {
                    ends.remove(&partition);
                }
            }
        }
        Ok(records)
    })
    .await;
    joined.unwrap_or_else(|_| {
        Err(rdkafka::error::KafkaError::MessageConsumption(
            rdkafka::types::RDKafkaErrorCode::Fail,
        ))
    })
}
