//! Reads: a stream, forward or backward, streamed; the global log through the fence.

use chrono::{DateTime, Utc};
use es_core::{
    Direction, LogBatch, LogFilter, Metadata, Position, RecordedEvent, StoreError, StreamId,
    StreamRead, Version,
};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgEventStore;
use crate::error::{PgError, backend};
use crate::jsonb::JsonAs;
use crate::xid8::Xid8;

/// Rows a stream read fetches per round trip.
const STREAM_PAGE: i64 = 1000;

/// Decodes an event row whose columns start at `at`: position, transaction id, stream id,
/// version, event type, schema version, data, metadata, recorded at.
fn decode_event(row: &Row, at: usize) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get(at).map_err(backend)?;
    let transaction: Xid8 = row.try_get(at + 1).map_err(backend)?;
    let stream: String = row.try_get(at + 2).map_err(backend)?;
    let corrupt = |reason: String| PgError::CorruptRow {
        table: "events",
        position,
        reason,
    };
    let stream_id = StreamId::new(stream).map_err(|e| corrupt(e.to_string()))?;
    let version: i64 = row.try_get(at + 3).map_err(backend)?;
    let metadata: Metadata = row
        .try_get::<_, JsonAs<Metadata>>(at + 7)
        .map_err(|e| corrupt(format!("metadata: {e}")))?
        .0;
    let schema_version: i32 = row.try_get(at + 5).map_err(backend)?;
    let recorded_at: DateTime<Utc> = row.try_get(at + 8).map_err(backend)?;
    Ok(RecordedEvent {
        stream_id,
        version: Version::new(version.max(0) as u64),
        position: Position::new(transaction.0, position.max(0) as u64),
        event_type: row.try_get(at + 4).map_err(backend)?,
        schema_version: schema_version.max(0) as u32,
        data: row.try_get(at + 6).map_err(backend)?,
        metadata,
        recorded_at,
    })
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn none_if_empty(values: &[String]) -> Option<&[String]> {
    (!values.is_empty()).then_some(values)
}

struct Page {
    store: PgEventStore,
    stream_id: String,
    direction: Direction,
    next: Option<i64>,
    remaining: usize,
}

impl PgEventStore {
    /// Pages through a stream, [`STREAM_PAGE`] rows per round trip, never holding more.
    pub(super) fn read_stream_rows<'a>(
        &'a self,
        stream_id: &'a StreamId,
        read: StreamRead,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>> {
        let start = match (read.direction, read.from) {
            (_, Some(from)) => as_i64(from.get()),
            (Direction::Forward, None) => 1,
            (Direction::Backward, None) => i64::MAX,
        };
        let page = Page {
            store: self.clone(),
            stream_id: stream_id.as_str().to_owned(),
            direction: read.direction,
            next: Some(start),
            remaining: read.limit.unwrap_or(usize::MAX),
        };
        stream::try_unfold(page, |mut page| async move {
            let Some(from) = page.next.filter(|_| page.remaining > 0) else {
                return Ok::<_, StoreError>(None);
            };
            let limit = STREAM_PAGE.min(i64::try_from(page.remaining).unwrap_or(i64::MAX));
            let inner = &page.store.inner;
            let sql = match page.direction {
                Direction::Forward => &inner.sql.read_forward,
                Direction::Backward => &inner.sql.read_backward,
            };
            let client = crate::conn::Conn::get(&inner.pool).await.map_err(backend)?;
            let statement = client.prepare_cached(sql).await.map_err(backend)?;
            // One row more than the page tells whether another page exists, so a stream that
            // fits in one page is read in one round trip.
            let mut rows = client
                .query(&statement, &[&page.stream_id, &from, &(limit + 1)])
                .await
                .map_err(backend)?;
            let more = rows.len() as i64 > limit;
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            let events = rows
                .iter()
                .map(|row| decode_event(row, 0))
                .collect::<Result<Vec<_>, _>>()?;
            page.remaining = page.remaining.saturating_sub(events.len());
            page.next = match events.last() {
                Some(last) if more => {
                    let version = as_i64(last.version.get());
                    match page.direction {
                        Direction::Forward => Some(version + 1),
                        Direction::Backward => (version > 1).then(|| version - 1),
                    }
                }
                _ => None,
            };
            Ok(Some((stream::iter(events.into_iter().map(Ok)), page)))
        })
        .try_flatten()
        .boxed()
    }

