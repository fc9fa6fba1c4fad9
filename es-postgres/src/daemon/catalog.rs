//! The `projections` and `projection_dead_letters` tables.

use chrono::{DateTime, Utc};
use deadpool_postgres::ClientWrapper;
use es_core::{LogFilter, Position, RecordedEvent};
use tokio_postgres::types::ToSql;

use super::error::DaemonError;
use super::status::{DeadLetter, ProjectionState, ProjectionStatus, RebuildProgress};
use crate::config::Schema;
use crate::error::{PgError, from_bigint, to_bigint};

/// The statements, rendered for one schema.
#[derive(Debug)]
pub(crate) struct CatalogSql {
    ensure: String,
    load: String,
    pause: String,
    resume: String,
    request_rebuild: String,
    count: String,
    status: String,
    progress: String,
    dead_letter: String,
    dead_letters: String,
    active_checkpoint: String,
}

impl CatalogSql {
    pub(crate) fn new(schema: &Schema) -> Self {
        let r = |sql: &str| schema.render(sql);
        Self {
            ensure: r(
                "INSERT INTO __SCHEMA__.projections (name, active_version, active_code) \
                 VALUES ($1, $2, $2) ON CONFLICT (name) DO NOTHING",
            ),
            load: r(
                "SELECT active_version, rebuild_version, state, rebuild_done, rebuild_total, \
                 active_code, rebuild_code FROM __SCHEMA__.projections WHERE name = $1",
            ),
            pause: r(
                "UPDATE __SCHEMA__.projections SET state = 'paused', paused_reason = $2, \
                 error = $3, paused_stream = $4, paused_version = $5, paused_position = $6, \
                 updated_at = now() WHERE name = $1",
            ),
            resume: r("UPDATE __SCHEMA__.projections SET \
                 state = CASE WHEN rebuild_version IS NULL THEN 'running' ELSE 'rebuilding' END, \
                 paused_reason = NULL, error = NULL, paused_stream = NULL, paused_version = NULL, \
                 paused_position = NULL, updated_at = now() \
                 WHERE name = $1 AND state = 'paused' RETURNING name"),
            request_rebuild: r("UPDATE __SCHEMA__.projections SET \
                 rebuild_version = greatest(active_version + 1, $2), \
                 rebuild_code = coalesce($4, active_code, active_version), \
                 state = CASE WHEN state = 'paused' THEN state ELSE 'rebuilding' END, \
                 rebuild_done = 0, rebuild_total = $3, updated_at = now() \
                 WHERE name = $1 AND rebuild_version IS NULL RETURNING rebuild_version"),
            count: r("SELECT count(*) FROM __SCHEMA__.events \
                 WHERE ($1::text[] IS NULL OR stream_type = ANY ($1)) \
                   AND ($2::text[] IS NULL OR event_type = ANY ($2))"),
            status: r(include_str!("../../sql/projection_status.sql")),
            progress: r(include_str!("../../sql/projection_progress.sql")),
            dead_letter: r(include_str!("../../sql/projection_dead_letter.sql")),
            dead_letters: r(
                "SELECT projection, version, transaction_id, position, stream_id, \
                 stream_version, event_type, error, attempts, recorded_at \
                 FROM __SCHEMA__.projection_dead_letters WHERE projection = $1 ORDER BY id",
            ),
            active_checkpoint: r("SELECT c.transaction_id, c.sequence \
                 FROM __SCHEMA__.projections p \
                 JOIN __SCHEMA__.checkpoints c ON c.name = p.name || '@v' || p.active_version \
                 WHERE p.name = $1"),
        }
    }
}

/// A projection's row, as the runner needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) active: u32,
    pub(crate) rebuild: Option<u32>,
    pub(crate) state: ProjectionState,
    pub(crate) rebuild_done: u64,
    pub(crate) rebuild_total: u64,
    /// The code version that owns the active version (the version itself for older rows).
    pub(crate) active_code: u32,
    /// The code version that owns the version being rebuilt.
    pub(crate) rebuild_code: Option<u32>,
}

fn version(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn none_if_empty(values: &[String]) -> Option<&[String]> {
    (!values.is_empty()).then_some(values)
}

/// Per-batch bookkeeping written with the checkpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress<'a> {
    pub(crate) name: &'a str,
    pub(crate) events: &'a [RecordedEvent],
    pub(crate) active: bool,
    pub(crate) switch_to: Option<u32>,
}

