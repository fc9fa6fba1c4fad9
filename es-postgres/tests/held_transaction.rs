//! The global log under a transaction held open while others commit: nothing skipped, nothing
//! passed, every stream in version order. Holds a transaction for seconds, so it runs alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use es_core::{
    AppendRequest, AppendStatus, EventId, EventStore, ExpectedVersion, LogFilter, Position,
    RecordedEvent, StoreError, StreamId, Version,
};
use es_postgres::PgEventStore;
use tokio::time::Instant;

const WRITERS: usize = 8;
const STREAMS: usize = 50;
const EVENTS: usize = 1000;
const HOLD: Duration = Duration::from_secs(2);

/// One read of the reader, with whether the held transaction was surely still open throughout
/// and whether every writer had committed before it began.
struct Observation {
    while_held: bool,
    after_writers: bool,
    events: usize,
    checkpoint: Position,
    held_back: bool,
}

/// Appends `count` single-event appends round-robin over `streams` (shared with the other
/// writers), re-reading the version after a conflict; returns the ids written.
async fn write(
    store: PgEventStore,
    writer: usize,
    streams: Arc<Vec<StreamId>>,
    count: usize,
) -> Vec<EventId> {
    let mut written = Vec::with_capacity(count);
    let mut next = writer;
    while written.len() < count {
        let stream = &streams[next % streams.len()];
        let mut current = store.stream_version(stream).await.expect("version");
        loop {
            let event = common::event(written.len() as i64);
            let id = event.event_id();
            let request =
                AppendRequest::new(stream.clone(), ExpectedVersion::from_current(current))
                    .with_stream_type("held")
                    .with_events([event]);
            match store.append(request).await {
                Ok(outcome) => {
                    assert_eq!(outcome.status, AppendStatus::Appended);
                    written.push(id);
                    break;
                }
                Err(StoreError::Conflict(conflict)) => current = conflict.actual,
                Err(other) => panic!("writer {writer}: {other}"),
            }
        }
        next += 7;
    }
    written
}

/// Follows the global log from the start in batches until it has `expected` events.
async fn follow(
    store: PgEventStore,
    expected: usize,
    committing: Arc<AtomicBool>,
    writers_done: Arc<AtomicBool>,
) -> (Vec<RecordedEvent>, Vec<Observation>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events = Vec::new();
    let mut observations = Vec::new();
    let mut position = Position::START;
    while events.len() < expected {
        assert!(
            Instant::now() < deadline,
            "the reader saw {} of {expected} events within 2 minutes",
            events.len()
        );
        // Sampled before the read starts: if the commit had not begun then, the transaction was
        // open for the whole read.
        let while_held = !committing.load(Ordering::SeqCst);
        let after_writers = writers_done.load(Ordering::SeqCst);
        let batch = store
            .read_log(position, &LogFilter::all(), 100)
            .await
            .expect("read the log");
        assert!(
            batch.checkpoint >= position,
            "a checkpoint never moves back"
        );
        if let Some(last) = batch.events.last() {
            assert!(batch.checkpoint >= last.position);
        }
        observations.push(Observation {
            while_held,
            after_writers,
            events: batch.events.len(),
            checkpoint: batch.checkpoint,
            held_back: batch.held_back,
        });
        position = batch.checkpoint;
        let reached_end = batch.reached_end;
        events.extend(batch.events);
        if reached_end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    (events, observations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_held_transaction_holds_readers_back_without_loss() {
    common::alone();
    let store = common::fresh_store().await;
    let streams: Arc<Vec<StreamId>> =
        Arc::new((0..STREAMS).map(|_| common::stream("held")).collect());
    let held_stream = common::stream("held-open");

    // The held transaction appends first, so it has the oldest transaction id of the test.
    let mut held = store.transaction([&held_stream]).await.expect("begin");
    let held_event = common::event(-1);
    let held_id = held_event.event_id();
    let outcome = held
        .append(
            AppendRequest::new(held_stream.clone(), ExpectedVersion::NoStream)
                .with_stream_type("held")
                .with_events([held_event]),
        )
        .await
        .expect("append in the held transaction");
    let held_position = outcome.positions[0];
    let held_since = Instant::now();

    let committing = Arc::new(AtomicBool::new(false));
    let writers_done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(follow(
        store.clone(),
        EVENTS + 1,
        committing.clone(),
        writers_done.clone(),
    ));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            tokio::spawn(write(
                store.clone(),
                writer,
                streams.clone(),
                EVENTS / WRITERS,
            ))
        })
        .collect();
    let mut written: HashSet<EventId> = HashSet::new();
    for writer in writers {
        let ids = tokio::time::timeout(Duration::from_secs(120), writer)
            .await
            .expect("the writers finish within 2 minutes")
            .expect("a writer panicked");
        written.extend(ids);
    }
    assert_eq!(written.len(), EVENTS);
    writers_done.store(true, Ordering::SeqCst);
    let remaining = HOLD.saturating_sub(held_since.elapsed());
    tokio::time::sleep(remaining.max(Duration::from_millis(300))).await;
    assert_eq!(
        store.stream_version(&held_stream).await.unwrap(),
        Version::ZERO,
        "the held append is not visible before its commit"
    );

    committing.store(true, Ordering::SeqCst);
    held.commit().await.expect("commit the held transaction");

    let (events, observations) = tokio::time::timeout(Duration::from_secs(150), reader)
        .await
        .expect("the reader finishes")
        .expect("the reader panicked");

    // While the transaction was held, the reader did not pass it: every writer committed after
    // it took its id, so nothing was readable, and the checkpoint stayed below its event.
    let held_reads: Vec<&Observation> = observations.iter().filter(|o| o.while_held).collect();
    assert!(
        held_reads.len() >= 5,
        "the reader polled only {} times during the hold",
        held_reads.len()
    );
    for observation in &held_reads {
        assert_eq!(
            observation.events, 0,
            "the reader returned events committed after the held transaction began"
        );
        assert!(
            observation.checkpoint < held_position,
            "the reader's checkpoint {} passed the held event at {held_position}",
            observation.checkpoint
        );
    }

    // Once the writers had committed, the reader was told events were held back.
    let told: Vec<bool> = held_reads
        .iter()
        .filter(|o| o.after_writers)
        .map(|o| o.held_back)
        .collect();
    assert!(
        !told.is_empty(),
        "the reader did not poll between the writers' end and the commit"
    );
    assert!(
        told.iter().all(|&held_back| held_back),
        "a read during the hold, after the writers committed, did not report held_back"
    );

    // Afterwards it saw every committed event exactly once, each stream in version order.
    assert_eq!(events.len(), EVENTS + 1, "every committed event, once");
    let mut seen: HashMap<EventId, usize> = HashMap::new();
    for event in &events {
        *seen.entry(event.event_id()).or_default() += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "an event was read twice");
    let mut expected = written.clone();
    expected.insert(held_id);
    let seen: HashSet<EventId> = seen.into_keys().collect();
    assert_eq!(seen, expected, "the reader skipped or invented events");
    common::assert_streams_in_version_order(&events);
    let first = &events[0];
    assert_eq!(first.event_id(), held_id, "the held event sorts first");
    assert_eq!(first.position, held_position);

    let per_stream: usize = futures::future::join_all(
        streams
            .iter()
            .map(|stream| async { store.stream_version(stream).await.unwrap().get() as usize }),
    )
    .await
    .into_iter()
    .sum();
    assert_eq!(per_stream, EVENTS, "the streams' versions add up");
}
