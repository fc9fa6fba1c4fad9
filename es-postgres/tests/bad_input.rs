//! Bad input is refused with a typed error, writes nothing, and leaves the store usable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::{
    AppendRequest, EventStore, ExpectedVersion, OutboxMessage, StoreError, StreamId, Version,
};
use es_postgres::PgEventStore;
use serde_json::json;

const LIMIT: usize = 1024;

fn big_event() -> es_core::NewEvent {
    es_core::NewEvent {
        data: json!({ "blob": "x".repeat(2 * LIMIT) }),
        ..common::event(0)
    }
}

async fn assert_nothing_written(store: &PgEventStore, stream: &StreamId) {
    assert_eq!(store.stream_version(stream).await.unwrap(), Version::ZERO);
    assert!(common::read_stream(store, stream).await.is_empty());
    let client = common::raw_client().await;
    for table in ["events", "outbox", "streams"] {
        let rows: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM \"{}\".{table}", store.schema()),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "a refused append wrote to {table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_is_refused_naming_the_stream_and_sizes() {
    let store = common::fresh_store_with(|config| config.max_event_bytes(LIMIT)).await;
    let stream = common::stream("big");
    let big = big_event();
    let big_id = big.event_id();

    // A small event before the big one, and an outbox message: nothing of it is written.
    let error = store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([common::event(1), big])
                .with_outbox([OutboxMessage::new("Big", stream.as_str(), json!({}))]),
        )
        .await
        .expect_err("an event over the limit");
    match &error {
        StoreError::PayloadTooLarge {
            stream: refused,
            event_id,
            size,
            limit,
        } => {
            assert_eq!(refused, &stream);
            assert_eq!(*event_id, big_id);
            assert_eq!(*limit, LIMIT);
            assert!(*size >= 2 * LIMIT, "size {size}");
            let message = error.to_string();
            for part in [stream.as_str(), &size.to_string(), &LIMIT.to_string()] {
                assert!(message.contains(part), "{message:?} lacks {part:?}");
            }
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_nothing_written(&store, &stream).await;

    // Metadata counts towards the limit.
    let mut heavy = common::event(2);
    heavy
        .metadata
        .headers
        .insert("h".to_owned(), "y".repeat(2 * LIMIT));
    let error = store
        .append(AppendRequest::new(stream.clone(), ExpectedVersion::Any).with_events([heavy]))
        .await
        .expect_err("metadata over the limit");
    assert!(
        matches!(error, StoreError::PayloadTooLarge { .. }),
        "{error:?}"
    );
    assert_nothing_written(&store, &stream).await;

    let outcome = store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([common::event(3)]),
        )
        .await
        .expect("a small event after the refusal");
    assert_eq!(outcome.last_version, Version::new(1));
    assert_eq!(common::read_stream(&store, &stream).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_in_a_transaction_leaves_it_usable() {
    let store = common::fresh_store_with(|config| config.max_event_bytes(LIMIT)).await;
    let stream = common::stream("big-tx");
    let mut transaction = store.transaction([&stream]).await.unwrap();
    let error = transaction
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([big_event()]),
        )
        .await
        .expect_err("an event over the limit");
    assert!(
        matches!(error, StoreError::PayloadTooLarge { .. }),
        "{error:?}"
    );
    transaction
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([common::event(1)]),
        )
        .await
        .expect("the transaction goes on");
    transaction.commit().await.unwrap();
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        Version::new(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_write_nothing() {
    let store = common::fresh_store().await;
    let stream = common::stream("malformed");

    let error = store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::Exact(Version::ZERO))
                .with_events([common::event(1)]),
        )
        .await
        .expect_err("Exact(0)");
    assert!(
        matches!(error, StoreError::InvalidExpectedVersion(ref s) if s == &stream),
        "{error:?}"
    );

    let event = common::event(1);
    let error = store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([event.clone(), event.clone()]),
        )
        .await
        .expect_err("one id twice in one append");
    assert!(
        matches!(error, StoreError::DuplicateEventId { event_id, .. } if event_id == event.event_id()),
        "{error:?}"
    );
    assert_nothing_written(&store, &stream).await;

    // Names PostgreSQL must store verbatim.
    let odd = StreamId::new("it's \"quoted\"; DROP TABLE events; -- ünïcødé %_\\").unwrap();
    let outcome = store
        .append(
            AppendRequest::new(odd.clone(), ExpectedVersion::NoStream)
                .with_stream_type("type with 'quotes'")
                .with_events([common::event(1)]),
        )
        .await
        .expect("an odd stream id");
    assert_eq!(outcome.last_version, Version::new(1));
    let events = common::read_stream(&store, &odd).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stream_id, odd);
}

