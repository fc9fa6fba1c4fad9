//! Making publishers, so a relay can replace one that failed fatally.

use std::sync::Arc;

use crate::messaging::{PublishError, Publisher};

/// Makes the publisher a [`Relay`](super::Relay) sends through; called before the first batch
/// and again after a fatal publisher error.
///
/// Any `Fn() -> Result<Arc<dyn Publisher>, PublishError>` closure is one;
/// [`Relay::new`](super::Relay::new) takes a single publisher instead, for publishers that
/// never fail fatally.
pub trait PublisherFactory: Send + Sync {
    /// A publisher ready to use.
    ///
    /// # Errors
    /// A [`PublishError`] when it cannot be made (bad configuration, for example); the relay
    /// retries after a back-off.
    fn create_publisher(&self) -> Result<Arc<dyn Publisher>, PublishError>;
}

impl<F> PublisherFactory for F
where
    F: Fn() -> Result<Arc<dyn Publisher>, PublishError> + Send + Sync,
{
    fn create_publisher(&self) -> Result<Arc<dyn Publisher>, PublishError> {
        self()
    }
}
