//! A member of a consumer group of the in-memory bus.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use super::assign::PartitionId;
use super::{Cursor, Group, Shared, State, rebalance};
use crate::memory::lock;
use crate::messaging::{Consumer, ConsumerError, Delivery};

/// A member of a consumer group of a [`MemoryBus`](super::MemoryBus), made by
/// [`MemoryBus::consumer`](super::MemoryBus::consumer); dropping it leaves the group, and its
/// partitions go to the other members, which resume at the committed offsets.
///
/// [`Consumer::recv`] is cancel-safe, and serves the assigned partitions in turn so that a
/// busy partition does not starve the others. A commit or retry must name a delivery of a
/// partition still assigned to this member, at an offset already received since the last
/// rebalance or retry that concerned it.
pub struct MemoryConsumer {
    shared: Arc<Shared>,
    group: String,
    member: u64,
    changes: watch::Receiver<u64>,
}

impl MemoryConsumer {
    pub(super) fn new(shared: Arc<Shared>, group: String, member: u64) -> Self {
        let changes = shared.changes.subscribe();
        Self {
            shared,
            group,
            member,
            changes,
        }
    }

    /// The consumer group this member belongs to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The (topic, partition) pairs currently assigned to this member, sorted.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        let state = lock(&self.shared.state);
        state
            .groups
            .get(&self.group)
            .and_then(|group| group.members.get(&self.member))
            .map(|member| {
                member
                    .cursors
                    .keys()
                    .map(|id| (id.topic.clone(), id.partition))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The next available message of an assigned partition, taking partitions in turn.
    fn poll(&self) -> Result<Option<Delivery>, ConsumerError> {
        let mut state = lock(&self.shared.state);
        let State { topics, groups, .. } = &mut *state;
        let member = groups
            .get_mut(&self.group)
            .and_then(|group| group.members.get_mut(&self.member))
            .ok_or(ConsumerError::Closed)?;
        let count = member.cursors.len();
        for step in 0..count {
            let index = (member.next_pick + step) % count;
            let Some((id, cursor)) = member.cursors.iter_mut().nth(index) else {
                continue;
            };
            if cursor.paused {
                continue;
            }
            let Some(log) = topics
                .get(&id.topic)
                .and_then(|logs| logs.get(id.partition as usize))
            else {
                continue;
            };
            // What was trimmed was handled by every group that trims (a new group starts
            // at what is left).
            cursor.next = cursor.next.max(log.base);
            let Some(message) = log.get(cursor.next) else {
                continue;
            };
            let attempt = match cursor.retry.take() {
                Some((offset, attempt)) if offset == cursor.next => attempt,
                _ => 1,
            };
            let delivery = Delivery {
                message: message.clone(),
                topic: id.topic.clone(),
                partition: id.partition,
                offset: cursor.next,
                attempt,
            };
            cursor.next += 1;
            member.next_pick = index + 1;
            return Ok(Some(delivery));
        }
        Ok(None)
    }

    /// Runs `settle` on the group's committed offsets and the cursor of `delivery`'s
    /// partition, once `delivery` is known to be held by this member.
    fn settle(
        &self,
        delivery: &Delivery,
        settle: impl FnOnce(&mut BTreeMap<PartitionId, u64>, PartitionId, &mut Cursor),
    ) -> Result<(), ConsumerError> {
        let mut state = lock(&self.shared.state);
        let Group { committed, members } = state
            .groups
            .get_mut(&self.group)
            .ok_or(ConsumerError::Closed)?;
        let member = members.get_mut(&self.member).ok_or(ConsumerError::Closed)?;
        let id = PartitionId {
            topic: delivery.topic.clone(),
            partition: delivery.partition,
        };
        let cursor =
            member
                .cursors
                .get_mut(&id)
                .ok_or_else(|| ConsumerError::PartitionNotAssigned {
                    topic: delivery.topic.clone(),
                    partition: delivery.partition,
                })?;
        if delivery.offset >= cursor.next {
            return Err(ConsumerError::unknown_delivery(delivery));
        }
        settle(committed, id, cursor);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Consumer for MemoryConsumer {
    async fn recv(&mut self) -> Result<Delivery, ConsumerError> {
        loop {
            // Marking the version seen before looking means a publish that lands after the
            // look still wakes the wait below.
            self.changes.borrow_and_update();
            if let Some(delivery) = self.poll()? {
                return Ok(delivery);
            }
            self.changes
                .changed()
                .await
                .map_err(|_| ConsumerError::Closed)?;
        }
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.settle(delivery, |committed, id, _| {
            let next = committed.entry(id).or_insert(0);
            *next = (*next).max(delivery.offset + 1);
        })
    }

    async fn retry(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        Consumer::rewind(self, delivery, delivery.attempt.saturating_add(1))
    }

    fn group_id(&self) -> &str {
        &self.group
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        MemoryConsumer::assignment(self)
    }

    fn rewind(&mut self, delivery: &Delivery, attempt: u32) -> Result<(), ConsumerError> {
        self.settle(delivery, |_, _, cursor| {
            cursor.next = delivery.offset;
            cursor.retry = Some((delivery.offset, attempt));
        })
    }

    fn pause(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        self.set_paused(topic, partition, true)
    }

    fn resume(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        self.set_paused(topic, partition, false)?;
        self.shared.changed();
        Ok(())
    }

    /// Commits at once: the in-memory group's offsets are never behind.
    fn store(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.settle(delivery, |committed, id, _| {
            let next = committed.entry(id).or_insert(0);
            *next = (*next).max(delivery.offset + 1);
        })
    }

    async fn commit_stored(&mut self) -> Result<(), ConsumerError> {
        Ok(())
    }

    /// Publishes to `<topic>.dlq` on the same bus, with the `es-dlq-*` headers.
    async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumerError> {
        self.settle(delivery, |_, _, _| {})?;
        let message =
            crate::dead_letter::dead_letter_message(delivery, &self.group, reason, attempts);
        let bus = super::MemoryBus {
            shared: Arc::clone(&self.shared),
        };
        crate::messaging::Publisher::publish(&bus, &[message])
            .await
            .map_err(ConsumerError::backend)?;
        tracing::warn!(
            topic = %delivery.topic, partition = delivery.partition, offset = delivery.offset,
            message_id = %delivery.message.message_id, attempts, "dead-lettered: {reason}"
        );
        Consumer::store(self, delivery)
    }
}

impl MemoryConsumer {
    fn set_paused(&self, topic: &str, partition: u32, paused: bool) -> Result<(), ConsumerError> {
        let mut state = lock(&self.shared.state);
        let cursor = state
            .groups
            .get_mut(&self.group)
            .and_then(|group| group.members.get_mut(&self.member))
            .ok_or(ConsumerError::Closed)?
            .cursors
            .get_mut(&PartitionId {
                topic: topic.to_owned(),
                partition,
            })
            .ok_or_else(|| ConsumerError::PartitionNotAssigned {
                topic: topic.to_owned(),
                partition,
            })?;
        cursor.paused = paused;
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.shared.state);
            let State { topics, groups, .. } = &mut *state;
            if let Some(group) = groups.get_mut(&self.group) {
                group.members.remove(&self.member);
                rebalance(topics, group);
            }
        }
        self.shared.changed();
    }
}

impl fmt::Debug for MemoryConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryConsumer")
            .field("group", &self.group)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}
