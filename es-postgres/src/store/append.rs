//! The append: one statement, one round trip.

use es_core::telemetry;
use std::collections::HashSet;
use tracing::Instrument as _;

use deadpool_postgres::ClientWrapper;
use es_core::{
    AppendOutcome, AppendRequest, AppendStatus, CommandContext, Conflict, DeleteMode, EventId,
    EventStore, ExpectedVersion, Position, StoreError, StreamId, SystemClock, Version,
};
use uuid::Uuid;

use super::{Inner, PgEventStore};
use crate::error::{PgError, backend};
use crate::jsonb::RawJson;

fn expected_code(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::StreamExists => -3,
        ExpectedVersion::Exact(version) => i64::try_from(version.get()).unwrap_or(i64::MAX),
    }
}

fn encode_error(stream: &StreamId, error: serde_json::Error) -> StoreError {
    StoreError::backend(PgError::Config(format!(
        "cannot encode an event of {stream}: {error}"
    )))
}

fn unstorable(stream: &StreamId, what: impl Into<String>, reason: &'static str) -> StoreError {
    PgError::Unstorable {
        stream: stream.clone(),
        what: what.into(),
        reason,
    }
    .into()
}

/// PostgreSQL `text` cannot hold NUL, nor `jsonb` the escape `\u0000`.
fn storable_text(stream: &StreamId, what: &str, text: &str) -> Result<(), StoreError> {
    if text.contains('\0') {
        return Err(unstorable(
            stream,
            what,
            "text cannot contain a NUL character",
        ));
    }
    Ok(())
}

fn storable_json(stream: &StreamId, what: &str, json: &RawJson) -> Result<(), StoreError> {
    if has_nul_escape(&json.0) {
        return Err(unstorable(
            stream,
            what,
            "JSON cannot contain a NUL character (\\u0000)",
        ));
    }
    Ok(())
}

