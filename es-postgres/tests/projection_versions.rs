//! Blue/green rebuilds in a fleet running two code versions: a node applies only the versions
//! its code owns, so older code never writes into the tables of a newer version.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod projection_support;

use std::time::Duration;

use es_postgres::{PgEventStore, ProjectionDaemon, ProjectionOptions};
use projection_support::{Tally, append_round_robin, applied, eventually, fast_options};

const WITHIN: Duration = Duration::from_secs(20);

fn daemon(store: &PgEventStore, code_version: u32) -> ProjectionDaemon {
    let mut tally = Tally::new("tally");
    tally.version = code_version;
    ProjectionDaemon::new(store)
        .with_options(fast_options())
        .unwrap()
        .register(tally, ProjectionOptions::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_code_never_applies_to_the_version_newer_code_built() {
    let store = common::fresh_store().await;
    let old = daemon(&store, 1);
    old.start().unwrap();
    let last = append_round_robin(&store, "first", 2, 10).await;
    assert!(old.wait_for("tally", last, WITHIN).await.unwrap());
    old.shutdown().await;
    assert_eq!(applied(&store, "tally", 1).await.0, 10);

    // The new code declares version 2: it rebuilds into it and switches.
    let new = daemon(&store, 2);
    new.start().unwrap();
    eventually(WITHIN, "version 2 active and caught up", || async {
        new.active_version("tally").await.unwrap() == 2 && applied(&store, "tally", 2).await.0 == 10
    })
    .await;
    new.shutdown().await;

    // An old node still in the fleet leads alone while events arrive: it applies nothing, to
    // neither version.
    let old = daemon(&store, 1);
    old.start().unwrap();
    let last = append_round_robin(&store, "during", 2, 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        applied(&store, "tally", 2).await.0,
        10,
        "old code wrote into version 2"
    );
    assert_eq!(
        applied(&store, "tally", 1).await.0,
        10,
        "old code revived version 1"
    );
    let status = old.projection_status("tally").await.unwrap();
    assert_eq!(status.active_version, 2);

    // A node with the new code takes the projection over and applies what arrived.
    let new = daemon(&store, 2);
    new.start().unwrap();
    assert!(new.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 2).await, (15, 15, 15));
    new.shutdown().await;
    old.shutdown().await;
}
