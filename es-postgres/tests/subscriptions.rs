//! Subscriptions on PostgreSQL: catch-up then live, and nothing skipped past a held transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use es_core::{
    AppendRequest, EventId, EventStore, ExpectedVersion, LogFilter, Position, SubscriptionItem,
    Version,
};
use futures::StreamExt;

/// A transaction appends and stays open for 2 s while 8 writers commit 400 events; a live
/// subscription yields every event exactly once, including the held one after it commits, and
/// each stream in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_subscription_skips_nothing_past_a_held_transaction() {
    common::alone();
    let store = common::fresh_store().await;
    let mut subscription = store.subscribe(Position::START, LogFilter::all());

    let held_stream = common::stream("held");
    let held_event = common::event(-1);
    let held_id = held_event.event_id();
    let mut held = store.transaction([&held_stream]).await.unwrap();
    held.append(
        AppendRequest::new(held_stream.clone(), ExpectedVersion::NoStream)
            .with_events([held_event]),
    )
    .await
    .unwrap();

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for s in 0..5 {
                    let stream = common::stream(&format!("w{w}-s{s}"));
                    for n in 0..10_u64 {
                        let event = common::event(n as i64);
                        ids.push(event.event_id());
                        let expected = if n == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(Version::new(n))
                        };
                        store
                            .append(
                                AppendRequest::new(stream.clone(), expected).with_events([event]),
                            )
                            .await
                            .unwrap();
                    }
                }
                ids
            })
        })
        .collect();
    let mut expected: HashSet<EventId> = HashSet::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }

    // While the transaction is open, the subscription must not pass it: none of the 400
    // committed events (all later than the held transaction's id) may appear yet.
    let mut seen = Vec::new();
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < quiet_until {
        match tokio::time::timeout_at(quiet_until, subscription.next()).await {
            Ok(Some(Ok(SubscriptionItem::Event(event)))) => seen.push(event),
            Ok(Some(Ok(SubscriptionItem::Checkpoint { .. }))) => {}
            Ok(other) => panic!("subscription failed: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(
        seen.is_empty(),
        "the subscription passed an open transaction: {} events",
        seen.len()
    );
    held.commit().await.unwrap();
    expected.insert(held_id);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < expected.len() {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(Ok(SubscriptionItem::Event(event)))) => seen.push(event),
            Ok(Some(Ok(SubscriptionItem::Checkpoint { .. }))) => {}
            other => panic!(
                "subscription stalled after {} of {} events: {other:?}",
                seen.len(),
                expected.len()
            ),
        }
    }
    let ids: Vec<EventId> = seen.iter().map(|e| e.event_id()).collect();
    let unique: HashSet<EventId> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "no event yielded twice");
    assert_eq!(
        unique, expected,
        "every committed event yielded, none skipped"
    );
    assert_eq!(
        seen[0].event_id(),
        held_id,
        "the held event sorts first: its transaction began first"
    );
    common::assert_streams_in_version_order(&seen);
}

/// A subscription resumed from a checkpoint yields exactly the events after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_a_checkpoint() {
    let store = common::fresh_store().await;
    let stream = common::stream("resume");
    store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events((0..5).map(common::event)),
        )
        .await
        .unwrap();
    let (first, checkpoint) = common::read_log_until(&store, 5, 100, Duration::from_secs(20)).await;
    assert_eq!(first.len(), 5);
    store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::Exact(Version::new(5)))
                .with_events((5..8).map(common::event)),
        )
        .await
        .unwrap();
    let mut subscription = store.subscribe(checkpoint, LogFilter::all());
    let mut versions = Vec::new();
    while versions.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(20), subscription.next()).await {
            Ok(Some(Ok(SubscriptionItem::Event(event)))) => versions.push(event.version.get()),
            Ok(Some(Ok(SubscriptionItem::Checkpoint { .. }))) => {}
            other => panic!("subscription failed: {other:?}"),
        }
    }
    assert_eq!(versions, vec![6, 7, 8]);
}
