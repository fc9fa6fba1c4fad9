//! The relay as a runtime service.

use crate::checkpoint::CheckpointStore;
use crate::error::BoxError;
use crate::outbox::OutboxSource;
use crate::relay::Relay;
use crate::runtime::{Service, ServiceContext};

/// A relay runs as a [`Service`] named after its checkpoint: each run starts from the stored
/// checkpoint (another relay may have moved it during a previous leadership term) and stops at
/// the shutdown; its backlog is reported as the status detail. Gate it with
/// [`LeaderOnly`](crate::runtime::LeaderOnly): one relay per outbox.
#[async_trait::async_trait]
impl<S, C> Service for Relay<S, C>
where
    S: OutboxSource + 'static,
    C: CheckpointStore + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        self.checkpoint = None;
        self.read_ahead = None;
        let stats = self.stats.clone();
        let report = context.clone();
        let shutdown = context.shutdown();
        let reporting = async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let snapshot = stats.snapshot();
                report.set_detail(Some(format!(
                    "published {}, backlog {}",
                    snapshot.published, snapshot.backlog
                )));
            }
        };
        tokio::select! {
            ran = Relay::run(self, shutdown.wait()) => ran.map_err(BoxError::from),
            () = reporting => Ok(()),
        }
    }
}
