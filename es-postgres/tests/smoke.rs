//! Proves the test suite reaches a real PostgreSQL server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[tokio::test]
async fn reaches_a_real_postgresql_server() {
    let url = common::database_url();
    let client = es_postgres::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let row = client.query_one("SELECT version()", &[]).await.unwrap();
    let version: String = row.get(0);
    assert!(version.starts_with("PostgreSQL "), "unexpected: {version}");

    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap();
    let number: i32 = row.get(0);
    assert!(
        number >= 150_000,
        "PostgreSQL 15 or later is required, found {version}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_reported_with_how_to_start_it() {
    let error = es_postgres::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .expect_err("nothing listens on port 1");
    let message = error.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(message.contains("pg_ctlcluster"), "{message}");
}
