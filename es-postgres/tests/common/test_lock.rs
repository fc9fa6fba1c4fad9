//! The test suite's lock: every test that reaches PostgreSQL or the broker holds it shared, and
//! each test named `alone_*` (it holds transactions open, which holds back every gap-safe
//! reader in the cluster, or it pauses a broker) holds it exclusively. It serializes them under
//! `cargo test` (a test binary's tests are threads of one process) and under `cargo nextest`
//! (each test is a process of its own) alike. The other crates' test support includes this
//! file with `#[path]`.
//!
//! The lock is a session-level PostgreSQL advisory lock on one fixed key, taken on a
//! connection of its own per holder, so PostgreSQL arbitrates between threads and processes
//! alike (one session holding it twice would not conflict with itself). A connection is driven
//! by a thread of its own: a guard outlives the test's runtime, and synchronous code can take
//! one. Whatever ends a holder ends its session and so its lock: a dropped guard, a panic, a
//! killed process. A request abandoned while it waits would stay queued (a waiting backend
//! does not notice its client leave), so the connection sets `client_connection_check_interval`.
//! Neither the wait nor the hold takes a transaction id, so the lock's connections hold back
//! no gap-safe reader themselves.
//!
//! PostgreSQL queues a lock request behind the requests already waiting that conflict with it,
//! not only behind the holders: a waiting exclusive request blocks the shared requests made
//! after it, though the current holders would admit them. An `alone_*` test therefore waits
//! for the tests already running, never for a stream of newcomers (`suite_lock.rs` checks it).
//!
//! A test holds the lock through [`hold_shared`] (the support modules' `fresh_store`, and their
//! other ways to reach a service, call it) and [`alone`] (the first line of every `alone_*`
//! test). Both keep the guard in a thread-local of the test's thread, which libtest starts for
//! the test and ends with it, panic or not; the guard drops after the test's runtime.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

/// How a guard holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// With every other test that reaches a service.
    Shared,
    /// With no other test.
    Exclusive,
}

impl Mode {
    fn statement(self) -> &'static str {
        match self {
            Self::Shared => "SELECT pg_advisory_lock_shared(hashtext('es-rs tests alone'))",
            Self::Exclusive => "SELECT pg_advisory_lock(hashtext('es-rs tests alone'))",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shared => "shared",
            Self::Exclusive => "exclusive",
        })
    }
}

/// The lock, held until dropped.
#[derive(Debug)]
pub struct SuiteLock {
    mode: Mode,
    backend_pid: i32,
    _release: tokio::sync::oneshot::Sender<()>,
}

impl SuiteLock {
    /// Takes the lock in `mode` on a connection of its own, waiting as long as it takes.
    pub fn acquire(mode: Mode) -> Self {
        Request::send(mode).wait()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The server process of the holding session.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }
}

/// A request for the lock, sent on a connection of its own and maybe still waiting.
#[derive(Debug)]
pub struct Request {
    mode: Mode,
    backend_pid: i32,
    events: mpsc::Receiver<Event>,
    release: tokio::sync::oneshot::Sender<()>,
}

#[derive(Debug)]
enum Event {
    Connected(i32),
    Granted,
    Failed(String),
}

