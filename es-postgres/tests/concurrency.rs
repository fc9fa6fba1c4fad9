//! Many writers racing on one stream with optimistic concurrency: no lost or doubled event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use es_core::{
    AppendRequest, AppendStatus, EventId, EventStore, ExpectedVersion, StoreError, StreamRead,
    Version,
};
use futures::TryStreamExt;

const WRITERS: usize = 8;
const PER_WRITER: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_racing_on_one_stream_write_every_event_once() {
    let store = common::fresh_store().await;
    let stream = common::stream("race");

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let mut written: Vec<EventId> = Vec::with_capacity(PER_WRITER);
            let mut conflicts = 0_u64;
            while written.len() < PER_WRITER {
                let current = store.stream_version(&stream).await.expect("stream version");
                let event = common::event((writer * PER_WRITER + written.len()) as i64);
                let id = event.event_id();
                let request =
                    AppendRequest::new(stream.clone(), ExpectedVersion::from_current(current))
                        .with_stream_type("race")
                        .with_events([event]);
                match store.append(request).await {
                    Ok(outcome) => {
                        assert_eq!(outcome.status, AppendStatus::Appended);
                        assert_eq!(outcome.last_version, current.next(), "writer {writer}");
                        assert_eq!(outcome.positions.len(), 1);
                        written.push(id);
                    }
                    Err(StoreError::Conflict(conflict)) => {
                        assert!(
                            conflict.actual > current,
                            "a conflict reports a newer version: {conflict}"
                        );
                        conflicts += 1;
                    }
                    Err(other) => panic!("writer {writer}: unexpected error {other}"),
                }
            }
            (written, conflicts)
        }));
    }
    let mut by_writer = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (written, seen) = tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .expect("the writers finish within 5 minutes")
            .expect("a writer panicked");
        conflicts += seen;
        by_writer.push(written);
    }
    assert!(
        conflicts > 0,
        "8 writers on one stream must have conflicted"
    );

    let total = WRITERS * PER_WRITER;
    assert_eq!(
        store.stream_version(&stream).await.unwrap().get(),
        total as u64
    );
    let events = common::read_stream(&store, &stream).await;
    assert_eq!(events.len(), total, "exactly {total} events");
    let versions: Vec<u64> = events.iter().map(|e| e.version.get()).collect();
    assert_eq!(
        versions,
        (1..=total as u64).collect::<Vec<_>>(),
        "versions 1..={total}, no gap, no duplicate"
    );
    let stored: HashSet<EventId> = events.iter().map(|e| e.event_id()).collect();
    assert_eq!(stored.len(), total, "no event id stored twice");
    for (writer, written) in by_writer.iter().enumerate() {
        assert_eq!(written.len(), PER_WRITER);
        let missing = written.iter().filter(|id| !stored.contains(id)).count();
        assert_eq!(missing, 0, "writer {writer} lost {missing} of its events");
    }

    // Reads page through the long stream both ways, from any version, with limits.
    let versions_of = |read: StreamRead| {
        let store = &store;
        let stream = &stream;
        async move {
            store
                .read_stream(stream, read)
                .map_ok(|e| e.version.get())
                .try_collect::<Vec<u64>>()
                .await
                .unwrap()
        }
    };
    let total = total as u64;
    assert_eq!(
        versions_of(StreamRead::backward()).await,
        (1..=total).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        versions_of(StreamRead::backward().from(Version::new(2500)).limit(1500)).await,
        (1001..=2500).rev().collect::<Vec<_>>()
    );
    assert_eq!(
        versions_of(StreamRead::forward().from(Version::new(1500)).limit(1200)).await,
        (1500..=2699).collect::<Vec<_>>()
    );
    assert_eq!(
        versions_of(StreamRead::forward().from(Version::new(3001))).await,
        (3001..=total).collect::<Vec<_>>()
    );
    let total = total as usize;

    // The global log holds the same events, in version order.
    let (log, _) = common::read_log_until(&store, total, 1000, Duration::from_secs(60)).await;
    assert_eq!(log.len(), total);
    common::assert_streams_in_version_order(&log);
    let logged: HashSet<EventId> = log.iter().map(|e| e.event_id()).collect();
    assert_eq!(logged, stored);
}
