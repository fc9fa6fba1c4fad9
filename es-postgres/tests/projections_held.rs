//! The projection daemon with a transaction held open while others commit: it waits, and
//! skips nothing. Runs alone (it holds the fence of the whole cluster back).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod projection_support;

use std::time::Duration;

use es_core::{AppendRequest, ExpectedVersion};
use es_postgres::{ProjectionDaemon, ProjectionOptions};
use projection_support::{Tally, append_round_robin, applied, fast_options, tally_event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_transaction_held_open_while_others_commit_is_not_skipped() {
    common::alone();
    let store = common::fresh_store().await;
    let daemon = ProjectionDaemon::new(&store)
        .with_options(fast_options())
        .unwrap()
        .register(
            Tally::new("tally"),
            ProjectionOptions::default().batch_size(5),
        )
        .unwrap();
    daemon.start().unwrap();
    let first = append_round_robin(&store, "early", 2, 10).await;
    assert!(
        daemon
            .wait_for("tally", first, Duration::from_secs(20))
            .await
            .unwrap()
    );

    let held_stream = common::stream("held");
    let mut held = store.transaction([&held_stream]).await.unwrap();
    let held_at = held
        .append(
            AppendRequest::new(held_stream.clone(), ExpectedVersion::NoStream)
                .with_stream_type("tally")
                .with_events([tally_event(100, false)]),
        )
        .await
        .unwrap()
        .positions[0];
    let last = append_round_robin(&store, "others", 3, 30).await;
    assert!(
        last.sequence() > held_at.sequence(),
        "the others got later positions"
    );
    assert!(
        !daemon
            .wait_for("tally", last, Duration::from_secs(2))
            .await
            .unwrap(),
        "the daemon waits behind the open transaction"
    );
    assert_eq!(applied(&store, "tally", 1).await.0, 10);

    held.commit().await.unwrap();
    assert!(
        daemon
            .wait_for("tally", last, Duration::from_secs(20))
            .await
            .unwrap()
    );
    assert!(
        daemon
            .wait_for("tally", held_at, Duration::from_secs(20))
            .await
            .unwrap()
    );
    assert_eq!(applied(&store, "tally", 1).await, (41, 41, 41));
    daemon.shutdown().await;
}
