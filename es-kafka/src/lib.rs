#![doc = include_str!("../README.md")]

mod admin;
mod config;
mod consumer;
pub mod dead_letter;
pub mod envelope;
mod publisher;
mod replay;
mod router;
mod runner;

pub use admin::{TopicError, ensure_topics};
pub use config::{
    BOOTSTRAP_SERVERS_ENV, ConfigError, KafkaConfig, Role, SETTINGS_ENV_PREFIX, bootstrap_servers,
};
pub use consumer::{
    GROUP_ID_ENV, KafkaConsumer, KafkaConsumerBuilder, LagProbe, LagReporter, PartitionLag,
    TOPIC_PREFIX_ENV,
};
pub use dead_letter::DeadLetterRoute;
pub use envelope::{EncodedMessage, EnvelopeError};
pub use publisher::KafkaPublisher;
pub use replay::{ReplayError, ReplayFilter, ReplayReport, replay_dead_letters};
pub use router::TopicRouter;
pub use runner::{
    ConsumerRunner, FailurePolicy, MemoryPausedPartitions, PausedPartition, PausedPartitions,
    PausedPartitionsError, RunnerError, RunnerOptions, RunnerStats, run_consumer,
};
