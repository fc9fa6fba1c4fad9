//! Forgetting in read models: a forgetting recorded in the event log, and projections that see
//! events decrypted and are told, in log order, whom to forget.

use std::slice;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Forgetting, Privacy, PrivacyError, SubjectId};
use crate::clock::SystemClock;
use crate::event::{NewEvent, RecordedEvent};
use crate::ids::{ExpectedVersion, InvalidStreamId, StreamId};
use crate::metadata::CommandContext;
use crate::projection::{Projection, ProjectionError};
use crate::store::{AppendRequest, EventStore, LogFilter};

/// The type of the event recording that a subject was forgotten (a reserved name).
pub const SUBJECT_FORGOTTEN: &str = "SubjectForgotten";

/// The stream type of the streams `privacy-{subject}` holding [`SUBJECT_FORGOTTEN`] records.
pub const FORGOTTEN_STREAM_TYPE: &str = "privacy";

/// The body of a [`SUBJECT_FORGOTTEN`] event: no personal data, only the subject's opaque id,
/// who asked and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectForgotten {
    /// The subject.
    pub subject: SubjectId,
    /// Who asked.
    pub by: String,
    /// When the keys were destroyed.
    pub at: DateTime<Utc>,
}

/// The stream `privacy-{subject}` that records `subject`'s forgetting.
///
/// # Errors
/// Never for a valid subject id (200 bytes at most fit a stream id).
pub fn forgotten_stream(subject: &SubjectId) -> Result<StreamId, InvalidStreamId> {
    StreamId::new(format!("{FORGOTTEN_STREAM_TYPE}-{}", subject.as_str()))
}

/// The append that records `forgetting` in an event log (any expected version: recording it
/// twice is harmless, [`Projection::forget`] is idempotent).
///
/// # Errors
/// As [`forgotten_stream`].
pub fn forgotten_record(forgetting: &Forgetting) -> Result<AppendRequest, InvalidStreamId> {
    let record = SubjectForgotten {
        subject: forgetting.subject.clone(),
        by: forgetting.by.clone(),
        at: forgetting.at,
    };
    let event = NewEvent {
        event_type: SUBJECT_FORGOTTEN.to_owned(),
        schema_version: 1,
        data: serde_json::to_value(record).unwrap_or_default(),
        metadata: CommandContext::new()
            .with_actor(forgetting.by.clone())
            .metadata(&SystemClock),
    };
    Ok(
        AppendRequest::new(forgotten_stream(&forgetting.subject)?, ExpectedVersion::Any)
            .with_stream_type(FORGOTTEN_STREAM_TYPE)
            .with_events([event]),
    )
}

/// The subject a [`SUBJECT_FORGOTTEN`] record names; `None` for any other event.
pub fn forgotten_subject(event: &RecordedEvent) -> Option<SubjectId> {
    if event.event_type != SUBJECT_FORGOTTEN
        || !event
            .stream_id
            .as_str()
            .starts_with(&format!("{FORGOTTEN_STREAM_TYPE}-"))
    {
        return None;
    }
    serde_json::from_value::<SubjectForgotten>(event.data.clone())
        .ok()
        .map(|record| record.subject)
}

/// Why [`Privacy::forget_recorded`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForgetError {
    /// The keys could not be destroyed: nothing changed.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    /// The keys are destroyed, but the record did not reach the log: call again (forgetting
    /// twice is harmless) so that read models learn of it.
    #[error("the subject's keys are destroyed, but recording it failed: {0}")]
    Record(#[source] crate::error::BoxError),
}

