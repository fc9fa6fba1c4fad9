//! The relay's read side of the outbox: gap-safe batches, retention.

use std::collections::BTreeMap;

use es_core::{
    OutboxBatch, OutboxMessage, OutboxSource, Position, StoreError, StoredOutboxMessage,
};
use serde_json::Value;
use tokio_postgres::Row;

use super::PgEventStore;
use super::read::check_regression;
use crate::error::{PgError, backend};

fn decode_message(row: &Row) -> Result<StoredOutboxMessage, StoreError> {
    let position: i64 = row.try_get(3).map_err(backend)?;
    let transaction: i64 = row.try_get(4).map_err(backend)?;
    let headers: Value = row.try_get(15).map_err(backend)?;
    let headers: BTreeMap<String, String> =
        serde_json::from_value(headers).map_err(|e| PgError::CorruptRow {
            table: "outbox",
            position,
            reason: format!("headers: {e}"),
        })?;
    let schema_version: i32 = row.try_get(7).map_err(backend)?;
    Ok(StoredOutboxMessage {
        position: Position::new(transaction.max(0) as u64, position.max(0) as u64),
        message: OutboxMessage {
            message_id: row.try_get(5).map_err(backend)?,
            message_type: row.try_get(6).map_err(backend)?,
            schema_version: schema_version.max(0) as u32,
            partition_key: row.try_get(8).map_err(backend)?,
            topic: row.try_get(9).map_err(backend)?,
            source_type: row.try_get(10).map_err(backend)?,
            source_id: row.try_get(11).map_err(backend)?,
            correlation_id: row.try_get(12).map_err(backend)?,
            causation_id: row.try_get(13).map_err(backend)?,
            occurred_at: row.try_get(14).map_err(backend)?,
            headers,
            payload: row.try_get(16).map_err(backend)?,
        },
    })
}

impl OutboxSource for PgEventStore {
    async fn read_outbox(&self, after: Position, limit: usize) -> Result<OutboxBatch, StoreError> {
        let client = crate::conn::Conn::get(&self.inner.pool)
            .await
            .map_err(backend)?;
        let statement = client
            .prepare_cached(&self.inner.sql.read_outbox)
            .await
            .map_err(backend)?;
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let after_position = i64::try_from(after.sequence()).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[&after.transaction().to_string(), &after_position, &limit],
            )
            .await
            .map_err(backend)?;
        let Some(first) = rows.first() else {
            return Ok(OutboxBatch::default());
        };
        check_regression(after, first.get(2), first.get(1))?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<_, Option<i64>>(3).map_err(backend)?.is_some() {
                messages.push(decode_message(row)?);
            }
        }
        let reached_end = (messages.len() as i64) < limit;
        Ok(OutboxBatch {
            messages,
            reached_end,
        })
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, StoreError> {
        let client = crate::conn::Conn::get(&self.inner.pool)
            .await
            .map_err(backend)?;
        let statement = client
            .prepare_cached(&self.inner.sql.delete_outbox)
            .await
            .map_err(backend)?;
        let position = i64::try_from(up_to.sequence()).unwrap_or(i64::MAX);
        client
            .execute(&statement, &[&up_to.transaction().to_string(), &position])
            .await
            .map_err(backend)
    }
}
