//! An in-memory broker with Kafka's semantics: partitioned topics, consumer groups, committed
//! offsets and at-least-once redelivery.

mod assign;
mod consumer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use self::assign::{PartitionId, partition_for, round_robin};
pub use self::consumer::MemoryConsumer;
use super::lock;
use crate::messaging::{PublishError, PublishFailure, Publisher};
use crate::outbox::OutboxMessage;

/// The number of partitions of a topic created by [`MemoryBus::new`]'s bus.
const DEFAULT_PARTITIONS: u32 = 4;

/// An in-memory message broker with Kafka's semantics; clones share the same broker.
///
/// A topic is created with [`MemoryBus::with_partitions`] partitions (4 by default) when a
/// message is first published to it. A message goes to the partition chosen by a fixed hash of
/// its `partition_key`, so one key's messages stay in order. Each partition is an append-only
/// log. [`MemoryBus::consumer`] joins a consumer group: the group's members split the
/// partitions and share committed offsets, as in Kafka.
///
/// ```
/// use es_core::memory::MemoryBus;
/// use es_core::{Consumer, OutboxMessage, Publisher};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = MemoryBus::new().with_default_topic("orders");
/// let mut consumer = bus.consumer("billing", &["orders"]);
///
/// bus.publish(&[OutboxMessage::new("OrderPlaced", "order-7", json!({ "orderId": "order-7" }))])
///     .await?;
///
/// let delivery = consumer.recv().await?;
/// assert_eq!(delivery.topic, "orders");
/// assert_eq!(delivery.message.message_type, "OrderPlaced");
/// assert_eq!(delivery.attempt, 1);
/// consumer.commit(&delivery).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

/// What every clone of a bus and its consumers share.
struct Shared {
    state: Mutex<State>,
    /// Bumped after every change a waiting consumer may care about (a publish, a rebalance).
    changes: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    partitions: u32,
    default_topic: Option<String>,
    duplicate_delivery: bool,
    /// Each topic's partitions, each an append-only log indexed by offset.
    topics: BTreeMap<String, Vec<Log>>,
    groups: BTreeMap<String, Group>,
    next_member: u64,
}

/// One partition's log: the messages from offset `base` on (those before it were trimmed).
#[derive(Debug, Clone, Default)]
struct Log {
    base: u64,
    messages: VecDeque<OutboxMessage>,
}

impl Log {
    /// The message at `offset`, if it is still held.
    fn get(&self, offset: u64) -> Option<&OutboxMessage> {
        let index = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        self.messages.get(index)
    }

    /// Appends `message`; returns its offset.
    fn push(&mut self, message: OutboxMessage) -> u64 {
        self.messages.push_back(message);
        self.end() - 1
    }

    /// The offset the next message gets.
    fn end(&self) -> u64 {
        self.base + self.messages.len() as u64
    }

    /// Drops the messages before `offset`.
    fn trim_before(&mut self, offset: u64) {
        while self.base < offset && self.messages.pop_front().is_some() {
            self.base += 1;
        }
    }
}

#[derive(Default)]
struct Group {
    /// The next offset to read, per partition; absent means the start.
    committed: BTreeMap<PartitionId, u64>,
    members: BTreeMap<u64, Member>,
}

struct Member {
    topics: BTreeSet<String>,
    /// The member's assigned partitions and where it reads them.
    cursors: BTreeMap<PartitionId, Cursor>,
    /// Where the next search for a message starts among `cursors`, so that no partition
    /// starves the others.
    next_pick: usize,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The next offset to deliver.
    next: u64,
    /// The offset a retry rewound to, and the attempt its redelivery carries.
    retry: Option<(u64, u32)>,
    /// Paused by the member: nothing is received from it until resumed.
    paused: bool,
}