impl Privacy {
    /// Forgets `subject` ([`Privacy::forget`]), then records it in `store`'s log as a
    /// [`SUBJECT_FORGOTTEN`] event, so that every [`Revealing`] projection following that log
    /// calls its [`Projection::forget`] in log order, after each earlier event of the subject.
    ///
    /// The keys go first: if recording fails, the data is already unreadable, and calling
    /// again records it.
    ///
    /// # Errors
    /// [`ForgetError`].
    pub async fn forget_recorded<S: EventStore>(
        &self,
        store: &S,
        subject: &SubjectId,
        by: &str,
    ) -> Result<Forgetting, ForgetError> {
        let forgetting = self.forget(subject, by).await?;
        let record = forgotten_record(&forgetting).map_err(|e| ForgetError::Record(e.into()))?;
        store
            .append(record)
            .await
            .map_err(|e| ForgetError::Record(e.into()))?;
        Ok(forgetting)
    }

    /// `projection`, fed each event with its personal values decrypted (a forgotten subject's
    /// as forgotten), and told of each [`SUBJECT_FORGOTTEN`] record in the log through
    /// [`Projection::forget`]. Works wherever a projection runs: inline, in a daemon, in
    /// memory; a rebuild replays the records too.
    pub fn revealing<P>(&self, projection: P) -> Revealing<P> {
        Revealing {
            projection,
            privacy: self.clone(),
        }
    }
}

/// A projection over decrypted events that learns whom to forget
/// ([`Privacy::revealing`]). Its filter is the inner projection's, widened to take the
/// [`SUBJECT_FORGOTTEN`] records too.
#[derive(Debug, Clone)]
pub struct Revealing<P> {
    projection: P,
    privacy: Privacy,
}

impl<P> Revealing<P> {
    /// The inner projection.
    pub fn inner(&self) -> &P {
        &self.projection
    }

    /// Decrypts `events` and applies them to the inner projection.
    async fn apply_revealed<T>(
        &self,
        target: &mut T,
        events: &mut Vec<RecordedEvent>,
    ) -> Result<(), ProjectionError>
    where
        T: Send + ?Sized,
        P: Projection<T>,
    {
        if events.is_empty() {
            return Ok(());
        }
        self.privacy
            .reveal_all(events.iter_mut().map(|event| &mut event.data))
            .await
            .map_err(ProjectionError::apply)?;
        let applied = self.projection.apply_batch(target, events).await;
        events.clear();
        applied
    }
}

#[async_trait]
impl<T, P> Projection<T> for Revealing<P>
where
    T: Send + ?Sized,
    P: Projection<T>,
{
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn filter(&self) -> LogFilter {
        let mut filter = self.projection.filter();
        if !filter.stream_types.is_empty() {
            filter.stream_types.push(FORGOTTEN_STREAM_TYPE.to_owned());
        }
        if !filter.event_types.is_empty() {
            filter.event_types.push(SUBJECT_FORGOTTEN.to_owned());
        }
        filter
    }

    fn version(&self) -> u32 {
        self.projection.version()
    }

    async fn prepare(&self, target: &mut T) -> Result<(), ProjectionError> {
        self.projection.prepare(target).await
    }

    async fn apply(&self, target: &mut T, event: &RecordedEvent) -> Result<(), ProjectionError> {
        self.apply_batch(target, slice::from_ref(event)).await
    }

    async fn apply_batch(
        &self,
        target: &mut T,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let wanted = self.projection.filter().event_types;
        let wanted_by_inner =
            |event: &RecordedEvent| wanted.is_empty() || wanted.contains(&event.event_type);
        // Nothing sealed, no forgetting, nothing the inner filter refuses: as they are.
        if events.iter().all(|event| {
            forgotten_subject(event).is_none()
                && wanted_by_inner(event)
                && !super::holds_sealed(&event.data)
        }) {
            return self.projection.apply_batch(target, events).await;
        }
        let mut run = Vec::new();
        for event in events {
            if let Some(subject) = forgotten_subject(event) {
                self.apply_revealed(target, &mut run).await?;
                self.projection.forget(target, &subject).await?;
            } else if wanted_by_inner(event) {
                run.push(event.clone());
            }
        }
        self.apply_revealed(target, &mut run).await
    }

    async fn forget(&self, target: &mut T, subject: &SubjectId) -> Result<(), ProjectionError> {
        self.projection.forget(target, subject).await
    }
}
