//! `PgKeyStore`: the data subjects' keys, wrapped by a master key, and forgetting them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::privacy::{
    Forgetting, KeyStore, KeyStoreError, MasterKeys, SubjectId, SubjectKey, WrappedKey,
};

use crate::config::Schema;
use crate::error::{PgError, boxed};
use crate::store::PgEventStore;

#[derive(Debug)]
struct Sql {
    current: String,
    version: String,
    versions: String,
    lock: String,
    insert: String,
    is_forgotten: String,
    forget: String,
    forgotten: String,
    erase: String,
    stale: String,
    rewrap: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let r = |sql: &str| schema.render(sql);
        Self {
            current: r("SELECT version, master_version, nonce, sealed_key \
                 FROM __SCHEMA__.subject_keys WHERE subject = $1 ORDER BY version DESC LIMIT 1"),
            version: r("SELECT version, master_version, nonce, sealed_key \
                 FROM __SCHEMA__.subject_keys WHERE subject = $1 AND version = $2"),
            versions: r(
                "SELECT k.subject, k.version, k.master_version, k.nonce, k.sealed_key \
                 FROM unnest($1::text[], $2::int[]) AS w(subject, version) \
                 JOIN __SCHEMA__.subject_keys k USING (subject, version)",
            ),
            // One subject at a time: making a key and forgetting never interleave, so no key
            // is made after a forgetting committed.
            lock: r("SELECT pg_advisory_xact_lock(\
                 hashtextextended('es-postgres subject:__SCHEMA__:' || $1, 0))"),
            insert: r("INSERT INTO __SCHEMA__.subject_keys \
                 (subject, version, master_version, nonce, sealed_key) VALUES ($1, $2, $3, $4, $5)"),
            is_forgotten: r("SELECT 1 FROM __SCHEMA__.forgotten_subjects WHERE subject = $1"),
            forget: r(
                "INSERT INTO __SCHEMA__.forgotten_subjects (subject, forgotten_by) \
                 VALUES ($1, $2) ON CONFLICT (subject) DO NOTHING RETURNING forgotten_at",
            ),
            forgotten: r(
                "SELECT forgotten_by, forgotten_at FROM __SCHEMA__.forgotten_subjects \
                 WHERE subject = $1",
            ),
            erase: r("DELETE FROM __SCHEMA__.subject_keys WHERE subject = $1"),
            stale: r(
                "SELECT subject, version, master_version, nonce, sealed_key \
                 FROM __SCHEMA__.subject_keys WHERE master_version <> $1 LIMIT $2",
            ),
            rewrap: r(
                "UPDATE __SCHEMA__.subject_keys SET master_version = $3, nonce = $4, \
                 sealed_key = $5 WHERE subject = $1 AND version = $2 AND master_version = $6",
            ),
        }
    }
}

/// The PostgreSQL [`KeyStore`]: the `subject_keys` and `forgotten_subjects` tables of a
/// [`PgEventStore`]'s schema. Each subject key is stored sealed by a master key from
/// configuration ([`MasterKeys`]), with the master key's version, so the master key can be
/// rotated: configure the new one as current and the old one as older, then
/// [`rewrap`](Self::rewrap). Forgetting deletes every version of the subject's key and records
/// who asked and when, in one transaction. Cheap to clone.
///
/// ```no_run
/// use es_core::privacy::{KeyStore, MasterKey, MasterKeys, SubjectId};
/// use es_postgres::{PgEventStore, PgKeyStore};
///
/// # async fn demo(store: &PgEventStore, master: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let masters = MasterKeys::new(MasterKey::from_base64(1, master)?, Vec::new())?;
/// let keys = PgKeyStore::new(store, masters);
/// let ada = SubjectId::new("customer-7")?;
/// let key = keys.current_key(&ada).await?;
/// keys.forget(&ada, "operator").await?;
/// assert!(keys.current_key(&ada).await?.is_none());
/// # let _ = key;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgKeyStore {
    store: PgEventStore,
    masters: Arc<MasterKeys>,
    sql: Arc<Sql>,
}

impl fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgKeyStore")
            .field("schema", &self.store.schema())
            .field("master", &self.masters.current().version())
            .finish()
    }
}

fn storage(error: impl Into<PgError>) -> KeyStoreError {
    KeyStoreError::Storage(boxed(error))
}

impl PgKeyStore {
    /// The key store in `store`'s schema, wrapping keys with `masters`' current key.
    pub fn new(store: &PgEventStore, masters: MasterKeys) -> Self {
        Self {
            store: store.clone(),
            masters: Arc::new(masters),
            sql: Arc::new(Sql::new(&store.inner.schema)),
        }
    }

