//! The projection daemon as a runtime service: run, stopped, run again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod projection_support;

use std::time::Duration;

use es_core::runtime::{Runtime, Service, ServiceContext, ServiceState, Shutdown};
use es_postgres::{ProjectionDaemon, ProjectionOptions};
use projection_support::{Tally, append_round_robin, applied, fast_options};

const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_under_the_runtime_drains_and_runs_again() {
    let store = common::fresh_store().await;
    let daemon = ProjectionDaemon::new(&store)
        .with_options(fast_options())
        .unwrap()
        .register(
            Tally::new("tally"),
            ProjectionOptions::default().batch_size(7),
        )
        .unwrap();
    let probe = daemon.clone();
    append_round_robin(&store, "before", 3, 30).await;
    let running = Runtime::new().service(daemon).start();
    let last = append_round_robin(&store, "after", 2, 10).await;
    assert!(probe.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(running.status()[0].state, ServiceState::Running);
    let report = running.shutdown().await;
    assert_eq!(
        report[0].state,
        ServiceState::Stopped,
        "drained within the deadline"
    );
    assert_eq!(applied(&store, "tally", 1).await, (40, 40, 40));

    // The same daemon runs again after it stopped, and applies nothing twice.
    let mut again = probe.clone();
    let (stop, shutdown) = Shutdown::new();
    let task = tokio::spawn(async move {
        again
            .run(ServiceContext::detached("projection-daemon", shutdown))
            .await
            .map_err(|e| e.to_string())
    });
    let last = append_round_robin(&store, "later", 1, 5).await;
    assert!(probe.wait_for("tally", last, WITHIN).await.unwrap());
    stop.trigger();
    task.await.unwrap().unwrap();
    assert_eq!(applied(&store, "tally", 1).await, (45, 45, 45));
}
