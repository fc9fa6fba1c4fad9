//! The durable local route: messages whose handlers run in the relaying process are handed
//! from the outbox to them in memory instead of going through a broker, with the same
//! guarantees as through one.
//!
//! A [`Relay`](crate::relay::Relay) given a [`LocalRoute`]
//! ([`Relay::with_local_route`](crate::relay::Relay::with_local_route)) appends the messages
//! of the route's topics to the route (a [`MemoryBus`] of its own: partitions by key, consumer
//! groups, rewinds, pauses) and publishes the rest to its broker. The process's
//! [`ConsumerLoop`](crate::consume::ConsumerLoop)s read the route through
//! [`LocalConsumer`]s: the same loop, retries, dead letters and pauses as on a broker. What
//! makes it durable is the relay's checkpoint: it never passes a message handed over that one
//! of its topic's groups has not handled yet. A crash loses what was in memory, and the relay
//! of the next start hands it over again from the checkpoint (duplicates, which the handlers'
//! inboxes discard, never losses). So the outbox is the route's storage, as a broker's log is
//! a consumer's.
//!
//! ```
//! use std::sync::Arc;
//! use es_core::local::LocalRoute;
//! use es_core::memory::{MemoryBus, MemoryCheckpointStore, MemoryOutbox};
//! use es_core::relay::Relay;
//! use es_core::{CheckpointStore, Consumer, OutboxMessage, OutboxSource, Publisher};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let outbox = MemoryOutbox::new();
//! outbox.push(vec![
//!     OutboxMessage::new("ReserveStock", "order-7", json!({})).with_topic("inventory-commands"),
//!     OutboxMessage::new("OrderPlaced", "order-7", json!({})).with_topic("orders"),
//! ]);
//! // "inventory-commands" is handled here by the group "inventory"; "orders" goes to the broker.
//! let route = LocalRoute::new(4).topic("inventory-commands", &["inventory"]);
//! let broker = MemoryBus::new();
//! let checkpoints = MemoryCheckpointStore::new();
//! let publisher: Arc<dyn Publisher> = Arc::new(broker.clone());
//! let mut relay = Relay::new("relay", outbox.clone(), checkpoints.clone(), publisher)
//!     .with_local_route(route.clone());
//! relay.run_once().await?;
//! relay.flush_checkpoint().await?;
//! assert_eq!(broker.published("orders").len(), 1);
//! assert!(broker.published("inventory-commands").is_empty());
//! // Handed over, not handled yet: the checkpoint stays before it.
//! assert_eq!(route.pending(), 1);
//! let checkpoint = checkpoints.load_checkpoint("relay").await?.unwrap_or_default();
//! let unhandled = outbox.read_outbox(checkpoint, 10).await?.messages;
//! assert_eq!(unhandled[0].message.message_type, "ReserveStock");
//!
//! let mut inventory = route.consumer("inventory", &["inventory-commands"]);
//! let delivery = inventory.recv().await?;
//! assert_eq!(delivery.message.message_type, "ReserveStock");
//! inventory.commit(&delivery).await?;
//! relay.flush_checkpoint().await?;
//! assert_eq!(route.pending(), 0);
//! let checkpoint = checkpoints.load_checkpoint("relay").await?.unwrap_or_default();
//! assert!(outbox.read_outbox(checkpoint, 10).await?.messages.is_empty());
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::ids::Position;
use crate::memory::{MemoryBus, MemoryConsumer};
use crate::messaging::{Consumer, ConsumerError, Delivery, PublishFailure, Publisher};
use crate::outbox::OutboxMessage;

/// A durable in-process route for the topics whose consumer groups run in this process
/// (module documentation: [`local`](self)). Clones share the route.
#[derive(Clone)]
pub struct LocalRoute {
    inner: Arc<Inner>,
}

struct Inner {
    bus: MemoryBus,
    /// How many messages may wait to be handled before relays stop handing more over.
    capacity: usize,
    /// Each routed topic and the groups that must handle its messages.
    topics: BTreeMap<String, Vec<String>>,
    /// Where dead letters go; the route's own bus (`<topic>.dlq`) when `None`.
    dead_letters: Option<Arc<dyn Publisher>>,
    handed: Mutex<Handed>,
}

impl Clone for Inner {
    /// The same bus and settings, nothing handed over yet.
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            capacity: self.capacity,
            topics: self.topics.clone(),
            dead_letters: self.dead_letters.clone(),
            handed: Mutex::new(Handed::default()),
        }
    }
}

