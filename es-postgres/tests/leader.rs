//! Leader election on PostgreSQL advisory locks, and the checkpoint compare-and-set that
//! fences a deposed leader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use es_core::{CheckpointError, CheckpointStore, Position};
use es_postgres::{Leader, PgEventStore};

const POLL: Duration = Duration::from_millis(100);
const WITHIN: Duration = Duration::from_secs(10);

async fn try_acquire(store: &PgEventStore, name: &str) -> Option<Leader> {
    Leader::try_acquire(store.pool(), store.schema(), name)
        .await
        .unwrap()
}

/// Waits (up to [`WITHIN`]) for a standby polling every [`POLL`] to take over.
async fn standby_takes_over(store: &PgEventStore, name: &str) -> Leader {
    let acquire = Leader::acquire(store.pool(), store.schema(), name, POLL);
    tokio::time::timeout(WITHIN, acquire)
        .await
        .expect("a standby takes over within seconds")
        .unwrap()
}

/// Terminates the server process holding `leader`'s lock, as a crash or an operator would.
async fn terminate(leader: &Leader) {
    let client = es_postgres::connect(&common::database_url()).await.unwrap();
    let row = client
        .query_one("SELECT pg_terminate_backend($1)", &[&leader.backend_pid()])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the leader's backend was terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_of_two_candidates_leads() {
    let store = common::fresh_store().await;
    let mut first = try_acquire(&store, "relay").await.expect("the first leads");
    assert!(
        try_acquire(&store, "relay").await.is_none(),
        "the second candidate does not lead"
    );
    let other = try_acquire(&store, "daemon").await;
    assert!(other.is_some(), "another name is another role");
    let elsewhere = common::fresh_store().await;
    assert!(
        try_acquire(&elsewhere, "relay").await.is_some(),
        "the same name in another schema is another role"
    );
    assert!(first.is_leader().await);
    first.release().await.unwrap();
    assert!(
        try_acquire(&store, "relay").await.is_some(),
        "a released role is free at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_leader_is_replaced() {
    let store = common::fresh_store().await;
    let leader = try_acquire(&store, "relay").await.unwrap();
    drop(leader);
    standby_takes_over(&store, "relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_leader_is_replaced_within_seconds_and_notices() {
    let store = common::fresh_store().await;
    let mut leader = try_acquire(&store, "relay").await.unwrap();
    assert!(try_acquire(&store, "relay").await.is_none());
    terminate(&leader).await;
    let mut successor = standby_takes_over(&store, "relay").await;
    assert_ne!(successor.backend_pid(), leader.backend_pid());
    assert!(!leader.is_leader().await, "the old leader notices");
    assert!(!leader.is_leader().await, "and stays deposed");
    assert!(successor.is_leader().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_checkpoint_write_fails() {
    let store = common::fresh_store().await;
    let checkpoints = store.checkpoints();
    let old = try_acquire(&store, "relay").await.unwrap();
    let (p1, p2, p3) = (
        Position::new(10, 1),
        Position::new(11, 2),
        Position::new(12, 3),
    );
    checkpoints
        .compare_and_set_checkpoint("relay", None, p1)
        .await
        .unwrap();

    // The old leader is cut off (its backend dies) but, not having checked, believes it leads.
    terminate(&old).await;
    let _new = standby_takes_over(&store, "relay").await;
    let at = checkpoints.load_checkpoint("relay").await.unwrap();
    assert_eq!(at, Some(p1));
    checkpoints
        .compare_and_set_checkpoint("relay", at, p2)
        .await
        .unwrap();

    let stale = checkpoints
        .compare_and_set_checkpoint("relay", Some(p1), p3)
        .await;
    match stale {
        Err(CheckpointError::Stale {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (Some(p1), Some(p2))),
        other => panic!("the deposed leader's write must fail as stale: {other:?}"),
    }
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        Some(p2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schema_is_refused() {
    let store = common::fresh_store().await;
    let result = Leader::try_acquire(store.pool(), "no'quotes", "relay").await;
    assert!(matches!(
        result,
        Err(es_postgres::PgError::InvalidSchema(_))
    ));
}

/// A TCP proxy on loopback to `upstream` that passes each of the server's answers on
/// `delay` milliseconds late (read when the answer comes); returns its address.
async fn late_answers(
    upstream: String,
    delay: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::net::SocketAddr {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let delay = delay.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(read) = server_read.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    let late = delay.load(Ordering::SeqCst);
                    if late > 0 {
                        tokio::time::sleep(Duration::from_millis(late)).await;
                    }
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

/// The backend holding the leader lock of `name` in `schema`, if one does.
async fn lock_holder(client: &tokio_postgres::Client, schema: &str, name: &str) -> Option<i32> {
    client
        .query_opt(
            "SELECT l.pid FROM pg_locks l, (SELECT hashtextextended($1, 0) AS k) h
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.classid = ((h.k >> 32) & 4294967295)::oid
               AND l.objid = (h.k & 4294967295)::oid AND l.objsubid = 1",
            &[&format!("es-postgres leader:{schema}:{name}")],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// A candidate whose task is aborted while its lock request is in flight (a crashing runtime
/// starting its relays) may have been granted the lock already. Its connection must not go
/// back to the pool holding it, or the role would stay taken by no one for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_aborted_mid_request_leaves_the_role_free() {
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    // The candidate talks to the server through a proxy that passes its answers on a second
    // late: the lock is granted on the server a second before the candidate can read that it
    // was.
    let server: tokio_postgres::Config = common::database_url().parse().unwrap();
    let host = match server.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = server.get_ports().first().copied().unwrap_or(5432);
    let delay = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let proxy = late_answers(format!("{host}:{port}"), delay.clone()).await;
    let password = server
        .get_password()
        .map(|password| format!(":{}", String::from_utf8_lossy(password)))
        .unwrap_or_default();
    let slow = PgEventStore::connect(
        &es_postgres::PgConfig::new(format!(
            "postgres://{}{password}@{proxy}/{}",
            server.get_user().unwrap_or("postgres"),
            server.get_dbname().unwrap_or("postgres"),
        ))
        .schema(store.schema())
        .pool_size(1),
    )
    .unwrap();
    // Connected before the answers are late.
    drop(slow.pool().get().await.unwrap());
    delay.store(1000, std::sync::atomic::Ordering::SeqCst);
    // The pool outlives the candidate, as a process's pool outlives a crashed runtime.
    let candidate = tokio::spawn({
        let slow = slow.clone();
        async move { Leader::try_acquire(slow.pool(), slow.schema(), "relay").await }
    });
    let started = std::time::Instant::now();
    let holder = loop {
        if let Some(pid) = lock_holder(&observer, store.schema(), "relay").await {
            break pid;
        }
        assert!(
            started.elapsed() < WITHIN,
            "the candidate never got the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Granted, and the answer not read yet: the candidate's task is aborted now; then the
    // answers come on time again.
    assert!(!candidate.is_finished());
    candidate.abort();
    assert!(candidate.await.unwrap_err().is_cancelled());
    delay.store(0, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    while lock_holder(&observer, store.schema(), "relay")
        .await
        .is_some()
    {
        assert!(
            started.elapsed() < WITHIN,
            "the aborted candidate's connection (backend {holder}) still holds the role"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut leader = standby_takes_over(&store, "relay").await;
    assert!(leader.is_leader().await);
    drop(slow);
}
