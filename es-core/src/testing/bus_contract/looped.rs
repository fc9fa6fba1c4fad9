//! The consumer loop on a backend's consumer: retries, dead letters and pauses behave the
//! same on every bus.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{BusFixture, contract_message, describe, publish, recv, sequence_of, unique_name};
use crate::consume::{ConsumerLoop, FailurePolicy, RunnerOptions, RunnerStats};
use crate::memory::MemoryPausedPartitions;
use crate::messaging::{Delivery, HandlerError, MessageHandler};
use crate::paused::PausedPartitions;

/// Fails the message of sequence number `failing` transiently while `failures` lasts (for
/// ever when `None`), records every other message it handles.
struct Scripted {
    failing: u64,
    failures: Mutex<Option<u32>>,
    handled: Mutex<Vec<Delivery>>,
}

impl Scripted {
    fn new(failing: u64, failures: Option<u32>) -> Arc<Self> {
        Arc::new(Self {
            failing,
            failures: Mutex::new(failures),
            handled: Mutex::new(Vec::new()),
        })
    }

    fn handled(&self) -> Vec<Delivery> {
        self.handled.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn stop_failing(&self) {
        if let Ok(mut failures) = self.failures.lock() {
            *failures = Some(0);
        }
    }
}

#[async_trait::async_trait]
impl MessageHandler for Arc<Scripted> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if sequence_of(delivery) == self.failing {
            let mut failures = self.failures.lock().map_err(HandlerError::transient)?;
            let fail = match *failures {
                None => true,
                Some(0) => false,
                Some(ref mut left) => {
                    *left -= 1;
                    true
                }
            };
            if fail {
                return Err(HandlerError::transient("scripted failure"));
            }
        }
        self.handled
            .lock()
            .map_err(HandlerError::transient)?
            .push(delivery.clone());
        Ok(())
    }
}

fn fast(max_attempts: u32) -> RunnerOptions {
    RunnerOptions::default()
        .max_attempts(max_attempts)
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .commit_interval(Duration::from_millis(50))
}