    /// Re-seals every key wrapped by an older master key with the current one, `batch` at a
    /// time; returns how many it re-sealed. Once it returns, the older master keys can leave
    /// the configuration.
    ///
    /// # Errors
    /// [`KeyStoreError::MasterKey`] for a key no configured master key opens; storage errors.
    pub async fn rewrap(&self, batch: i64) -> Result<u64, KeyStoreError> {
        let current = self.masters.current();
        let current_version = master_column(current.version());
        let client = self.store.inner.pool.get().await.map_err(storage)?;
        let stale = client
            .prepare_cached(&self.sql.stale)
            .await
            .map_err(storage)?;
        let update = client
            .prepare_cached(&self.sql.rewrap)
            .await
            .map_err(storage)?;
        let mut done = 0;
        loop {
            let rows = client
                .query(&stale, &[&current_version, &batch.max(1)])
                .await
                .map_err(storage)?;
            if rows.is_empty() {
                return Ok(done);
            }
            for row in rows {
                let subject: String = row.try_get(0).map_err(storage)?;
                let subject =
                    SubjectId::new(subject).map_err(|e| KeyStoreError::Storage(Box::new(e)))?;
                let version = key_version(row.try_get(1).map_err(storage)?);
                let old_master: i32 = row.try_get(2).map_err(storage)?;
                let key = self.open(&subject, version, &row, 2)?;
                let wrapped = current.wrap(&subject, &key);
                client
                    .execute(
                        &update,
                        &[
                            &subject.as_str(),
                            &version_column(version),
                            &current_version,
                            &wrapped.nonce,
                            &wrapped.sealed,
                            &old_master,
                        ],
                    )
                    .await
                    .map_err(storage)?;
                done += 1;
            }
        }
    }

    /// The key of `subject`, version `version`, from a row whose master version, nonce and
    /// sealed key start at column `from`.
    fn open(
        &self,
        subject: &SubjectId,
        version: u32,
        row: &tokio_postgres::Row,
        from: usize,
    ) -> Result<SubjectKey, KeyStoreError> {
        let master_version: i32 = row.try_get(from).map_err(storage)?;
        let wrapped = WrappedKey {
            master_version: u32::try_from(master_version).unwrap_or(0),
            nonce: row.try_get(from + 1).map_err(storage)?,
            sealed: row.try_get(from + 2).map_err(storage)?,
        };
        self.masters
            .get(wrapped.master_version)
            .and_then(|master| master.unwrap(subject, version, &wrapped))
            .ok_or_else(|| KeyStoreError::MasterKey {
                subject: subject.clone(),
                version,
            })
    }

    async fn make(
        &self,
        subject: &SubjectId,
        rotate: bool,
    ) -> Result<Option<SubjectKey>, KeyStoreError> {
        let mut client = self.store.inner.pool.get().await.map_err(storage)?;
        let tx = client.transaction().await.map_err(storage)?;
        tx.execute(&self.sql.lock, &[&subject.as_str()])
            .await
            .map_err(storage)?;
        if tx
            .query_opt(&self.sql.is_forgotten, &[&subject.as_str()])
            .await
            .map_err(storage)?
            .is_some()
        {
            return Ok(None);
        }
        let current = tx
            .query_opt(&self.sql.current, &[&subject.as_str()])
            .await
            .map_err(storage)?;
        let next = match &current {
            Some(row) if !rotate => {
                let version = key_version(row.try_get(0).map_err(storage)?);
                return self.open(subject, version, row, 1).map(Some);
            }
            Some(row) => key_version(row.try_get(0).map_err(storage)?) + 1,
            None => 1,
        };
        let key = SubjectKey::generate(next);
        let wrapped = self.masters.current().wrap(subject, &key);
        tx.execute(
            &self.sql.insert,
            &[
                &subject.as_str(),
                &version_column(next),
                &master_column(wrapped.master_version),
                &wrapped.nonce,
                &wrapped.sealed,
            ],
        )
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(Some(key))
    }
}

impl PgEventStore {
    /// The key store in this store's schema (see [`PgKeyStore`]).
    pub fn keys(&self, masters: MasterKeys) -> PgKeyStore {
        PgKeyStore::new(self, masters)
    }
}

