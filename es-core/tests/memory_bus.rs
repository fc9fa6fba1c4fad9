//! The bus contract, and the in-memory bus's own behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use es_core::memory::{MemoryBus, MemoryConsumer};
use es_core::testing::bus_contract::{self, BusFixture};
use es_core::{Consumer, ConsumerError, Delivery, OutboxMessage, PublishError, Publisher};
use serde_json::json;

struct Memory(MemoryBus);

impl BusFixture for Memory {
    type Publisher = MemoryBus;
    type Consumer = MemoryConsumer;

    fn publisher(&self) -> &MemoryBus {
        &self.0
    }

    async fn topic(&self, prefix: &str) -> String {
        bus_contract::unique_name(prefix)
    }

    async fn consumer(&self, group: &str, topics: &[&str]) -> MemoryConsumer {
        self.0.consumer(group, topics)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
}

#[tokio::test]
async fn contract_at_least_once() {
    bus_contract::at_least_once(&Memory(MemoryBus::new())).await;
}

#[tokio::test]
async fn contract_per_key_order() {
    bus_contract::per_key_order(&Memory(MemoryBus::new())).await;
}

#[tokio::test]
async fn contract_retry_redelivers_in_place() {
    bus_contract::retry_redelivers_in_place(&Memory(MemoryBus::new())).await;
}

#[tokio::test]
async fn contract_group_members_split_partitions() {
    bus_contract::group_members_split_partitions(&Memory(MemoryBus::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_loop_retries_in_place() {
    bus_contract::loop_retries_in_place(&Memory(MemoryBus::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_loop_dead_letters_after_the_attempts() {
    bus_contract::loop_dead_letters_after_the_attempts(&Memory(MemoryBus::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_loop_pauses_the_partition_by_policy() {
    bus_contract::loop_pauses_the_partition_by_policy(&Memory(MemoryBus::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_whole_suite_with_two_partitions() {
    bus_contract::bus_contract(&Memory(MemoryBus::new().with_partitions(2))).await;
}

fn message(key: &str, seq: u64) -> OutboxMessage {
    OutboxMessage::new("Tested", key, json!({ "seq": seq })).with_topic("t")
}

async fn recv(consumer: &mut MemoryConsumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), consumer.recv())
        .await
        .expect("a delivery within 5 s")
        .expect("recv")
}

async fn assert_nothing_delivered(consumer: &mut MemoryConsumer) {
    let waited = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await;
    assert!(waited.is_err(), "unexpected delivery: {waited:?}");
}

#[tokio::test]
async fn messages_without_topic_go_to_the_default_topic_or_are_unroutable() {
    let unrouted = OutboxMessage::new("Tested", "k", json!({}));
    let failure = MemoryBus::new()
        .publish(std::slice::from_ref(&unrouted))
        .await
        .unwrap_err();
    assert_eq!(failure.acknowledged, 0);
    assert!(matches!(
        failure.error,
        PublishError::Unroutable { message_id } if message_id == unrouted.message_id
    ));

    let bus = MemoryBus::new().with_default_topic("fallback");
    bus.publish(&[unrouted.clone(), message("k", 1)])
        .await
        .unwrap();
    assert_eq!(bus.published("fallback").len(), 1);
    assert_eq!(
        bus.published("fallback")[0].topic.as_deref(),
        Some("fallback")
    );
    assert_eq!(bus.published("t").len(), 1);
}

#[tokio::test]
async fn a_batch_with_an_unroutable_message_publishes_nothing() {
    let bus = MemoryBus::new();
    let batch = [
        message("k", 0),
        OutboxMessage::new("Tested", "k", json!({})),
    ];
    let failure = bus.publish(&batch).await.unwrap_err();
    assert_eq!(failure.acknowledged, 0);
    assert!(bus.published("t").is_empty());
}

#[tokio::test]
async fn duplicate_delivery_appends_every_message_twice() {
    let bus = MemoryBus::new().with_duplicate_delivery(true);
    let mut consumer = bus.consumer("g", &["t"]);
    let sent = message("k", 0);
    bus.publish(std::slice::from_ref(&sent)).await.unwrap();
    let first = recv(&mut consumer).await;
    let second = recv(&mut consumer).await;
    assert_eq!(first.message.message_id, sent.message_id);
    assert_eq!(second.message.message_id, sent.message_id);
    assert_eq!(second.offset, first.offset + 1);
    assert_eq!((first.attempt, second.attempt), (1, 1));
    assert_nothing_delivered(&mut consumer).await;
}

#[tokio::test]
async fn recv_waits_for_a_publish_and_a_topic_created_after_subscribing() {
    let bus = MemoryBus::new();
    let mut consumer = bus.consumer("g", &["t"]);
    assert!(consumer.assignment().is_empty());
    let publisher = bus.clone();
    let publish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        publisher.publish(&[message("k", 0)]).await.unwrap();
    });
    let delivery = recv(&mut consumer).await;
    assert_eq!((delivery.topic.as_str(), delivery.offset), ("t", 0));
    assert_eq!(consumer.assignment().len(), 4);
    publish.await.unwrap();
}

#[tokio::test]
async fn partitions_follow_the_configured_count_and_keys_keep_their_partition() {
    let bus = MemoryBus::new().with_partitions(3);
    let batch: Vec<_> = (0..30)
        .map(|i| message(&format!("k{}", i % 6), i))
        .collect();
    bus.publish(&batch).await.unwrap();
    let mut consumer = bus.consumer("g", &["t"]);
    assert_eq!(consumer.assignment().len(), 3);
    let mut partition_of = std::collections::BTreeMap::new();
    for _ in 0..30 {
        let delivery = recv(&mut consumer).await;
        assert!(delivery.partition < 3);
        let key = delivery.message.partition_key.clone();
        assert_eq!(
            *partition_of.entry(key).or_insert(delivery.partition),
            delivery.partition
        );
    }
}

#[tokio::test]
async fn a_dropped_member_hands_its_partitions_over_at_the_committed_offset() {
    let bus = MemoryBus::new().with_partitions(2);
    let batch: Vec<_> = (0..40).map(|i| message(&format!("k{i}"), i)).collect();
    bus.publish(&batch).await.unwrap();
    let mut stays = bus.consumer("g", &["t"]);
    let mut leaves = bus.consumer("g", &["t"]);
    assert_eq!(stays.assignment(), vec![("t".to_owned(), 0)]);
    assert_eq!(leaves.assignment(), vec![("t".to_owned(), 1)]);

    let handled = recv(&mut leaves).await;
    let unhandled = recv(&mut leaves).await;
    leaves.commit(&handled).await.unwrap();
    assert_eq!(bus.committed_offset("g", "t", 1), Some(handled.offset + 1));
    drop(leaves);

    assert_eq!(stays.assignment().len(), 2);
    let mut redelivered = None;
    while redelivered.is_none() {
        let delivery = recv(&mut stays).await;
        assert_ne!(delivery.message.message_id, handled.message.message_id);
        if delivery.partition == 1 {
            redelivered = Some(delivery);
        }
    }
    let redelivered = redelivered.unwrap();
    assert_eq!(redelivered.message.message_id, unhandled.message.message_id);
    assert_eq!(redelivered.offset, unhandled.offset);
}

#[tokio::test]
async fn commits_of_rewound_offsets_and_revoked_partitions_are_refused() {
    let bus = MemoryBus::new().with_partitions(2);
    let batch: Vec<_> = (0..20).map(|i| message(&format!("k{i}"), i)).collect();
    bus.publish(&batch).await.unwrap();
    let mut consumer = bus.consumer("g", &["t"]);
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(recv(&mut consumer).await);
    }
    let zero: Vec<&Delivery> = received.iter().filter(|d| d.partition == 0).collect();
    let one: Vec<&Delivery> = received.iter().filter(|d| d.partition == 1).collect();
    assert!(
        zero.len() >= 2 && !one.is_empty(),
        "keys should use both partitions"
    );

    consumer.retry(zero[0]).await.unwrap();
    let refused = consumer.commit(zero[1]).await.unwrap_err();
    assert!(
        matches!(refused, ConsumerError::UnknownDelivery { offset, .. } if offset == zero[1].offset),
        "a message discarded by a retry cannot be committed: {refused:?}"
    );
    assert_eq!(bus.committed_offset("g", "t", 0), None);

    let joiner = bus.consumer("g", &["t"]);
    assert_eq!(consumer.assignment(), vec![("t".to_owned(), 0)]);
    assert_eq!(joiner.assignment(), vec![("t".to_owned(), 1)]);
    let refused = consumer.commit(one[0]).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ConsumerError::PartitionNotAssigned { partition: 1, .. }
        ),
        "{refused:?}"
    );
    assert_eq!(bus.committed_offset("g", "t", 1), None);
}

#[tokio::test]
async fn groups_keep_their_own_offsets() {
    let bus = MemoryBus::new();
    bus.publish(&[message("k", 0)]).await.unwrap();
    let mut billing = bus.consumer("billing", &["t"]);
    let delivery = recv(&mut billing).await;
    billing.commit(&delivery).await.unwrap();
    assert_nothing_delivered(&mut billing).await;

    let mut shipping = bus.consumer("shipping", &["t"]);
    let same = recv(&mut shipping).await;
    assert_eq!(same.message.message_id, delivery.message.message_id);
    assert_eq!(billing.group(), "billing");
}
