//! The same application on both backends (`examples/backend_choice.rs`), chosen at run time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../examples/backend_choice.rs"]
mod backend_choice;

use backend_choice::Report;
use es_core::memory::MemoryBackend;
use es_core::{Backend, EventStore};
use es_postgres::{PgBackend, PgConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_application_runs_the_same_on_memory_and_on_postgresql() {
    let expected = Report {
        total: 23,
        announced: 3,
    };
    assert_eq!(
        backend_choice::run(&MemoryBackend::new(), "tally-1")
            .await
            .unwrap(),
        expected
    );

    let config = PgConfig::new(common::database_url()).schema(common::schema_name());
    let backend = PgBackend::new(&config).unwrap();
    assert_eq!(
        backend_choice::run(&backend, "tally-1").await.unwrap(),
        expected
    );

    // A context is a schema of its own, migrated once, and the same context is the same store.
    let first = backend.store("tallies").await.unwrap();
    let again = backend.store("tallies").await.unwrap();
    assert_eq!(first.schema(), backend.schema_of("tallies"));
    let id = es_core::StreamId::new("tally-1").unwrap();
    assert_eq!(again.stream_version(&id).await.unwrap().get(), 3);
}
