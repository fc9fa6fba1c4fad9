//! The consumer loop as a runtime service.

use crate::error::BoxError;
use crate::messaging::{Consumer, MessageHandler};
use crate::paused::PausedPartitions;
use crate::runtime::{Service, ServiceContext};

use super::ConsumerLoop;

/// How long a consumer may go without partitions before the loop says so in the log.
const NO_ASSIGNMENT_WARNING: std::time::Duration = std::time::Duration::from_secs(10);

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

    /// Not ready until the member has partitions.
    fn ready_at_start(&self) -> bool {
        false
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        let stats = self.stats();
        let report = context.clone();
        let group = self.consumer.group_id().to_owned();
        let reporting = async move {
            let started = tokio::time::Instant::now();
            let mut warned = false;
            loop {
                // Every 10 ms until the member has partitions, so that readiness follows the
                // assignment closely; every 100 ms after.
                let assigned = stats.assigned_partitions() > 0;
                let period = if assigned { 100 } else { 10 };
                tokio::time::sleep(std::time::Duration::from_millis(period)).await;
                let assigned = stats.assigned_partitions() > 0;
                report.set_ready(assigned);
                if !assigned && !warned && started.elapsed() >= NO_ASSIGNMENT_WARNING {
                    warned = true;
                    tracing::warn!(
                        %group,
                        "no partition assigned after {NO_ASSIGNMENT_WARNING:?}: do the topics exist, and can the group join? (docs/kafka.md)"
                    );
                }
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
