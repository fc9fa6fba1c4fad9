//! The projection daemon on PostgreSQL: catch-up then live, exactly once across aborts and
//! killed connections, failover between daemons, rebuilds, poison events, inline projections.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod projection_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use es_core::{
    AppendRequest, CheckpointStore, EventStore, ExpectedVersion, StreamId, TransactionalStore,
};
use es_postgres::{
    PgConfig, PgEventStore, PgProjectionTx, PoisonPolicy, ProjectionDaemon, ProjectionOptions,
    ProjectionState, project_inline,
};
use projection_support::{
    Tally, append_round_robin, applied, counts, eventually, fast_options, tally_event,
};

const WITHIN: Duration = Duration::from_secs(20);

fn daemon(store: &PgEventStore, tally: Tally, options: ProjectionOptions) -> ProjectionDaemon {
    ProjectionDaemon::new(store)
        .with_options(fast_options())
        .unwrap()
        .register(tally, options)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catches_up_from_the_start_then_follows_and_serves_read_your_writes() {
    let store = common::fresh_store().await;
    append_round_robin(&store, "before", 3, 30).await;
    let daemon = daemon(
        &store,
        Tally::new("tally"),
        ProjectionOptions::default().batch_size(7),
    );
    daemon.start().unwrap();
    let last = append_round_robin(&store, "after", 2, 10).await;
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 1).await, (40, 40, 40));

    let status = daemon.projection_status("tally").await.unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    assert_eq!(status.active_version, 1);
    assert_eq!(status.lag_events, 0);
    assert_eq!(status.applied_events, 40);
    assert!(status.leading_here);
    assert!(status.checkpoint.unwrap() >= last);
    daemon.shutdown().await;

    // Graceful shutdown released the lock: another daemon leads at once and applies nothing twice.
    let next = self::daemon(&store, Tally::new("tally"), ProjectionOptions::default());
    next.start().unwrap();
    let last = append_round_robin(&store, "later", 1, 5).await;
    assert!(next.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 1).await, (45, 45, 45));
    next.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_times_out_when_nothing_runs() {
    let store = common::fresh_store().await;
    let daemon = daemon(&store, Tally::new("tally"), ProjectionOptions::default());
    let last = append_round_robin(&store, "s", 1, 1).await;
    assert!(
        !daemon
            .wait_for("tally", last, Duration::from_millis(200))
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_daemon_restarts_with_every_event_applied_exactly_once() {
    let store = common::fresh_store().await;
    let last = append_round_robin(&store, "s", 5, 400).await;
    let slow = Tally::new("tally").slow(Duration::from_millis(2), None);
    let options = ProjectionOptions::default().batch_size(50);
    for round in 0..3 {
        let daemon = daemon(&store, slow.clone(), options);
        daemon.start().unwrap();
        tokio::time::sleep(Duration::from_millis(150 + 70 * round)).await;
        daemon.abort();
    }
    let (rows, distinct, _) = applied(&store, "tally", 1).await;
    assert_eq!(rows, distinct, "nothing applied twice before the restart");
    assert!(rows < 400, "the aborts happened mid-way ({rows} applied)");

    let daemon = daemon(&store, Tally::new("tally"), options);
    daemon.start().unwrap();
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 1).await, (400, 400, 400));
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_batch_connection_rolls_back_and_the_daemon_recovers() {
    let store = common::fresh_store().await;
    let last = append_round_robin(&store, "s", 4, 300).await;
    let slow = Tally::new("tally").slow(Duration::from_millis(3), None);
    let daemon = daemon(&store, slow, ProjectionOptions::default().batch_size(60));
    daemon.start().unwrap();
    let admin = common::raw_client().await;
    let applied_table = format!("%{}%tally_applied_v1%", store.schema());
    let mut killed = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE state IN ('idle in transaction', 'active') AND query LIKE $1 AND pid <> pg_backend_pid()",
                &[&applied_table],
            )
            .await
            .unwrap();
        killed += rows.len();
    }
    assert!(killed > 0, "a batch connection was terminated mid-batch");
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 1).await, (300, 300, 300));
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_daemon_takes_over_when_the_leaders_connection_dies() {
    let store = common::fresh_store().await;
    let config = PgConfig::new(common::database_url())
        .schema(store.schema())
        .pool_size(10);
    let other_store = PgEventStore::connect(&config).unwrap();
    let make = |store: &PgEventStore| {
        ProjectionDaemon::new(store)
            .with_options(fast_options())
            .unwrap()
            .register(
                Tally::new("ta"),
                ProjectionOptions::default().batch_size(20),
            )
            .unwrap()
            .register(
                Tally::new("tb"),
                ProjectionOptions::default().batch_size(20),
            )
            .unwrap()
    };
    let (one, two) = (make(&store), make(&other_store));
    one.start().unwrap();
    two.start().unwrap();

    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut last = es_core::Position::START;
            for chunk in 0..30 {
                last = append_round_robin(&store, &format!("w{chunk}"), 2, 10).await;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            last
        }
    });

    let mut names = vec!["ta", "tb"];
    while let Some(&name) = names.first() {
        // Exactly one leads each projection.
        let deadline = tokio::time::Instant::now() + WITHIN;
        let (leader_pid, first_led_by_one) = loop {
            let a = one.projection_status(name).await.ok();
            let b = two.projection_status(name).await.ok();
            let by_one = a.as_ref().is_some_and(|s| s.leading_here);
            let leaders: Vec<_> = [a, b]
                .into_iter()
                .flatten()
                .filter(|s| s.leading_here)
                .collect();
            assert!(leaders.len() <= 1, "two leaders for {name}");
            if let Some(pid) = leaders.first().and_then(|s| s.leader_backend_pid) {
                break (pid, by_one);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a leader is elected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let admin = common::raw_client().await;
        let terminated: bool = admin
            .query_one("SELECT pg_terminate_backend($1)", &[&leader_pid])
            .await
            .unwrap()
            .get(0);
        if !terminated {
            // Leadership moved between the status read and the kill: elect and kill again.
            continue;
        }
        eventually(WITHIN, "the other daemon takes over", || async {
            let standby = if first_led_by_one { &two } else { &one };
            standby.projection_status(name).await.unwrap().leading_here
        })
        .await;
        names.remove(0);
    }

    let last = writer.await.unwrap();
    for name in ["ta", "tb"] {
        assert!(one.wait_for(name, last, WITHIN).await.unwrap());
        assert_eq!(applied(&store, name, 1).await, (300, 300, 300), "{name}");
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_checkpoint_moves_under_its_lock_reloads_it_and_keeps_leading() {
    let store = common::fresh_store().await;
    let slow = Tally::new("tally").slow(Duration::from_millis(400), None);
    let daemon = daemon(&store, slow, ProjectionOptions::default().batch_size(10));
    daemon.start().unwrap();
    let first = append_round_robin(&store, "first", 1, 1).await;
    assert!(daemon.wait_for("tally", first, WITHIN).await.unwrap());
    let leader = daemon.projection_status("tally").await.unwrap();
    assert!(leader.leading_here);

    // Two events on two streams in one transaction: the daemon reads them as one batch and
    // sleeps before each.
    let (stream, other) = (
        StreamId::new("moved-a").unwrap(),
        StreamId::new("moved-b").unwrap(),
    );
    let mut tx = store.transaction([&stream, &other]).await.unwrap();
    let mut positions = Vec::new();
    for id in [&stream, &other] {
        let outcome = tx
            .append(
                AppendRequest::new(id.clone(), ExpectedVersion::NoStream)
                    .with_stream_type("tally")
                    .with_events([tally_event(1, false)]),
            )
            .await
            .unwrap();
        positions.push(outcome.positions[0]);
    }
    tx.commit().await.unwrap();
    let (one, two) = (positions[0], positions[1]);

    // Once the batch has written its first event and sleeps before the second, the previous
    // leader's last commit lands and moves the checkpoint past the first event (its rows for
    // that event are left out: they would wait on the daemon's uncommitted ones).
    let schema = store.schema().to_owned();
    let admin = common::raw_client().await;
    let pattern = format!("%{schema}%tally_applied_v1%");
    eventually(WITHIN, "the batch is mid-way", || async {
        !admin
            .query(
                "SELECT 1 FROM pg_stat_activity
                 WHERE state = 'idle in transaction' AND query LIKE $1 AND pid <> pg_backend_pid()",
                &[&pattern],
            )
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let checkpoints = store.checkpoints();
    let at = checkpoints.load_checkpoint("tally@v1").await.unwrap();
    assert!(at.is_some_and(|at| at >= first && at < one), "{at:?}");
    let mut tx = store.begin(&[]).await.unwrap();
    checkpoints
        .compare_and_set_in(&mut tx, "tally@v1", at, one)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The daemon's batch fails its compare-and-set and rolls back; still holding the lock, it
    // reloads the checkpoint and applies only the second event, on the same lock connection.
    assert!(daemon.wait_for("tally", two, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 1).await, (2, 2, 2));
    let streams: Vec<String> = counts(&store, "tally", 1)
        .await
        .into_iter()
        .map(|(stream, _, _)| stream)
        .collect();
    assert_eq!(streams, ["first-0", "moved-b"]);
    let after = daemon.projection_status("tally").await.unwrap();
    assert!(after.leading_here);
    assert_eq!(after.leader_backend_pid, leader.leader_backend_pid);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_fills_a_new_version_while_the_old_one_serves_then_switches() {
    let store = common::fresh_store().await;
    let last = append_round_robin(&store, "s", 7, 300).await;
    let tally = Tally::new("tally").slow(Duration::from_millis(4), Some(2));
    let daemon = daemon(&store, tally, ProjectionOptions::default().batch_size(25));
    daemon.start().unwrap();
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    let live = counts(&store, "tally", 1).await;

    assert_eq!(daemon.rebuild("tally").await.unwrap(), 2);
    assert!(matches!(
        daemon.rebuild("tally").await,
        Err(es_postgres::DaemonError::AlreadyRebuilding { version: 2, .. })
    ));
    eventually(WITHIN, "the rebuild is under way", || async {
        let status = daemon.projection_status("tally").await.unwrap();
        status.rebuild.as_ref().is_some_and(|r| r.done > 0)
    })
    .await;
    let status = daemon.projection_status("tally").await.unwrap();
    assert_eq!(status.state, ProjectionState::Rebuilding);
    assert_eq!(status.active_version, 1, "the old version serves");
    let progress = status.rebuild.unwrap();
    assert_eq!((progress.version, progress.total), (2, 300));
    assert_eq!(counts(&store, "tally", 1).await, live);

    // New events during the rebuild reach both versions.
    let last = append_round_robin(&store, "late", 2, 10).await;
    eventually(WITHIN, "the rebuild switches", || async {
        daemon.active_version("tally").await.unwrap() == 2
    })
    .await;
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    let status = daemon.projection_status("tally").await.unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    assert!(status.rebuild.is_none());
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    eventually(
        WITHIN,
        "the old version also has the late events",
        || async { applied(&store, "tally", 1).await.0 == 310 },
    )
    .await;
    assert_eq!(applied(&store, "tally", 2).await, (310, 310, 310));
    assert_eq!(
        counts(&store, "tally", 2).await,
        counts(&store, "tally", 1).await,
        "the rebuilt read model equals the live one"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_projection_version_is_rebuilt_automatically() {
    let store = common::fresh_store().await;
    let last = append_round_robin(&store, "s", 3, 60).await;
    let first = daemon(&store, Tally::new("tally"), ProjectionOptions::default());
    first.start().unwrap();
    assert!(first.wait_for("tally", last, WITHIN).await.unwrap());
    first.shutdown().await;

    let mut v2 = Tally::new("tally");
    v2.version = 2;
    let second = daemon(&store, v2, ProjectionOptions::default());
    second.start().unwrap();
    eventually(WITHIN, "version 2 becomes active", || async {
        second.active_version("tally").await.unwrap() == 2
    })
    .await;
    assert!(second.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 2).await, (60, 60, 60));
    assert_eq!(
        counts(&store, "tally", 2).await,
        counts(&store, "tally", 1).await
    );
    second.shutdown().await;
}

async fn append_with_poison(store: &PgEventStore) -> (StreamId, es_core::Position) {
    let stream = common::stream("poison");
    let events = (1..=10).map(|n| tally_event(n, n == 5));
    let outcome = store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_stream_type("tally")
                .with_events(events),
        )
        .await
        .unwrap();
    (stream, outcome.positions[9])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_pauses_and_resume_continues_from_it_after_a_fix() {
    let store = common::fresh_store().await;
    let (stream, last) = append_with_poison(&store).await;
    let tally = Tally::new("tally");
    let poisoned = tally.poisoned.clone();
    let options = ProjectionOptions::default().retries(2, Duration::from_millis(10));
    let daemon = daemon(&store, tally, options);
    daemon.start().unwrap();
    eventually(WITHIN, "the projection pauses", || async {
        daemon
            .projection_status("tally")
            .await
            .is_ok_and(|s| s.state == ProjectionState::Paused)
    })
    .await;
    let status = daemon.projection_status("tally").await.unwrap();
    assert_eq!(status.paused_at, Some((stream.to_string(), 5)));
    assert!(status.error.unwrap().contains("cannot tally event 5"));
    assert!(status.paused_reason.unwrap().contains("failed 2 times"));
    assert_eq!(
        applied(&store, "tally", 1).await,
        (4, 4, 4),
        "stopped before the poison"
    );
    assert!(
        !daemon
            .wait_for("tally", last, Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert_eq!(applied(&store, "tally", 1).await.0, 4, "and stays stopped");

    poisoned.store(false, Ordering::SeqCst);
    daemon.resume("tally").await.unwrap();
    assert!(matches!(
        daemon.resume("tally").await,
        Err(es_postgres::DaemonError::NotPaused(_))
    ));
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 1).await, (10, 10, 10));
    assert_eq!(
        counts(&store, "tally", 1).await[0].2,
        55,
        "the poison event counted once"
    );
    assert!(daemon.dead_letters("tally").await.unwrap().is_empty());
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_poison_event_is_recorded_and_the_projection_continues() {
    let store = common::fresh_store().await;
    let (stream, last) = append_with_poison(&store).await;
    let options = ProjectionOptions::default()
        .retries(2, Duration::from_millis(10))
        .on_poison(PoisonPolicy::Skip);
    let daemon = daemon(&store, Tally::new("tally"), options);
    daemon.start().unwrap();
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());
    assert_eq!(applied(&store, "tally", 1).await, (9, 9, 9));
    let dead = daemon.dead_letters("tally").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].stream_id.as_str(), dead[0].stream_version),
        (stream.as_str(), 5)
    );
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].error.contains("cannot tally event 5"));
    let status = daemon.projection_status("tally").await.unwrap();
    assert_eq!(status.state, ProjectionState::Running);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_projection_commits_with_the_append_or_not_at_all() {
    let store = common::fresh_store().await;
    let tally = Tally::new("inline");
    let stream = common::stream("inline");
    {
        let mut tx = PgProjectionTx::new(store.begin(&[]).await.unwrap(), 1);
        es_core::Projection::prepare(&tally, &mut tx).await.unwrap();
        tx.into_transaction().commit().await.unwrap();
    }
    let request = AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
        .with_stream_type("tally")
        .with_events([tally_event(3, false), tally_event(4, false)]);
    let mut tx = PgProjectionTx::new(store.transaction([&stream]).await.unwrap(), 1);
    project_inline(&mut tx, &tally, request.clone())
        .await
        .unwrap();
    tx.into_transaction().rollback().await.unwrap();
    assert_eq!(applied(&store, "inline", 1).await.0, 0);

    let mut tx = PgProjectionTx::new(store.transaction([&stream]).await.unwrap(), 1);
    project_inline(&mut tx, &tally, request.clone())
        .await
        .unwrap();
    tx.into_transaction().commit().await.unwrap();
    assert_eq!(
        counts(&store, "inline", 1).await,
        vec![(stream.to_string(), 2, 7)]
    );

    // An idempotent retry applies nothing.
    let mut tx = PgProjectionTx::new(store.transaction([&stream]).await.unwrap(), 1);
    project_inline(&mut tx, &tally, request).await.unwrap();
    tx.into_transaction().commit().await.unwrap();
    assert_eq!(applied(&store, "inline", 1).await, (2, 2, 2));
}

/// The checkpoint row of `name`'s version 1 as stored: position and when it was written.
async fn stored_checkpoint(store: &PgEventStore, name: &str) -> (i64, i64, String) {
    let row = common::raw_client()
        .await
        .query_one(
            &format!(
                "SELECT transaction_id::bigint, sequence, updated_at::text FROM \"{}\".checkpoints WHERE name = $1",
                store.schema()
            ),
            &[&format!("{name}@v1")],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_rest_the_daemon_writes_nothing_yet_goes_past_skipped_events() {
    let store = common::fresh_store().await;
    let daemon = daemon(&store, Tally::new("tally"), ProjectionOptions::default());
    daemon.start().unwrap();
    let last = append_round_robin(&store, "s", 1, 3).await;
    assert!(daemon.wait_for("tally", last, WITHIN).await.unwrap());

    // An event the filter skips: the leader knows at once it went past it.
    let noted = es_core::NewEvent {
        event_type: "Noted".to_owned(),
        ..tally_event(0, false)
    };
    let skipped = store
        .append(
            AppendRequest::new(common::stream("other"), ExpectedVersion::NoStream)
                .with_events([noted]),
        )
        .await
        .unwrap()
        .positions[0];
    assert!(daemon.wait_for("tally", skipped, WITHIN).await.unwrap());

    // At rest (the daemon polls every 100 ms at most here), the checkpoint is not written:
    // each write would move the log's fence, which the next poll would pass and write again.
    let before = stored_checkpoint(&store, "tally").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored_checkpoint(&store, "tally").await, before);
    assert_eq!(applied(&store, "tally", 1).await, (3, 3, 3));
    daemon.shutdown().await;
}
