//! [`SagaRunner`]: load, decide, commit: one message at a time, with optimistic retries.

use es_core::privacy::Privacy;
use es_core::telemetry;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use es_core::{
    Clock, Deadline, OutboxMessage, SagaCommit, SagaCommitOutcome, SagaInstance, SagaStore,
    SagaStoreError, SystemClock,
};
use tracing::Instrument;

use crate::decision::Decision;
use crate::error::SagaError;
use crate::input::{FiredDeadline, Input};
use crate::saga::{Route, Saga};
use crate::view::{Origin, SagaView, decode_stored, encode_stored, view};

/// How many times a commit that lost a race is re-decided, by default.
const DEFAULT_CONFLICT_RETRIES: u32 = 16;

/// What [`SagaRunner::handle`] did with a message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Handled {
    /// The decision was committed.
    Committed {
        /// The instance's new version.
        version: u64,
        /// Whether the instance is now completed.
        completed: bool,
        /// The commands written to the outbox.
        commands: Vec<OutboxMessage>,
    },
    /// The message was handled before: nothing was written.
    Duplicate,
    /// The saga does not handle this message (its route is [`Route::Ignore`], or it is a
    /// deadline of another saga).
    Ignored,
    /// A deadline for a step the instance no longer awaits (it got its answer, or the
    /// deadline was replaced): nothing was written.
    StaleDeadline,
}

/// Runs a [`Saga`] on a [`SagaStore`]: for each message, loads the instance, asks the saga to
/// decide, and commits the new state, the commands (as outbox messages), the deadline
/// changes and the (saga, message id) inbox record in one [`SagaStore::commit`].
///
/// - A commit that lost a race with another message of the same instance is re-decided on
///   the reloaded state ([`with_max_conflict_retries`](Self::with_max_conflict_retries)).
/// - A redelivered message is a no-op ([`Handled::Duplicate`]).
/// - A message continuing an instance that does not exist yet is refused with
///   [`SagaError::NotStarted`], which a consumer retries.
/// - A message after completion is still decided by the saga, with [`Input::completed`] set.
/// - A fired deadline reaches the saga only while the instance still awaits that exact
///   deadline; otherwise it is [`Handled::StaleDeadline`].
///
/// As an [`es_core::MessageHandler`] it can be driven by a consumer loop; as a
/// [`DeadlineTarget`](crate::DeadlineTarget) by a [`DeadlineScheduler`](crate::DeadlineScheduler).
/// Every message is handled in a `saga` tracing span carrying the saga name and key.
pub struct SagaRunner<S, St> {
    saga: Arc<S>,
    store: St,
    clock: Arc<dyn Clock>,
    command_topic: Option<String>,
    max_conflict_retries: u32,
    privacy: Option<Privacy>,
}

impl<S, St: Clone> Clone for SagaRunner<S, St> {
    fn clone(&self) -> Self {
        Self {
            saga: Arc::clone(&self.saga),
            store: self.store.clone(),
            clock: Arc::clone(&self.clock),
            command_topic: self.command_topic.clone(),
            max_conflict_retries: self.max_conflict_retries,
            privacy: self.privacy.clone(),
        }
    }
}

impl<S: Saga, St> fmt::Debug for SagaRunner<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaRunner")
            .field("saga", &S::NAME)
            .field("command_topic", &self.command_topic)
            .field("max_conflict_retries", &self.max_conflict_retries)
            .field("privacy", &self.privacy.is_some())
            .finish_non_exhaustive()
    }
}

/// An instance as loaded for a decision.
struct Loaded<St> {
    version: u64,
    completed: bool,
    state: St,
    awaiting: std::collections::BTreeMap<String, uuid::Uuid>,
    origins: std::collections::BTreeMap<String, Origin>,
}

impl<S: Saga, St: SagaStore> SagaRunner<S, St> {
    /// A runner of `saga` on `store`, on the system clock, sending commands without a topic
    /// (the publisher's routing rule chooses).
    pub fn new(saga: S, store: St) -> Self {
        Self {
            saga: Arc::new(saga),
            store,
            clock: Arc::new(SystemClock),
            command_topic: None,
            max_conflict_retries: DEFAULT_CONFLICT_RETRIES,
            privacy: None,
        }
    }

