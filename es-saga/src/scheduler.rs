//! [`DeadlineScheduler`]: claims due deadlines with a lease and fires them through the runners.

use es_core::telemetry;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use es_core::{Clock, Deadline, DeadlineStore, DeadlineStoreError, SystemClock};
use tracing::Instrument;

use crate::handler::DeadlineTarget;

/// Failure of a [`DeadlineScheduler`] poll.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The deadline store failed.
    #[error(transparent)]
    Store(#[from] DeadlineStoreError),
}

/// What one [`DeadlineScheduler::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Deadlines claimed.
    pub claimed: usize,
    /// Deadlines delivered and completed.
    pub fired: usize,
    /// Deadlines whose delivery failed, or whose saga has no registered target: claimed
    /// until their lease ends, then delivered again.
    pub failed: usize,
}

/// The shortest sleep between two looks.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// Fires due deadlines: each poll claims those due on its [`Clock`] with a lease, delivers
/// each through its saga's runner (as a message whose id is the deadline's id, so the
/// runner's inbox makes it effectively once), then completes it.
///
/// Deadlines are durable in the [`DeadlineStore`] and a claim is a lease: if the scheduler
/// crashes between claiming and completing, the deadline is claimed and delivered again once
/// the lease ends, and the redelivery is a no-op if the first one was committed. Several
/// schedulers may run on one store.
///
/// ```
/// use es_core::memory::MemorySagaStore;
/// use es_saga::DeadlineScheduler;
/// use std::time::Duration;
///
/// # futures::executor::block_on(async {
/// let scheduler = DeadlineScheduler::new(MemorySagaStore::new())
///     .with_poll_interval(Duration::from_millis(200))
///     .with_lease(Duration::from_secs(30));
/// // .register(order_runner.clone()) for each saga, then `scheduler.run(shutdown)`.
/// assert_eq!(scheduler.tick().await?.claimed, 0);
/// # Ok::<(), es_saga::SchedulerError>(())
/// # }).unwrap();
/// ```
pub struct DeadlineScheduler<D> {
    store: D,
    clock: Arc<dyn Clock>,
    targets: HashMap<String, Arc<dyn DeadlineTarget>>,
    poll_interval: Duration,
    lease: Duration,
    batch_size: usize,
    signal: Option<es_core::AppendSignal>,
}

