//! Appends: optimistic concurrency, expected versions, idempotence, stream reads.

use futures::TryStreamExt;
use futures::future::join_all;

use super::{ContractStore, event, events, stream};
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::ids::{ExpectedVersion, Position, StreamId, Version};
use crate::outbox::OutboxMessage;
use crate::store::{AppendRequest, AppendStatus, EventStore, LogFilter, StreamRead};

async fn read<S: EventStore>(store: &S, stream: &StreamId, read: StreamRead) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, read)
        .try_collect()
        .await
        .expect("stream read")
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.get()).collect()
}

/// Eight concurrent appends at the same expected version: exactly one wins, the others get a
/// `Conflict` carrying the actual version.
pub async fn concurrent_appends_have_one_winner<S: ContractStore>(store: S) {
    let id = stream("race");
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events(events(0..1)))
        .await
        .expect("first append");
    let attempts = (0..8).map(|n| {
        let request = AppendRequest::new(id.clone(), ExpectedVersion::Exact(Version::new(1)))
            .with_events(events(n * 10..n * 10 + 2));
        store.append(request)
    });
    let results = join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        winners, 1,
        "exactly one concurrent append must win: {results:?}"
    );
    for result in &results {
        if let Err(error) = result {
            let conflict = error
                .as_conflict()
                .unwrap_or_else(|| panic!("expected a conflict, got {error}"));
            assert_eq!(conflict.stream, id);
            assert_eq!(conflict.expected, ExpectedVersion::Exact(Version::new(1)));
            assert_eq!(conflict.actual, Version::new(3));
        }
    }
    assert_eq!(
        versions(&read(&store, &id, StreamRead::forward()).await),
        vec![1, 2, 3]
    );
}

/// Every `ExpectedVersion` case, on a missing and on an existing stream.
pub async fn expected_version_cases<S: ContractStore>(store: S) {
    let id = stream("expect");
    let append = |expected, amount| {
        store.append(AppendRequest::new(id.clone(), expected).with_events([event(amount)]))
    };
    let conflict_actual = |result: Result<_, StoreError>| match result {
        Err(StoreError::Conflict(conflict)) => conflict.actual,
        other => panic!("expected a conflict, got {other:?}"),
    };
    assert_eq!(
        conflict_actual(append(ExpectedVersion::StreamExists, 1).await),
        Version::ZERO
    );
    assert_eq!(
        conflict_actual(append(ExpectedVersion::Exact(Version::new(1)), 1).await),
        Version::ZERO
    );
    let first = append(ExpectedVersion::NoStream, 1)
        .await
        .expect("NoStream on a new stream");
    assert_eq!(first.last_version, Version::new(1));
    assert_eq!(
        conflict_actual(append(ExpectedVersion::NoStream, 2).await),
        Version::new(1)
    );
    append(ExpectedVersion::StreamExists, 2)
        .await
        .expect("StreamExists on an existing stream");
    append(ExpectedVersion::Exact(Version::new(2)), 3)
        .await
        .expect("Exact at the current version");
    assert_eq!(
        conflict_actual(append(ExpectedVersion::Exact(Version::new(2)), 4).await),
        Version::new(3)
    );
    let any = append(ExpectedVersion::Any, 4).await.expect("Any");
    assert_eq!(any.last_version, Version::new(4));
    let fresh = stream("expect-any");
    let outcome = store
        .append(AppendRequest::new(fresh.clone(), ExpectedVersion::Any).with_events([event(1)]))
        .await
        .expect("Any on a new stream");
    assert_eq!(outcome.last_version, Version::FIRST);
    match append(ExpectedVersion::Exact(Version::ZERO), 5).await {
        Err(StoreError::InvalidExpectedVersion(stream)) => assert_eq!(stream, id),
        other => panic!("Exact(0) must be refused, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::new(4)
    );
}

/// Streams longer than nine events keep numeric version order, forward and backward, with
/// start bounds and limits.
pub async fn long_streams_read_in_order<S: ContractStore>(store: S) {
    let id = stream("long");
    let mut expected = ExpectedVersion::NoStream;
    for batch in [0..1, 1..9, 9..10, 10..25] {
        let outcome = store
            .append(AppendRequest::new(id.clone(), expected).with_events(events(batch)))
            .await
            .expect("append");
        expected = ExpectedVersion::Exact(outcome.last_version);
    }
    let all = read(&store, &id, StreamRead::forward()).await;
    assert_eq!(versions(&all), (1..=25).collect::<Vec<_>>());
    let amounts: Vec<i64> = all
        .iter()
        .map(|e| e.data["amount"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(amounts, (0..25).collect::<Vec<_>>());
    let backward = read(&store, &id, StreamRead::backward()).await;
    assert_eq!(versions(&backward), (1..=25).rev().collect::<Vec<_>>());
    let from_ten = read(
        &store,
        &id,
        StreamRead::forward().from(Version::new(10)).limit(5),
    )
    .await;
    assert_eq!(versions(&from_ten), vec![10, 11, 12, 13, 14]);
    let back_from_twelve = read(
        &store,
        &id,
        StreamRead::backward().from(Version::new(12)).limit(3),
    )
    .await;
    assert_eq!(versions(&back_from_twelve), vec![12, 11, 10]);
    let positions: Vec<Position> = all.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions rise with versions"
    );
    assert!(
        read(&store, &stream("missing"), StreamRead::forward())
            .await
            .is_empty()
    );
    assert_eq!(
        store
            .stream_version(&stream("missing"))
            .await
            .expect("version"),
        Version::ZERO
    );
}

/// Re-appending the same event ids at the same versions returns the original positions and
/// writes nothing; reusing ids in another way is refused.
pub async fn idempotent_reappend<S: ContractStore>(store: S) {
    let id = stream("idem");
    let batch = events(0..3);
    let request =
        AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events(batch.clone());
    let first = store.append(request.clone()).await.expect("first append");
    assert_eq!(first.status, AppendStatus::Appended);
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
        let mut retry = request.clone();
        retry.expected = expected;
        let again = store.append(retry).await.expect("idempotent retry");
        assert_eq!(again.status, AppendStatus::AlreadyAppended);
        assert_eq!(again.positions, first.positions);
        assert_eq!(again.last_version, Version::new(3));
    }
    let next = events(3..5);
    let second =
        AppendRequest::new(id.clone(), ExpectedVersion::Exact(Version::new(3))).with_events(next);
    let appended = store.append(second.clone()).await.expect("second append");
    let retried = store
        .append(second)
        .await
        .expect("retry of the second append");
    assert_eq!(retried.status, AppendStatus::AlreadyAppended);
    assert_eq!(retried.positions, appended.positions);
    assert_eq!(
        versions(&read(&store, &id, StreamRead::forward()).await),
        vec![1, 2, 3, 4, 5]
    );

    let elsewhere =
        AppendRequest::new(stream("idem-other"), ExpectedVersion::Any).with_events(batch.clone());
    assert!(
        matches!(
            store.append(elsewhere).await,
            Err(StoreError::DuplicateEventId { .. })
        ),
        "the same ids in another stream must be refused"
    );
    let partial = AppendRequest::new(id.clone(), ExpectedVersion::Any)
        .with_events([batch[2].clone(), event(99)]);
    assert!(
        matches!(
            store.append(partial).await,
            Err(StoreError::DuplicateEventId { .. })
        ),
        "a partial overlap must be refused"
    );
    let repeated = AppendRequest::new(stream("idem-twice"), ExpectedVersion::Any)
        .with_events([batch[0].clone(), batch[0].clone()]);
    assert!(matches!(
        store.append(repeated).await,
        Err(StoreError::DuplicateEventId { .. })
    ));
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::new(5)
    );
}

