//! The outbox's read side on PostgreSQL: gap-safe batches under concurrent writers, retention.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use es_core::{
    AppendRequest, EventStore, ExpectedVersion, OutboxMessage, OutboxSource, Position, Version,
};
use serde_json::json;

/// 10,000 outbox rows written by 8 concurrent writers over 100 keys are read back exactly
/// once, each key in the order it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_read_back_once_in_key_order() {
    let store = common::fresh_store().await;
    let writers: Vec<_> = (0..8_u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                // Each writer owns keys w, w+8, ...; each append writes 5 messages over 5 keys.
                let keys: Vec<String> = (0..100_u64)
                    .filter(|k| k % 8 == w)
                    .map(|k| format!("key-{k}"))
                    .collect();
                let stream = common::stream(&format!("writer-{w}"));
                let mut sequence: HashMap<String, u64> = HashMap::new();
                let mut version = 0;
                let mut written = 0;
                while written < 1250 {
                    let messages: Vec<OutboxMessage> = (0..5)
                        .map(|i| {
                            let key = keys[(written + i) % keys.len()].clone();
                            let n = sequence.entry(key.clone()).or_default();
                            *n += 1;
                            OutboxMessage::new(
                                "Counted",
                                key.clone(),
                                json!({ "key": key, "n": *n }),
                            )
                        })
                        .collect();
                    written += messages.len();
                    let expected = if version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(Version::new(version))
                    };
                    store
                        .append(
                            AppendRequest::new(stream.clone(), expected)
                                .with_events([common::event(version as i64)])
                                .with_outbox(messages),
                        )
                        .await
                        .unwrap();
                    version += 1;
                }
            })
        })
        .collect();

    // Read concurrently with the writers, in small batches, as a relay would.
    let mut read = Vec::new();
    let mut after = Position::START;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while read.len() < 10_000 {
        let batch = store.read_outbox(after, 97).await.unwrap();
        if let Some(last) = batch.messages.last() {
            assert!(last.position > after);
            after = last.position;
        }
        let empty = batch.messages.is_empty();
        read.extend(batch.messages);
        if empty {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of 10,000 messages read",
                read.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        store.read_outbox(after, 100).await.unwrap().messages.len(),
        0,
        "nothing more"
    );
    let ids: HashSet<_> = read.iter().map(|m| m.message.message_id).collect();
    assert_eq!(ids.len(), 10_000, "each message read exactly once");
    let mut last_per_key: HashMap<&str, u64> = HashMap::new();
    for stored in &read {
        let n = stored.message.payload["n"].as_u64().unwrap();
        let previous = last_per_key
            .insert(&stored.message.partition_key, n)
            .unwrap_or(0);
        assert_eq!(
            n,
            previous + 1,
            "key {} out of order",
            stored.message.partition_key
        );
    }
    assert_eq!(last_per_key.len(), 100);

    // Retention: rows at or before a checkpoint are deleted, the rest stay.
    let middle = read[4_999].position;
    assert_eq!(store.delete_outbox_up_to(middle).await.unwrap(), 5_000);
    let rest = store
        .read_outbox(Position::START, 10_000)
        .await
        .unwrap()
        .messages;
    assert_eq!(rest.len(), 5_000);
    assert_eq!(rest[0].message.message_id, read[5_000].message.message_id);
}
