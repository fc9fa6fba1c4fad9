//! The guide's code, compiled and checked.
//!
//! This crate has no API: it exists so that `cargo test -p es-docs` checks every Rust block of
//! the guide in `docs/`. Each module below takes its documentation from one page of the guide,
//! so rustdoc compiles every ```` ```rust ```` block of that page as a doctest (and runs it,
//! unless it is `no_run` because it needs PostgreSQL or Kafka). The only other Rust blocks are
//! ```` ```rust,ignore ```` excerpts of files that are compiled and tested elsewhere, each under
//! a `<!-- excerpt: path -->` line; `tests/excerpts.rs` checks that each is a verbatim run of
//! lines of the file it names, and that no block escapes both checks.

#[doc = include_str!("../README.md")]
pub mod readme {}

#[doc = include_str!("../concepts.md")]
pub mod concepts {}

#[doc = include_str!("../getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("../first-service.md")]
pub mod first_service {}

#[doc = include_str!("../postgres.md")]
pub mod postgres {}

#[doc = include_str!("../projections.md")]
pub mod projections {}

#[doc = include_str!("../kafka.md")]
pub mod kafka {}

#[doc = include_str!("../local-route.md")]
pub mod local_route {}

#[doc = include_str!("../sagas.md")]
pub mod sagas {}

#[doc = include_str!("../ecommerce.md")]
pub mod ecommerce {}

#[doc = include_str!("../telemetry.md")]
pub mod telemetry {}

#[doc = include_str!("../operations.md")]
pub mod operations {}

#[doc = include_str!("../benchmarks.md")]
pub mod benchmarks {}

#[doc = include_str!("../privacy.md")]
pub mod privacy {}
