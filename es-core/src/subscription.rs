//! Catch-up-then-live subscriptions built on [`EventStore::read_log`], for any backend.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::ids::Position;
use crate::store::{EventStore, LogFilter, SubscriptionItem};

/// An in-process signal that something was committed; wakes subscriptions in the same process
/// without a database round trip (other processes poll, or are woken by a backend's
/// cross-process wake-ups, such as es-postgres's `PgWakeups`).
#[derive(Debug, Clone)]
pub struct AppendSignal {
    sender: std::sync::Arc<watch::Sender<u64>>,
    local: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl AppendSignal {
    /// A fresh signal.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(0);
        Self {
            sender: std::sync::Arc::new(sender),
            local: std::sync::Arc::default(),
        }
    }

    /// Wakes every waiter: something was committed in this process.
    pub fn notify(&self) {
        self.local.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.sender
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Wakes every waiter for a commit made elsewhere (another process): unlike
    /// [`notify`](Self::notify), it does not count in [`local_commits`](Self::local_commits),
    /// so whatever tells other processes about this one's commits does not echo it back.
    pub fn notify_from_elsewhere(&self) {
        self.sender
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// How many times [`notify`](Self::notify) was called (wrapping).
    pub fn local_commits(&self) -> u64 {
        self.local.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A receiver that sees every later [`notify`](Self::notify).
    pub fn waiter(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

impl Default for AppendSignal {
    fn default() -> Self {
        Self::new()
    }
}

/// How a subscription polls. Loadable with serde, and from the environment with
/// [`from_env`](Self::from_env).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionOptions {
    /// Events read per round trip.
    pub batch_size: usize,
    /// The first wait after an empty read (also the re-poll interval while events are held
    /// back by an open transaction).
    #[serde(with = "crate::config::duration")]
    pub min_poll_interval: Duration,
    /// The longest wait when idle; waits double from the minimum up to this.
    #[serde(with = "crate::config::duration")]
    pub max_poll_interval: Duration,
    /// The wait after a backend error before reading again.
    #[serde(with = "crate::config::duration")]
    pub retry_delay: Duration,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            min_poll_interval: Duration::from_millis(5),
            max_poll_interval: Duration::from_millis(500),
            retry_delay: Duration::from_millis(500),
        }
    }
}

impl SubscriptionOptions {
    /// The variables that [`from_env`](Self::from_env) reads: `ES_SUBSCRIPTION_BATCH_SIZE`,
    /// `ES_SUBSCRIPTION_MIN_POLL_INTERVAL`, ...
    pub const ENV_PREFIX: &'static str = "ES_SUBSCRIPTION_";

    /// The defaults, overridden by every `ES_SUBSCRIPTION_<FIELD>` variable set.
    ///
    /// # Errors
    /// [`OptionsError`](crate::OptionsError) for an unknown variable or a bad value.
    pub fn from_env() -> Result<Self, crate::OptionsError> {
        crate::options_from_env(Self::ENV_PREFIX)
    }
}

struct State<S> {
    store: S,
    position: Position,
    filter: LogFilter,
    options: SubscriptionOptions,
    waiter: watch::Receiver<u64>,
    pending: VecDeque<Result<SubscriptionItem, StoreError>>,
    wait: Option<Duration>,
    last_idle: Option<Duration>,
    caught_up: bool,
}

/// A subscription over `store` from `after`: reads batches through the store's gap-safe
/// [`read_log`](EventStore::read_log), yields events and checkpoints, and when it reaches the
/// end waits for `signal` or the poll interval (doubling while idle). Errors are yielded and
/// the read is retried after [`SubscriptionOptions::retry_delay`], from the last position.
pub fn poll_subscription<S>(
    store: S,
    after: Position,
    filter: LogFilter,
    options: SubscriptionOptions,
    signal: &AppendSignal,
) -> BoxStream<'static, Result<SubscriptionItem, StoreError>>
where
    S: EventStore + 'static,
{
    let state = State {
        store,
        position: after,
        filter,
        options,
        waiter: signal.waiter(),
        pending: VecDeque::new(),
        wait: None,
        last_idle: None,
        caught_up: false,
    };
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.pending.pop_front() {
                return Some((item, state));
            }
            if let Some(wait) = state.wait.take() {
                let _ = tokio::time::timeout(wait, state.waiter.changed()).await;
            }
            state.waiter.borrow_and_update();
            state.read_next().await;
        }
    })
    .boxed()
}

impl<S: EventStore> State<S> {
    async fn read_next(&mut self) {
        let read = self
            .store
            .read_log(self.position, &self.filter, self.options.batch_size.max(1))
            .await;
        let batch = match read {
            Ok(batch) => batch,
            Err(error) => {
                self.pending.push_back(Err(error));
                self.wait = Some(self.options.retry_delay);
                return;
            }
        };
        let got_events = !batch.events.is_empty();
        let moved = batch.checkpoint > self.position;
        self.pending.extend(
            batch
                .events
                .into_iter()
                .map(|e| Ok(SubscriptionItem::Event(e))),
        );
        if moved || (batch.reached_end && !self.caught_up) {
            self.position = self.position.max(batch.checkpoint);
            self.pending.push_back(Ok(SubscriptionItem::Checkpoint {
                position: self.position,
                caught_up: batch.reached_end,
            }));
        }
        self.caught_up = batch.reached_end;
        // The checkpoint also follows the fence, which moves whenever any transaction in the
        // cluster takes an id: only events count as activity, or an idle reader never backs off.
        if got_events {
            self.last_idle = None;
        }
        self.wait = if got_events && !batch.reached_end {
            None
        } else if got_events {
            Some(self.options.min_poll_interval)
        } else if batch.held_back {
            Some(self.wait_after_empty(self.options.max_poll_interval / 5))
        } else {
            Some(self.wait_after_empty(self.options.max_poll_interval))
        };
    }

    /// The next wait after a read that found nothing: doubling from the minimum up to `cap`.
    fn wait_after_empty(&mut self, cap: Duration) -> Duration {
        let min = self.options.min_poll_interval;
        let last = self.last_idle.unwrap_or(min / 2);
        let next = (last * 2).clamp(min, cap.max(min));
        self.last_idle = Some(next);
        next
    }
}
