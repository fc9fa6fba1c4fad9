//! The reference ecommerce backend.
//!
//! An ecommerce backend whose ordering workflow runs on `es-core`, `es-postgres`, `es-kafka`
//! and `es-saga`. With nothing configured it runs embedded on the in-memory backend; with
//! `DATABASE_URL` it keeps its data in PostgreSQL, one schema per context.

mod demo;

use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use demo::DemoOptions;
use demo::shop::{InProcess, Remote, Shop};
use ecommerce::app::{App, AppConfig, WorkflowConfig};
use ecommerce::backend::Backend;
use ecommerce::config::ServeArgs;
use ecommerce::failures::FailureRules;
use es_telemetry::{Telemetry, TelemetryConfig};

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
    Serve(Box<ServeArgs>),
    /// Drives the ordering workflow through the HTTP API: registers customers, places orders
    /// (some hitting each compensation path), prints each order's status history and checks
    /// every invariant. In process on the embedded default, or against `--url`.
    Demo(DemoArgs),
    /// Serves the public API of services split apart, routing by path from a route table
    /// (see examples/ecommerce/gateway.json): `/health` for every service, the merged
    /// OpenAPI document, and never an internal route.
    Gateway(GatewayArgs),
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// Where to listen.
    #[arg(long, env = "ECOMMERCE_GATEWAY_ADDR", default_value = "0.0.0.0:5000")]
    addr: std::net::SocketAddr,
    /// The route table (JSON).
    #[arg(
        long,
        env = "ECOMMERCE_GATEWAY_ROUTES",
        default_value = "examples/ecommerce/gateway.json"
    )]
    routes: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// A running instance's public URL (e.g. http://127.0.0.1:5000); in process when absent.
    #[arg(long)]
    url: Option<String>,
    /// The running instance's internal URL (for the status and invariants); against the split
    /// services, every service's, comma-separated or repeated (the orders service checks the
    /// invariants, reading inventory and payments; the others add their relays, consumers and
    /// dead letters).
    #[arg(long, default_value = "http://127.0.0.1:5100", value_delimiter = ',')]
    internal_url: Vec<String>,
    /// Customers to register.
    #[arg(long, default_value_t = 20)]
    customers: usize,
    /// Orders to place.
    #[arg(long, default_value_t = 200)]
    orders: usize,
    /// Customers shopping at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Place orders at this steady rate (orders per second) rather than as fast as the
    /// customers can (give enough customers and concurrency to keep up).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to wait for every order to end.
    #[arg(long, default_value_t = 60)]
    settle_seconds: u64,
    /// Print only the totals, not each order.
    #[arg(long)]
    quiet: bool,
    /// In process: deliver every integration message twice.
    #[arg(long)]
    duplicate_delivery: bool,
    /// The payment failure rule the instance runs with (cents).
    #[arg(long, default_value_t = 39)]
    fail_payments_ending_in: u32,
    /// The shipment failure rule the instance runs with (cents).
    #[arg(long, default_value_t = 13)]
    fail_shipments_ending_in: u32,
    /// Machine client id (for the status route).
    #[arg(long, env = "ECOMMERCE_DEMO_CLIENT_ID", default_value = ecommerce::config::DEVELOPMENT_CLIENT_ID)]
    client_id: String,
    /// Machine client secret.
    #[arg(long, env = "ECOMMERCE_DEMO_CLIENT_SECRET", default_value = ecommerce::config::DEVELOPMENT_CLIENT_SECRET, hide_default_value = true)]
    client_secret: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own report: only warnings from the app.
    let level = match cli.command {
        Some(Command::Demo(_)) => "warn",
        _ => "info",
    };
    // Logs, W3C trace propagation, OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set, and
    // the metrics `GET /metrics` serves.
    let mut telemetry = TelemetryConfig::from_env("ecommerce");
    if std::env::var_os("RUST_LOG").is_none() {
        telemetry = telemetry.with_log_filter(level);
    }
    let telemetry = match Telemetry::init(telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Demo(args)) => demo(args).await,
        Some(Command::Gateway(args)) => gateway(args).await,
    };
    telemetry.shutdown();
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
    if !args.production {
        for addr in [args.public_addr, args.internal_addr] {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "NOT IN PRODUCTION MODE while listening beyond loopback: tokens are signed \
                     with the public development key unless ECOMMERCE_JWT_SECRET is set; run \
                     with --production to refuse development secrets"
                );
            }
        }
    }
    let backend = match &args.database_url {
        Some(url) => Backend::postgres(url, args.pool_size, &args.schema_prefix)?,
        None => {
            tracing::warn!(
                "no DATABASE_URL: running embedded, in memory; nothing is kept across restarts"
            );
            Backend::Memory
        }
    };
    let config = AppConfig {
        backend,
        identity,
        body_limit: args.body_limit,
        server: args.server(),
        master_keys: args.master_keys()?,
        workflow: args.workflow()?,
        kafka: args.kafka(),
        trusted_proxies: args.trusted_proxies()?,
    };
    let app = match args.split() {
        Some(split) => {
            tracing::info!(service = %split.service, "starting one service of the split deployment");
            App::start_service(config, split).await?
        }
        None => App::start(config).await?,
    };
    app.serve(args.public_addr, args.internal_addr, shutdown_signal())
        .await?;
    Ok(())
}

async fn gateway(args: GatewayArgs) -> MainResult {
    let table = ecommerce::gateway::RouteTable::load(&args.routes)?;
    let gateway = ecommerce::gateway::Gateway::new(table)?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    tracing::info!(addr = %args.addr, routes = %args.routes.display(), "gateway listening");
    gateway.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn demo(args: DemoArgs) -> MainResult {
    let failures = FailureRules {
        payment_cents: Some(args.fail_payments_ending_in),
        shipment_cents: Some(args.fail_shipments_ending_in),
    };
    let options = DemoOptions {
        customers: args.customers,
        orders: args.orders,
        concurrency: args.concurrency,
        failures,
        client_id: args.client_id,
        client_secret: args.client_secret,
        settle: Duration::from_secs(args.settle_seconds),
        progress: !args.quiet,
        rate: args.rate,
    };
    let (shop, app): (Arc<dyn Shop>, Option<App>) = match &args.url {
        Some(url) => (Arc::new(Remote::new(url, &args.internal_url)), None),
        None => {
            println!("running in process on the embedded default (nothing is kept)");
            let app = App::start(AppConfig {
                workflow: WorkflowConfig {
                    failures,
                    duplicate_delivery: args.duplicate_delivery,
                    deadline_poll: Duration::from_millis(50),
                    ..WorkflowConfig::default()
                },
                ..AppConfig::embedded()
            })
            .await?;
            (Arc::new(InProcess::new(&app)), Some(app))
        }
    };
    let report = demo::run(shop, &options).await?;
    report.print(!args.quiet);
    if let Some(app) = app {
        app.runtime().shutdown().await;
    }
    print_verdict(&report)
}

fn print_verdict(report: &demo::DemoReport) -> MainResult {
    if report.passed() {
        println!("demo passed");
        Ok(())
    } else {
        Err("demo failed: see UNEXPECTED and INVARIANT BROKEN above".into())
    }
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
