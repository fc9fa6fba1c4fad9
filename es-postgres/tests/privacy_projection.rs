//! A daemon projection over personal data on PostgreSQL: it sees events decrypted, patches
//! its table when a subject is forgotten (the record reaches it through the log), and a
//! rebuild after forgetting writes only the placeholder. No table of the schema holds the
//! name in clear afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use es_core::privacy::{MasterKey, MasterKeys, Personal, Privacy, SubjectId};
use es_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, LogFilter, NewEvent, Position,
    Projection, ProjectionError, RecordedEvent, StreamId, SystemClock,
};
use es_postgres::{
    DaemonOptions, PgEventStore, PgProjectionTx, ProjectionDaemon, ProjectionOptions,
};

const WITHIN: Duration = Duration::from_secs(20);

/// Members' names in clear, in `names_v<n>`.
struct Names;

#[async_trait::async_trait]
impl Projection<PgProjectionTx> for Names {
    fn name(&self) -> &str {
        "names"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().stream_types(["member"])
    }

    async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (subject text PRIMARY KEY, name text NOT NULL, visits int NOT NULL)",
            tx.table("names")
        );
        tx.client()
            .batch_execute(&sql)
            .await
            .map_err(ProjectionError::apply)
    }

    async fn apply(
        &self,
        tx: &mut PgProjectionTx,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let table = tx.table("names");
        let name: Personal<String> =
            serde_json::from_value(event.data["name"].clone()).map_err(ProjectionError::apply)?;
        let visits = i32::try_from(event.data["visits"].as_i64().unwrap_or(0)).unwrap_or(0);
        let sql = format!(
            "INSERT INTO {table} VALUES ($1, $2, $3) \
             ON CONFLICT (subject) DO UPDATE SET name = excluded.name, visits = excluded.visits"
        );
        tx.client()
            .execute(
                &sql,
                &[
                    &name.subject().as_str(),
                    &name.value_or("[forgotten]"),
                    &visits,
                ],
            )
            .await
            .map_err(ProjectionError::apply)?;
        Ok(())
    }

    async fn forget(
        &self,
        tx: &mut PgProjectionTx,
        subject: &SubjectId,
    ) -> Result<(), ProjectionError> {
        let sql = format!(
            "UPDATE {} SET name = '[forgotten]' WHERE subject = $1",
            tx.table("names")
        );
        tx.client()
            .execute(&sql, &[&subject.as_str()])
            .await
            .map_err(ProjectionError::apply)?;
        Ok(())
    }
}

/// Appends a member's state (name sealed) to `member-<n>`; returns its position.
async fn record(
    store: &PgEventStore,
    privacy: &Privacy,
    n: u32,
    name: &str,
    visits: u32,
) -> Position {
    let subject = SubjectId::new(format!("member-{n}")).unwrap();
    let mut data = serde_json::json!({
        "name": Personal::new(subject, name.to_owned()),
        "visits": visits,
    });
    privacy.protect(&mut data).await.unwrap();
    let event = NewEvent {
        event_type: "MemberRecorded".into(),
        schema_version: 1,
        data,
        metadata: CommandContext::new().metadata(&SystemClock),
    };
    let stream = StreamId::new(format!("member-{n}")).unwrap();
    let appended = store
        .append(
            AppendRequest::new(stream, ExpectedVersion::Any)
                .with_stream_type("member")
                .with_events([event]),
        )
        .await
        .unwrap();
    appended.positions[0]
}

async fn names(store: &PgEventStore, version: u32) -> Vec<(String, String, i32)> {
    common::raw_client()
        .await
        .query(
            &format!(
                "SELECT subject, name, visits FROM \"{}\".names_v{version} ORDER BY subject",
                store.schema()
            ),
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// The tables of the store's schema whose rows mention `marker`.
async fn tables_holding(store: &PgEventStore, marker: &str) -> Vec<String> {
    let client = common::raw_client().await;
    let tables = client
        .query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
            &[&store.schema()],
        )
        .await
        .unwrap();
    let mut holding = Vec::new();
    for table in tables {
        let name: String = table.get(0);
        let sql = format!(
            "SELECT count(*) FROM \"{}\".\"{name}\" t WHERE t::text LIKE $1",
            store.schema()
        );
        let count: i64 = client
            .query_one(&sql, &[&format!("%{marker}%")])
            .await
            .unwrap()
            .get(0);
        if count > 0 {
            holding.push(name);
        }
    }
    holding
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_projection_forgets_a_subject_and_rebuilds_without_them() {
    let store = common::fresh_store().await;
    let masters = MasterKeys::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap();
    let privacy = Privacy::new(Arc::new(store.keys(masters)));
    let marker = "Quixotic-5521";
    record(&store, &privacy, 1, &format!("Ada {marker}"), 1).await;
    record(&store, &privacy, 2, &format!("Bob {marker}"), 1).await;
    let daemon = ProjectionDaemon::new(&store)
        .with_options(DaemonOptions {
            standby_poll: Duration::from_millis(100),
            leader_check: Duration::from_millis(100),
            retry_delay: Duration::from_millis(100),
            max_poll: Duration::from_millis(100),
            ..DaemonOptions::default()
        })
        .unwrap()
        .register(privacy.revealing(Names), ProjectionOptions::default())
        .unwrap();
    daemon.start().unwrap();
    let last = record(&store, &privacy, 1, &format!("Ada {marker}"), 2).await;
    assert!(daemon.wait_for("names", last, WITHIN).await.unwrap());
    assert_eq!(
        names(&store, 1).await,
        [
            ("member-1".to_owned(), format!("Ada {marker}"), 2),
            ("member-2".to_owned(), format!("Bob {marker}"), 1),
        ]
    );
    assert_eq!(tables_holding(&store, marker).await, ["names_v1"]);

    // Forgetting both: the records reach the daemon, which patches the table.
    for n in [1, 2] {
        let subject = SubjectId::new(format!("member-{n}")).unwrap();
        privacy
            .forget_recorded(&store, &subject, "operator")
            .await
            .unwrap();
    }
    let last = record(&store, &privacy, 1, &format!("Ada {marker}"), 3).await;
    assert!(daemon.wait_for("names", last, WITHIN).await.unwrap());
    let forgotten = names(&store, 1).await;
    assert_eq!(
        forgotten,
        [
            ("member-1".to_owned(), "[forgotten]".to_owned(), 3),
            ("member-2".to_owned(), "[forgotten]".to_owned(), 1),
        ]
    );
    assert!(tables_holding(&store, marker).await.is_empty());

    // A rebuild reads every name as forgotten and ends in the same rows.
    assert_eq!(daemon.rebuild("names").await.unwrap(), 2);
    let deadline = tokio::time::Instant::now() + WITHIN;
    while daemon.active_version("names").await.unwrap() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuild did not switch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(names(&store, 2).await, forgotten);
    let status = daemon.projection_status("names").await.unwrap();
    assert_eq!(status.state, es_postgres::ProjectionState::Running);
    assert!(daemon.dead_letters("names").await.unwrap().is_empty());
    daemon.shutdown().await;
}