impl<D> fmt::Debug for DeadlineScheduler<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sagas: Vec<&String> = self.targets.keys().collect();
        sagas.sort();
        f.debug_struct("DeadlineScheduler")
            .field("sagas", &sagas)
            .field("poll_interval", &self.poll_interval)
            .field("lease", &self.lease)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl<D: DeadlineStore> DeadlineScheduler<D> {
    /// A scheduler of `store`'s deadlines on the system clock, polling every second, with
    /// 30-second leases and batches of 100, and no saga registered.
    pub fn new(store: D) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            targets: HashMap::new(),
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            batch_size: 100,
            signal: None,
        }
    }

    /// Decides what is due with `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Waits `interval` between polls that found nothing due.
    #[must_use]
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Claims deadlines for `lease`: a deadline not completed by then is delivered again.
    /// Make it longer than a delivery takes.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Looks again at once when `signal` fires (the saga store's: a commit may have set a
    /// deadline sooner than the next one known). With it, the poll interval is only a
    /// fallback for deadlines set by other processes.
    #[must_use]
    pub fn with_signal(mut self, signal: es_core::AppendSignal) -> Self {
        self.signal = Some(signal);
        self
    }

    /// Claims at most `batch_size` deadlines per poll (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Delivers the deadlines of `target`'s saga to it (a [`SagaRunner`](crate::SagaRunner)).
    #[must_use]
    pub fn register(mut self, target: impl DeadlineTarget + 'static) -> Self {
        self.targets
            .insert(target.saga_name().to_owned(), Arc::new(target));
        self
    }

    /// Claims the deadlines due now and fires them; failed ones stay claimed until their
    /// lease ends.
    ///
    /// # Errors
    /// [`SchedulerError::Store`] when claiming fails. A failure to complete a delivered
    /// deadline is counted as failed (it is delivered again, as a no-op).
    pub async fn tick(&self) -> Result<Tick, SchedulerError> {
        let now = self.clock.now();
        let due = self
            .store
            .claim_due(now, self.lease, self.batch_size)
            .await?;
        let mut tick = Tick {
            claimed: due.len(),
            ..Tick::default()
        };
        for deadline in due {
            let span = tracing::info_span!(
                "saga_deadline",
                otel.name = %format_args!("{} deadline {}", deadline.saga, deadline.step),
                saga = %deadline.saga,
                key = %deadline.key,
                step = %deadline.step,
                deadline_id = %deadline.id,
            );
            if self.fire_one(&deadline).instrument(span).await {
                tick.fired += 1;
            } else {
                tick.failed += 1;
            }
        }
        Ok(tick)
    }

    /// Delivers and completes `deadline`; whether both succeeded.
    async fn fire_one(&self, deadline: &Deadline) -> bool {
        let Some(target) = self.targets.get(&deadline.saga) else {
            tracing::warn!("no runner registered for this saga's deadlines");
            return false;
        };
        if let Err(error) = target.fire(deadline).await {
            tracing::warn!(%error, "deadline delivery failed; retried after the lease");
            return false;
        }
        telemetry::metrics()
            .deadlines_fired
            .add(1, &[telemetry::label("saga", deadline.saga.clone())]);
        match self.store.complete(deadline.id).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "deadline fired but not completed; redelivered");
                false
            }
        }
    }

    /// Fires deadlines until `shutdown` completes: claims what is due (at once again after a
    /// full batch), then sleeps until the next pending deadline is due
    /// ([`DeadlineStore::next_due`]), the [signal](Self::with_signal) fires, or the poll
    /// interval passes, whichever comes first. Woken by the signal, it waits 10 ms (so that
    /// the commits of that moment wake it once) and reads when the next deadline is due,
    /// claiming only if one is due: one query per wake-up while commits stream in. A store
    /// failure is logged and retried after the poll interval.
    ///
    /// # Errors
    /// None yet: store failures are logged and retried; the `Result` leaves room for fatal
    /// ones.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SchedulerError> {
        tokio::pin!(shutdown);
        let mut waiter = self.signal.as_ref().map(es_core::AppendSignal::waiter);
        // Woken by a commit: what changed is when the next deadline is due, so read that
        // before claiming anything (one query, not two, per wake-up while commits stream in).
        let mut woken = false;
        loop {
            if let Some(waiter) = waiter.as_mut() {
                waiter.borrow_and_update();
            }
            let claimed = !std::mem::take(&mut woken);
            if claimed {
                let full = match self.tick().await {
                    Ok(tick) => tick.claimed >= self.batch_size,
                    Err(error) => {
                        tracing::warn!(%error, "claiming deadlines failed");
                        false
                    }
                };
                if full {
                    continue;
                }
            }
            let wait = match self.store.next_due().await {
                Ok(Some(due)) => (due - self.clock.now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(self.poll_interval),
                Ok(None) => self.poll_interval,
                Err(error) => {
                    tracing::warn!(%error, "reading the next deadline failed");
                    self.poll_interval
                }
            };
            if wait.is_zero() && !claimed {
                // Due now, and not claimed since the wake-up: claim it at once.
                continue;
            }
            // One due now but not claimable here (another scheduler holds it this instant):
            // not a busy loop.
            let wait = wait.max(MIN_WAIT);
            let signalled = async {
                match waiter.as_mut() {
                    Some(waiter) => {
                        let _ = waiter.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(wait) => {}
                () = signalled => {
                    // Let the commits of the next moment wake it together.
                    woken = true;
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(MIN_WAIT) => {}
                    }
                }
            }
        }
    }
}

/// The scheduler runs as a [`Service`](es_core::runtime::Service) named `deadline-scheduler`,
/// until the shutdown. Several runtimes may run it at once: claims are leased, so a deadline
/// fires on one of them (gating it with a lease is not needed).
#[async_trait::async_trait]
impl<D> es_core::runtime::Service for DeadlineScheduler<D>
where
    D: DeadlineStore + 'static,
{
    fn name(&self) -> &str {
        "deadline-scheduler"
    }

    async fn run(
        &mut self,
        context: es_core::runtime::ServiceContext,
    ) -> Result<(), es_core::BoxError> {
        DeadlineScheduler::run(self, context.shutdown().wait())
            .await
            .map_err(es_core::BoxError::from)
    }
}
