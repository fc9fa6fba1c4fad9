//! Applying a batch and its checkpoint in one transaction; isolating and handling poison
//! events.

use std::slice;
use std::time::{Duration, Instant};

use es_core::{CheckpointError, LogBatch, Position, ProjectionError, RecordedEvent};

use super::catalog::Progress;
use super::options::PoisonPolicy;
use super::runner::{Role, Runner, Stop};
use super::target::{PgProjectionTx, checkpoint_name};

/// What applying a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Nothing to write.
    Nothing,
    /// Committed; `switched` when a rebuild became active.
    Committed { switched: bool },
    /// A poison event paused the projection.
    Paused,
}

/// Why one transaction did not commit.
enum Failure {
    /// The projection failed to apply (retry, then the poison policy).
    Apply(ProjectionError),
    /// Stop leading.
    Stop(Stop),
}

impl Failure {
    /// The stop a failure means where no event is applied (a checkpoint-only unit): an
    /// apply error there is a database failure.
    fn into_stop(self) -> Stop {
        match self {
            Failure::Stop(stop) => stop,
            Failure::Apply(error) => Stop::Failed(error.into()),
        }
    }
}

impl<E: Into<Stop>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Stop(error.into())
    }
}

/// How long a checkpoint moved only past events the filter skips (or past nothing: the fence
/// moves with every transaction of the cluster) stays unwritten. Writing each such move would
/// itself be a transaction, whose id moves the fence the next read passes: a write per poll,
/// for ever, at rest. Unwritten, a restart reads the skipped stretch again (and skips it).
const UNWRITTEN_SKIP: Duration = Duration::from_secs(30);

/// One unit of work: events, the checkpoint's move, bookkeeping, maybe a dead letter.
struct Unit<'a> {
    version: u32,
    role: Role,
    events: &'a [RecordedEvent],
    new: Position,
    switch: bool,
    dead_letter: Option<(&'a RecordedEvent, String, u32)>,
}

