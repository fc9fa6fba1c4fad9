//! What command handlers share: the command context of a handled message, and how their
//! failures map to the consumer's retry decisions.

use es_core::{CommandContext, Delivery, HandlerError, OutboxMessage, RepositoryError};

use crate::messages::Message;

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

/// Decodes a delivery as `T`, a permanent failure when the payload does not fit.
///
/// # Errors
/// [`HandlerError::Permanent`] for a malformed payload.
pub fn decode<T: Message>(delivery: &Delivery) -> Result<Option<T>, HandlerError> {
    crate::messages::decode::<T>(&delivery.message).map_err(|e| {
        HandlerError::permanent(format!(
            "malformed {} {}: {e}",
            delivery.message.message_type, delivery.message.message_id
        ))
    })
}

/// A repository failure seen by a message handler: conflicts and storage failures are
/// transient (the message is retried); decoding failures are permanent.
pub fn transient_unless_permanent<E: std::error::Error + 'static>(
    error: RepositoryError<E>,
) -> HandlerError {
    match error {
        RepositoryError::Decode(_) | RepositoryError::Encode(_) => {
            HandlerError::permanent(error.to_string())
        }
        other => HandlerError::transient(other.to_string()),
    }
}
