//! What command handlers share: the command context of a handled message, and how their
//! failures map to the consumer's retry decisions.

use es_core::{CommandContext, HandlerError, OutboxMessage, RepositoryError};

/// The context of a command handled for `message`: same correlation, caused by it, its
/// headers (a trace context) carried on.
pub fn caused_by(message: &OutboxMessage, actor: &str) -> CommandContext {
    let mut context = CommandContext::caused_by(
        message.correlation_id.unwrap_or(message.message_id),
        message.message_id,
    )
    .with_actor(actor);
    context.headers.clone_from(&message.headers);
    context
}

/// A repository failure seen by a message handler: conflicts and unlocked streams keep their
/// type (the unit of work runs again), a storage failure is transient (the message is
/// retried), anything else (an event that does not decode or encode) is permanent.
pub fn repository_failure<E: std::error::Error + Send + Sync + 'static>(
    error: RepositoryError<E>,
) -> HandlerError {
    match error {
        RepositoryError::Conflict(conflict) => HandlerError::Conflict(conflict),
        RepositoryError::Store(store) => store.into(),
        other => HandlerError::permanent(other),
    }
}