/// Whether serialized JSON holds the escape `\u0000` (not an escaped backslash followed by
/// `u0000`).
fn has_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000".as_slice())
            {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

fn schema_version(stream: &StreamId, version: u32) -> Result<i32, StoreError> {
    i32::try_from(version).map_err(|_| {
        unstorable(
            stream,
            format!("schema version {version}"),
            "schema versions are at most 2147483647",
        )
    })
}

/// Refuses, before any SQL, what PostgreSQL could not store: an error there would abort the
/// caller's transaction.
fn validate(request: &AppendRequest) -> Result<(), StoreError> {
    let stream = &request.stream_id;
    storable_text(stream, "the stream type", &request.stream_type)?;
    for event in &request.events {
        storable_text(stream, "an event type", &event.event_type)?;
    }
    for message in &request.outbox {
        schema_version(stream, message.schema_version)?;
        let texts = [
            Some(message.message_type.as_str()),
            Some(message.partition_key.as_str()),
            message.topic.as_deref(),
            message.source_type.as_deref(),
            message.source_id.as_deref(),
        ];
        for text in texts.into_iter().flatten() {
            storable_text(stream, "an outbox message field", text)?;
        }
    }
    Ok(())
}

/// Appends through `client`, which is either a pooled connection in autocommit mode or one
/// inside a [`PgTransaction`](crate::PgTransaction).
pub(crate) async fn append_on(
    inner: &Inner,
    client: &ClientWrapper,
    request: AppendRequest,
) -> Result<AppendOutcome, StoreError> {
    if !request.expected.is_valid() {
        return Err(StoreError::InvalidExpectedVersion(request.stream_id));
    }
    validate(&request)?;
    let count = request.events.len();
    let mut ids = Vec::with_capacity(count);
    let mut types = Vec::with_capacity(count);
    let mut schema_versions = Vec::with_capacity(count);
    let mut data = Vec::with_capacity(count);
    let mut metadata = Vec::with_capacity(count);
    let mut seen = HashSet::with_capacity(count);
    for event in &request.events {
        let id = event.event_id();
        if !seen.insert(id) {
            return Err(StoreError::DuplicateEventId {
                stream: request.stream_id.clone(),
                event_id: id,
                existing_stream: request.stream_id.clone(),
            });
        }
        let body = RawJson::encode(&event.data).map_err(|e| encode_error(&request.stream_id, e))?;
        let meta =
            RawJson::encode(&event.metadata).map_err(|e| encode_error(&request.stream_id, e))?;
        storable_json(&request.stream_id, "event data", &body)?;
        storable_json(&request.stream_id, "event metadata", &meta)?;
        let size = body.len() + meta.len();
        if size > inner.max_event_bytes {
            return Err(StoreError::PayloadTooLarge {
                stream: request.stream_id.clone(),
                event_id: id,
                size,
                limit: inner.max_event_bytes,
            });
        }
        ids.push(id.as_uuid());
        types.push(event.event_type.as_str());
        schema_versions.push(schema_version(&request.stream_id, event.schema_version)?);
        data.push(body);
        metadata.push(meta);
    }
    let outbox = if request.outbox.is_empty() {
        None
    } else {
        let json =
            RawJson::encode(&request.outbox).map_err(|e| encode_error(&request.stream_id, e))?;
        storable_json(&request.stream_id, "an outbox message", &json)?;
        Some(json)
    };
    let statement = client
        .prepare_cached(&inner.sql.append)
        .await
        .map_err(backend)?;
    let row = client
        .query_one(
            &statement,
            &[
                &request.stream_id.as_str(),
                &request.stream_type,
                &expected_code(request.expected),
                &ids,
                &types,
                &schema_versions,
                &data,
                &metadata,
                &outbox,
            ],
        )
        .await
        .map_err(backend)?;
    outcome_from_row(
        &row,
        request.stream_id,
        request.expected,
        request.events.first().map(|e| e.event_id()),
    )
}

/// Turns the status row of `append_events` or `delete_stream` into an outcome or an error.
fn outcome_from_row(
    row: &tokio_postgres::Row,
    stream_id: StreamId,
    expected: ExpectedVersion,
    first_event: Option<EventId>,
) -> Result<AppendOutcome, StoreError> {
    let status: i16 = row.get(0);
    let version: Option<i64> = row.get(1);
    let transaction: Option<i64> = row.get(2);
    let positions: Option<Vec<i64>> = row.get(3);
    let detail: Option<String> = row.get(4);
    let version = Version::new(version.unwrap_or(0).max(0) as u64);
    let transaction = transaction.unwrap_or(0).max(0) as u64;
    let positions: Vec<Position> = positions
        .unwrap_or_default()
        .into_iter()
        .map(|p| Position::new(transaction, p.max(0) as u64))
        .collect();
    match status {
        0 => Ok(AppendOutcome {
            status: AppendStatus::Appended,
            last_version: version,
            positions,
        }),
        2 => Ok(AppendOutcome {
            status: AppendStatus::AlreadyAppended,
            last_version: version,
            positions,
        }),
        1 => Err(Conflict {
            stream: stream_id,
            expected,
            actual: version,
        }
        .into()),
        3 => Err(StoreError::StreamDeleted(stream_id)),
        4 => {
            let detail = detail.unwrap_or_default();
            let (existing, event_id) = detail.rsplit_once(' ').unwrap_or((detail.as_str(), ""));
            let event_id = Uuid::parse_str(event_id)
                .map(EventId::from_uuid)
                .ok()
                .or(first_event)
                .unwrap_or_default();
            Err(StoreError::DuplicateEventId {
                existing_stream: StreamId::new(existing).unwrap_or_else(|_| stream_id.clone()),
                stream: stream_id,
                event_id,
            })
        }
        5 => Err(StoreError::StreamNotLocked(stream_id)),
        6 => Err(PgError::ReadCommittedRequired.into()),
        other => {
            Err(PgError::Config(format!("append_events returned unknown status {other}")).into())
        }
    }
}

impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let started = std::time::Instant::now();
        let events = request.events.len();
        let schema = self.schema();
        let span = telemetry::append_span("postgresql", schema, &request.stream_id, events);
        let appended = async {
            let client = crate::conn::Conn::get(&self.inner.pool)
                .await
                .map_err(backend)?;
            append_on(&self.inner, client.client(), request)
                .await
                .inspect_err(|error| client.check_store_error(error))
        };
        let outcome = appended.instrument(span).await?;
        if outcome.status == AppendStatus::Appended {
            telemetry::record_append(schema, events, started);
            self.inner.signal.notify();
        }
        Ok(outcome)
    }

    fn read_stream<'a>(
        &'a self,
        stream_id: &'a StreamId,
        read: es_core::StreamRead,
    ) -> futures::stream::BoxStream<'a, Result<es_core::RecordedEvent, StoreError>> {
        self.read_stream_rows(stream_id, read)
    }

    async fn delete_stream(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<Option<Position>, StoreError> {
        if !expected.is_valid() {
            return Err(StoreError::InvalidExpectedVersion(stream_id.clone()));
        }
        let metadata = CommandContext::new().metadata(&SystemClock);
        let event_id = metadata.event_id;
        let metadata = RawJson::encode(&metadata).map_err(|e| encode_error(stream_id, e))?;
        let hard = mode == DeleteMode::Hard;
        let client = crate::conn::Conn::get(&self.inner.pool)
            .await
            .map_err(backend)?;
        let statement = client
            .prepare_cached(&self.inner.sql.delete_stream)
            .await
            .map_err(backend)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &stream_id.as_str(),
                    &expected_code(expected),
                    &hard,
                    &event_id.as_uuid(),
                    &metadata,
                ],
            )
            .await
            .map_err(backend)?;
        let outcome = outcome_from_row(&row, stream_id.clone(), expected, Some(event_id))?;
        if !hard {
            self.inner.signal.notify();
        }
        Ok(outcome.positions.first().copied())
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<Version, StoreError> {
        self.current_version(stream_id).await
    }

    async fn read_log(
        &self,
        after: Position,
        filter: &es_core::LogFilter,
        limit: usize,
    ) -> Result<es_core::LogBatch, StoreError> {
        self.read_log_batch(after, filter, limit).await
    }

    fn subscribe(
        &self,
        after: Position,
        filter: es_core::LogFilter,
    ) -> futures::stream::BoxStream<'static, Result<es_core::SubscriptionItem, StoreError>> {
        es_core::poll_subscription(
            self.clone(),
            after,
            filter,
            self.inner.options,
            &self.inner.signal,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn finds_only_real_nul_escapes() {
        assert!(has_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(!has_nul_escape(br#"{"a":"x\\u0000y"}"#));
        assert!(has_nul_escape(br#"{"a":"x\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\u00e9"}"#));
    }
}
