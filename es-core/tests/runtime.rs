//! The runtime: restarts with backoff, drains on shutdown, leadership by lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::BoxError;
use es_core::memory::MemoryLeases;
use es_core::runtime::{
    LeaderOnly, Runtime, RuntimeOptions, Service, ServiceContext, ServiceState, Shutdown,
    service_fn,
};
use tokio::time::Instant;

fn fast() -> RuntimeOptions {
    RuntimeOptions::default()
        .restart_delays(Duration::from_millis(20), Duration::from_millis(80))
        .drain_timeout(Duration::from_millis(300))
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Fails its first `failures` runs (by error or by panic), recording when each run started.
struct Failing {
    failures: u32,
    panic: bool,
    starts: Arc<Mutex<Vec<Instant>>>,
}

#[async_trait::async_trait]
impl Service for Failing {
    fn name(&self) -> &str {
        "failing"
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        let run = {
            let mut starts = self.starts.lock().unwrap();
            starts.push(Instant::now());
            starts.len() as u32
        };
        if run <= self.failures {
            if self.panic {
                panic!("boom {run}");
            }
            return Err(format!("failure {run}").into());
        }
        context.shutdown().wait().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_restarts_with_a_doubling_backoff_and_shows_its_error() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let failing = Failing {
        failures: 3,
        panic: false,
        starts: starts.clone(),
    };
    let running = Runtime::new().with_options(fast()).service(failing).start();

    eventually("the first failure in the status", || {
        matches!(
            running.status()[0].state,
            ServiceState::Restarting { attempt: 1, .. }
        )
    })
    .await;
    assert_eq!(running.status()[0].last_error.as_deref(), Some("failure 1"));
    eventually("the fourth run", || starts.lock().unwrap().len() == 4).await;
    eventually("running again", || {
        running.status()[0].state == ServiceState::Running
    })
    .await;
    let status = running.status();
    assert_eq!(status[0].restarts, 3);
    assert_eq!(status[0].last_error.as_deref(), Some("failure 3"));

    let starts = starts.lock().unwrap().clone();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(20), "first delay {gaps:?}");
    assert!(
        gaps[1] >= Duration::from_millis(40),
        "second delay doubles {gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(80),
        "third delay doubles {gaps:?}"
    );
    let report = running.shutdown().await;
    assert_eq!(report[0].state, ServiceState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_service_is_restarted_and_the_panic_reported() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let failing = Failing {
        failures: 1,
        panic: true,
        starts: starts.clone(),
    };
    let running = Runtime::new().with_options(fast()).service(failing).start();
    eventually("the second run", || starts.lock().unwrap().len() == 2).await;
    let status = running.status();
    assert_eq!(status[0].restarts, 1);
    assert_eq!(status[0].last_error.as_deref(), Some("panicked: boom 1"));
    running.shutdown().await;
}

/// Takes `drain` to stop after its shutdown fires; never stops when `drain` is `None`.
struct Draining {
    name: &'static str,
    drain: Option<Duration>,
    drained: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Service for Draining {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        context.shutdown().wait().await;
        match self.drain {
            Some(drain) => {
                tokio::time::sleep(drain).await;
                self.drained.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            None => std::future::pending().await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_work_within_the_deadline_and_aborts_the_rest() {
    let drained = Arc::new(AtomicU32::new(0));
    let running = Runtime::new()
        .with_options(fast())
        .service(Draining {
            name: "slow",
            drain: Some(Duration::from_millis(100)),
            drained: drained.clone(),
        })
        .service(Draining {
            name: "stuck",
            drain: None,
            drained: drained.clone(),
        })
        .start();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let report = running.shutdown().await;
    let took = started.elapsed();
    assert_eq!(
        drained.load(Ordering::SeqCst),
        1,
        "the slow service finished its work"
    );
    assert_eq!(report[0].state, ServiceState::Stopped);
    assert_eq!(report[1].state, ServiceState::Aborted);
    assert!(
        took >= Duration::from_millis(300),
        "waited for the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "but not much longer: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_every_service_at_once_without_draining() {
    let drained = Arc::new(AtomicU32::new(0));
    let (finished, mut finishes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let running = Runtime::new()
        .with_options(fast())
        .service(Draining {
            name: "slow",
            drain: Some(Duration::from_millis(50)),
            drained: drained.clone(),
        })
        .service(service_fn("ticking", move |_| {
            let finished = finished.clone();
            async move {
                // Dropped mid-work by the abort: the sender goes with it.
                std::future::pending::<()>().await;
                let _ = finished.send(());
                Ok(())
            }
        }))
        .start();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let report = running.abort().await;
    assert!(started.elapsed() < Duration::from_millis(300));
    assert!(
        report
            .iter()
            .all(|s| s.state == ServiceState::Aborted && !s.ready),
        "{report:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        drained.load(Ordering::SeqCst),
        0,
        "nothing drained after an abort"
    );
    assert!(
        finishes.recv().await.is_none(),
        "the aborted run's future was dropped"
    );
}

/// Returns at once: done.
struct OneShot;

#[async_trait::async_trait]
impl Service for OneShot {
    fn name(&self) -> &str {
        "one-shot"
    }

    async fn run(&mut self, _: ServiceContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_service_that_returns_before_the_shutdown_is_completed_and_not_run_again() {
    let running = Runtime::new().service(OneShot).start();
    eventually("completed", || {
        running.status()[0].state == ServiceState::Completed
    })
    .await;
    assert_eq!(running.shutdown().await[0].state, ServiceState::Completed);
}

/// Counts its terms, and whether one is running.
struct Term {
    terms: Arc<AtomicU32>,
    active: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Service for Term {
    fn name(&self) -> &str {
        "relay"
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        self.terms.fetch_add(1, Ordering::SeqCst);
        self.active.fetch_add(1, Ordering::SeqCst);
        context.shutdown().wait().await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_only_service_runs_on_one_runtime_and_moves_when_the_lease_is_lost() {
    let leases = MemoryLeases::new();
    let active = Arc::new(AtomicU32::new(0));
    let (first_terms, second_terms) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let first = Runtime::new()
        .service(LeaderOnly::new(
            leases.clone(),
            Term {
                terms: first_terms.clone(),
                active: active.clone(),
            },
        ))
        .start();
    eventually("the first runtime leads", || {
        first.status()[0].state == ServiceState::Leading
    })
    .await;
    let second = Runtime::new()
        .service(LeaderOnly::new(
            leases.clone(),
            Term {
                terms: second_terms.clone(),
                active: active.clone(),
            },
        ))
        .start();
    eventually("the second waits", || {
        second.status()[0].state == ServiceState::Standby
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(active.load(Ordering::SeqCst), 1, "one term at a time");
    assert_eq!(second_terms.load(Ordering::SeqCst), 0);

    // The first runtime loses its lease (its connection died, say): its term stops and the
    // second runtime takes over; the first waits again.
    assert!(leases.revoke("relay"));
    eventually("the second leads", || {
        second.status()[0].state == ServiceState::Leading
    })
    .await;
    eventually("the first stands by", || {
        first.status()[0].state == ServiceState::Standby
    })
    .await;
    assert_eq!(active.load(Ordering::SeqCst), 1, "one term at a time");
    assert_eq!(
        (
            first_terms.load(Ordering::SeqCst),
            second_terms.load(Ordering::SeqCst)
        ),
        (1, 1)
    );

    // A leader shutting down gives the lease back at once.
    second.shutdown().await;
    // The state turns `Leading` just before the term's `run` starts: wait for both.
    eventually("the first leads again, in a second term", || {
        first.status()[0].state == ServiceState::Leading && first_terms.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(first_terms.load(Ordering::SeqCst), 2);
    first.shutdown().await;
    assert!(!leases.is_held("relay"));
}

#[tokio::test]
async fn a_child_shutdown_fires_with_its_parent() {
    let (trigger, parent) = Shutdown::new();
    let (_child_trigger, child) = parent.child();
    assert!(!child.is_triggered());
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(1), child.clone().wait())
        .await
        .expect("the child fires");
    assert!(child.is_triggered());
}

/// Handles nothing, successfully.
struct Ignore;

#[async_trait::async_trait]
impl es_core::MessageHandler for Ignore {
    async fn handle(&self, _: &es_core::Delivery) -> Result<(), es_core::HandlerError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_is_ready_only_once_its_consumers_have_partitions() {
    use es_core::Publisher;
    use es_core::consume::ConsumerLoop;
    use es_core::memory::MemoryBus;

    let bus = MemoryBus::new();
    // The topic does not exist yet: the member has no partition.
    let consumer = bus.consumer("readers", &["later"]);
    let running = Runtime::new()
        .service(ConsumerLoop::new(consumer, Ignore))
        .service(OneShotThenWait)
        .start();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.is_ready(),
        "no partition yet: {:?}",
        running.status()
    );
    assert!(!running.status()[0].ready);

    let message =
        es_core::OutboxMessage::new("Made", "k", serde_json::json!({})).with_topic("later");
    bus.publish(&[message]).await.unwrap();
    eventually("ready once the topic exists", || running.is_ready()).await;
    running.shutdown().await;
}

/// Runs until shut down.
struct OneShotThenWait;

#[async_trait::async_trait]
impl Service for OneShotThenWait {
    fn name(&self) -> &str {
        "waiter"
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        context.shutdown().wait().await;
        Ok(())
    }
}
