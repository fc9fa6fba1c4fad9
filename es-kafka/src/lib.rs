#![doc = include_str!("../README.md")]

mod admin;
mod config;
pub mod envelope;
mod publisher;
mod router;

pub use admin::{TopicError, ensure_topics};
pub use config::{
    BOOTSTRAP_SERVERS_ENV, ConfigError, KafkaConfig, SETTINGS_ENV_PREFIX, bootstrap_servers,
};
pub use envelope::{EncodedMessage, EnvelopeError};
pub use publisher::KafkaPublisher;
pub use router::TopicRouter;
