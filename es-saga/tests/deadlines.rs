#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Deadlines on a manual clock: firing and compensating, stale deadlines, leases, late
//! replies after a deadline-driven cancellation.

mod support;

use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use es_core::memory::MemorySagaStore;
use es_core::{DeadlineStore, ManualClock};
use es_saga::{DeadlineScheduler, Handled, SagaRunner, Tick};
use support::*;

struct World {
    clock: ManualClock,
    runner: SagaRunner<OrderSaga, MemorySagaStore>,
    scheduler: DeadlineScheduler<MemorySagaStore>,
}

fn world() -> World {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap());
    let store = MemorySagaStore::new().with_clock(clock.clone());
    let runner = SagaRunner::new(OrderSaga, store.clone()).with_clock(clock.clone());
    let scheduler = DeadlineScheduler::new(store)
        .with_clock(clock.clone())
        .with_lease(Duration::from_secs(30))
        .register(runner.clone());
    World {
        clock,
        runner,
        scheduler,
    }
}

#[tokio::test]
async fn a_deadline_that_fires_compensates_and_cancels() {
    let w = world();
    w.runner.handle(&placed("t-1", 4)).await.unwrap();
    w.runner
        .handle(&StockReserved::new("t-1").message())
        .await
        .unwrap();
    let view = w.runner.instance("t-1").await.unwrap().unwrap();
    assert_eq!(view.awaiting.keys().collect::<Vec<_>>(), ["payment"]);

    w.clock.advance(TimeDelta::seconds(59));
    assert_eq!(
        w.scheduler.tick().await.unwrap(),
        Tick::default(),
        "not due yet"
    );
    w.clock.advance(TimeDelta::seconds(2));
    assert_eq!(
        w.scheduler.tick().await.unwrap(),
        Tick {
            claimed: 1,
            fired: 1,
            failed: 0
        }
    );

    let view = w.runner.instance("t-1").await.unwrap().unwrap();
    assert_eq!(view.state.status, Status::Cancelled);
    assert_eq!(
        view.state.cancel_reason.as_deref(),
        Some("ProcessingError: no answer to payment")
    );
    assert!(view.completed && view.awaiting.is_empty());
    let history = w.runner.history("t-1").await.unwrap();
    assert_eq!(history.len(), 3);
    use es_core::OutboxSource;
    let outbox = w
        .runner
        .store()
        .read_outbox(es_core::Position::START, 100)
        .await
        .unwrap();
    let sent: Vec<_> = outbox.messages.iter().map(|m| m.message.clone()).collect();
    assert_eq!(
        types(&sent),
        [
            "ReserveStock",
            "RequestPayment",
            "ReleaseStock",
            "CancelOrder"
        ]
    );
    // Fired once: nothing is due any more.
    w.clock.advance(TimeDelta::hours(1));
    assert_eq!(w.scheduler.tick().await.unwrap().claimed, 0);
}

#[tokio::test]
async fn a_payment_after_a_deadline_driven_cancel_is_refunded() {
    let w = world();
    w.runner.handle(&placed("t-2", 4)).await.unwrap();
    w.runner
        .handle(&StockReserved::new("t-2").message())
        .await
        .unwrap();
    w.clock.advance(TimeDelta::seconds(61));
    assert_eq!(w.scheduler.tick().await.unwrap().fired, 1);

    let late = PaymentCompleted::new("t-2").message();
    let Handled::Committed {
        commands,
        completed,
        ..
    } = w.runner.handle(&late).await.unwrap()
    else {
        panic!("a late payment is decided, not dropped");
    };
    assert!(completed);
    assert_eq!(types(&commands), ["RefundPayment"]);
    assert_eq!(
        w.runner.handle(&late).await.unwrap(),
        Handled::Duplicate,
        "refunded once"
    );
    let view = w.runner.instance("t-2").await.unwrap().unwrap();
    assert_eq!(
        (view.state.status, view.state.late_compensations),
        (Status::Cancelled, 1)
    );
}