#[async_trait]
impl KeyStore for PgKeyStore {
    async fn current_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        // The common case, a key that exists, in one read without a lock.
        let client = self.store.inner.pool.get().await.map_err(storage)?;
        let statement = client
            .prepare_cached(&self.sql.current)
            .await
            .map_err(storage)?;
        if let Some(row) = client
            .query_opt(&statement, &[&subject.as_str()])
            .await
            .map_err(storage)?
        {
            let version = key_version(row.try_get(0).map_err(storage)?);
            return self.open(subject, version, &row, 1).map(Some);
        }
        drop(client);
        self.make(subject, false).await
    }

    async fn key(
        &self,
        subject: &SubjectId,
        version: u32,
    ) -> Result<Option<SubjectKey>, KeyStoreError> {
        let client = self.store.inner.pool.get().await.map_err(storage)?;
        let statement = client
            .prepare_cached(&self.sql.version)
            .await
            .map_err(storage)?;
        let Some(row) = client
            .query_opt(&statement, &[&subject.as_str(), &version_column(version)])
            .await
            .map_err(storage)?
        else {
            return Ok(None);
        };
        self.open(subject, version, &row, 1).map(Some)
    }

    async fn keys(
        &self,
        wanted: &[(SubjectId, u32)],
    ) -> Result<HashMap<(SubjectId, u32), SubjectKey>, KeyStoreError> {
        let mut found = HashMap::with_capacity(wanted.len());
        if let [(subject, version)] = wanted {
            if let Some(key) = self.key(subject, *version).await? {
                found.insert((subject.clone(), *version), key);
            }
            return Ok(found);
        }
        if wanted.is_empty() {
            return Ok(found);
        }
        let subjects: Vec<&str> = wanted.iter().map(|(s, _)| s.as_str()).collect();
        let versions: Vec<i32> = wanted.iter().map(|(_, v)| version_column(*v)).collect();
        let asked: HashMap<(&str, u32), &SubjectId> = wanted
            .iter()
            .map(|(subject, version)| ((subject.as_str(), *version), subject))
            .collect();
        let client = self.store.inner.pool.get().await.map_err(storage)?;
        let statement = client
            .prepare_cached(&self.sql.versions)
            .await
            .map_err(storage)?;
        let rows = client
            .query(&statement, &[&subjects, &versions])
            .await
            .map_err(storage)?;
        for row in rows {
            let subject: String = row.try_get(0).map_err(storage)?;
            let version = key_version(row.try_get(1).map_err(storage)?);
            let Some(subject) = asked.get(&(subject.as_str(), version)) else {
                continue;
            };
            let key = self.open(subject, version, &row, 2)?;
            found.insert(((*subject).clone(), version), key);
        }
        Ok(found)
    }

    async fn rotate(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        self.make(subject, true).await
    }

    async fn forget(&self, subject: &SubjectId, by: &str) -> Result<Forgetting, KeyStoreError> {
        let mut client = self.store.inner.pool.get().await.map_err(storage)?;
        let tx = client.transaction().await.map_err(storage)?;
        tx.execute(&self.sql.lock, &[&subject.as_str()])
            .await
            .map_err(storage)?;
        let inserted = tx
            .query_opt(&self.sql.forget, &[&subject.as_str(), &by])
            .await
            .map_err(storage)?;
        let forgetting = match inserted {
            Some(row) => Forgetting {
                subject: subject.clone(),
                by: by.to_owned(),
                at: row.try_get::<_, DateTime<Utc>>(0).map_err(storage)?,
                already: false,
            },
            None => {
                let row = tx
                    .query_one(&self.sql.forgotten, &[&subject.as_str()])
                    .await
                    .map_err(storage)?;
                Forgetting {
                    subject: subject.clone(),
                    by: row.try_get(0).map_err(storage)?,
                    at: row.try_get(1).map_err(storage)?,
                    already: true,
                }
            }
        };
        tx.execute(&self.sql.erase, &[&subject.as_str()])
            .await
            .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(forgetting)
    }

    async fn is_forgotten(&self, subject: &SubjectId) -> Result<bool, KeyStoreError> {
        let client = self.store.inner.pool.get().await.map_err(storage)?;
        let statement = client
            .prepare_cached(&self.sql.is_forgotten)
            .await
            .map_err(storage)?;
        Ok(client
            .query_opt(&statement, &[&subject.as_str()])
            .await
            .map_err(storage)?
            .is_some())
    }
}

fn key_version(column: i32) -> u32 {
    u32::try_from(column).unwrap_or(0)
}

fn version_column(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}

fn master_column(version: u32) -> i32 {
    i32::try_from(version).unwrap_or(i32::MAX)
}