    /// Keeps personal data encrypted at rest: the [`Personal`](es_core::privacy::Personal)
    /// values of the state and of the commands are encrypted before each commit, and those of
    /// the stored state and of each message handled are decrypted before the saga sees them (a
    /// forgotten subject's values arrive as forgotten, and the saga goes on). A key store that
    /// fails is a transient [`SagaError::Privacy`].
    #[must_use]
    pub fn with_privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = Some(privacy);
        self
    }

    /// Uses `clock` for decisions' `now` and deadlines' due times.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Sends commands that name no topic to `topic`.
    #[must_use]
    pub fn with_command_topic(mut self, topic: impl Into<String>) -> Self {
        self.command_topic = Some(topic.into());
        self
    }

    /// Re-decides a conflicting commit at most `retries` times (16 by default).
    #[must_use]
    pub fn with_max_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    /// The saga.
    pub fn saga(&self) -> &S {
        &self.saga
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// The latest committed version of instance `key`, `None` when it never started.
    ///
    /// # Errors
    /// [`SagaError::Store`], or [`SagaError::Codec`]/[`SagaError::StateVersion`] when the
    /// stored state cannot be read.
    pub async fn instance(&self, key: &str) -> Result<Option<SagaView<S::State>>, SagaError> {
        match self.load_revealed(key).await? {
            Some(instance) => Ok(Some(view(&*self.saga, &instance)?)),
            None => Ok(None),
        }
    }

    /// Every committed version of instance `key`, oldest first.
    ///
    /// # Errors
    /// As for [`instance`](Self::instance).
    pub async fn history(&self, key: &str) -> Result<Vec<SagaView<S::State>>, SagaError> {
        let mut history = self.store.history(S::NAME, key).await?;
        if let Some(privacy) = &self.privacy {
            privacy
                .reveal_all(history.iter_mut().map(|instance| &mut instance.state))
                .await?;
        }
        history
            .iter()
            .map(|instance| view(&*self.saga, instance))
            .collect()
    }

    /// Handles one message (a fired deadline arrives as a
    /// [`DEADLINE_FIRED`](crate::DEADLINE_FIRED) message).
    ///
    /// # Errors
    /// [`SagaError::NotStarted`], [`SagaError::Contended`] and [`SagaError::Store`] are
    /// transient (handle the message again later); [`SagaError::Rejected`],
    /// [`SagaError::Codec`] and [`SagaError::StateVersion`] are not. Nothing is committed.
    pub async fn handle(&self, message: &OutboxMessage) -> Result<Handled, SagaError> {
        let message = self.revealed(message).await?;
        let message = message.as_ref();
        let deadline = FiredDeadline::from_message(message)?;
        let (key, starts) = match &deadline {
            Some(deadline) if deadline.saga == S::NAME => (deadline.key.clone(), false),
            Some(_) => return Ok(Handled::Ignored),
            None => match self.saga.route(message) {
                Route::Start(key) => (key, true),
                Route::Continue(key) => (key, false),
                Route::Ignore => return Ok(Handled::Ignored),
            },
        };
        let span = tracing::info_span!(
            "saga",
            otel.name = %format_args!("{} decide", S::NAME),
            saga = S::NAME,
            key = %key,
            message_type = %message.message_type,
            message_id = %message.message_id,
        );
        if deadline.is_some() {
            // A deadline continues the trace it was set in (a message's is continued by the
            // consumer's span, the parent of this one).
            telemetry::continue_trace(&span, &message.headers);
        }
        let handled = self
            .handle_for(&key, starts, message, deadline.as_ref())
            .instrument(span)
            .await;
        let outcome = match &handled {
            Ok(Handled::Committed { .. }) => "committed",
            Ok(Handled::Duplicate) => {
                telemetry::mark_duplicate();
                "duplicate"
            }
            Ok(Handled::Ignored) => "ignored",
            Ok(Handled::StaleDeadline) => "stale_deadline",
            Err(error) if error.is_transient() => "retried",
            Err(_) => "rejected",
        };
        telemetry::metrics().saga_decisions.add(
            1,
            &[
                telemetry::label("saga", S::NAME),
                telemetry::label("outcome", outcome),
            ],
        );
        handled
    }

    /// Handles `deadline` through the same path as messages, as a message whose id is the
    /// deadline's id: effectively once.
    ///
    /// # Errors
    /// As for [`handle`](Self::handle).
    pub async fn fire(&self, deadline: &Deadline) -> Result<Handled, SagaError> {
        let mut message = FiredDeadline::from_deadline(deadline).to_message(self.clock.now())?;
        // The decision the deadline brings continues the trace and the correlation of the
        // decision that set it.
        if let Some(instance) = self.load_revealed(&deadline.key).await? {
            let origin = decode_stored(&*self.saga, &instance)?
                .origins
                .remove(&deadline.step)
                .unwrap_or_default();
            message.correlation_id = origin.correlation_id;
            message.headers.extend(origin.headers);
        }
        self.handle(&message).await
    }

    async fn handle_for(
        &self,
        key: &str,
        starts: bool,
        message: &OutboxMessage,
        deadline: Option<&FiredDeadline>,
    ) -> Result<Handled, SagaError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(loaded) = self.load(key, starts).await? else {
                if deadline.is_some() {
                    return Ok(Handled::StaleDeadline);
                }
                tracing::debug!("message before its saga started; to be retried");
                return Err(SagaError::NotStarted {
                    saga: S::NAME.to_owned(),
                    key: key.to_owned(),
                    message_id: message.message_id,
                });
            };
            let mut awaiting = loaded.awaiting;
            let mut origins = loaded.origins;
            let mut resumed = None;
            if let Some(deadline) = deadline {
                if awaiting.get(&deadline.step) != Some(&deadline.id) {
                    tracing::debug!(step = %deadline.step, "deadline no longer awaited");
                    return Ok(Handled::StaleDeadline);
                }
                awaiting.remove(&deadline.step);
                // What the deadline makes the saga do carries the correlation of the decision
                // that set it (`fire` looked it up too, for the trace; a deadline handed to
                // `handle` directly gets it here).
                let origin = origins.remove(&deadline.step).unwrap_or_default();
                if message.correlation_id.is_none() && origin.correlation_id.is_some() {
                    let mut fired = message.clone();
                    fired.correlation_id = origin.correlation_id;
                    resumed = Some(fired);
                }
            }
            let message = resumed.as_ref().unwrap_or(message);
            let input = Input {
                key,
                message,
                deadline,
                completed: loaded.completed,
                now: self.clock.now(),
            };
            let decision =
                self.saga
                    .handle(loaded.state, &input)
                    .map_err(|error| SagaError::Rejected {
                        saga: S::NAME.to_owned(),
                        message_id: message.message_id,
                        source: Box::new(error),
                    })?;
            let commands = self.commands(key, message, &decision);
            let completed = loaded.completed || decision.completed;
            let mut commit = self.commit(
                key,
                loaded.version,
                &input,
                decision,
                commands.clone(),
                (awaiting, origins),
            )?;
            self.protect(&mut commit).await?;
            match self.store.commit(commit).await {
                Ok(SagaCommitOutcome::Committed { version }) => {
                    tracing::debug!(version, completed, "saga decision committed");
                    return Ok(Handled::Committed {
                        version,
                        completed,
                        commands,
                    });
                }
                Ok(SagaCommitOutcome::Duplicate) => return Ok(Handled::Duplicate),
                Err(SagaStoreError::Conflict { .. }) if attempts <= self.max_conflict_retries => {
                    tracing::debug!(attempts, "saga commit conflicted; re-deciding");
                    tokio::task::yield_now().await;
                }
                Err(SagaStoreError::Conflict { .. }) => {
                    return Err(SagaError::Contended {
                        saga: S::NAME.to_owned(),
                        key: key.to_owned(),
                        attempts,
                    });
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Instance `key` as stored, its personal values decrypted.
    async fn load_revealed(&self, key: &str) -> Result<Option<SagaInstance>, SagaError> {
        let mut instance = self.store.load(S::NAME, key).await?;
        if let (Some(privacy), Some(instance)) = (&self.privacy, &mut instance) {
            privacy.reveal(&mut instance.state).await?;
        }
        Ok(instance)
    }

    /// `message` with its personal values decrypted (as it is without privacy, or when it
    /// holds none).
    async fn revealed<'m>(
        &self,
        message: &'m OutboxMessage,
    ) -> Result<Cow<'m, OutboxMessage>, SagaError> {
        let Some(privacy) = &self.privacy else {
            return Ok(Cow::Borrowed(message));
        };
        if !es_core::privacy::holds_sealed(&message.payload) {
            return Ok(Cow::Borrowed(message));
        }
        let mut revealed = message.clone();
        privacy.reveal(&mut revealed.payload).await?;
        Ok(Cow::Owned(revealed))
    }

    /// Encrypts the personal values of `commit`'s state, commands and deadline payloads.
    async fn protect(&self, commit: &mut SagaCommit) -> Result<(), SagaError> {
        let Some(privacy) = &self.privacy else {
            return Ok(());
        };
        privacy.protect(&mut commit.state).await?;
        for command in &mut commit.outbox {
            privacy.protect(&mut command.payload).await?;
        }
        for deadline in &mut commit.set_deadlines {
            privacy.protect(&mut deadline.payload).await?;
        }
        Ok(())
    }

    /// The instance to decide on; a fresh one when `starts` and it was never stored.
    async fn load(&self, key: &str, starts: bool) -> Result<Option<Loaded<S::State>>, SagaError> {
        match self.load_revealed(key).await? {
            Some(instance) => {
                let decoded = decode_stored(&*self.saga, &instance)?;
                Ok(Some(Loaded {
                    version: instance.version,
                    completed: instance.completed,
                    state: decoded.state,
                    awaiting: decoded.awaiting,
                    origins: decoded.origins,
                }))
            }
            None if starts => Ok(Some(Loaded {
                version: 0,
                completed: false,
                state: S::State::default(),
                awaiting: std::collections::BTreeMap::new(),
                origins: std::collections::BTreeMap::new(),
            })),
            None => Ok(None),
        }
    }

    /// The decision's commands, keyed, routed and caused by `message`.
    fn commands(
        &self,
        key: &str,
        message: &OutboxMessage,
        decision: &Decision<S::State>,
    ) -> Vec<OutboxMessage> {
        let now = self.clock.now();
        decision
            .commands
            .iter()
            .cloned()
            .map(|mut command| {
                if command.partition_key.is_empty() {
                    command.partition_key = key.to_owned();
                }
                if command.topic.is_none() {
                    command.topic.clone_from(&self.command_topic);
                }
                if command.source_type.is_none() {
                    command.source_type = Some(S::NAME.to_owned());
                    command.source_id = Some(key.to_owned());
                }
                command.correlation_id = command.correlation_id.or(message.correlation_id);
                // Without a trace of its own, a command carries on the message's.
                for header in [telemetry::TRACEPARENT, telemetry::TRACESTATE] {
                    if let Some(value) = message.headers.get(header) {
                        command
                            .headers
                            .entry(header.to_owned())
                            .or_insert_with(|| value.clone());
                    }
                }
                command.causation_id = command.causation_id.or(Some(message.message_id));
                command.occurred_at = now;
                command
            })
            .collect()
    }

    /// Where a deadline set while deciding on `message` comes from: its correlation id and
    /// the current trace context (the message's, when no trace is being recorded).
    fn origin(&self, message: &OutboxMessage) -> Origin {
        let mut headers = std::collections::BTreeMap::new();
        if !telemetry::inject_current(&mut headers) {
            for header in [telemetry::TRACEPARENT, telemetry::TRACESTATE] {
                if let Some(value) = message.headers.get(header) {
                    headers.insert(header.to_owned(), value.clone());
                }
            }
        }
        Origin {
            correlation_id: message.correlation_id,
            headers,
        }
    }

    /// The commit of `decision` for the instance at `version`.
    fn commit(
        &self,
        key: &str,
        version: u64,
        input: &Input<'_>,
        decision: Decision<S::State>,
        commands: Vec<OutboxMessage>,
        (mut awaiting, mut origins): (
            std::collections::BTreeMap<String, uuid::Uuid>,
            std::collections::BTreeMap<String, Origin>,
        ),
    ) -> Result<SagaCommit, SagaError> {
        let completed = input.completed || decision.completed;
        let mut cancel = decision.cancel_deadlines;
        let mut set = Vec::new();
        if completed {
            cancel.extend(awaiting.keys().cloned());
            awaiting.clear();
        } else {
            for step in &cancel {
                awaiting.remove(step);
            }
            let origin = self.origin(input.message);
            for request in decision.set_deadlines {
                let due_at = input
                    .now
                    .checked_add_signed(request.after)
                    .unwrap_or(input.now);
                let deadline = Deadline::new(S::NAME, key, request.step, due_at, request.payload);
                awaiting.insert(deadline.step.clone(), deadline.id);
                origins.insert(deadline.step.clone(), origin.clone());
                set.push(deadline);
            }
        }
        origins.retain(|step, _| awaiting.contains_key(step));
        cancel.sort();
        cancel.dedup();
        let mut commit = SagaCommit::new(
            S::NAME,
            key,
            version,
            encode_stored::<S>(&decision.state, awaiting, origins)?,
        )
        .completed(completed)
        .with_inbox(S::NAME, input.message.message_id)
        .with_outbox_messages(commands);
        commit.cancel_deadlines = cancel;
        commit.set_deadlines = set;
        Ok(commit)
    }
}
