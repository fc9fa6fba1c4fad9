//! Criterion benchmarks for the framework.
//!
//! Each benchmark will run beside a raw floor measured in the same run, alternating the two,
//! because absolute times on shared machines drift: appends against a plain multi-row `INSERT`,
//! stream loads and global scans against raw `tokio-postgres`, the projection daemon against a
//! hand-written select-and-upsert loop, the outbox relay against a raw `rdkafka` producer, and
//! the whole ordering workflow of the example app. Results are recorded in
//! `docs/benchmarks.md`.
//!
//! Nothing is exported yet.