/// A message handed over: its offset on the route, its relay, its position in that relay's
/// outbox.
type HandedMessage = (u64, Arc<str>, Position);

/// The messages handed over and not yet handled by every group of their topic, per
/// partition in offset order.
#[derive(Default)]
struct Handed(HashMap<(String, u32), VecDeque<HandedMessage>>);

impl fmt::Debug for LocalRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRoute")
            .field("topics", &self.inner.topics)
            .field("durable_dead_letters", &self.inner.dead_letters.is_some())
            .finish_non_exhaustive()
    }
}

impl LocalRoute {
    /// How many messages may wait on a route unless [`with_capacity`](Self::with_capacity)
    /// says otherwise.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// A route with no topics yet, whose topics have `partitions` partitions (the unit of
    /// order and of parallelism among a group's members, as on a broker).
    pub fn new(partitions: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                bus: MemoryBus::new().with_partitions(partitions),
                capacity: Self::DEFAULT_CAPACITY,
                topics: BTreeMap::new(),
                dead_letters: None,
                handed: Mutex::new(Handed::default()),
            }),
        }
    }

    /// The settings to change: configured before the route is shared (a clone made
    /// earlier keeps the old settings).
    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// Routes `topic` here: its messages are handled in this process by each of `groups`,
    /// and a relay's checkpoint passes one only when all of them handled it.
    #[must_use]
    pub fn topic(mut self, topic: &str, groups: &[&str]) -> Self {
        let inner = self.inner_mut();
        inner.topics.insert(
            topic.to_owned(),
            groups.iter().map(|&group| group.to_owned()).collect(),
        );
        inner.bus.create_topics(&[topic]);
        self
    }

    /// Hands every message over twice (at two offsets, with the same id), to show that
    /// handlers tolerate duplicates.
    #[must_use]
    pub fn with_duplicate_delivery(mut self, on: bool) -> Self {
        let inner = self.inner_mut();
        inner.bus = inner.bus.clone().with_duplicate_delivery(on);
        self
    }

    /// Sends dead letters through `publisher` (for example to `<topic>.dlq` on the broker,
    /// where they outlive the process); without it they go to the route's own bus, in
    /// memory.
    #[must_use]
    pub fn with_dead_letters(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.inner_mut().dead_letters = Some(publisher);
        self
    }

    /// Lets at most about `capacity` messages wait to be handled: beyond it, relays stop
    /// reading their outbox (which keeps the messages) until the members catch up, so a
    /// slow or paused consumer holds the outbox back rather than filling the memory. A relay
    /// checks before each batch, so up to one batch more may be handed over.
    #[must_use]
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.inner_mut().capacity = capacity.max(1);
        self
    }

    /// Whether as many messages wait as the route's capacity allows.
    pub fn is_full(&self) -> bool {
        self.pending() >= self.inner.capacity
    }

    /// Whether `topic`'s messages are routed here.
    pub fn routes(&self, topic: &str) -> bool {
        self.inner.topics.contains_key(topic)
    }

    /// The groups named for the routed topics.
    pub fn groups(&self) -> std::collections::BTreeSet<&str> {
        self.inner
            .topics
            .values()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// The routed topics.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.inner.topics.keys().map(String::as_str)
    }

    /// A member of consumer group `group` reading `topics` of this route (give it to a
    /// [`ConsumerLoop`](crate::consume::ConsumerLoop)); the group's members split the
    /// partitions.
    pub fn consumer(&self, group: &str, topics: &[&str]) -> LocalConsumer {
        LocalConsumer {
            inner: self.inner.bus.consumer(group, topics),
            dead_letters: self.inner.dead_letters.clone(),
        }
    }

    /// Messages handed over and not yet handled by every group of their topic.
    pub fn pending(&self) -> usize {
        let mut handed = crate::memory::lock(&self.inner.handed);
        self.settle(&mut handed);
        handed.0.values().map(VecDeque::len).sum()
    }

    /// Messages handed over that `group` has not handled yet (its lag), over the topics it
    /// was named for.
    pub fn lag(&self, group: &str) -> u64 {
        let mut handed = crate::memory::lock(&self.inner.handed);
        self.settle(&mut handed);
        let mut lag = 0;
        for ((topic, partition), messages) in &handed.0 {
            let named = self
                .inner
                .topics
                .get(topic)
                .is_some_and(|groups| groups.iter().any(|g| g == group));
            if !named {
                continue;
            }
            let handled = self
                .inner
                .bus
                .handled_before(&[group.to_owned()], topic, *partition);
            lag += messages
                .iter()
                .filter(|(offset, _, _)| *offset >= handled)
                .count() as u64;
        }
        lag
    }

    /// Appends `messages` (each with its position in `relay`'s outbox) to their topics.
    pub(crate) fn hand_over(
        &self,
        relay: &str,
        messages: Vec<(Position, OutboxMessage)>,
    ) -> Result<(), PublishFailure> {
        if messages.is_empty() {
            return Ok(());
        }
        let relay: Arc<str> = Arc::from(relay);
        let (positions, batch): (Vec<Position>, Vec<OutboxMessage>) = messages.into_iter().unzip();
        let mut handed = crate::memory::lock(&self.inner.handed);
        for (index, topic, partition, offset) in self.inner.bus.append(batch)? {
            let position = positions.get(index).copied().unwrap_or(Position::START);
            handed.0.entry((topic, partition)).or_default().push_back((
                offset,
                relay.clone(),
                position,
            ));
        }
        Ok(())
    }

    /// The lowest position of `relay`'s outbox handed over and not handled yet by every
    /// group of its topic: the relay's checkpoint stays before it. Forgets (and frees) what
    /// every group handled.
    pub(crate) fn lowest_pending(&self, relay: &str) -> Option<Position> {
        let mut handed = crate::memory::lock(&self.inner.handed);
        self.settle(&mut handed);
        handed
            .0
            .values()
            .flatten()
            .filter(|(_, from, _)| &**from == relay)
            .map(|(_, _, position)| *position)
            .min()
    }

    /// Drops from `handed`, and from the bus, what every group handled.
    fn settle(&self, handed: &mut Handed) {
        for ((topic, partition), messages) in &mut handed.0 {
            let Some(groups) = self.inner.topics.get(topic) else {
                continue;
            };
            let handled = self.inner.bus.handled_before(groups, topic, *partition);
            let before = messages.len();
            while messages
                .front()
                .is_some_and(|(offset, _, _)| *offset < handled)
            {
                messages.pop_front();
            }
            if messages.len() != before {
                self.inner.bus.trim_before(topic, *partition, handled);
            }
        }
    }
}