/// Runs `run` in the background until `done` holds (or the fixture's timeout passes), then
/// stops it; returns whether `done` held.
async fn run_until<F: BusFixture>(
    fixture: &F,
    looped: ConsumerLoop<F::Consumer, Arc<Scripted>, MemoryPausedPartitions>,
    mut done: impl FnMut() -> bool + Send,
) -> (
    bool,
    ConsumerLoop<F::Consumer, Arc<Scripted>, MemoryPausedPartitions>,
) {
    let mut looped = looped;
    let deadline = tokio::time::Instant::now() + fixture.timeout();
    let mut held = false;
    let watch = async {
        while tokio::time::Instant::now() < deadline {
            if done() {
                held = true;
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if let Err(error) = looped.run(watch).await {
        panic!("the consumer loop failed: {error}");
    }
    (held, looped)
}

/// Per key, the sequence numbers handled, in order.
fn per_key(handled: &[Delivery]) -> BTreeMap<String, Vec<u64>> {
    let mut keys: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for delivery in handled {
        keys.entry(delivery.message.partition_key.clone())
            .or_default()
            .push(sequence_of(delivery));
    }
    keys
}

/// A message whose handler fails twice is retried in place and handled on its third
/// attempt, before any later message of its key; the others are handled meanwhile.
pub async fn loop_retries_in_place<F: BusFixture>(fixture: &F) {
    let topic = fixture.topic("loop-retry").await;
    let messages: Vec<_> = (0..12)
        .map(|seq| contract_message(&topic, &format!("key-{}", seq % 3), seq))
        .collect();
    publish(fixture, &messages).await;
    let handler = Scripted::new(4, Some(2));
    let consumer = fixture
        .consumer(&unique_name("loop-retry"), &[&topic])
        .await;
    let looped = ConsumerLoop::new(consumer, Arc::clone(&handler)).with_options(fast(5));
    let stats: RunnerStats = looped.stats();
    let (done, _) = run_until(fixture, looped, || handler.handled().len() == 12).await;
    assert!(
        done,
        "only {} of 12 messages handled",
        handler.handled().len()
    );
    let failing = handler
        .handled()
        .into_iter()
        .find(|d| sequence_of(d) == 4)
        .expect("message #4 handled");
    assert_eq!(
        failing.attempt,
        3,
        "handled on its third attempt: {}",
        describe(&failing)
    );
    assert_eq!((stats.retried(), stats.dead_lettered()), (2, 0));
    for (key, sequence) in per_key(&handler.handled()) {
        let mut sorted = sequence.clone();
        sorted.sort_unstable();
        assert_eq!(sequence, sorted, "key {key} handled out of order");
    }
}

/// A message that keeps failing goes to the dead-letter topic after `max_attempts`, with the
/// error and the attempts in its headers; its partition goes on, and its offset is committed.
pub async fn loop_dead_letters_after_the_attempts<F: BusFixture>(fixture: &F) {
    let topic = fixture.topic("loop-dlq").await;
    let messages: Vec<_> = (0..6)
        .map(|seq| contract_message(&topic, "one-key", seq))
        .collect();
    publish(fixture, &messages).await;
    let handler = Scripted::new(2, None);
    let group = unique_name("loop-dlq");
    let consumer = fixture.consumer(&group, &[&topic]).await;
    let looped = ConsumerLoop::new(consumer, Arc::clone(&handler)).with_options(fast(3));
    let stats = looped.stats();
    let (done, looped) = run_until(fixture, looped, || handler.handled().len() == 5).await;
    assert!(
        done,
        "only {} of 5 messages handled",
        handler.handled().len()
    );
    drop(looped);
    assert_eq!((stats.retried(), stats.dead_lettered()), (2, 1));
    let handled: Vec<u64> = handler.handled().iter().map(sequence_of).collect();
    assert_eq!(handled, [0, 1, 3, 4, 5], "the others, in order");

    let dead_letters = fixture.dead_letter_topic(&topic);
    let mut reader = fixture
        .consumer(&unique_name("loop-dlq-reader"), &[&dead_letters])
        .await;
    let dead = recv(
        fixture,
        &mut reader,
        &dead_letters,
        "reading the dead letter",
    )
    .await;
    assert_eq!(dead.message.message_id, messages[2].message_id);
    let headers = &dead.message.headers;
    assert!(
        headers
            .get("es-dlq-error")
            .is_some_and(|e| e.contains("scripted failure")),
        "the error travels with the dead letter: {headers:?}"
    );
    assert_eq!(
        headers.get("es-dlq-attempts").map(String::as_str),
        Some("3")
    );
    assert_eq!(headers.get("es-dlq-original-topic"), Some(&topic));

    // Everything, the dead-lettered message included, was committed: a new member of the
    // group receives nothing of it.
    let handler = Scripted::new(u64::MAX, None);
    let consumer = fixture.consumer(&group, &[&topic]).await;
    let looped = ConsumerLoop::new(consumer, Arc::clone(&handler)).with_options(fast(3));
    let quiet = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    let mut looped = looped;
    looped.run(quiet).await.expect("the second member's loop");
    assert!(
        handler.handled().is_empty(),
        "a new member received committed messages: {:?}",
        handler.handled().iter().map(describe).collect::<Vec<_>>()
    );
}

/// With the pause policy, a message that keeps failing holds its partition paused (recorded
/// in the paused-partitions store) while the other partitions go on; once an operator resumes
/// it, the message is tried again, and handled.
pub async fn loop_pauses_the_partition_by_policy<F: BusFixture>(fixture: &F) {
    let topic = fixture.topic("loop-pause").await;
    let messages: Vec<_> = (0..16)
        .map(|seq| contract_message(&topic, &format!("key-{}", seq % 8), seq))
        .collect();
    publish(fixture, &messages).await;
    let failing_key = messages[5].partition_key.clone();
    let handler = Scripted::new(5, None);
    let group = unique_name("loop-pause");
    let paused = MemoryPausedPartitions::new();
    let consumer = fixture.consumer(&group, &[&topic]).await;
    let looped = ConsumerLoop::new(consumer, Arc::clone(&handler))
        .with_options(
            fast(2)
                .policy(FailurePolicy::PausePartition)
                .paused_refresh(Duration::from_millis(50)),
        )
        .with_paused_store(paused.clone());
    let stats = looped.stats();

    let mut looped = looped;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = async {
        looped
            .run(async {
                let _ = stopped.await;
            })
            .await
    };
    let drive = async {
        let deadline = tokio::time::Instant::now() + fixture.timeout();
        // The failing message's partition is held while other partitions go on.
        let held = loop {
            let held = paused.list(&group).await.expect("list");
            let elsewhere = held
                .first()
                .is_some_and(|h| handler.handled().iter().any(|d| d.partition != h.partition));
            if stats.paused() == 1 && elsewhere {
                break held;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no partition held paused while others go on ({} paused, {} handled)",
                stats.paused(),
                handler.handled().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(held.len(), 1, "one paused partition recorded: {held:?}");
        assert_eq!(held[0].message_id, messages[5].message_id);
        assert!(
            !handler.handled().iter().any(|d| sequence_of(d) == 5),
            "the failing message was not handled"
        );

        handler.stop_failing();
        paused
            .resume(&group, &held[0].topic, held[0].partition)
            .await
            .expect("resume");
        while handler.handled().len() < messages.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} handled after the resume",
                handler.handled().len(),
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
    };
    let (ran, ()) = tokio::join!(run, drive);
    ran.expect("the loop");
    let keyed = per_key(&handler.handled());
    assert_eq!(
        keyed.get(&failing_key),
        Some(&vec![5, 13]),
        "the failing key's messages, once each and in order: {keyed:?}"
    );
    for (key, sequence) in keyed {
        let mut sorted = sequence.clone();
        sorted.sort_unstable();
        assert_eq!(sequence, sorted, "key {key} handled out of order");
    }
}