/// A write is visible to the next read of the stream and of its version, and reaches the
/// global log (at once, or once transactions still running elsewhere have finished).
pub async fn read_your_writes<S: ContractStore>(store: S) {
    let id = stream("ryw");
    let outcome = store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events(events(0..2)))
        .await
        .expect("append");
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::new(2)
    );
    let recorded = read(&store, &id, StreamRead::forward()).await;
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].position, outcome.positions[0]);
    assert_eq!(recorded[1].position, outcome.positions[1]);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut found = Vec::new();
    let mut after = Position::START;
    while found.len() < 2 {
        let batch = store
            .read_log(after, &LogFilter::all(), 100)
            .await
            .expect("log");
        found.extend(batch.events.into_iter().filter(|e| e.stream_id == id));
        after = batch.checkpoint;
        if batch.reached_end && found.len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the global log never showed the append"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let positions: Vec<Position> = found.iter().map(|e| e.position).collect();
    assert_eq!(
        positions, outcome.positions,
        "the log shows the append at the positions it returned"
    );
}

/// A refused append writes no events and no outbox messages; an accepted one writes both.
pub async fn rejected_appends_write_nothing<S: ContractStore>(store: S) {
    let id = stream("atomic");
    let message = OutboxMessage::new("TallyChanged", id.as_str(), serde_json::json!({"n": 1}));
    store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::NoStream)
                .with_events([event(1)])
                .with_outbox([message.clone()]),
        )
        .await
        .expect("append with outbox");
    let refused = AppendRequest::new(id.clone(), ExpectedVersion::NoStream)
        .with_events([event(2)])
        .with_outbox([OutboxMessage::new(
            "TallyChanged",
            id.as_str(),
            serde_json::json!({"n": 2}),
        )]);
    assert!(store.append(refused).await.is_err());
    // The outbox is read through the same fence as the log: wait until ours is visible.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let ours = loop {
        let outbox = store
            .read_outbox(Position::START, 100_000)
            .await
            .expect("outbox")
            .messages;
        let ours: Vec<_> = outbox
            .into_iter()
            .filter(|m| m.message.partition_key == id.as_str())
            .collect();
        if !ours.is_empty() || tokio::time::Instant::now() > deadline {
            break ours;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(
        ours.len(),
        1,
        "only the accepted append's message is in the outbox"
    );
    assert_eq!(ours[0].message, message);
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::new(1)
    );
}

/// Stream ids with quotes, unicode and SQL fragments are stored and read back verbatim.
pub async fn stream_ids_round_trip<S: ContractStore>(store: S) {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    for raw in [
        format!("it's \"quoted\" {suffix}"),
        format!("ünïcødé-流-🚀-{suffix}"),
        format!("x'); DROP TABLE events; -- {suffix}"),
        format!("back\\slash%_{suffix}"),
    ] {
        let id = StreamId::new(raw.clone()).expect("valid id");
        store
            .append(
                AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events([event(1)]),
            )
            .await
            .expect("append");
        let recorded = read(&store, &id, StreamRead::forward()).await;
        assert_eq!(recorded.len(), 1, "{raw}");
        assert_eq!(recorded[0].stream_id.as_str(), raw);
    }
}