    /// Reads a stream through `client` (inside a transaction), every page collected.
    pub(crate) async fn read_stream_on(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        stream_id: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = match read.direction {
            Direction::Forward => &self.inner.sql.read_forward,
            Direction::Backward => &self.inner.sql.read_backward,
        };
        let statement = client.prepare_cached(sql).await.map_err(backend)?;
        let mut from = match (read.direction, read.from) {
            (_, Some(from)) => as_i64(from.get()),
            (Direction::Forward, None) => 1,
            (Direction::Backward, None) => i64::MAX,
        };
        let mut remaining = read.limit.unwrap_or(usize::MAX);
        let mut events = Vec::new();
        while remaining > 0 {
            let limit = STREAM_PAGE.min(i64::try_from(remaining).unwrap_or(i64::MAX));
            let rows = client
                .query(&statement, &[&stream_id.as_str(), &from, &(limit + 1)])
                .await
                .map_err(backend)?;
            let more = rows.len() as i64 > limit;
            for row in rows
                .iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
            {
                events.push(decode_event(row, 0)?);
                remaining -= 1;
            }
            let Some(last) = events.last().filter(|_| more) else {
                break;
            };
            let version = as_i64(last.version.get());
            from = match read.direction {
                Direction::Forward => version + 1,
                Direction::Backward if version > 1 => version - 1,
                Direction::Backward => break,
            };
        }
        Ok(events)
    }

    pub(super) async fn current_version(
        &self,
        stream_id: &StreamId,
    ) -> Result<Version, StoreError> {
        let client = crate::conn::Conn::get(&self.inner.pool)
            .await
            .map_err(backend)?;
        let statement = client
            .prepare_cached(&self.inner.sql.stream_version)
            .await
            .map_err(backend)?;
        let row = client
            .query_opt(&statement, &[&stream_id.as_str()])
            .await
            .map_err(backend)?;
        Ok(row.map_or(Version::ZERO, |row| {
            Version::new(row.get::<_, Option<i64>>(0).unwrap_or(0).max(0) as u64)
        }))
    }

    pub(super) async fn read_log_batch(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogBatch, StoreError> {
        let client = crate::conn::Conn::get(&self.inner.pool)
            .await
            .map_err(backend)?;
        let statement = client
            .prepare_cached(&self.inner.sql.read_log)
            .await
            .map_err(backend)?;
        let after_transaction = after.transaction().to_string();
        let after_position = as_i64(after.sequence());
        let stream_types = none_if_empty(&filter.stream_types);
        let event_types = none_if_empty(&filter.event_types);
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 5] = [
            &after_transaction,
            &after_position,
            &stream_types,
            &event_types,
            &limit,
        ];
        let rows = client.query(&statement, &params).await.map_err(backend)?;
        // One row carries the fence (its position is null); every other row is an event.
        let mut fence_row = None;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<_, Option<i64>>(4).map_err(backend)?.is_some() {
                events.push(decode_event(row, 4)?);
            } else {
                fence_row = Some(row);
            }
        }
        let Some(fence_row) = fence_row else {
            return Err(PgError::Config("the log query returned no fence row".to_owned()).into());
        };
        let fence: i64 = fence_row.try_get(0).map_err(backend)?;
        let next_xid: i64 = fence_row.try_get(1).map_err(backend)?;
        let max_xid: Option<i64> = fence_row.try_get(2).map_err(backend)?;
        let held_back: bool = fence_row.try_get(3).map_err(backend)?;
        check_regression(after, max_xid, next_xid)?;
        // The query does not sort its output again (that would hold every row back until the
        // last was read); the events come in index order, which this makes sure of.
        if !events.windows(2).all(|w| w[0].position < w[1].position) {
            events.sort_by_key(|event| event.position);
        }
        let mut batch = log_batch(after, events, limit, fence);
        batch.held_back = held_back;
        Ok(batch)
    }
}

/// Refuses to read when the server's transaction ids are behind what the log or the reader
/// has seen: after a restore into a new cluster, reading on would skip events forever.
pub(super) fn check_regression(
    after: Position,
    max_xid: Option<i64>,
    next_xid: i64,
) -> Result<(), StoreError> {
    let stored = max_xid.unwrap_or(0).max(0) as u64;
    let stored = stored.max(after.transaction());
    let server = next_xid.max(0) as u64;
    if stored >= server {
        return Err(PgError::TransactionIdRegression { stored, server }.into());
    }
    Ok(())
}

/// The batch and its checkpoint: past the last event, and when the read reached the end, up to
/// the fence (every transaction below it has finished, so nothing can appear behind it).
pub(super) fn log_batch(
    after: Position,
    events: Vec<RecordedEvent>,
    limit: i64,
    fence: i64,
) -> LogBatch {
    let reached_end = (events.len() as i64) < limit;
    let mut checkpoint = events.last().map_or(after, |e| e.position);
    if reached_end && fence > 0 {
        checkpoint = checkpoint.max(Position::new(fence as u64 - 1, i64::MAX as u64));
    }
    LogBatch {
        events,
        checkpoint,
        reached_end,
        held_back: false,
    }
}