impl CatalogSql {
    pub(crate) async fn ensure(
        &self,
        client: &ClientWrapper,
        name: &str,
        version: u32,
    ) -> Result<(), DaemonError> {
        let statement = client.prepare_cached(&self.ensure).await?;
        client.execute(&statement, &[&name, &int(version)]).await?;
        Ok(())
    }

    pub(crate) async fn load(
        &self,
        client: &ClientWrapper,
        name: &str,
    ) -> Result<Row, DaemonError> {
        let statement = client.prepare_cached(&self.load).await?;
        let row = client
            .query_opt(&statement, &[&name])
            .await?
            .ok_or_else(|| DaemonError::UnknownProjection(name.to_owned()))?;
        Ok(Row {
            active: version(row.try_get(0)?),
            rebuild: row.try_get::<_, Option<i32>>(1)?.map(version),
            state: ProjectionState::parse(row.try_get(2)?),
            rebuild_done: from_bigint(row.try_get(3)?),
            rebuild_total: from_bigint(row.try_get(4)?),
            active_code: row
                .try_get::<_, Option<i32>>(5)?
                .map_or_else(|| version(row.get(0)), version),
            rebuild_code: row
                .try_get::<_, Option<i32>>(6)?
                .map(version)
                .or(row.try_get::<_, Option<i32>>(1)?.map(version)),
        })
    }

    pub(crate) async fn pause(
        &self,
        client: &ClientWrapper,
        name: &str,
        reason: &str,
        error: &str,
        event: &RecordedEvent,
    ) -> Result<(), DaemonError> {
        let statement = client.prepare_cached(&self.pause).await?;
        let stream_version = to_bigint("stream version", event.version.get())?;
        let position = to_bigint("position", event.position.sequence())?;
        let params: [&(dyn ToSql + Sync); 6] = [
            &name,
            &reason,
            &error,
            &event.stream_id.as_str(),
            &stream_version,
            &position,
        ];
        client.execute(&statement, &params).await?;
        Ok(())
    }

    pub(crate) async fn resume(
        &self,
        client: &ClientWrapper,
        name: &str,
    ) -> Result<bool, DaemonError> {
        let statement = client.prepare_cached(&self.resume).await?;
        Ok(client.query_opt(&statement, &[&name]).await?.is_some())
    }

    /// Starts a rebuild into at least `version`; `None` when one is already running.
    pub(crate) async fn request_rebuild(
        &self,
        client: &ClientWrapper,
        name: &str,
        version: u32,
        filter: Option<&LogFilter>,
    ) -> Result<Option<u32>, DaemonError> {
        let count = client.prepare_cached(&self.count).await?;
        let (stream_types, event_types) = match filter {
            Some(filter) => (
                none_if_empty(&filter.stream_types),
                none_if_empty(&filter.event_types),
            ),
            None => (None, None),
        };
        let total: i64 = client
            .query_one(&count, &[&stream_types, &event_types])
            .await?
            .try_get(0)?;
        let statement = client.prepare_cached(&self.request_rebuild).await?;
        // The requesting code owns the rebuild; a tool that does not register the projection
        // (version 0) leaves it to the code that owns the active version.
        let code = (version > 0).then(|| int(version));
        let row = client
            .query_opt(&statement, &[&name, &int(version), &total, &code])
            .await?;
        Ok(row.map(|row| self::version(row.get(0))))
    }

    pub(crate) async fn progress(
        &self,
        client: &ClientWrapper,
        progress: Progress<'_>,
    ) -> Result<(), PgError> {
        let statement = client.prepare_cached(&self.progress).await?;
        let count = progress.events.len() as i64;
        let last_at: Option<DateTime<Utc>> = progress.events.last().map(|e| e.recorded_at);
        let (applied, rebuilt) = if progress.active {
            (count, 0)
        } else {
            (0, count)
        };
        let switch: Option<i32> = progress.switch_to.map(int);
        let record_time = progress.active || switch.is_some();
        let params: [&(dyn ToSql + Sync); 6] = [
            &progress.name,
            &applied,
            &last_at,
            &rebuilt,
            &switch,
            &record_time,
        ];
        client.execute(&statement, &params).await?;
        Ok(())
    }