/// Requests PostgreSQL cannot store: a NUL character in text or JSON (`text` and `jsonb` refuse
/// U+0000), or a schema version beyond `integer`.
fn unstorable_requests(stream: &StreamId) -> Vec<(&'static str, AppendRequest)> {
    let base = || AppendRequest::new(stream.clone(), ExpectedVersion::NoStream);
    let with_data = es_core::NewEvent {
        data: json!({ "name": "nul\u{0}inside" }),
        ..common::event(1)
    };
    let mut with_header = common::event(1);
    with_header
        .metadata
        .headers
        .insert("h".to_owned(), "nul\u{0}inside".to_owned());
    let with_type = es_core::NewEvent {
        event_type: "Nul\u{0}Type".to_owned(),
        ..common::event(1)
    };
    vec![
        ("a NUL in event data", base().with_events([with_data])),
        ("a NUL in metadata", base().with_events([with_header])),
        ("a NUL in an event type", base().with_events([with_type])),
        (
            "a NUL in a stream type",
            base()
                .with_stream_type("nul\u{0}type")
                .with_events([common::event(1)]),
        ),
        (
            "a NUL in an outbox partition key",
            base().with_outbox([OutboxMessage::new("T", "key\u{0}", json!({}))]),
        ),
        (
            "an outbox schema version beyond integer",
            base().with_outbox([
                OutboxMessage::new("T", "key", json!({})).with_schema_version(u32::MAX)
            ]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_input_is_refused_and_writes_nothing() {
    let store = common::fresh_store().await;
    let stream = common::stream("unstorable");
    for (what, request) in unstorable_requests(&stream) {
        let result = store.append(request).await;
        assert!(result.is_err(), "{what} was accepted: {result:?}");
    }
    assert_nothing_written(&store, &stream).await;
    store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([common::event(1)]),
        )
        .await
        .expect("a valid append afterwards");
}

/// Bad input is detected before it reaches the server, so it cannot abort the caller's
/// transaction (whose reads and writes would then all be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_input_in_a_transaction_is_refused_without_aborting_it() {
    let store = common::fresh_store().await;
    let stream = common::stream("unstorable-tx");
    let mut aborted = Vec::new();
    for (what, request) in unstorable_requests(&stream) {
        let mut transaction = store.transaction([&stream]).await.unwrap();
        let result = transaction.append(request).await;
        assert!(result.is_err(), "{what} was accepted: {result:?}");
        let after = transaction
            .append(
                AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                    .with_events([common::event(1)]),
            )
            .await;
        if let Err(error) = after {
            aborted.push(format!("{what} (the next append failed: {error})"));
        }
        transaction.rollback().await.unwrap();
    }
    assert!(
        aborted.is_empty(),
        "bad input aborted the caller's transaction instead of being refused before any SQL:\n{}",
        aborted.join("\n")
    );
}

/// A stream id the store accepts must come back verbatim (es-core: "backends store it
/// verbatim"); one PostgreSQL cannot store must be refused when it is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_id_with_a_nul_is_refused_up_front_or_stored_verbatim() {
    let store = common::fresh_store().await;
    let stream = match StreamId::new("nul\u{0}inside") {
        Ok(stream) => stream,
        // Refused when it is made: no such id can reach the store.
        Err(_) => return,
    };
    let outcome = store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                .with_events([common::event(1)]),
        )
        .await;
    assert!(
        outcome.is_ok(),
        "StreamId::new accepted an id the PostgreSQL store cannot store: {outcome:?}"
    );
    let events = common::read_stream(&store, &stream).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stream_id, stream);
}

/// A schema version PostgreSQL's `integer` cannot hold is refused, never silently changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_schema_version_beyond_integer_is_refused_not_truncated() {
    let store = common::fresh_store().await;
    let stream = common::stream("schema-version");
    let event = es_core::NewEvent {
        schema_version: u32::MAX,
        ..common::event(1)
    };
    let outcome = store
        .append(AppendRequest::new(stream.clone(), ExpectedVersion::NoStream).with_events([event]))
        .await;
    if outcome.is_ok() {
        let stored = common::read_stream(&store, &stream).await;
        assert_eq!(
            stored[0].schema_version,
            u32::MAX,
            "schema version {} was stored as {}",
            u32::MAX,
            stored[0].schema_version
        );
    } else {
        assert_nothing_written(&store, &stream).await;
    }
}
