//! The suite's lock (`common/test_lock.rs`) serializes: exclusive holders never overlap, a
//! shared holder keeps an exclusive request waiting, and that waiting request keeps later
//! shared ones waiting too (no starvation). A test that upgrades does not wait for itself, and
//! a test that panics leaves no lock behind.
//!
//! These tests take guards of their own and observe them on a connection that holds no part of
//! the lock (`common::raw_client` would make the test a shared holder, which its own exclusive
//! requests would wait for).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use common::test_lock::{self, Mode, Request, SuiteLock};

/// How long a request that must wait is watched not to be granted.
const STILL_WAITING: Duration = Duration::from_millis(300);

async fn observer() -> tokio_postgres::Client {
    let url = es_postgres::database_url().unwrap_or_else(|error| panic!("{error}"));
    es_postgres::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The advisory lock the session `pid` holds or waits for: its mode and whether it is granted.
async fn lock_of(observer: &tokio_postgres::Client, pid: i32) -> Option<(String, bool)> {
    observer
        .query_opt(
            "SELECT mode, granted FROM pg_locks WHERE locktype = 'advisory' AND pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .map(|row| (row.get(0), row.get(1)))
}

/// Waits until `request` is queued on the server, and checks that it waits there.
async fn assert_queued(observer: &tokio_postgres::Client, request: &Request) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((mode, granted)) = lock_of(observer, request.backend_pid()).await {
            assert!(!granted, "the {mode} request was granted at once");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the request did not reach the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the session `pid` holds no advisory lock.
async fn assert_released(observer: &tokio_postgres::Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(lock) = lock_of(observer, pid).await {
        assert!(
            Instant::now() < deadline,
            "session {pid} still holds {lock:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn alone_exclusive_holders_on_their_own_connections_never_overlap() {
    const HOLDERS: usize = 3;
    let inside = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(HOLDERS));
    let holders: Vec<_> = (0..HOLDERS)
        .map(|_| {
            let (inside, start) = (inside.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let lock = SuiteLock::acquire(Mode::Exclusive);
                let entered = Instant::now();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders inside"
                );
                std::thread::sleep(Duration::from_millis(200));
                inside.fetch_sub(1, Ordering::SeqCst);
                let left = Instant::now();
                drop(lock);
                (entered, left)
            })
        })
        .collect();
    let mut spans: Vec<(Instant, Instant)> = holders
        .into_iter()
        .map(|holder| holder.join().expect("a holder failed"))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "one holder entered before the one before it left"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_shared_holder_blocks_an_exclusive_request_which_blocks_later_shared_ones() {
    let observer = observer().await;
    let first = SuiteLock::acquire(Mode::Shared);

    let exclusive = Request::send(Mode::Exclusive);
    assert_queued(&observer, &exclusive).await;
    let exclusive = exclusive
        .wait_for(STILL_WAITING)
        .expect_err("an exclusive request waits while a shared holder holds");

    // Compatible with the holder, but queued behind the exclusive request made before it.
    let later = Request::send(Mode::Shared);
    assert_queued(&observer, &later).await;
    let later = later
        .wait_for(STILL_WAITING)
        .expect_err("a shared request waits behind a waiting exclusive one");

    drop(first);
    let exclusive = exclusive.wait();
    assert_eq!(
        lock_of(&observer, exclusive.backend_pid()).await,
        Some(("ExclusiveLock".to_owned(), true))
    );
    let later = later
        .wait_for(STILL_WAITING)
        .expect_err("a shared request waits while the exclusive holder holds");

    drop(exclusive);
    let later = later.wait();
    assert_eq!(
        lock_of(&observer, later.backend_pid()).await,
        Some(("ShareLock".to_owned(), true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_test_holding_the_lock_shared_upgrades_without_waiting_for_itself() {
    let observer = observer().await;
    let (report, reports) = mpsc::channel();
    let (end, ended) = mpsc::channel::<()>();
    // A test's thread: reaches the database (shared), then turns alone, then reaches it again.
    let test = std::thread::spawn(move || {
        let url = common::database_url();
        let shared = test_lock::held().unwrap();
        common::alone();
        let exclusive = test_lock::held().unwrap();
        assert_eq!(common::database_url(), url);
        assert_eq!(
            test_lock::held(),
            Some(exclusive),
            "still alone, no new request"
        );
        report.send((shared, exclusive)).unwrap();
        // The test's body goes on until told to end.
        let _ = ended.recv();
    });
    let ((shared_mode, shared_pid), (exclusive_mode, exclusive_pid)) = reports
        .recv_timeout(Duration::from_secs(120))
        .expect("alone() after a shared hold returns");
    assert_eq!(
        (shared_mode, exclusive_mode),
        (Mode::Shared, Mode::Exclusive)
    );
    assert_released(&observer, shared_pid).await;
    assert_eq!(
        lock_of(&observer, exclusive_pid).await,
        Some(("ExclusiveLock".to_owned(), true)),
        "the test holds the lock while its thread runs"
    );
    end.send(()).unwrap();
    test.join().unwrap();
    assert_released(&observer, exclusive_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_panics_leaves_no_lock_behind() {
    let observer = observer().await;
    let (report, reports) = mpsc::channel();
    let test = std::thread::spawn(move || {
        test_lock::hold_shared();
        report.send(test_lock::held().unwrap().1).unwrap();
        panic!("the test fails while holding the lock");
    });
    let pid = reports.recv().unwrap();
    assert!(test.join().is_err());
    assert_released(&observer, pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_a_test_spawned_takes_no_lock_of_its_own() {
    let held = tokio::spawn(async {
        test_lock::hold_shared();
        test_lock::held()
    })
    .await
    .unwrap();
    assert_eq!(held, None, "a task counts on the guard its test took");
}
