//! A consumer loop that stops fetching at rest: paused after `idle_after` without a message,
//! woken at once by the signal its producers fire, and looking again after `idle_recheck`
//! for producers that do not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use es_core::consume::{ConsumerLoop, IDLE_LOOK, RunnerOptions};
use es_core::memory::MemoryBus;
use es_core::{
    AppendSignal, Consumer, ConsumerError, Delivery, HandlerError, MessageHandler, OutboxMessage,
    Publisher,
};
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

/// A consumer that counts the times it resumed fetching after a pause, and logs when it
/// resumed (`true`) and paused (`false`).
struct Counted {
    inner: es_core::memory::MemoryConsumer,
    resumes: Arc<AtomicU64>,
    log: Arc<std::sync::Mutex<Vec<(Instant, bool)>>>,
}

#[async_trait::async_trait]
impl Consumer for Counted {
    async fn recv(&mut self) -> Result<Delivery, ConsumerError> {
        self.inner.recv().await
    }
    async fn commit(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.inner.commit(delivery).await
    }
    async fn retry(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.inner.retry(delivery).await
    }
    fn group_id(&self) -> &str {
        self.inner.group_id()
    }
    fn assignment(&self) -> Vec<(String, u32)> {
        self.inner.assignment()
    }
    fn rewind(&mut self, delivery: &Delivery, attempt: u32) -> Result<(), ConsumerError> {
        self.inner.rewind(delivery, attempt)
    }
    fn pause(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        self.log.lock().unwrap().push((Instant::now(), false));
        self.inner.pause(topic, partition)
    }
    fn resume(&mut self, topic: &str, partition: u32) -> Result<(), ConsumerError> {
        self.inner.resume(topic, partition)
    }
    fn resume_all(&mut self, partitions: &[(String, u32)]) -> Result<(), ConsumerError> {
        self.resumes.fetch_add(1, Ordering::SeqCst);
        self.log.lock().unwrap().push((Instant::now(), true));
        self.inner.resume_all(partitions)
    }
    fn store(&mut self, delivery: &Delivery) -> Result<(), ConsumerError> {
        self.inner.store(delivery)
    }
    async fn commit_stored(&mut self) -> Result<(), ConsumerError> {
        self.inner.commit_stored().await
    }
    async fn dead_letter(
        &mut self,
        delivery: &Delivery,
        reason: &str,
        attempts: u32,
    ) -> Result<(), ConsumerError> {
        self.inner.dead_letter(delivery, reason, attempts).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_only_looks_briefly_before_going_idle_again() {
    let bus = MemoryBus::new();
    bus.publish(&[ping()]).await.unwrap();
    let resumes = Arc::new(AtomicU64::new(0));
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let consumer = Counted {
        inner: bus.consumer("looker", &["pings"]),
        resumes: resumes.clone(),
        log: log.clone(),
    };
    // Idle after 1.5 s; a recheck every 300 ms. The first look fetches for the whole
    // `idle_after` (the partitions that delivered nothing have no fetch position yet); then a
    // cycle lasts 0.5 s with a look of IDLE_LOOK, where it would last 1.8 s were every look
    // to fetch for the whole `idle_after`.
    let options =
        RunnerOptions::default().idle(Duration::from_millis(1500), Duration::from_millis(300));
    let mut looker = ConsumerLoop::new(consumer, Ignore).with_options(options);
    let stats = looker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        looker
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
    // 1.5 s active, then 6 s at rest: a long look, then about 8 of IDLE_LOOK (4 looks in
    // all were every one as long as the first).
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let looks = resumes.load(Ordering::SeqCst);
    assert!(
        (7..=14).contains(&looks),
        "{looks} rechecks in 6 s at rest (IDLE_LOOK is {IDLE_LOOK:?})"
    );
    // How long each look fetched: from a resume to the first pause after it.
    let looked: Vec<Duration> = {
        let log = log.lock().unwrap();
        log.iter()
            .enumerate()
            .filter(|(_, (_, resumed))| *resumed)
            .filter_map(|(i, (at, _))| {
                let paused = log[i..].iter().find(|(_, resumed)| !resumed)?;
                Some(paused.0 - *at)
            })
            .collect()
    };
    assert!(
        looked[0] >= Duration::from_millis(1300),
        "the first look fetched for the whole window: {looked:?}"
    );
    assert!(
        looked[1..].iter().all(|d| *d < Duration::from_millis(600)),
        "later looks fetched for IDLE_LOOK: {looked:?}"
    );

    // A message published during a pause is handled at the next look, and makes the loop
    // active again: the ones right after it never wait for a recheck.
    bus.publish(&[ping()]).await.unwrap();
    assert!(
        handled_within(&stats, 2, Duration::from_secs(5))
            .await
            .is_some()
    );
    for n in 3..=6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        bus.publish(&[ping()]).await.unwrap();
        let busy = handled_within(&stats, n, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            busy < Duration::from_millis(150),
            "message {n} after {busy:?}"
        );
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
