//! Pooled connections that never go back to the pool broken.

use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{ClientWrapper, Object, Pool};
use tokio_postgres::error::Severity;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement, ToStatement};

use crate::error::PgError;

/// Whether `error` leaves its connection unusable: the socket closed, or the server ended the
/// session (a terminated backend replies with a fatal error before the socket closes, so the
/// pool's closed-check alone would hand the dying connection to the next caller).
pub(crate) fn is_fatal(error: &tokio_postgres::Error) -> bool {
    error.is_closed()
        || error
            .as_db_error()
            .and_then(|db| db.parsed_severity())
            .is_some_and(|severity| matches!(severity, Severity::Fatal | Severity::Panic))
}

/// A pooled connection that is detached from the pool (and closed) when a statement on it
/// failed fatally, instead of being recycled.
pub(crate) struct Conn {
    object: Option<Object>,
    broken: AtomicBool,
}

impl Conn {
    pub(crate) async fn get(pool: &Pool) -> Result<Self, PgError> {
        Ok(Self {
            object: Some(pool.get().await?),
            broken: AtomicBool::new(false),
        })
    }

    pub(crate) fn client(&self) -> &ClientWrapper {
        match &self.object {
            Some(object) => object,
            None => unreachable!("a Conn holds its connection until dropped"),
        }
    }

    /// Passes `result` through, remembering a fatal error.
    pub(crate) fn check<T>(&self, result: Result<T, tokio_postgres::Error>) -> Result<T, PgError> {
        if let Err(error) = &result
            && is_fatal(error)
        {
            self.broken.store(true, Ordering::Relaxed);
        }
        result.map_err(PgError::from)
    }

    /// Remembers that the connection is unusable if `error` came from a fatal failure.
    pub(crate) fn check_store_error(&self, error: &es_core::StoreError) {
        if let Some(PgError::Postgres(inner)) = PgError::find(error)
            && is_fatal(inner)
        {
            self.broken.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) async fn prepare_cached(&self, sql: &str) -> Result<Statement, PgError> {
        let result = self.client().prepare_cached(sql).await;
        self.check(result)
    }

    pub(crate) async fn query<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError>
    where
        T: ?Sized + ToStatement,
    {
        let result = self.client().query(statement, params).await;
        self.check(result)
    }

    pub(crate) async fn query_one<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, PgError>
    where
        T: ?Sized + ToStatement,
    {
        let result = self.client().query_one(statement, params).await;
        self.check(result)
    }

    pub(crate) async fn query_opt<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError>
    where
        T: ?Sized + ToStatement,
    {
        let result = self.client().query_opt(statement, params).await;
        self.check(result)
    }

    pub(crate) async fn execute<T>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, PgError>
    where
        T: ?Sized + ToStatement,
    {
        let result = self.client().execute(statement, params).await;
        self.check(result)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.broken.load(Ordering::Relaxed)
            && let Some(object) = self.object.take()
        {
            drop(Object::take(object));
        }
    }
}
