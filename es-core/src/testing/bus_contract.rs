//! The contract every message bus backend (a [`Publisher`] with its [`Consumer`]s) must
//! honour, as functions that panic with an explanation when the backend breaks it.
//!
//! A backend's tests implement [`BusFixture`] and run [`bus_contract`], or each property on
//! its own:
//!
//! ```
//! use es_core::memory::{MemoryBus, MemoryConsumer};
//! use es_core::testing::bus_contract::{self, BusFixture};
//!
//! struct Memory(MemoryBus);
//!
//! impl BusFixture for Memory {
//!     type Publisher = MemoryBus;
//!     type Consumer = MemoryConsumer;
//!
//!     fn publisher(&self) -> &MemoryBus {
//!         &self.0
//!     }
//!
//!     async fn topic(&self, prefix: &str) -> String {
//!         bus_contract::unique_name(prefix)
//!     }
//!
//!     async fn consumer(&self, group: &str, topics: &[&str]) -> MemoryConsumer {
//!         self.0.consumer(group, topics)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! bus_contract::per_key_order(&Memory(MemoryBus::new())).await;
//! # }
//! ```

mod looped;
mod split;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

pub use self::looped::{
    loop_dead_letters_after_the_attempts, loop_pauses_the_partition_by_policy,
    loop_retries_in_place,
};
pub use self::split::group_members_split_partitions;
use crate::messaging::{Consumer, Delivery, Publisher};
use crate::outbox::OutboxMessage;

/// What a backend provides to run the contract against it.
pub trait BusFixture: Sync {
    /// The backend's publisher.
    type Publisher: Publisher;
    /// The backend's consumer.
    type Consumer: Consumer;

    /// The publisher every property publishes through.
    fn publisher(&self) -> &Self::Publisher;

    /// Creates a topic no other test uses, whose name starts with `prefix`, and returns its
    /// name. It must have at least 2 partitions (4 or more is best), and a consumer group
    /// that never committed must read it from its first message.
    fn topic(&self, prefix: &str) -> impl Future<Output = String> + Send;

    /// A new member of consumer group `group`, subscribed to `topics`. Dropping it must
    /// leave the group.
    fn consumer(&self, group: &str, topics: &[&str])
    -> impl Future<Output = Self::Consumer> + Send;

    /// The topic the consumer loop dead-letters `topic`'s messages to (`<topic>.dlq` by
    /// default; [`topic`](Self::topic) must create it too when the backend needs topics made).
    fn dead_letter_topic(&self, topic: &str) -> String {
        format!("{topic}.dlq")
    }