#[tokio::test]
async fn a_deadline_after_its_step_completed_does_nothing() {
    let w = world();
    w.runner.handle(&placed("t-3", 4)).await.unwrap();
    // The scheduler claimed the stock deadline just before the reply was committed.
    w.clock.advance(TimeDelta::seconds(61));
    let claimed = w
        .runner
        .store()
        .claim_due(w.clock.now_utc(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    w.runner
        .handle(&StockReserved::new("t-3").message())
        .await
        .unwrap();

    assert_eq!(
        w.runner.fire(&claimed[0]).await.unwrap(),
        Handled::StaleDeadline
    );
    let view = w.runner.instance("t-3").await.unwrap().unwrap();
    assert_eq!((view.version, view.state.status), (2, Status::Paying));
    // The completed step's deadline was cancelled with the reply: the scheduler finds nothing
    // even after the lease, and the payment deadline is still ahead.
    w.clock.advance(TimeDelta::seconds(31));
    assert_eq!(w.scheduler.tick().await.unwrap().claimed, 0);
    w.clock.advance(TimeDelta::seconds(60));
    assert_eq!(w.scheduler.tick().await.unwrap().fired, 1);
    assert_eq!(
        w.runner
            .instance("t-3")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        Status::Cancelled
    );
}

#[tokio::test]
async fn a_deadline_after_completion_does_nothing() {
    let w = world();
    let sent = drive(&w.runner, placed("t-4", 4), Outcome::Ships, false).await;
    assert_eq!(sent.len(), 4);
    w.clock.advance(TimeDelta::days(1));
    assert_eq!(w.scheduler.tick().await.unwrap().claimed, 0);
    assert_eq!(
        w.runner
            .instance("t-4")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        Status::Shipped
    );
}

#[tokio::test]
async fn a_scheduler_crash_means_redelivery_after_the_lease_effectively_once() {
    let w = world();
    w.runner.handle(&placed("t-5", 4)).await.unwrap();
    w.clock.advance(TimeDelta::seconds(61));
    // A scheduler claims and delivers, then dies before completing the deadline.
    let claimed = w
        .runner
        .store()
        .claim_due(w.clock.now_utc(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert!(matches!(
        w.runner.fire(&claimed[0]).await.unwrap(),
        Handled::Committed { .. }
    ));
    // Its lease holds the deadline back from a restarted scheduler ...
    assert_eq!(w.scheduler.tick().await.unwrap().claimed, 0);
    // ... until it ends; the redelivery is recognised by the inbox and completes it.
    w.clock.advance(TimeDelta::seconds(31));
    assert_eq!(
        w.scheduler.tick().await.unwrap(),
        Tick {
            claimed: 1,
            fired: 1,
            failed: 0
        }
    );
    // Delivering it yet again changes nothing: the step is no longer awaited.
    let again = w.runner.fire(&claimed[0]).await.unwrap();
    assert!(
        matches!(again, Handled::StaleDeadline | Handled::Duplicate),
        "{again:?}"
    );
    let view = w.runner.instance("t-5").await.unwrap().unwrap();
    assert_eq!(view.version, 2);
    assert_eq!(view.state.status, Status::Cancelled);
    w.clock.advance(TimeDelta::hours(1));
    assert_eq!(w.scheduler.tick().await.unwrap().claimed, 0);
}

#[tokio::test]
async fn a_deadline_of_an_unregistered_saga_stays_pending() {
    let w = world();
    w.runner.handle(&placed("t-6", 4)).await.unwrap();
    let bare = DeadlineScheduler::new(w.runner.store().clone()).with_clock(w.clock.clone());
    w.clock.advance(TimeDelta::seconds(61));
    assert_eq!(
        bare.tick().await.unwrap(),
        Tick {
            claimed: 1,
            fired: 0,
            failed: 1
        }
    );
    w.clock.advance(TimeDelta::seconds(31));
    assert_eq!(w.scheduler.tick().await.unwrap().fired, 1);
}

#[tokio::test]
async fn the_scheduler_loop_fires_and_stops_on_shutdown() {
    let w = world();
    w.runner.handle(&placed("t-7", 4)).await.unwrap();
    w.clock.advance(TimeDelta::seconds(61));
    let scheduler = w.scheduler.with_poll_interval(Duration::from_millis(10));
    let runner = w.runner.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        for _ in 0..500 {
            if runner.instance("t-7").await.unwrap().unwrap().completed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(()).unwrap();
    });
    scheduler
        .run(async { stopped.await.unwrap() })
        .await
        .unwrap();
    watcher.await.unwrap();
    assert_eq!(
        w.runner
            .instance("t-7")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        Status::Cancelled
    );
}

trait NowUtc {
    fn now_utc(&self) -> chrono::DateTime<Utc>;
}

impl NowUtc for ManualClock {
    fn now_utc(&self) -> chrono::DateTime<Utc> {
        es_core::Clock::now(self)
    }
}
