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
        let reporting = self.report_lag(&context);
        let failed = tokio::select! {
            () = context.shutdown().wait() => None,
            () = reporting => None,
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

/// How often the daemon service records its projections' lag.
const LAG_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl ProjectionDaemon {
    /// Records each projection's lag in events (`es_projection_lag_events`) and reports it as
    /// the service's detail, every few seconds; never returns.
    async fn report_lag(&self, context: &ServiceContext) {
        loop {
            if let Some(detail) = self.record_lag().await {
                context.set_detail(Some(detail));
            }
            tokio::time::sleep(LAG_REPORT_INTERVAL).await;
        }
    }

    /// Records each projection's lag every few seconds until `stopped` says so (for a daemon
    /// run by [`start`](Self::start)).
    pub(crate) async fn record_lag_until(&self, mut stopped: watch::Receiver<bool>) {
        let recording = async {
            loop {
                self.record_lag().await;
                tokio::time::sleep(LAG_REPORT_INTERVAL).await;
            }
        };
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => {}
            () = recording => {}
        }
    }

    /// Records each projection's lag in events (`es_projection_lag_events`) once; the
    /// lags, for a status detail.
    async fn record_lag(&self) -> Option<String> {
        match self.status().await {
            Ok(statuses) => {
                let mut detail = Vec::with_capacity(statuses.len());
                for status in &statuses {
                    es_core::telemetry::metrics().projection_lag.record(
                        status.lag_events,
                        &[es_core::telemetry::label("projection", status.name.clone())],
                    );
                    detail.push(format!("{} lag {}", status.name, status.lag_events));
                }
                Some(detail.join(", "))
            }
            Err(error) => {
                tracing::debug!(%error, "projection lag not measured");
                None
            }
        }
    }
}
