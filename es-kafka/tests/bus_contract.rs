//! The es-core bus contract against the broker: `KafkaPublisher` + `KafkaConsumer`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use es_core::testing::bus_contract::{self, BusFixture};
use es_kafka::{KafkaConfig, KafkaConsumer, KafkaPublisher, TopicRouter};

struct Kafka {
    bootstrap: String,
    publisher: KafkaPublisher,
}

impl Kafka {
    fn new() -> Self {
        let bootstrap = support::shared_bootstrap_servers();
        let publisher =
            KafkaPublisher::new(&KafkaConfig::new(&bootstrap), TopicRouter::new()).unwrap();
        Self {
            bootstrap,
            publisher,
        }
    }
}

impl BusFixture for Kafka {
    type Publisher = KafkaPublisher;
    type Consumer = KafkaConsumer;

    fn publisher(&self) -> &KafkaPublisher {
        &self.publisher
    }

    async fn topic(&self, prefix: &str) -> String {
        let topic = support::unique(prefix);
        support::create_topic(&self.bootstrap, &topic, 4).await;
        support::create_topic(&self.bootstrap, &self.dead_letter_topic(&topic), 1).await;
        topic
    }

    async fn consumer(&self, group: &str, topics: &[&str]) -> KafkaConsumer {
        support::consumer(&self.bootstrap, group, topics)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once() {
    bus_contract::at_least_once(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order() {
    bus_contract::per_key_order(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_redelivers_in_place() {
    bus_contract::retry_redelivers_in_place(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_split_partitions() {
    bus_contract::group_members_split_partitions(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_retries_in_place() {
    bus_contract::loop_retries_in_place(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_dead_letters_after_the_attempts() {
    bus_contract::loop_dead_letters_after_the_attempts(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_pauses_the_partition_by_policy() {
    bus_contract::loop_pauses_the_partition_by_policy(&Kafka::new()).await;
}
