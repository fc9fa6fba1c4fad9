//! Creating topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;
use crate::config::Role;

/// Failure to create topics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The admin client could not be made or the request failed (broker unreachable, ...).
    #[error("the topic request failed: {0}")]
    Client(#[source] KafkaError),
    /// The broker refused to create a topic.
    #[error("the broker refused to create topic {topic}: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
}

/// Creates each `(name, partitions)` topic that does not exist yet, with
/// [`KafkaConfig::replication_factor`] replicas; existing topics are left as they are.
///
/// ```no_run
/// use es_kafka::{KafkaConfig, ensure_topics};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// ensure_topics(&KafkaConfig::from_env()?, &[("shop.order", 12), ("payments", 6)]).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`TopicError::Client`] when the broker cannot be reached, [`TopicError::Refused`] when it
/// refuses a topic (other than because it exists).
pub async fn ensure_topics(config: &KafkaConfig, topics: &[(&str, i32)]) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config_for(Role::Admin)
        .create()
        .map_err(TopicError::Client)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|&(name, partitions)| {
            NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(TopicError::Client)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(())
}
