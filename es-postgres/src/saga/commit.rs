//! A saga commit: one call of the `saga_commit` SQL function.

use chrono::{DateTime, Utc};
use es_core::{Deadline, SagaCommit, SagaCommitOutcome, SagaStoreError};
use uuid::Uuid;

use super::{PgSagaStore, saga_error};
use crate::error::{PgError, from_bigint, to_bigint};
use crate::jsonb::RawJson;

/// Deadlines as the columns `set_deadlines` takes.
#[derive(Default)]
pub(super) struct DeadlineColumns<'a> {
    pub(super) ids: Vec<Uuid>,
    pub(super) sagas: Vec<&'a str>,
    pub(super) keys: Vec<&'a str>,
    pub(super) steps: Vec<&'a str>,
    pub(super) due_at: Vec<DateTime<Utc>>,
    pub(super) payloads: Vec<RawJson>,
}

impl<'a> DeadlineColumns<'a> {
    pub(super) fn new(deadlines: &'a [Deadline]) -> Result<Self, serde_json::Error> {
        let mut columns = Self::default();
        for deadline in deadlines {
            columns.ids.push(deadline.id);
            columns.sagas.push(&deadline.saga);
            columns.keys.push(&deadline.key);
            columns.steps.push(&deadline.step);
            columns.due_at.push(deadline.due_at);
            columns.payloads.push(RawJson::encode(&deadline.payload)?);
        }
        Ok(columns)
    }
}

fn encode_error(what: &str, error: serde_json::Error) -> SagaStoreError {
    saga_error(PgError::Config(format!(
        "cannot encode a saga {what}: {error}"
    )))
}

impl PgSagaStore {
    pub(super) async fn commit_one(
        &self,
        commit: SagaCommit,
    ) -> Result<SagaCommitOutcome, SagaStoreError> {
        let expected =
            to_bigint("expected saga version", commit.expected_version).map_err(saga_error)?;
        let state = RawJson::encode(&commit.state).map_err(|e| encode_error("state", e))?;
        let outbox = if commit.outbox.is_empty() {
            None
        } else {
            let outbox = RawJson::encode(&commit.outbox).map_err(|e| encode_error("message", e))?;
            Some(outbox)
        };
        let (subscriber, message_id) = match &commit.inbox {
            Some((subscriber, message_id)) => (Some(subscriber.as_str()), Some(*message_id)),
            None => (None, None),
        };
        let cancel: Vec<&str> = commit.cancel_deadlines.iter().map(String::as_str).collect();
        let deadlines = DeadlineColumns::new(&commit.set_deadlines)
            .map_err(|e| encode_error("deadline payload", e))?;
        let now = self.clock.now();
        let rows = self
            .query(
                &self.sql.commit,
                &[
                    &commit.saga,
                    &commit.key,
                    &expected,
                    &state,
                    &commit.completed,
                    &now,
                    &subscriber,
                    &message_id,
                    &outbox,
                    &cancel,
                    &deadlines.ids,
                    &deadlines.sagas,
                    &deadlines.keys,
                    &deadlines.steps,
                    &deadlines.due_at,
                    &deadlines.payloads,
                ],
            )
            .await
            .map_err(saga_error)?;
        let row = rows
            .first()
            .ok_or_else(|| saga_error(PgError::Config("saga_commit returned no row".to_owned())))?;
        let status: i16 = row.try_get(0).map_err(saga_error)?;
        let version: Option<i64> = row.try_get(1).map_err(saga_error)?;
        let version = from_bigint(version.unwrap_or(0));
        match status {
            0 => {
                // Wakes this process's relay of the saga outbox and its deadline scheduler.
                self.store.inner.signal.notify();
                Ok(SagaCommitOutcome::Committed { version })
            }
            1 => Ok(SagaCommitOutcome::Duplicate),
            2 => Err(SagaStoreError::Conflict {
                saga: commit.saga,
                key: commit.key,
                expected: commit.expected_version,
                actual: version,
            }),
            other => Err(saga_error(PgError::Config(format!(
                "saga_commit returned unknown status {other}"
            )))),
        }
    }
}