/// The position just before `position`: reading after it starts with `position`, and every
/// position before `position` is at or before it.
pub(crate) fn just_before(position: Position) -> Position {
    match position.sequence().checked_sub(1) {
        Some(sequence) => Position::new(position.transaction(), sequence),
        None => Position::new(position.transaction().saturating_sub(1), u64::MAX),
    }
}

/// A member of a consumer group of a [`LocalRoute`], made by [`LocalRoute::consumer`]: a
/// [`MemoryConsumer`] of the route's bus whose dead letters go where the route sends them.
pub struct LocalConsumer {
    inner: MemoryConsumer,
    dead_letters: Option<Arc<dyn Publisher>>,
}

impl fmt::Debug for LocalConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConsumer")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Consumer for LocalConsumer {
    async fn recv(&mut self) -> Result<Delivery, ConsumerError> {
        self.inner.recv().await
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.inner.commit(delivery).await
    }

    async fn retry(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.inner.retry(delivery).await
    }

    fn group_id(&self) -> &str {
        self.inner.group()
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.inner.assignment()
    }

    fn rewind(&mut self, delivery: &Delivery, attempt: u32) -> Result<(), ConsumerError> {
        self.inner.rewind(delivery, attempt)
    }

    fn pause(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        self.inner.pause(topic, partition)
    }

    fn resume(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        self.inner.resume(topic, partition)
    }

    fn store(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.inner.store(delivery)
    }

    async fn commit_stored(&mut self) -> Result<(), ConsumerError> {
        self.inner.commit_stored().await
    }

    /// Publishes to `<topic>.dlq` through the route's dead-letter publisher (the route's own
    /// bus without one), with the `es-dlq-*` headers, then marks the message handled.
    async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumerError> {
        let Some(publisher) = &self.dead_letters else {
            return self.inner.dead_letter(delivery, reason, attempts).await;
        };
        let message =
            crate::dead_letter::dead_letter_message(delivery, self.inner.group(), reason, attempts);
        publisher
            .publish(&[message])
            .await
            .map_err(ConsumerError::backend)?;
        tracing::warn!(
            topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset,
            message_id = %delivery.message.message_id, attempts, "dead-lettered: {reason}"
        );
        self.inner.store(delivery)
    }
}