    /// How long to wait for any one thing (a delivery, a group to form) before failing;
    /// generous by default, as a real broker takes seconds to form a group.
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// Runs every property of the contract, one after the other.
pub async fn bus_contract<F: BusFixture>(fixture: &F) {
    at_least_once(fixture).await;
    per_key_order(fixture).await;
    retry_redelivers_in_place(fixture).await;
    group_members_split_partitions(fixture).await;
    loop_retries_in_place(fixture).await;
    loop_dead_letters_after_the_attempts(fixture).await;
    loop_pauses_the_partition_by_policy(fixture).await;
}

/// `prefix` followed by a random suffix: a name (of a topic, a group) no other test uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// A member that receives some messages, commits part of them and leaves loses nothing: a
/// new member of the group receives every message that was not committed, and none that was.
pub async fn at_least_once<F: BusFixture>(fixture: &F) {
    let topic = fixture.topic("at-least-once").await;
    let group = unique_name("at-least-once");
    let messages: Vec<OutboxMessage> = (0..40)
        .map(|seq| contract_message(&topic, &format!("key-{}", seq % 8), seq))
        .collect();
    publish(fixture, &messages).await;

    let mut first = fixture.consumer(&group, &[&topic]).await;
    let mut received = Vec::new();
    for count in 0..20 {
        let what = format!("receiving message {} of 40 with a first member", count + 1);
        received.push(recv(fixture, &mut first, &topic, &what).await);
    }
    let mut committed_up_to = BTreeMap::new();
    for delivery in received.iter().step_by(3) {
        commit(&mut first, delivery).await;
        let offset = committed_up_to.entry(delivery.partition).or_insert(0);
        *offset = delivery.offset.max(*offset);
    }
    drop(first);

    let committed: BTreeSet<Uuid> = received
        .iter()
        .filter(|delivery| {
            committed_up_to
                .get(&delivery.partition)
                .is_some_and(|&offset| delivery.offset <= offset)
        })
        .map(|delivery| delivery.message.message_id)
        .collect();
    let mut missing: BTreeSet<Uuid> = messages
        .iter()
        .map(|message| message.message_id)
        .filter(|id| !committed.contains(id))
        .collect();
    let uncommitted = missing.len();

    let mut second = fixture.consumer(&group, &[&topic]).await;
    while !missing.is_empty() {
        let what = format!(
            "a new member waits for the {uncommitted} messages its group did not commit \
             ({} still missing)",
            missing.len()
        );
        let delivery = recv(fixture, &mut second, &topic, &what).await;
        let id = delivery.message.message_id;
        assert!(
            !committed.contains(&id),
            "{} was committed by the group, yet delivered again to a new member",
            describe(&delivery)
        );
        missing.remove(&id);
    }
}

/// 1,000 messages over 20 keys, published in 10 batches, are received in publish order per
/// key, every message of a key from the same partition.
pub async fn per_key_order<F: BusFixture>(fixture: &F) {
    const KEYS: u64 = 20;
    let topic = fixture.topic("per-key-order").await;
    let group = unique_name("per-key-order");
    let mut sent = BTreeMap::<String, u64>::new();
    for batch in 0..10_u64 {
        let messages: Vec<OutboxMessage> = (0..100_u64)
            .map(|index| {
                // Keys in an irregular order, different in every batch.
                let key = format!("key-{}", (index * 7 + batch * 3 + index / 9) % KEYS);
                let seq = sent.entry(key.clone()).or_insert(0);
                let message = contract_message(&topic, &key, *seq);
                *seq += 1;
                message
            })
            .collect();
        publish(fixture, &messages).await;
    }

    let mut consumer = fixture.consumer(&group, &[&topic]).await;
    let mut next = BTreeMap::<String, u64>::new();
    let mut partitions = BTreeMap::<String, u32>::new();
    for count in 0..1_000 {
        let what = format!("receiving message {} of 1000", count + 1);
        let delivery = recv(fixture, &mut consumer, &topic, &what).await;
        let key = delivery.message.partition_key.clone();
        let expected = next.entry(key.clone()).or_insert(0);
        assert_eq!(
            sequence_of(&delivery),
            *expected,
            "key {key}: expected its message #{expected} next, got {}",
            describe(&delivery)
        );
        *expected += 1;
        let partition = *partitions.entry(key.clone()).or_insert(delivery.partition);
        assert_eq!(
            delivery.partition,
            partition,
            "key {key}: {} is not in partition {partition} like the key's earlier messages",
            describe(&delivery)
        );
    }
    assert_eq!(
        next, sent,
        "messages received per key differ from those sent"
    );
}

/// [`Consumer::retry`] delivers the same offset again, with `attempt` one higher, before any
/// later message of its partition (even ones already received); a commit after a retry is
/// where a new member resumes.
pub async fn retry_redelivers_in_place<F: BusFixture>(fixture: &F) {
    let topic = fixture.topic("retry").await;
    let group = unique_name("retry");
    let messages: Vec<OutboxMessage> = (0..5)
        .map(|seq| contract_message(&topic, "the-only-key", seq))
        .collect();
    publish(fixture, &messages).await;

    let mut consumer = fixture.consumer(&group, &[&topic]).await;
    let first = recv(fixture, &mut consumer, &topic, "receiving message #0").await;
    assert_delivered(&first, 0, 1);
    retry(&mut consumer, &first).await;
    let again = recv(fixture, &mut consumer, &topic, "receiving #0 after a retry").await;
    assert_redelivered(&again, &first, 2);
    retry(&mut consumer, &again).await;
    let third = recv(
        fixture,
        &mut consumer,
        &topic,
        "receiving #0 after two retries",
    )
    .await;
    assert_redelivered(&third, &first, 3);
    commit(&mut consumer, &third).await;

    let second = recv(fixture, &mut consumer, &topic, "receiving message #1").await;
    assert_delivered(&second, 1, 1);
    let prefetched = recv(fixture, &mut consumer, &topic, "receiving message #2").await;
    assert_delivered(&prefetched, 2, 1);
    retry(&mut consumer, &second).await;
    let again = recv(fixture, &mut consumer, &topic, "receiving #1 after a retry").await;
    assert_redelivered(&again, &second, 2);
    let after = recv(
        fixture,
        &mut consumer,
        &topic,
        "receiving #2 after #1's retry",
    )
    .await;
    assert_eq!(
        (after.partition, after.offset, sequence_of(&after)),
        (prefetched.partition, prefetched.offset, 2),
        "after retrying #1, the message after it should come again, got {}",
        describe(&after)
    );
    commit(&mut consumer, &after).await;
    drop(consumer);

    let mut next = fixture.consumer(&group, &[&topic]).await;
    let resumed = recv(fixture, &mut next, &topic, "a new member resuming").await;
    assert_delivered(&resumed, 3, 1);
}

/// An integration message of the contract: `seq` is its place among its key's messages.
fn contract_message(topic: &str, key: &str, seq: u64) -> OutboxMessage {
    OutboxMessage::new("BusContractTested", key, json!({ "key": key, "seq": seq }))
        .with_topic(topic)
}

fn sequence_of(delivery: &Delivery) -> u64 {
    delivery.message.payload["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("{} has no seq in its payload", describe(delivery)))
}

fn describe(delivery: &Delivery) -> String {
    format!(
        "message {} (key {}, seq {}) at {}/{} offset {}, attempt {}",
        delivery.message.message_id,
        delivery.message.partition_key,
        delivery.message.payload["seq"],
        delivery.topic,
        delivery.partition,
        delivery.offset,
        delivery.attempt
    )
}

async fn publish<F: BusFixture>(fixture: &F, messages: &[OutboxMessage]) {
    if let Err(failure) = fixture.publisher().publish(messages).await {
        panic!(
            "publishing {} messages failed after {} were acknowledged: {}",
            messages.len(),
            failure.acknowledged,
            failure.error
        );
    }
}

/// The next delivery, which must come from `topic` within the fixture's timeout.
async fn recv<F: BusFixture, C: Consumer>(
    fixture: &F,
    consumer: &mut C,
    topic: &str,
    what: impl Display,
) -> Delivery {
    let timeout = fixture.timeout();
    let delivery = match tokio::time::timeout(timeout, consumer.recv()).await {
        Ok(Ok(delivery)) => delivery,
        Ok(Err(error)) => panic!("{what}: recv failed: {error}"),
        Err(_) => panic!("{what}: nothing was delivered within {timeout:?}"),
    };
    assert_eq!(delivery.topic, topic, "{what}: {}", describe(&delivery));
    assert_eq!(
        delivery.message.topic.as_deref(),
        Some(topic),
        "{what}: the message's topic should be the one it was read from"
    );
    delivery
}

async fn commit<C: Consumer>(consumer: &mut C, delivery: &Delivery) {
    if let Err(error) = consumer.commit(delivery).await {
        panic!("committing {}: {error}", describe(delivery));
    }
}

async fn retry<C: Consumer>(consumer: &mut C, delivery: &Delivery) {
    if let Err(error) = consumer.retry(delivery).await {
        panic!("retrying {}: {error}", describe(delivery));
    }
}

fn assert_delivered(delivery: &Delivery, seq: u64, attempt: u32) {
    assert_eq!(
        (sequence_of(delivery), delivery.attempt),
        (seq, attempt),
        "expected message #{seq} at attempt {attempt}, got {}",
        describe(delivery)
    );
}

fn assert_redelivered(delivery: &Delivery, original: &Delivery, attempt: u32) {
    assert_eq!(
        (
            delivery.message.message_id,
            delivery.partition,
            delivery.offset,
            delivery.attempt
        ),
        (
            original.message.message_id,
            original.partition,
            original.offset,
            attempt
        ),
        "expected {} again at attempt {attempt}, got {}",
        describe(original),
        describe(delivery)
    );
}