impl MemoryBus {
    /// An empty bus whose topics have 4 partitions, with no default topic.
    pub fn new() -> Self {
        let state = State {
            partitions: DEFAULT_PARTITIONS,
            ..State::default()
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changes: watch::Sender::new(0),
            }),
        }
    }

    /// Sets the partition count of topics created from now on (zero counts as one).
    #[must_use]
    pub fn with_partitions(self, partitions: u32) -> Self {
        lock(&self.shared.state).partitions = partitions.max(1);
        self
    }

    /// Routes messages that name no topic to `topic` (without it, publishing them fails with
    /// [`PublishError::Unroutable`]).
    #[must_use]
    pub fn with_default_topic(self, topic: impl Into<String>) -> Self {
        lock(&self.shared.state).default_topic = Some(topic.into());
        self
    }

    /// When `on`, appends every published message twice (at two offsets, with the same
    /// message id), to test that consumers tolerate duplicates.
    #[must_use]
    pub fn with_duplicate_delivery(self, on: bool) -> Self {
        lock(&self.shared.state).duplicate_delivery = on;
        self
    }

    /// Joins consumer group `group`, subscribed to `topics` (which need not exist yet), as a
    /// new member. The group's partitions are rebalanced among its members now and whenever
    /// a member joins or leaves (the consumer is dropped) or a subscribed topic is created.
    pub fn consumer(&self, group: &str, topics: &[&str]) -> MemoryConsumer {
        let member = {
            let mut state = lock(&self.shared.state);
            let member = state.next_member;
            state.next_member += 1;
            let State {
                topics: logs,
                groups,
                ..
            } = &mut *state;
            let entry = groups.entry(group.to_owned()).or_default();
            entry.members.insert(
                member,
                Member {
                    topics: topics.iter().map(|&topic| topic.to_owned()).collect(),
                    cursors: BTreeMap::new(),
                    next_pick: 0,
                },
            );
            rebalance(logs, entry);
            member
        };
        self.shared.changed();
        MemoryConsumer::new(Arc::clone(&self.shared), group.to_owned(), member)
    }

    /// Creates `topics` now, with the bus's number of partitions (a topic that exists is left
    /// as it is), and deals their partitions to the groups subscribed to them: consumers have
    /// their assignment before the first message, as on a broker where topics are created
    /// ahead (`es_kafka::ensure_topics`).
    ///
    /// ```
    /// use es_core::Consumer;
    /// use es_core::memory::MemoryBus;
    ///
    /// let bus = MemoryBus::new().with_partitions(2);
    /// let consumer = bus.consumer("billing", &["orders"]);
    /// assert!(consumer.assignment().is_empty());
    /// bus.create_topics(&["orders"]);
    /// assert_eq!(consumer.assignment().len(), 2);
    /// ```
    pub fn create_topics(&self, topics: &[&str]) {
        {
            let mut state = lock(&self.shared.state);
            let State {
                partitions,
                topics: logs,
                groups,
                ..
            } = &mut *state;
            let mut created = BTreeSet::new();
            for topic in topics {
                logs.entry((*topic).to_owned()).or_insert_with(|| {
                    created.insert((*topic).to_owned());
                    vec![Log::default(); *partitions as usize]
                });
            }
            rebalance_subscribers(logs, groups, &created);
        }
        self.shared.changed();
    }

    /// Every message published to `topic`, partition by partition, each in offset order.
    pub fn published(&self, topic: &str) -> Vec<OutboxMessage> {
        lock(&self.shared.state)
            .topics
            .get(topic)
            .map(|partitions| {
                partitions
                    .iter()
                    .flat_map(|log| log.messages.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The offset `group` resumes `topic`'s `partition` at: one past its last committed
    /// message, `None` when nothing of it was committed.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let id = PartitionId {
            topic: topic.to_owned(),
            partition,
        };
        lock(&self.shared.state)
            .groups
            .get(group)
            .and_then(|group| group.committed.get(&id).copied())
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared.state);
        f.debug_struct("MemoryBus")
            .field("partitions", &state.partitions)
            .field("default_topic", &state.default_topic)
            .field("duplicate_delivery", &state.duplicate_delivery)
            .field("topics", &state.topics.keys().collect::<Vec<_>>())
            .field("groups", &state.groups.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Where a message was appended: the index of the message in the batch, its topic,
/// partition and offset (twice per message when deliveries are duplicated).
pub(crate) type Appended = (usize, String, u32, u64);

impl MemoryBus {
    /// Appends every message (all or none) to its topic's partition for its key; returns
    /// where each copy went.
    pub(crate) fn append(
        &self,
        messages: Vec<OutboxMessage>,
    ) -> Result<Vec<Appended>, PublishFailure> {
        let mut appended = Vec::with_capacity(messages.len());
        {
            let mut state = lock(&self.shared.state);
            let routed = messages
                .iter()
                .map(|message| {
                    message
                        .topic
                        .clone()
                        .or_else(|| state.default_topic.clone())
                        .ok_or(PublishError::Unroutable {
                            message_id: message.message_id,
                        })
                })
                .collect::<Result<Vec<String>, PublishError>>()
                .map_err(|error| PublishFailure::new(0, error))?;
            let copies = if state.duplicate_delivery { 2 } else { 1 };
            let State {
                partitions,
                topics,
                groups,
                ..
            } = &mut *state;
            let mut created = BTreeSet::new();
            for (index, (mut message, topic)) in messages.into_iter().zip(routed).enumerate() {
                let logs = topics.entry(topic.clone()).or_insert_with(|| {
                    created.insert(topic.clone());
                    vec![Log::default(); *partitions as usize]
                });
                let count = u32::try_from(logs.len()).unwrap_or(u32::MAX);
                let partition = partition_for(&message.partition_key, count);
                if let Some(log) = logs.get_mut(partition as usize) {
                    message.topic = Some(topic.clone());
                    for _ in 1..copies {
                        let offset = log.push(message.clone());
                        appended.push((index, topic.clone(), partition, offset));
                    }
                    let offset = log.push(message);
                    appended.push((index, topic, partition, offset));
                }
            }
            rebalance_subscribers(topics, groups, &created);
        }
        self.shared.changed();
        Ok(appended)
    }

    /// The offset from which every one of `groups` still has to handle `topic`'s
    /// `partition`: the lowest of their committed offsets (0 for a group that committed
    /// nothing).
    pub(crate) fn handled_before(&self, groups: &[String], topic: &str, partition: u32) -> u64 {
        let id = PartitionId {
            topic: topic.to_owned(),
            partition,
        };
        let state = lock(&self.shared.state);
        groups
            .iter()
            .map(|group| {
                state
                    .groups
                    .get(group)
                    .and_then(|group| group.committed.get(&id).copied())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }

    /// Drops `topic`'s `partition` messages before `offset` (every group that reads them
    /// handled them).
    pub(crate) fn trim_before(&self, topic: &str, partition: u32, offset: u64) {
        let mut state = lock(&self.shared.state);
        if let Some(log) = state
            .topics
            .get_mut(topic)
            .and_then(|logs| logs.get_mut(partition as usize))
        {
            log.trim_before(offset);
        }
    }
}

#[async_trait::async_trait]
impl Publisher for MemoryBus {
    /// Appends every message (all or none) to its topic's partition for its key.
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        self.append(messages.to_vec()).map(|_| ())
    }
}

impl Shared {
    /// Wakes every consumer waiting for a message.
    fn changed(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }
}

/// Rebalances every group with a member subscribed to one of the `created` topics.
fn rebalance_subscribers(
    topics: &BTreeMap<String, Vec<Log>>,
    groups: &mut BTreeMap<String, Group>,
    created: &BTreeSet<String>,
) {
    for group in groups.values_mut() {
        let subscribed = group
            .members
            .values()
            .any(|member| !member.topics.is_disjoint(created));
        if subscribed {
            rebalance(topics, group);
        }
    }
}

/// Deals `group`'s partitions among its members again. A member keeps its place in a
/// partition it keeps, and starts a partition it gains at the group's committed offset.
fn rebalance(topics: &BTreeMap<String, Vec<Log>>, group: &mut Group) {
    let counts: BTreeMap<String, u32> = topics
        .iter()
        .map(|(topic, logs)| {
            let count = u32::try_from(logs.len()).unwrap_or(u32::MAX);
            (topic.clone(), count)
        })
        .collect();
    let subscriptions = group
        .members
        .iter()
        .map(|(&id, member)| (id, member.topics.clone()))
        .collect();
    let assignment = round_robin(&counts, &subscriptions);
    for (id, partitions) in assignment {
        let Some(member) = group.members.get_mut(&id) else {
            continue;
        };
        let mut old = std::mem::take(&mut member.cursors);
        for partition in partitions {
            let cursor = old.remove(&partition).unwrap_or_else(|| Cursor {
                next: group.committed.get(&partition).copied().unwrap_or(0),
                retry: None,
                paused: false,
            });
            member.cursors.insert(partition, cursor);
        }
    }
}
