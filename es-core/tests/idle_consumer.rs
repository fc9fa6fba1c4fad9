//! A consumer loop that stops fetching at rest: paused after `idle_after` without a message,
//! woken at once by the signal its producers fire, and looking again after `idle_recheck`
//! for producers that do not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use es_core::consume::{ConsumerLoop, RunnerOptions};
use es_core::memory::MemoryBus;
use es_core::{AppendSignal, Delivery, HandlerError, MessageHandler, OutboxMessage, Publisher};
use tokio::time::Instant;

struct Ignore;

#[async_trait::async_trait]
impl MessageHandler for Ignore {
    async fn handle(&self, _delivery: &Delivery) -> Result<(), HandlerError> {
        Ok(())
    }
}

fn ping() -> OutboxMessage {
    OutboxMessage::new("Ping", "k", serde_json::json!({})).with_topic("pings")
}

/// How long until `stats` shows `count` handled messages; `None` after `within`.
async fn handled_within(
    stats: &es_core::consume::RunnerStats,
    count: u64,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while stats.handled() < count {
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Some(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_loop_stops_fetching_and_wakes_on_its_signal_or_after_the_recheck() {
    let bus = MemoryBus::new();
    bus.publish(&[ping()]).await.unwrap();
    let published = AppendSignal::new();
    let options =
        RunnerOptions::default().idle(Duration::from_millis(30), Duration::from_millis(600));
    let mut pings = ConsumerLoop::new(bus.consumer("pinger", &["pings"]), Ignore)
        .with_options(options)
        .with_wake(published.clone());
    let stats = pings.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        pings
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    assert!(
        handled_within(&stats, 1, Duration::from_secs(5))
            .await
            .is_some()
    );

    // Idle: a message published without the signal waits for the recheck.
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.publish(&[ping()]).await.unwrap();
    let late = handled_within(&stats, 2, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        late >= Duration::from_millis(300),
        "handled after {late:?}: not paused"
    );

    // Idle again: with the signal, at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.publish(&[ping()]).await.unwrap();
    published.notify();
    let woken = handled_within(&stats, 3, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        woken < Duration::from_millis(200),
        "handled after {woken:?}"
    );

    // Busy: messages one after another within `idle_after` never wait.
    for n in 4..=10 {
        bus.publish(&[ping()]).await.unwrap();
        let busy = handled_within(&stats, n, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            busy < Duration::from_millis(200),
            "message {n} after {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
