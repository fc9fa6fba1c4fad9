//! Where a key's messages go, and which group member reads which partition.

use std::collections::{BTreeMap, BTreeSet};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct PartitionId {
    pub(super) topic: String,
    pub(super) partition: u32,
}

/// The 64-bit FNV-1a hash: fixed across runs and platforms, unlike the standard hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The partition of a topic with `partitions` partitions (at least 1) that `key` goes to.
pub(super) fn partition_for(key: &str, partitions: u32) -> u32 {
    let partitions = u64::from(partitions.max(1));
    // The remainder is below `partitions`, which came from a u32.
    u32::try_from(fnv1a(key.as_bytes()) % partitions).unwrap_or(0)
}

/// Round-robin assignment, as Kafka's `RoundRobinAssignor`: the partitions of every topic
/// (sorted by topic, then partition) are dealt in turn to the members, skipping a member
/// not subscribed to the partition's topic.
///
/// `topics` gives each existing topic's partition count; `members` each member's
/// subscription. Every member appears in the result, possibly with no partitions.
pub(super) fn round_robin(
    topics: &BTreeMap<String, u32>,
    members: &BTreeMap<u64, BTreeSet<String>>,
) -> BTreeMap<u64, Vec<PartitionId>> {
    let mut assignment: BTreeMap<u64, Vec<PartitionId>> =
        members.keys().map(|&member| (member, Vec::new())).collect();
    let order: Vec<(&u64, &BTreeSet<String>)> = members.iter().collect();
    let mut next = 0;
    for (topic, &count) in topics {
        for partition in 0..count {
            let taker = (0..order.len())
                .map(|step| (next + step) % order.len())
                .find(|&index| order[index].1.contains(topic));
            if let Some(index) = taker {
                if let Some(partitions) = assignment.get_mut(order[index].0) {
                    partitions.push(PartitionId {
                        topic: topic.clone(),
                        partition,
                    });
                }
                next = index + 1;
            }
        }
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriptions(members: &[(u64, &[&str])]) -> BTreeMap<u64, BTreeSet<String>> {
        members
            .iter()
            .map(|(id, topics)| (*id, topics.iter().map(|t| (*t).to_owned()).collect()))
            .collect()
    }

    fn id(topic: &str, partition: u32) -> PartitionId {
        PartitionId {
            topic: topic.to_owned(),
            partition,
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_key_always_goes_to_the_same_partition_and_keys_spread() {
        let mut used = BTreeSet::new();
        for key in 0..100 {
            let key = format!("order-{key}");
            let partition = partition_for(&key, 4);
            assert!(partition < 4);
            assert_eq!(partition, partition_for(&key, 4));
            used.insert(partition);
        }
        assert_eq!(used.len(), 4, "100 keys should use all 4 partitions");
        assert_eq!(partition_for("anything", 1), 0);
        assert_eq!(partition_for("anything", 0), 0);
    }

    #[test]
    fn partitions_are_dealt_in_turn() {
        let topics = BTreeMap::from([("a".to_owned(), 3), ("b".to_owned(), 2)]);
        let members = subscriptions(&[(1, &["a", "b"]), (2, &["a", "b"])]);
        let assignment = round_robin(&topics, &members);
        assert_eq!(assignment[&1], vec![id("a", 0), id("a", 2), id("b", 1)]);
        assert_eq!(assignment[&2], vec![id("a", 1), id("b", 0)]);
    }

    #[test]
    fn members_get_only_partitions_of_their_topics() {
        let topics = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 2)]);
        let members = subscriptions(&[(1, &["a"]), (2, &["a", "b"]), (3, &["c"])]);
        let assignment = round_robin(&topics, &members);
        assert_eq!(assignment[&1], vec![id("a", 0)]);
        assert_eq!(assignment[&2], vec![id("a", 1), id("b", 0), id("b", 1)]);
        assert!(assignment[&3].is_empty());
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        let topics = BTreeMap::from([("a".to_owned(), 7), ("b".to_owned(), 5)]);
        let members = subscriptions(&[(4, &["a", "b"]), (9, &["b"]), (12, &["a"])]);
        let assignment = round_robin(&topics, &members);
        let mut owned: Vec<PartitionId> = assignment.values().flatten().cloned().collect();
        owned.sort();
        let mut expected: Vec<PartitionId> = (0..7).map(|p| id("a", p)).collect();
        expected.extend((0..5).map(|p| id("b", p)));
        assert_eq!(owned, expected);
        assert!(assignment.values().all(|partitions| !partitions.is_empty()));
    }

    #[test]
    fn no_members_no_assignment() {
        let topics = BTreeMap::from([("a".to_owned(), 2)]);
        assert!(round_robin(&topics, &BTreeMap::new()).is_empty());
    }
}
