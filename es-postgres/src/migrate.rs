//! Numbered migrations, applied by an explicit call.

use deadpool_postgres::Pool;

use crate::config::Schema;
use crate::error::PgError;

/// The migrations, in order: (number, file name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_events.sql",
        include_str!("../migrations/0001_events.sql"),
    ),
    (
        2,
        "0002_append.sql",
        include_str!("../migrations/0002_append.sql"),
    ),
    (
        3,
        "0003_inbox_sagas.sql",
        include_str!("../migrations/0003_inbox_sagas.sql"),
    ),
    (
        4,
        "0004_projections.sql",
        include_str!("../migrations/0004_projections.sql"),
    ),
    (
        5,
        "0005_append_fast.sql",
        include_str!("../migrations/0005_append_fast.sql"),
    ),
    (
        6,
        "0006_paused_partitions.sql",
        include_str!("../migrations/0006_paused_partitions.sql"),
    ),
    (
        7,
        "0007_projection_code.sql",
        include_str!("../migrations/0007_projection_code.sql"),
    ),
    (
        8,
        "0008_subject_keys.sql",
        include_str!("../migrations/0008_subject_keys.sql"),
    ),
];

/// The newest migration number this version knows.
pub const LATEST_MIGRATION: i32 = MIGRATIONS.len() as i32;

/// Applies the migrations missing from `schema`; returns the numbers applied.
///
/// Idempotent and safe when several processes start at once: one transaction under an
/// advisory lock keyed by the schema, recorded in `schema_versions`.
pub(crate) async fn migrate(pool: &Pool, schema: &Schema) -> Result<Vec<i32>, PgError> {
    let mut client = pool.get().await?;
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('es-postgres migrate:' || $1, 0))",
            &[&schema.name],
        )
        .await?;
    // A schema made beforehand (owned by the role a service connects as, which need not
    // be allowed to create schemas) is used as it is: `CREATE SCHEMA IF NOT EXISTS` would
    // still want that privilege.
    let exists = transaction
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&schema.name],
        )
        .await?
        .is_some();
    if !exists {
        transaction
            .batch_execute(&schema.render("CREATE SCHEMA IF NOT EXISTS __SCHEMA__;"))
            .await?;
    }
    transaction
        .batch_execute(&schema.render(
            "CREATE TABLE IF NOT EXISTS __SCHEMA__.schema_versions (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );",
        ))
        .await?;
    let applied: Vec<i32> = transaction
        .query(
            &schema.render("SELECT version FROM __SCHEMA__.schema_versions"),
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut newly = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        transaction
            .batch_execute(&schema.render(sql))
            .await
            .map_err(|source| PgError::Migration {
                version,
                name,
                source,
            })?;
        transaction
            .execute(
                &schema.render(
                    "INSERT INTO __SCHEMA__.schema_versions (version, name) VALUES ($1, $2)",
                ),
                &[&version, &name],
            )
            .await?;
        newly.push(version);
    }
    transaction.commit().await?;
    if !newly.is_empty() {
        tracing::info!(schema = %schema.name, migrations = ?newly, "applied migrations");
    }
    Ok(newly)
}
