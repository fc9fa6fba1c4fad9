//! The reference ecommerce backend as a library: the bounded contexts, their HTTP routes and
//! the wiring that runs them embedded (in memory) or on PostgreSQL.
//!
//! The `ecommerce` binary is a thin command line over this crate; tests drive the same code.
//!
//! ```no_run
//! use ecommerce::app::{App, AppConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::start(AppConfig::embedded()).await?;
//! app.serve(
//!     "127.0.0.1:5000".parse()?,
//!     "127.0.0.1:5100".parse()?,
//!     async { let _ = tokio::signal::ctrl_c().await; },
//! )
//! .await?;
//! # Ok(())
//! # }
//! ```

mod adapters;
pub mod app;
pub mod auth;
pub mod backend;
pub mod catalog;
pub mod config;
pub mod customers;
pub mod failures;
pub mod gateway;
pub mod handling;
pub mod history;
pub mod http;
pub mod identity;
pub mod invariants;
pub mod inventory;
pub mod messages;
pub mod money;
pub mod ops;
pub mod orders;
pub mod payments;
pub mod quotes;
pub mod remote;
pub mod runtime;
pub mod shipments;
pub mod split;
pub mod storage;
mod wiring;
pub mod workflow;
