//! 200 orders from 20 customers, with every kind of forced failure, on the embedded default:
//! once idle, every invariant of the spec holds; and the same with every message delivered
//! twice.

use std::sync::Arc;
use std::time::Duration;

use crate::demo::shop::InProcess;
use crate::demo::{DemoOptions, run};
use ecommerce::app::{AppConfig, WorkflowConfig};
use ecommerce::failures::FailureRules;

use crate::support::TestApp;

async fn two_hundred_orders(duplicate_delivery: bool) {
    let app = TestApp::with(AppConfig {
        workflow: WorkflowConfig {
            failures: FailureRules::demo(),
            duplicate_delivery,
            deadline_poll: Duration::from_millis(50),
            ..WorkflowConfig::default()
        },
        ..AppConfig::embedded()
    })
    .await;
    let options = DemoOptions {
        settle: Duration::from_secs(60),
        ..DemoOptions::default()
    };
    let report = run(Arc::new(InProcess::new(&app.app)), &options)
        .await
        .unwrap();
    assert_eq!(report.outcomes.len(), 200);
    assert!(report.unexpected.is_empty(), "{:#?}", report.unexpected);
    assert!(
        report.status.invariants_hold,
        "{:#?}",
        report.status.violations
    );
    assert!(
        report.status.dead_letters.is_empty(),
        "{:#?}",
        report.status.dead_letters
    );
    // Idle: the read model has applied everything; the in-process bus has no lag to measure.
    let view = &report.status.projections[0];
    assert_eq!(
        (view.state.as_str(), view.lag_events),
        ("running", 0),
        "{view:?}"
    );
    assert!(
        report
            .status
            .consumers
            .iter()
            .all(|c| c.lag.is_none() && c.lag_error.is_none())
    );
    assert!(report.status.paused_partitions.is_empty());
    for reason in [
        "OutOfStock",
        "CreditLimitReached",
        "PaymentFailed",
        "ShipmentFailed",
    ] {
        assert!(
            report.status.by_reason.get(reason).is_some_and(|n| *n > 0),
            "{reason}: {:?}",
            report.status.by_reason
        );
    }
    assert!(
        report
            .status
            .by_status
            .get("Shipped")
            .is_some_and(|n| *n > 0)
    );
    if duplicate_delivery {
        let handled: u64 = report.status.consumers.iter().map(|c| c.handled).sum();
        assert!(handled > 0);
    }
}

#[tokio::test]
async fn two_hundred_orders_settle_with_every_invariant() {
    two_hundred_orders(false).await;
}

#[tokio::test]
async fn two_hundred_orders_delivered_twice_settle_with_every_invariant() {
    two_hundred_orders(true).await;
}
