//! Leadership through the runtime on PostgreSQL: two runtimes share a lease; the leader's lease
//! connection is killed and the other takes over within the poll bound.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use es_core::BoxError;
use es_core::runtime::{LeaderOnly, Runtime, Service, ServiceContext, ServiceState};
use tokio::time::Instant;

/// Counts its terms and how many run at once.
struct Term {
    terms: Arc<AtomicU32>,
    active: Arc<AtomicU32>,
    most_at_once: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Service for Term {
    fn name(&self) -> &str {
        "relay"
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        self.terms.fetch_add(1, Ordering::SeqCst);
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        context.shutdown().wait().await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_runtime_takes_over_when_the_leaders_lease_connection_dies() {
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    let leases = store.leases().with_poll(Duration::from_millis(100));
    let (active, most) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let runtime = |terms: &Arc<AtomicU32>| {
        let term = Term {
            terms: terms.clone(),
            active: active.clone(),
            most_at_once: most.clone(),
        };
        Runtime::new()
            .service(
                LeaderOnly::new(leases.clone(), term).with_rejoin_delay(Duration::from_millis(500)),
            )
            .start()
    };
    let (first_terms, second_terms) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let first = runtime(&first_terms);
    eventually("the first leads", || {
        first.status()[0].state == ServiceState::Leading
    })
    .await;
    let second = runtime(&second_terms);
    eventually("the second stands by", || {
        second.status()[0].state == ServiceState::Standby
    })
    .await;

    let key = format!("es-postgres leader:{}:relay", store.schema());
    let holder: i32 = observer
        .query_one(
            "SELECT l.pid FROM pg_locks l, (SELECT hashtextextended($1, 0) AS k) h
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.classid = ((h.k >> 32) & 4294967295)::oid
               AND l.objid = (h.k & 4294967295)::oid AND l.objsubid = 1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    let killed_at = Instant::now();
    observer
        .execute("SELECT pg_terminate_backend($1)", &[&holder])
        .await
        .unwrap();

    eventually("the second leads", || {
        second.status()[0].state == ServiceState::Leading
    })
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(3), "taken over in {took:?}");
    eventually("the first stands by", || {
        first.status()[0].state == ServiceState::Standby
    })
    .await;
    assert_eq!(
        (
            first_terms.load(Ordering::SeqCst),
            second_terms.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    // A lock elects but does not fence: the old term may overlap the new one until it
    // notices (one poll); checkpoints fenced by compare-and-set keep that window harmless.
    assert!(most.load(Ordering::SeqCst) <= 2);
    assert_eq!(active.load(Ordering::SeqCst), 1, "the old term has stopped");
    second.shutdown().await;
    first.shutdown().await;
}
