//! The projection daemon as a runtime service.

use es_core::BoxError;
use es_core::runtime::{Service, ServiceContext};
use futures::future::select_all;
use tokio::sync::watch;

use super::ProjectionDaemon;
use super::runner::Runner;

/// The daemon runs as a [`Service`] named `projection-daemon`: each run spawns one task per
/// registered projection (each competing for its own projection's leadership, as
/// [`start`](ProjectionDaemon::start) does), and at the shutdown lets each finish its batch and
/// give up its leadership. A projection task that ends on its own (a panic) fails the run, so
/// the runtime restarts the daemon. Run it instead of calling `start`/`shutdown`, not as well.
#[async_trait::async_trait]
impl Service for ProjectionDaemon {
    fn name(&self) -> &str {
        "projection-daemon"
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks: Vec<_> = self
            .inner
            .projections
            .iter()
            .map(|registered| {
                let runner = Runner::new(
                    self.inner.shared.clone(),
                    registered.projection.clone(),
                    registered.options,
                    registered.live.clone(),
                    stopped.clone(),
                );
                tokio::spawn(runner.run())
            })
            .collect();
        if tasks.is_empty() {
            context.shutdown().wait().await;
            return Ok(());
        }
        let failed = tokio::select! {
            () = context.shutdown().wait() => None,
            (ended, index, rest) = select_all(tasks.iter_mut()) => {
                let _ = rest;
                let name = self.inner.projections[index].projection.name().to_owned();
                Some(match ended {
                    Err(error) => format!("projection {name} ended abnormally: {error}"),
                    Ok(()) => format!("projection {name} stopped before the shutdown"),
                })
            }
        };
        stop.send_replace(true);
        for task in tasks {
            if !task.is_finished() {
                let _ = task.await;
            }
        }
        match failed {
            Some(reason) => Err(reason.into()),
            None => Ok(()),
        }
    }
}
