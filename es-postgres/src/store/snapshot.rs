//! Snapshots on PostgreSQL: the latest per stream.

use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper;
use es_core::{Snapshot, SnapshotStore, StoreError, StreamId, Version};
use serde_json::Value;

use super::PgEventStore;
use crate::error::backend;
use crate::jsonb::RawJson;

impl SnapshotStore for PgEventStore {
    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let client = crate::conn::Conn::get(&self.inner.pool)
            .await
            .map_err(backend)?;
        self.load_snapshot_on(client.client(), stream_id).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let client = crate::conn::Conn::get(&self.inner.pool)
            .await
            .map_err(backend)?;
        self.save_snapshot_on(client.client(), snapshot).await
    }
}

impl PgEventStore {
    /// Loads a snapshot through `client` (a pooled connection or a transaction's).
    pub(crate) async fn load_snapshot_on(
        &self,
        client: &ClientWrapper,
        stream_id: &StreamId,
    ) -> Result<Option<Snapshot>, StoreError> {
        let statement = client
            .prepare_cached(&self.inner.sql.load_snapshot)
            .await
            .map_err(backend)?;
        let Some(row) = client
            .query_opt(&statement, &[&stream_id.as_str()])
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let version: i64 = row.get(0);
        let snapshot_version: i32 = row.get(1);
        let state: Value = row.get(2);
        let taken_at: DateTime<Utc> = row.get(3);
        Ok(Some(Snapshot {
            stream_id: stream_id.clone(),
            version: Version::new(version.max(0) as u64),
            snapshot_version: snapshot_version.max(0) as u32,
            state,
            taken_at,
        }))
    }

    /// Saves a snapshot through `client` (a pooled connection or a transaction's).
    pub(crate) async fn save_snapshot_on(
        &self,
        client: &ClientWrapper,
        snapshot: Snapshot,
    ) -> Result<(), StoreError> {
        let state = RawJson::encode(&snapshot.state).map_err(backend_json)?;
        let statement = client
            .prepare_cached(&self.inner.sql.save_snapshot)
            .await
            .map_err(backend)?;
        let version = i64::try_from(snapshot.version.get()).unwrap_or(i64::MAX);
        let snapshot_version = i32::try_from(snapshot.snapshot_version).unwrap_or(i32::MAX);
        client
            .execute(
                &statement,
                &[
                    &snapshot.stream_id.as_str(),
                    &version,
                    &snapshot_version,
                    &state,
                    &snapshot.taken_at,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn backend_json(error: serde_json::Error) -> StoreError {
    StoreError::backend(error)
}
