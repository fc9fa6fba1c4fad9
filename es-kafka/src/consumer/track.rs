//! What the consumer has delivered, rewound and stored, per assigned partition: the rules that
//! keep prefetched messages from being taken for handled ones.

use std::collections::{BTreeSet, HashMap};

use es_core::{ConsumerError, Delivery};

/// A topic and partition.
pub(crate) type PartitionKey = (String, i32);

#[derive(Debug, Default)]
struct Partition {
    /// The next offset to deliver; records below it are stale re-fetches.
    next: Option<u64>,
    /// The offset a retry rewound to, and the attempt its redelivery carries: until it
    /// arrives, every other record of the partition is stale.
    retry: Option<(u64, u32)>,
    /// The lowest delivered offset not yet covered by a stored offset.
    low: Option<u64>,
    /// Offsets the consumer dead-lettered itself while earlier deliveries were outstanding.
    skipped: BTreeSet<u64>,
}

/// What to do with a fetched record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Hand it out, with this attempt number.
    Deliver(u32),
    /// Drop it: a stale prefetch or a re-fetch of something already delivered.
    Drop,
}

/// Per-partition delivery state of one consumer, shared with its rebalance callbacks.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    partitions: HashMap<PartitionKey, Partition>,
}

fn not_assigned(topic: &str, partition: u32) -> ConsumerError {
    ConsumerError::PartitionNotAssigned {
        topic: topic.to_owned(),
        partition,
    }
}

impl Tracker {
    /// A partition was assigned: it starts afresh at the group's committed offset.
    pub(crate) fn assign(&mut self, key: PartitionKey) {
        self.partitions.insert(key, Partition::default());
    }

    /// A partition was revoked: nothing of it is held any more.
    pub(crate) fn revoke(&mut self, key: &PartitionKey) {
        self.partitions.remove(key);
    }

    /// The partitions currently assigned.
    pub(crate) fn assigned(&self) -> Vec<PartitionKey> {
        self.partitions.keys().cloned().collect()
    }

    /// Decides whether the record at `offset` is handed out.
    pub(crate) fn admit(&mut self, key: &PartitionKey, offset: u64) -> Admit {
        let state = self.partitions.entry(key.clone()).or_default();
        let attempt = match state.retry {
            Some((rewound, attempt)) if rewound == offset => {
                state.retry = None;
                attempt
            }
            Some(_) => return Admit::Drop,
            None if state.next.is_some_and(|next| offset < next) => return Admit::Drop,
            None => 1,
        };
        state.next = Some(offset + 1);
        state.low.get_or_insert(offset);
        Admit::Deliver(attempt)
    }

    /// Checks that `delivery` was handed out and not rewound since.
    pub(crate) fn check_held(&self, delivery: &Delivery) -> Result<(), ConsumerError> {
        let state = self
            .partitions
            .get(&key_of(delivery))
            .ok_or_else(|| not_assigned(&delivery.topic, delivery.partition))?;
        let horizon = match (state.retry, state.next) {
            (Some((rewound, _)), _) => rewound,
            (None, Some(next)) => next,
            (None, None) => 0,
        };
        if delivery.offset >= horizon {
            return Err(ConsumerError::unknown_delivery(delivery));
        }
        Ok(())
    }

    /// Rewinds the partition to `delivery`, redelivered with `attempt`.
    pub(crate) fn rewind(
        &mut self,
        delivery: &Delivery,
        attempt: u32,
    ) -> Result<(), ConsumerError> {
        self.check_held(delivery)?;
        if let Some(state) = self.partitions.get_mut(&key_of(delivery)) {
            state.retry = Some((delivery.offset, attempt));
            state.next = Some(delivery.offset);
        }
        Ok(())
    }

    /// `delivery` and everything before it is handled: the offset to store (one past it, and
    /// past any dead-lettered record right after it).
    pub(crate) fn handled(&mut self, delivery: &Delivery) -> Result<u64, ConsumerError> {
        self.check_held(delivery)?;
        let state = self
            .partitions
            .get_mut(&key_of(delivery))
            .ok_or_else(|| not_assigned(&delivery.topic, delivery.partition))?;
        Ok(state.cover(delivery.offset + 1))
    }

    /// The record at `offset` was dead-lettered by the consumer: the offset to store now, or
    /// `None` while earlier deliveries are outstanding (the next commit will pass it).
    pub(crate) fn dead_lettered(&mut self, key: &PartitionKey, offset: u64) -> Option<u64> {
        let state = self.partitions.get_mut(key)?;
        if state.low.is_some_and(|low| low < offset) {
            state.skipped.insert(offset);
            None
        } else {
            Some(state.cover(offset + 1))
        }
    }
}

impl Partition {
    /// Moves the stored point to `store`, past dead-lettered records; returns it.
    fn cover(&mut self, mut store: u64) -> u64 {
        self.skipped = self.skipped.split_off(&store);
        while self.skipped.remove(&store) {
            store += 1;
        }
        let next = self.retry.map_or(self.next, |(rewound, _)| Some(rewound));
        self.low = match next {
            Some(next) if next > store => Some(store),
            _ => None,
        };
        store
    }
}

/// The partition `delivery` came from.
pub(crate) fn key_of(delivery: &Delivery) -> PartitionKey {
    (
        delivery.topic.clone(),
        i32::try_from(delivery.partition).unwrap_or(i32::MAX),
    )
}
