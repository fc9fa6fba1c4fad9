//! The consumer loop as a runtime service.

use crate::error::BoxError;
use crate::messaging::{Consumer, MessageHandler};
use crate::paused::PausedPartitions;
use crate::runtime::{Service, ServiceContext};

use super::ConsumerLoop;

/// A consumer loop runs as a [`Service`] named after its consumer group: it handles messages
/// until the shutdown, then commits what was handled; its counts are reported as the status
/// detail. Run again after a failure, it goes on with the same group membership.
#[async_trait::async_trait]
impl<C, H, P> Service for ConsumerLoop<C, H, P>
where
    C: Consumer + 'static,
    H: MessageHandler + 'static,
    P: PausedPartitions + 'static,
{
    fn name(&self) -> &str {
        self.consumer.group_id()
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        let stats = self.stats();
        let report = context.clone();
        let reporting = async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                report.set_detail(Some(format!(
                    "handled {}, retried {}, dead-lettered {}",
                    stats.handled(),
                    stats.retried(),
                    stats.dead_lettered()
                )));
            }
        };
        tokio::select! {
            ran = ConsumerLoop::run(self, context.shutdown().wait()) => ran.map_err(BoxError::from),
            () = reporting => Ok(()),
        }
    }
}