impl Runner {
    /// Applies `batch` to `version` from checkpoint `at`: the whole batch in one transaction;
    /// if it fails, event by event, retrying the failing one and then applying the policy.
    #[tracing::instrument(
        name = "projection batch",
        skip_all,
        fields(
            otel.name = %format_args!("project {}", self.name),
            es.projection = %self.name,
            es.projection.version = version,
            es.events = batch.events.len(),
        )
    )]
    pub(crate) async fn apply(
        &mut self,
        version: u32,
        role: Role,
        at: Option<Position>,
        batch: LogBatch,
    ) -> Result<Applied, Stop> {
        let switch = role == Role::Rebuild && batch.reached_end;
        let from = at.unwrap_or(Position::START);
        if batch.events.is_empty() && !switch {
            let new = batch.checkpoint.max(from);
            if new > from {
                self.went(version, role, new);
            }
            let written = self.stored.get(&version).copied();
            let stale = written
                .is_some_and(|(stored, at)| stored < Some(new) && at.elapsed() >= UNWRITTEN_SKIP);
            if stale {
                let skip = Unit {
                    version,
                    role,
                    events: &[],
                    new,
                    switch: false,
                    dead_letter: None,
                };
                self.commit(skip).await.map_err(Failure::into_stop)?;
            }
            return Ok(Applied::Nothing);
        }
        let whole = Unit {
            version,
            role,
            events: &batch.events,
            new: batch.checkpoint.max(from),
            switch,
            dead_letter: None,
        };
        match self.commit(whole).await {
            Ok(()) => return Ok(Applied::Committed { switched: switch }),
            Err(Failure::Stop(stop)) => return Err(stop),
            Err(Failure::Apply(error)) if batch.events.len() == 1 => {
                tracing::debug!(projection = %self.name, %error, "event failed");
            }
            Err(Failure::Apply(error)) => {
                tracing::debug!(projection = %self.name, %error, "batch failed; applying its events one by one");
            }
        }
        let mut reached = from;
        for event in &batch.events {
            if !self.apply_one(version, role, event).await? {
                return Ok(Applied::Paused);
            }
            reached = event.position;
        }
        if batch.checkpoint > reached || switch {
            let rest = Unit {
                version,
                role,
                events: &[],
                new: batch.checkpoint.max(reached),
                switch,
                dead_letter: None,
            };
            self.commit(rest).await.map_err(Failure::into_stop)?;
        }
        Ok(Applied::Committed { switched: switch })
    }

    /// Applies one event with retries; false when the projection paused before it.
    async fn apply_one(
        &mut self,
        version: u32,
        role: Role,
        event: &RecordedEvent,
    ) -> Result<bool, Stop> {
        let mut attempt = 1;
        loop {
            let unit = Unit {
                version,
                role,
                events: slice::from_ref(event),
                new: event.position,
                switch: false,
                dead_letter: None,
            };
            let error = match self.commit(unit).await {
                Ok(()) => return Ok(true),
                Err(Failure::Stop(stop)) => return Err(stop),
                Err(Failure::Apply(error)) => error,
            };
            if attempt < self.options.max_attempts {
                let backoff = self.options.retry_backoff * 2u32.saturating_pow(attempt - 1);
                tracing::warn!(projection = %self.name, stream = %event.stream_id, version = %event.version, position = %event.position, attempt, %error, "event failed; retrying");
                if self.sleep(backoff).await {
                    return Err(Stop::Shutdown);
                }
                attempt += 1;
                continue;
            }
            let message = error.to_string();
            return match self.options.on_poison {
                PoisonPolicy::Pause => {
                    tracing::error!(projection = %self.name, stream = %event.stream_id, version = %event.version, position = %event.position, attempts = attempt, error = %message, "poison event: projection paused");
                    let client = self.shared.store.pool().get().await?;
                    let reason = format!(
                        "event {} of {} ({}) failed {attempt} times",
                        event.version, event.stream_id, event.event_type
                    );
                    self.shared
                        .sql
                        .pause(&client, &self.name, &reason, &message, event)
                        .await?;
                    Ok(false)
                }
                PoisonPolicy::Skip => {
                    tracing::error!(projection = %self.name, stream = %event.stream_id, version = %event.version, position = %event.position, attempts = attempt, error = %message, "poison event: skipped into the dead letters");
                    let unit = Unit {
                        version,
                        role,
                        events: &[],
                        new: event.position,
                        switch: false,
                        dead_letter: Some((event, message, attempt)),
                    };
                    self.commit(unit).await.map_err(Failure::into_stop)?;
                    Ok(true)
                }
            };
        }
    }

    /// One transaction: apply `unit.events`, record a dead letter, move the checkpoint by
    /// compare-and-set, record progress (and switch a caught-up rebuild), commit.
    async fn commit(&mut self, unit: Unit<'_>) -> Result<(), Failure> {
        let tx = self.shared.store.begin_unlocked().await?;
        let mut target = PgProjectionTx::new(tx, unit.version);
        if !unit.events.is_empty()
            && let Err(error) = self.projection.apply_batch(&mut target, unit.events).await
        {
            if let Err(rollback) = target.into_transaction().rollback().await {
                tracing::debug!(%rollback, "rollback failed; the connection was closed");
            }
            return Err(Failure::Apply(error));
        }
        let tx = target.into_transaction();
        if let Some((event, error, attempts)) = &unit.dead_letter {
            let client = tx.connection()?;
            self.shared
                .sql
                .dead_letter(client, &self.name, unit.version, event, error, *attempts)
                .await?;
        }
        let checkpoint = checkpoint_name(&self.name, unit.version);
        let expected = self
            .stored
            .get(&unit.version)
            .and_then(|(stored, _)| *stored);
        let progress = Progress {
            name: &self.name,
            events: unit.events,
            active: unit.role == Role::Active,
            switch_to: unit.switch.then_some(unit.version),
        };
        // The checkpoint's move and the bookkeeping go to the server together (one round
        // trip); a stale checkpoint rolls both back.
        let client = tx.connection()?;
        let (moved, recorded) = tokio::join!(
            self.shared
                .checkpoints
                .compare_and_set_on(client, &checkpoint, expected, unit.new),
            self.shared.sql.progress(client, progress),
        );
        match moved {
            Ok(()) => {}
            Err(CheckpointError::Stale { .. }) => return Err(Failure::Stop(Stop::Stale)),
            Err(error) => return Err(error.into()),
        }
        recorded?;
        tx.commit().await?;
        self.stored
            .insert(unit.version, (Some(unit.new), Instant::now()));
        let role = if unit.switch { Role::Active } else { unit.role };
        self.went(unit.version, role, unit.new);
        Ok(())
    }

    /// `version` has gone through the log up to `position` (applied, or skipped).
    fn went(&mut self, version: u32, role: Role, position: Position) {
        self.cursors.insert(version, Some(position));
        if role == Role::Active {
            self.live.reached(position);
        }
    }
}
