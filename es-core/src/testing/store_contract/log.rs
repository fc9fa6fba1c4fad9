//! The global log: order, resumption, filters and subscriptions.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;

use super::{ContractStore, events, stream};
use crate::event::RecordedEvent;
use crate::ids::{ExpectedVersion, Position, StreamId, Version};
use crate::store::{AppendRequest, EventStore, LogFilter, SubscriptionItem};

async fn append_interleaved<S: EventStore>(store: &S, streams: &[(StreamId, &str)], rounds: i64) {
    for round in 0..rounds {
        for (id, stream_type) in streams {
            let expected = if round == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(Version::new(round as u64 * 2))
            };
            store
                .append(
                    AppendRequest::new(id.clone(), expected)
                        .with_stream_type(*stream_type)
                        .with_events(events(round * 2..round * 2 + 2)),
                )
                .await
                .expect("append");
        }
    }
}

async fn read_all<S: EventStore>(
    store: &S,
    after: Position,
    filter: &LogFilter,
    batch: usize,
) -> (Vec<RecordedEvent>, Position) {
    let mut events = Vec::new();
    let mut position = after;
    loop {
        let read = store
            .read_log(position, filter, batch)
            .await
            .expect("read log");
        assert!(read.checkpoint >= position, "a checkpoint never moves back");
        if let Some(last) = read.events.last() {
            assert!(
                read.checkpoint >= last.position,
                "the checkpoint covers the batch"
            );
        }
        events.extend(read.events);
        position = read.checkpoint;
        if read.reached_end {
            return (events, position);
        }
    }
}

fn assert_in_stream_order(events: &[RecordedEvent]) {
    let mut last: HashMap<&StreamId, u64> = HashMap::new();
    for event in events {
        let previous = last
            .insert(&event.stream_id, event.version.get())
            .unwrap_or(0);
        assert_eq!(
            event.version.get(),
            previous + 1,
            "stream {} out of order in the log",
            event.stream_id
        );
    }
    assert!(
        events.windows(2).all(|w| w[0].position < w[1].position),
        "log positions rise"
    );
}

/// The global log returns every event once, in order, each stream in version order; reading
/// resumes exactly from a checkpoint; a filtered reader skips other events but its checkpoint
/// still reaches the end.
pub async fn global_log_order_and_resumption<S: ContractStore>(store: S) {
    let streams = [
        (stream("log-a"), "alpha"),
        (stream("log-b"), "beta"),
        (stream("log-c"), "alpha"),
    ];
    append_interleaved(&store, &streams, 4).await;
    let ours = |events: Vec<RecordedEvent>| -> Vec<RecordedEvent> {
        events
            .into_iter()
            .filter(|e| streams.iter().any(|(id, _)| *id == e.stream_id))
            .collect()
    };
    // Readers see an append once every transaction that started before it has finished, so
    // wait until all of ours are visible (other work on the database may delay them).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let all = loop {
        let (all, _) = read_all(&store, Position::START, &LogFilter::all(), 3).await;
        let all = ours(all);
        if all.len() >= 24 || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(all.len(), 24);
    let end = all[23].position;
    assert_in_stream_order(&all);
    let (first_half, _) = read_all(&store, Position::START, &LogFilter::all(), 1000).await;
    let first_half = ours(first_half);
    assert_eq!(first_half, all, "batch size does not change what is read");

    let resume_at = all[11].position;
    let (rest, _) = read_all(&store, resume_at, &LogFilter::all(), 5).await;
    let rest = ours(rest);
    assert_eq!(
        rest,
        all[12..].to_vec(),
        "resuming from a checkpoint reads exactly the rest"
    );

    let alpha = LogFilter::all().stream_types(["alpha"]);
    let (filtered, filtered_end) = read_all(&store, Position::START, &alpha, 2).await;
    let filtered = ours(filtered);
    assert_eq!(filtered.len(), 16);
    assert!(filtered.iter().all(|e| e.stream_id != streams[1].0));
    assert!(
        filtered_end >= end,
        "a filtered reader's checkpoint passes the events it skipped"
    );
    let none = LogFilter::all().event_types(["NoSuchEvent"]);
    let (nothing, nothing_end) = read_all(&store, Position::START, &none, 2).await;
    assert!(ours(nothing).is_empty());
    assert!(
        nothing_end >= end,
        "a reader that matched nothing still advances"
    );
}

/// A subscription yields every existing event, reports being caught up, then yields new
/// events as they commit: no gap, no duplicate.
pub async fn subscription_catch_up_then_live<S: ContractStore>(store: S) {
    let id = stream("sub");
    store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events(events(0..10)),
        )
        .await
        .expect("append");
    let mut subscription = store.subscribe(Position::START, LogFilter::all());
    let mut seen = Vec::new();
    let mut caught_up = false;
    let deadline = Duration::from_secs(20);
    while !(caught_up && seen.len() >= 10) {
        match tokio::time::timeout(deadline, subscription.next()).await {
            Ok(Some(Ok(SubscriptionItem::Event(event)))) => {
                if event.stream_id == id {
                    seen.push(event.version.get());
                }
            }
            Ok(Some(Ok(SubscriptionItem::Checkpoint { caught_up: c, .. }))) => caught_up = c,
            other => panic!("subscription failed during catch-up: {other:?}"),
        }
    }
    assert_eq!(seen, (1..=10).collect::<Vec<_>>());

    let writer = {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move {
            for n in 0..10 {
                store
                    .append(
                        AppendRequest::new(
                            id.clone(),
                            ExpectedVersion::Exact(Version::new(10 + n)),
                        )
                        .with_events(events(10 + n as i64..11 + n as i64)),
                    )
                    .await
                    .expect("live append");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut last_checkpoint = Position::START;
    while seen.len() < 20 {
        match tokio::time::timeout(deadline, subscription.next()).await {
            Ok(Some(Ok(SubscriptionItem::Event(event)))) => {
                assert!(
                    event.position > last_checkpoint,
                    "an event behind a checkpoint was yielded"
                );
                if event.stream_id == id {
                    seen.push(event.version.get());
                }
            }
            Ok(Some(Ok(SubscriptionItem::Checkpoint { position, .. }))) => {
                assert!(position >= last_checkpoint);
                last_checkpoint = position;
            }
            other => panic!("subscription failed while live: {other:?}"),
        }
    }
    writer.await.expect("writer");
    assert_eq!(
        seen,
        (1..=20).collect::<Vec<_>>(),
        "live events in order, none missed or repeated"
    );
}
