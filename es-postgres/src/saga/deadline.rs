//! Deadlines: claimed with a lease, completed, cancelled, scheduled.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use es_core::{Deadline, DeadlineStore, DeadlineStoreError};
use uuid::Uuid;

use super::PgSagaStore;
use super::commit::DeadlineColumns;
use crate::error::{PgError, boxed};

/// The longest lease granted; longer ones are cut to it, so every claim ends at a time
/// PostgreSQL can store.
const MAX_LEASE: TimeDelta = TimeDelta::days(100 * 365);

fn deadline_error(error: impl Into<PgError>) -> DeadlineStoreError {
    DeadlineStoreError::Backend(boxed(error))
}

/// When a claim made at `now` for `lease` ends.
fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    let lease = TimeDelta::from_std(lease).map_or(MAX_LEASE, |lease| lease.min(MAX_LEASE));
    now.checked_add_signed(lease).unwrap_or(now)
}

impl DeadlineStore for PgSagaStore {
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, DeadlineStoreError> {
        let rows = self
            .query(&self.sql.next_due, &[])
            .await
            .map_err(deadline_error)?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(deadline_error),
            None => Ok(None),
        }
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Deadline>, DeadlineStoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(&self.sql.claim_due, &[&now, &lease_end(now, lease), &limit])
            .await
            .map_err(deadline_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            claimed.push(Deadline {
                id: row.try_get(0).map_err(deadline_error)?,
                saga: row.try_get(1).map_err(deadline_error)?,
                key: row.try_get(2).map_err(deadline_error)?,
                step: row.try_get(3).map_err(deadline_error)?,
                due_at: row.try_get(4).map_err(deadline_error)?,
                payload: row.try_get(5).map_err(deadline_error)?,
            });
        }
        // RETURNING keeps no order.
        claimed.sort_by_key(|deadline| (deadline.due_at, deadline.id));
        Ok(claimed)
    }

    async fn complete(&self, id: Uuid) -> Result<bool, DeadlineStoreError> {
        let client = crate::conn::Conn::get(&self.store.inner.pool)
            .await
            .map_err(deadline_error)?;
        let statement = client
            .prepare_cached(&self.sql.complete)
            .await
            .map_err(deadline_error)?;
        let updated = client
            .execute(&statement, &[&id, &self.clock.now()])
            .await
            .map_err(deadline_error)?;
        Ok(updated > 0)
    }

    async fn cancel(&self, saga: &str, key: &str, step: &str) -> Result<bool, DeadlineStoreError> {
        let client = crate::conn::Conn::get(&self.store.inner.pool)
            .await
            .map_err(deadline_error)?;
        let statement = client
            .prepare_cached(&self.sql.cancel)
            .await
            .map_err(deadline_error)?;
        let updated = client
            .execute(&statement, &[&saga, &key, &step, &self.clock.now()])
            .await
            .map_err(deadline_error)?;
        Ok(updated > 0)
    }

    async fn schedule(&self, deadline: Deadline) -> Result<(), DeadlineStoreError> {
        let deadlines = [deadline];
        let columns = DeadlineColumns::new(&deadlines).map_err(|e| {
            deadline_error(PgError::Config(format!(
                "cannot encode a deadline payload: {e}"
            )))
        })?;
        self.query(
            &self.sql.schedule,
            &[
                &columns.ids,
                &columns.sagas,
                &columns.keys,
                &columns.steps,
                &columns.due_at,
                &columns.payloads,
            ],
        )
        .await
        .map_err(deadline_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_capped() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        assert_eq!(
            lease_end(now, Duration::from_secs(30)),
            now + TimeDelta::seconds(30)
        );
        assert_eq!(lease_end(now, Duration::MAX), now + MAX_LEASE);
    }
}
