//! The reference ecommerce backend.
//!
//! An ecommerce backend whose ordering workflow runs on `es-core`, `es-postgres`, `es-kafka`
//! and `es-saga`. With nothing configured it runs embedded on the in-memory backend; with
//! `DATABASE_URL` it keeps its data in PostgreSQL, one schema per context.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ecommerce::app::{App, AppConfig};
use ecommerce::backend::Backend;
use ecommerce::config::ServeArgs;
use tracing_subscriber::EnvFilter;

/// The reference ecommerce backend.
#[derive(Debug, Parser)]
#[command(name = "ecommerce", version, about = "The reference ecommerce backend")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the public API on :5000 and the internal API on 127.0.0.1:5100 (the default).
    Serve,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.serve).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> MainResult {
    let identity = args.identity()?;
    let backend = match &args.database_url {
        Some(url) => Backend::postgres(url, args.pool_size, &args.schema_prefix)?,
        None => {
            tracing::warn!(
                "no DATABASE_URL: running embedded, in memory; nothing is kept across restarts"
            );
            Backend::Memory
        }
    };
    let app = App::start(AppConfig {
        backend,
        identity,
        body_limit: args.body_limit,
        workflow: args.workflow()?,
    })
    .await?;
    app.serve(args.public_addr, args.internal_addr, shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// `main`'s result: any error, printed by its `Display`.
type MainResult = Result<(), Box<dyn std::error::Error>>;