impl Request {
    /// Connects and sends the request; returns once connected, without waiting for the lock.
    pub fn send(mode: Mode) -> Self {
        let url = es_postgres::database_url()
            .unwrap_or_else(|error| panic!("the test lock lives in PostgreSQL: {error}"));
        let (events_tx, events) = mpsc::channel();
        let (release, released) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("test lock ({mode})"))
            .spawn(move || hold(&url, mode, &events_tx, released))
            .expect("a thread for the test lock");
        let backend_pid = match events.recv() {
            Ok(Event::Connected(pid)) => pid,
            Ok(Event::Failed(error)) => panic!("{error}"),
            other => panic!("the test lock's thread did not connect: {other:?}"),
        };
        Self {
            mode,
            backend_pid,
            events,
            release,
        }
    }

    /// The server process of the requesting session.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Waits as long as it takes for the lock.
    pub fn wait(self) -> SuiteLock {
        match self.events.recv() {
            Ok(event) => self.granted(event),
            Err(_) => panic!("the test lock's thread ended while waiting"),
        }
    }

    /// Waits up to `timeout` for the lock; gives the request back if it still waits.
    pub fn wait_for(self, timeout: Duration) -> Result<SuiteLock, Self> {
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(self.granted(event)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the test lock's thread ended while waiting")
            }
        }
    }

    fn granted(self, event: Event) -> SuiteLock {
        match event {
            Event::Granted => SuiteLock {
                mode: self.mode,
                backend_pid: self.backend_pid,
                _release: self.release,
            },
            Event::Failed(error) => panic!("{error}"),
            Event::Connected(_) => panic!("the test lock's thread connected twice"),
        }
    }
}

/// The body of a lock's thread: connects, reports, locks, reports, and holds the session until
/// `released` fires or its sender drops (then the runtime, and with it the connection, drops).
fn hold(
    url: &str,
    mode: Mode,
    events: &mpsc::Sender<Event>,
    released: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = events.send(Event::Failed(format!(
                "no runtime for the test lock: {error}"
            )));
            return;
        }
    };
    runtime.block_on(async {
        if let Err(error) = lock(url, mode, events, released).await {
            let _ = events.send(Event::Failed(format!(
                "cannot take the {mode} test lock: {error}; is PostgreSQL running? `scripts/test` starts it"
            )));
        }
    });
}

async fn lock(
    url: &str,
    mode: Mode,
    events: &mpsc::Sender<Event>,
    mut released: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), String> {
    let client = es_postgres::connect(url)
        .await
        .map_err(|error| error.to_string())?;
    client
        .batch_execute("SET client_connection_check_interval = 500")
        .await
        .map_err(|error| error.to_string())?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|error| error.to_string())?
        .get(0);
    let _ = events.send(Event::Connected(pid));
    tokio::select! {
        locked = client.execute(mode.statement(), &[]) => {
            locked.map_err(|error| error.to_string())?;
        }
        // Abandoned while waiting: the connection closes and the server drops the request.
        _ = &mut released => return Ok(()),
    }
    let _ = events.send(Event::Granted);
    let _ = released.await;
    Ok(())
}

thread_local! {
    static HELD: RefCell<Option<SuiteLock>> = const { RefCell::new(None) };
}

/// Whether this runs in a task a test spawned (on a runtime's worker thread, or on the test's
/// own thread), rather than in the test's body (which `block_on` runs, not as a task).
fn in_spawned_task() -> bool {
    tokio::task::try_id().is_some()
}

/// Makes the current test hold the lock shared, unless it holds it already (shared or
/// exclusive), until the test ends.
///
/// A test requests the lock at most once: a second request would queue behind any exclusive
/// request waiting for the first, which waits for this test, and nothing would move. So in a
/// task the test spawned, which may run on another thread (a runtime's worker), this does
/// nothing: the task counts on the guard its test took in its body.
pub fn hold_shared() {
    if in_spawned_task() {
        return;
    }
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if held.is_none() {
            *held = Some(SuiteLock::acquire(Mode::Shared));
        }
    });
}

/// Makes the current test hold the lock exclusively until it ends: the first line of every
/// `alone_*` test. A shared hold the test took before is released first, so the test does not
/// wait for itself.
pub fn alone() {
    assert!(
        !in_spawned_task(),
        "call alone() at the start of the test's body, not in a task it spawned"
    );
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if held.as_ref().map(SuiteLock::mode) == Some(Mode::Exclusive) {
            return;
        }
        drop(held.take());
        *held = Some(SuiteLock::acquire(Mode::Exclusive));
    });
}

/// How the current thread holds the lock, and the holding session's server process.
pub fn held() -> Option<(Mode, i32)> {
    HELD.with(|held| {
        held.borrow()
            .as_ref()
            .map(|lock| (lock.mode(), lock.backend_pid()))
    })
}
