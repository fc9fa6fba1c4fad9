//! Partitions held paused at a failing message: the record and its stores live in es-core
//! (PostgreSQL: `es_postgres::PgPausedPartitions`), re-exported here.

pub use es_core::memory::MemoryPausedPartitions;
pub use es_core::{PausedPartition, PausedPartitions, PausedPartitionsError};
