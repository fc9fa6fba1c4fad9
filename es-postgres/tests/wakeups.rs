//! Wake-ups across processes: two stores on one schema stand for two processes (each has
//! its own in-process signal); with `PgWakeups` running for both, a commit through one wakes a
//! relay waiting on the other at once, although that relay polls only every minute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::relay::{Relay, RelayOptions};
use es_core::{
    AppendRequest, EventStore, ExpectedVersion, OutboxMessage, PublishFailure, Publisher,
};
use es_postgres::{PgCheckpointStore, PgConfig, PgEventStore, PgWakeups};
use serde_json::json;
use tokio::time::Instant;

/// Records how many messages it was given.
#[derive(Default)]
struct Recorder {
    published: Mutex<usize>,
}

#[async_trait::async_trait]
impl Publisher for Recorder {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        *self.published.lock().unwrap() += messages.len();
        Ok(())
    }
}

impl Recorder {
    fn count(&self) -> usize {
        *self.published.lock().unwrap()
    }
}

fn start(wakeups: PgWakeups, stopped: &tokio::sync::watch::Receiver<bool>) {
    let mut stopped = stopped.clone();
    tokio::spawn(async move {
        wakeups
            .run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    });
}

/// Another process's store on `here`'s schema (a store of its own, so a signal of its own).
fn same_schema(url: &str, here: &PgEventStore) -> PgEventStore {
    PgEventStore::connect(&PgConfig::new(url).schema(here.schema()).pool_size(4)).unwrap()
}

/// A relay on `store` that only its signal (or a poll a minute later) moves, publishing to a
/// recorder, until `stopped`.
fn slow_relay(
    name: &str,
    store: &PgEventStore,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> (
    Arc<Recorder>,
    tokio::task::JoinHandle<Result<(), es_core::relay::RelayError>>,
) {
    let recorder = Arc::new(Recorder::default());
    let publisher: Arc<dyn Publisher> = recorder.clone();
    let mut relay = Relay::new(
        name,
        store.clone(),
        PgCheckpointStore::new(store),
        publisher,
    )
    .with_options(
        RelayOptions::default().poll_interval(Duration::from_secs(60), Duration::from_secs(60)),
    )
    .with_signal(store.append_signal().clone());
    let mut stopped = stopped.clone();
    let relaying = tokio::spawn(async move {
        relay
            .run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    });
    (recorder, relaying)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_one_process_wakes_the_relay_of_another_at_once() {
    let url = common::database_url();
    let here = common::fresh_store().await;
    let there = same_schema(&url, &here);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    start(PgWakeups::new(&url, &here).unwrap(), &stopped);
    start(PgWakeups::new(&url, &there).unwrap(), &stopped);

    // The relay of the other process: only its signal (or a poll a minute later) moves it.
    let (recorder, relaying) = slow_relay("woken", &there, &stopped);
    // Both listen (each fires its signal once when it starts listening).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let stream = common::stream("woken");
    for n in 1..=5_usize {
        let message = OutboxMessage::new("Woken", "k", json!({ "n": n })).with_topic("t");
        let request =
            AppendRequest::new(stream.clone(), ExpectedVersion::Any).with_outbox(vec![message]);
        let started = Instant::now();
        here.append(request).await.unwrap();
        while recorder.count() < n {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "message {n} not relayed by the other process after {:?}",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(here.append_signal().local_commits(), 5);
    assert_eq!(
        there.append_signal().local_commits(),
        0,
        "a wake-up from elsewhere counts as no commit here"
    );

    // Quiet: no notification goes back and forth between the two.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut here_signal = here.append_signal().waiter();
    let mut there_signal = there.append_signal().waiter();
    here_signal.borrow_and_update();
    there_signal.borrow_and_update();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !here_signal.has_changed().unwrap(),
        "an echo woke this side"
    );
    assert!(
        !there_signal.has_changed().unwrap(),
        "an echo woke that side"
    );

    stop.send(true).unwrap();
    relaying.await.unwrap().unwrap();
}

/// A notification sent while the other process was not listening is lost; listening again
/// after the connection dropped fires the signal once, so nothing waits for the slow poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_lost_its_connection_looks_again_when_it_is_back() {
    let url = common::database_url();
    let here = common::fresh_store().await;
    let there = same_schema(&url, &here);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wakeups = PgWakeups::new(&url, &there).unwrap();
    let channel = wakeups.channel().to_owned();
    start(PgWakeups::new(&url, &here).unwrap(), &stopped);
    start(wakeups, &stopped);
    let (recorder, relaying) = slow_relay("reconnected", &there, &stopped);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Both listening connections go; the append's notification reaches nobody.
    let admin = es_postgres::connect(&url).await.unwrap();
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1",
            &[&format!("LISTEN \"{channel}\"")],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 2, "both processes were listening");
    let message = OutboxMessage::new("Lost", "k", json!({})).with_topic("t");
    let started = Instant::now();
    here.append(
        AppendRequest::new(common::stream("lost"), ExpectedVersion::Any).with_outbox(vec![message]),
    )
    .await
    .unwrap();
    while recorder.count() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not relayed after the listener came back ({:?})",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Listening again waits a second after a loss: the notification itself was lost.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "relayed after {:?}: the notification was not lost",
        started.elapsed()
    );
    stop.send(true).unwrap();
    relaying.await.unwrap().unwrap();
}

/// Listens on `channel` from a connection of the test's own, collecting payloads.
async fn eavesdrop(url: &str, channel: &str) -> (tokio_postgres::Client, Arc<Mutex<Vec<String>>>) {
    use futures::StreamExt;
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                sink.lock().unwrap().push(n.payload().to_owned());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .unwrap();
    (client, heard)
}

async fn append_one(store: &PgEventStore) {
    let message = OutboxMessage::new("Counted", "k", json!({})).with_topic("t");
    store
        .append(
            AppendRequest::new(common::stream("counted"), ExpectedVersion::Any)
                .with_outbox(vec![message]),
        )
        .await
        .unwrap();
}

/// The single-process app pays nothing: a process alone on its schema announces itself once
/// and then sends no `NOTIFY`, whatever it commits; once another process listens, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_alone_sends_no_wake_ups() {
    let url = common::database_url();
    let here = common::fresh_store().await;
    let wakeups = PgWakeups::new(&url, &here).unwrap();
    let (_listening, heard) = eavesdrop(&url, wakeups.channel()).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    start(wakeups, &stopped);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        append_one(&here).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let heard = heard.lock().unwrap();
        assert_eq!(heard.len(), 1, "{heard:?}");
        assert!(heard[0].ends_with(":hello"), "{heard:?}");
    }

    // Another process starts listening: it announces itself, is answered, and from then on
    // commits here wake it.
    let there = same_schema(&url, &here);
    start(PgWakeups::new(&url, &there).unwrap(), &stopped);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut woken = there.append_signal().waiter();
    woken.borrow_and_update();
    append_one(&here).await;
    tokio::time::timeout(Duration::from_secs(5), woken.changed())
        .await
        .expect("the other process was woken")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let heard = heard.lock().unwrap().clone();
    let kinds: Vec<&str> = heard
        .iter()
        .map(|p| p.split_once(':').map_or("wake", |(_, kind)| kind))
        .collect();
    assert_eq!(kinds, ["hello", "hello", "here", "wake"], "{heard:?}");
    stop.send(true).unwrap();
}