    pub(crate) async fn dead_letter(
        &self,
        client: &ClientWrapper,
        name: &str,
        version: u32,
        event: &RecordedEvent,
        error: &str,
        attempts: u32,
    ) -> Result<(), PgError> {
        let statement = client.prepare_cached(&self.dead_letter).await?;
        let transaction = to_bigint("transaction id", event.position.transaction())?;
        let position = to_bigint("position", event.position.sequence())?;
        let stream_version = to_bigint("stream version", event.version.get())?;
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        let params: [&(dyn ToSql + Sync); 9] = [
            &name,
            &int(version),
            &transaction,
            &position,
            &event.stream_id.as_str(),
            &stream_version,
            &event.event_type,
            &error,
            &attempts,
        ];
        client.execute(&statement, &params).await?;
        Ok(())
    }

    pub(crate) async fn dead_letters(
        &self,
        client: &ClientWrapper,
        name: &str,
    ) -> Result<Vec<DeadLetter>, DaemonError> {
        let statement = client.prepare_cached(&self.dead_letters).await?;
        let rows = client.query(&statement, &[&name]).await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    projection: row.try_get(0)?,
                    version: version(row.try_get(1)?),
                    position: Position::new(
                        from_bigint(row.try_get(2)?),
                        from_bigint(row.try_get(3)?),
                    ),
                    stream_id: row.try_get(4)?,
                    stream_version: from_bigint(row.try_get(5)?),
                    event_type: row.try_get(6)?,
                    error: row.try_get(7)?,
                    attempts: u32::try_from(row.try_get::<_, i32>(8)?).unwrap_or(0),
                    recorded_at: row.try_get(9)?,
                })
            })
            .collect()
    }

    pub(crate) async fn active_checkpoint(
        &self,
        client: &ClientWrapper,
        name: &str,
    ) -> Result<Option<Position>, DaemonError> {
        let statement = client.prepare_cached(&self.active_checkpoint).await?;
        let row = client.query_opt(&statement, &[&name]).await?;
        row.map(|row| {
            Ok(Position::new(
                from_bigint(row.try_get(0)?),
                from_bigint(row.try_get(1)?),
            ))
        })
        .transpose()
    }

    /// Every projection's status (or one's), from the database alone.
    pub(crate) async fn status(
        &self,
        client: &ClientWrapper,
        name: Option<&str>,
    ) -> Result<Vec<ProjectionStatus>, DaemonError> {
        let statement = client.prepare_cached(&self.status).await?;
        let rows = client.query(&statement, &[&name]).await?;
        let now = Utc::now();
        rows.iter()
            .map(|row| {
                let lag_events = from_bigint(row.try_get(15)?);
                let last_event_at: Option<DateTime<Utc>> = row.try_get(8)?;
                let lag_time = match last_event_at {
                    Some(at) if lag_events > 0 => (now - at).to_std().unwrap_or_default(),
                    _ => std::time::Duration::ZERO,
                };
                let checkpoint = match (
                    row.try_get::<_, Option<i64>>(13)?,
                    row.try_get::<_, Option<i64>>(14)?,
                ) {
                    (Some(t), Some(s)) => Some(Position::new(from_bigint(t), from_bigint(s))),
                    _ => None,
                };
                let paused_at = match (
                    row.try_get::<_, Option<String>>(6)?,
                    row.try_get::<_, Option<i64>>(7)?,
                ) {
                    (Some(stream), Some(v)) => Some((stream, from_bigint(v))),
                    _ => None,
                };
                Ok(ProjectionStatus {
                    name: row.try_get(0)?,
                    active_version: version(row.try_get(1)?),
                    rebuild: row.try_get::<_, Option<i32>>(2)?.map(|v| RebuildProgress {
                        version: version(v),
                        done: from_bigint(row.get(10)),
                        total: from_bigint(row.get(11)),
                        rate: None,
                        eta: None,
                    }),
                    state: ProjectionState::parse(row.try_get(3)?),
                    paused_reason: row.try_get(4)?,
                    error: row.try_get(5)?,
                    paused_at,
                    last_event_at,
                    applied_events: from_bigint(row.try_get(9)?),
                    updated_at: row.try_get(12)?,
                    checkpoint,
                    lag_events,
                    lag_time,
                    leading_here: false,
                    leader_backend_pid: None,
                })
            })
            .collect()
    }
}
