//! One call to set up a service's telemetry on the es crates: logs, traces and metrics.
//!
//! [`Telemetry::init`] installs, for the whole process:
//! - a `tracing` subscriber writing logs to standard error, filtered by `RUST_LOG` (`info` by
//!   default);
//! - the W3C trace-context propagator, so that the messages the framework writes carry
//!   `traceparent` and `tracestate` and the handlers that consume them continue their traces
//!   (see `es_core::telemetry`);
//! - when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, an
//!   OpenTelemetry layer exporting every span over OTLP, by `OTEL_EXPORTER_OTLP_PROTOCOL`
//!   (`grpc`, `http/protobuf`, the default, or `http/json`), as `OTEL_SERVICE_NAME`; metrics
//!   are exported the same way (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` aside). With neither
//!   set, no span is recorded for export: the `tracing` spans cost what they cost without
//!   OpenTelemetry;
//! - a meter provider whose metrics (the framework's `es_*`, and the application's own
//!   through `opentelemetry::global::meter`) [`Telemetry::render_metrics`] writes in the
//!   Prometheus text format, for a `GET /metrics` route.
//!
//! ```no_run
//! # async fn run() -> Result<(), es_telemetry::TelemetryError> {
//! let telemetry = es_telemetry::Telemetry::init(
//!     es_telemetry::TelemetryConfig::from_env("accounts"),
//! )?;
//! // ... serve, with `telemetry.render_metrics()` behind `GET /metrics` ...
//! telemetry.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! Tests that check spans give [`TelemetryConfig::with_span_exporter`] an in-memory exporter
//! (`opentelemetry_sdk::trace::InMemorySpanExporter`, feature `testing`).

use std::env;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// The content type of the Prometheus text format [`render_metrics`] writes.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The variable naming the OTLP collector (for every signal).
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The variable naming the OTLP collector of traces only.
pub const OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The variable naming the OTLP collector of metrics only.
pub const OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
/// The variable choosing the OTLP protocol: `grpc`, `http/protobuf` or `http/json`.
pub const OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The variable naming the service in exported telemetry.
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` names no protocol this crate speaks.
    #[error("{OTLP_PROTOCOL}={0:?}: expected grpc, http/protobuf or http/json")]
    Protocol(String),
    /// The OTLP exporter could not be built (a malformed endpoint, say).
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The Prometheus exporter could not be built.
    #[error("cannot build the Prometheus exporter: {0}")]
    Prometheus(#[from] opentelemetry_sdk::error::OTelSdkError),
    /// A global `tracing` subscriber was installed before.
    #[error("a tracing subscriber is already installed: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// The OTLP protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// gRPC (`grpc`).
    Grpc,
    /// Protobuf over HTTP (`http/protobuf`), OpenTelemetry's default.
    HttpProtobuf,
    /// JSON over HTTP (`http/json`).
    HttpJson,
}

impl OtlpProtocol {
    /// Parses the value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    ///
    /// # Errors
    /// [`TelemetryError::Protocol`] for any other value.
    pub fn parse(value: &str) -> Result<Self, TelemetryError> {
        match value.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            other => Err(TelemetryError::Protocol(other.to_owned())),
        }
    }
}

/// What [`Telemetry::init`] sets up.
#[derive(Debug)]
pub struct TelemetryConfig {
    service_name: String,
    otlp: Option<OtlpProtocol>,
    otlp_protocol_error: Option<String>,
    /// Where spans go, when exported (resolved from the variables).
    traces_endpoint: Option<String>,
    /// Where metrics go, when exported.
    metrics_endpoint: Option<String>,
    log_filter: String,
    span_exporter: Option<Box<dyn DynSpanExporter>>,
}

/// A span exporter given by the caller (a test's in-memory one).
trait DynSpanExporter: std::fmt::Debug + Send {
    fn install(self: Box<Self>, resource: Resource) -> SdkTracerProvider;
}

impl<E: SpanExporter + 'static> DynSpanExporter for E {
    fn install(self: Box<Self>, resource: Resource) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_resource(resource)
            .with_simple_exporter(*self)
            .build()
    }
}

impl TelemetryConfig {
    /// From the standard variables: `OTEL_SERVICE_NAME` (else `default_service_name`), the
    /// OTLP endpoint and protocol variables, and `RUST_LOG` (else `info`).
    pub fn from_env(default_service_name: &str) -> Self {
        Self::from_vars(default_service_name, env::vars())
    }

    /// As [`from_env`](Self::from_env), from the variables `vars` gives (name, value).
    ///
    /// As OpenTelemetry specifies, `OTEL_EXPORTER_OTLP_ENDPOINT` is a base URL to which the
    /// HTTP protocols add `/v1/traces` and `/v1/metrics`, while the signal-specific
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` are used
    /// as they are; gRPC takes every endpoint as it is.
    ///
    /// ```
    /// use es_telemetry::{OtlpProtocol, TelemetryConfig};
    ///
    /// let config = TelemetryConfig::from_vars("shop", [
    ///     ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
    ///     ("OTEL_SERVICE_NAME", "orders"),
    /// ]);
    /// assert_eq!(config.service_name(), "orders");
    /// assert_eq!(config.otlp(), Some(OtlpProtocol::HttpProtobuf));
    /// assert_eq!(config.traces_endpoint(), Some("http://collector:4318/v1/traces"));
    ///
    /// let quiet = TelemetryConfig::from_vars("shop", [("RUST_LOG", "debug")]);
    /// assert_eq!((quiet.otlp(), quiet.traces_endpoint()), (None, None));
    /// ```
    pub fn from_vars<K, V>(
        default_service_name: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars: std::collections::HashMap<String, String> = vars
            .into_iter()
            .map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().trim().to_owned()))
            .filter(|(_, value)| !value.is_empty())
            .collect();
        let var = |name: &str| vars.get(name).cloned();
        let (protocol, otlp_protocol_error) =
            match var(OTLP_PROTOCOL).map(|v| OtlpProtocol::parse(&v)) {
                Some(Ok(protocol)) => (protocol, None),
                Some(Err(_)) => (OtlpProtocol::HttpProtobuf, var(OTLP_PROTOCOL)),
                None => (OtlpProtocol::HttpProtobuf, None),
            };
        let base = var(OTLP_ENDPOINT);
        let endpoint = |specific: &str, path: &str| {
            var(specific).or_else(|| {
                base.as_ref().map(|base| match protocol {
                    OtlpProtocol::Grpc => base.clone(),
                    _ => format!("{}/{path}", base.trim_end_matches('/')),
                })
            })
        };
        let traces_endpoint = endpoint(OTLP_TRACES_ENDPOINT, "v1/traces");
        let metrics_endpoint = endpoint(OTLP_METRICS_ENDPOINT, "v1/metrics");
        let exported = traces_endpoint.is_some() || metrics_endpoint.is_some();
        Self {
            service_name: var(SERVICE_NAME).unwrap_or_else(|| default_service_name.to_owned()),
            otlp: exported.then_some(protocol),
            otlp_protocol_error,
            traces_endpoint,
            metrics_endpoint,
            log_filter: var("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            span_exporter: None,
        }
    }

    /// No export, logs at `info`: what [`from_env`](Self::from_env) gives with no variable.
    pub fn new(service_name: &str) -> Self {
        Self {
            service_name: service_name.to_owned(),
            otlp: None,
            otlp_protocol_error: None,
            traces_endpoint: None,
            metrics_endpoint: None,
            log_filter: "info".to_owned(),
            span_exporter: None,
        }
    }

    /// Records every span and hands it to `exporter` as it ends (instead of OTLP).
    #[must_use]
    pub fn with_span_exporter(mut self, exporter: impl SpanExporter + 'static) -> Self {
        self.span_exporter = Some(Box::new(exporter));
        self
    }

    /// Filters the logs (and the spans recorded) as `RUST_LOG` would.
    #[must_use]
    pub fn with_log_filter(mut self, filter: impl Into<String>) -> Self {
        self.log_filter = filter.into();
        self
    }

    /// The service's name in exported telemetry.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The OTLP protocol telemetry is exported with, `None` when nothing is exported.
    pub fn otlp(&self) -> Option<OtlpProtocol> {
        self.otlp
    }

    /// Where spans are exported, `None` when they are not.
    pub fn traces_endpoint(&self) -> Option<&str> {
        self.traces_endpoint.as_deref()
    }

    /// Where metrics are exported, `None` when they are not.
    pub fn metrics_endpoint(&self) -> Option<&str> {
        self.metrics_endpoint.as_deref()
    }
}

/// The process's telemetry, set up: renders the metrics, and flushes what is exported at
/// the end.
#[derive(Debug)]
pub struct Telemetry {
    registry: prometheus::Registry,
    meters: SdkMeterProvider,
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the subscriber, the propagator and the providers for the whole process (see
    /// the [crate] documentation). Call it once, first thing in `main`, inside the Tokio
    /// runtime (the gRPC exporter needs one).
    ///
    /// # Errors
    /// [`TelemetryError::Protocol`] for an unknown `OTEL_EXPORTER_OTLP_PROTOCOL`;
    /// [`TelemetryError::Exporter`] when the OTLP exporter cannot be built;
    /// [`TelemetryError::Subscriber`] when a subscriber was installed before.
    pub fn init(config: TelemetryConfig) -> Result<Self, TelemetryError> {
        if let Some(value) = config.otlp_protocol_error {
            return Err(TelemetryError::Protocol(value));
        }
        global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = Resource::builder()
            .with_attributes([KeyValue::new("service.name", config.service_name.clone())])
            .build();
        let registry = GLOBAL_REGISTRY
            .get_or_init(prometheus::Registry::new)
            .clone();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .without_target_info()
            .build()?;
        let mut meters = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(prometheus);
        if let (Some(protocol), Some(endpoint)) = (config.otlp, &config.metrics_endpoint) {
            meters = meters.with_periodic_exporter(metric_exporter(protocol, endpoint)?);
        }
        let meters = meters.build();
        global::set_meter_provider(meters.clone());

        let tracer = match (config.span_exporter, config.otlp, &config.traces_endpoint) {
            (Some(exporter), _, _) => Some(exporter.install(resource)),
            (None, Some(protocol), Some(endpoint)) => Some(
                SdkTracerProvider::builder()
                    .with_resource(resource)
                    .with_batch_exporter(span_exporter(protocol, endpoint)?)
                    .build(),
            ),
            _ => None,
        };
        let filter =
            EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let otel = tracer.as_ref().map(|provider| {
            global::set_tracer_provider(provider.clone());
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("es"))
                .boxed()
        });
        tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .with(otel)
            .try_init()?;
        Ok(Self {
            registry,
            meters,
            tracer,
        })
    }

    /// Every metric, in the Prometheus text format (version 0.0.4).
    pub fn render_metrics(&self) -> String {
        render(&self.registry)
    }

    /// Exports what is still buffered (spans, metrics) and stops the exporters.
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(error) = tracer.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {error}");
        }
        if let Err(error) = self.meters.shutdown() {
            eprintln!("telemetry: flushing metrics failed: {error}");
        }
    }

    /// Hands every ended span to the exporter now (a test's in-memory one, say).
    pub fn flush_spans(&self) {
        if let Some(tracer) = &self.tracer {
            let _ = tracer.force_flush();
        }
    }
}

/// The registry [`Telemetry::init`] renders metrics from.
static GLOBAL_REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// Every metric of the process, in the Prometheus text format, once [`Telemetry::init`] ran
/// (`None` before): for a `/metrics` route that has no handle on the [`Telemetry`].
pub fn render_metrics() -> Option<String> {
    GLOBAL_REGISTRY.get().map(render)
}

fn render(registry: &prometheus::Registry) -> String {
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|error| format!("# metrics could not be encoded: {error}\n"))
}

/// Builds an OTLP exporter of one signal (`SpanExporter`, `MetricExporter`) for `protocol`
/// and `endpoint`: the two builders have the same methods but no common trait.
macro_rules! otlp_exporter {
    ($exporter:ty, $protocol:expr, $endpoint:expr) => {{
        use opentelemetry_otlp::{Protocol, WithExportConfig as _};
        let builder = <$exporter>::builder();
        match $protocol {
            OtlpProtocol::Grpc => builder.with_tonic().with_endpoint($endpoint).build(),
            OtlpProtocol::HttpProtobuf => builder
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint($endpoint)
                .build(),
            OtlpProtocol::HttpJson => builder
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint($endpoint)
                .build(),
        }
    }};
}

fn span_exporter(
    protocol: OtlpProtocol,
    endpoint: &str,
) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    Ok(otlp_exporter!(
        opentelemetry_otlp::SpanExporter,
        protocol,
        endpoint
    )?)
}

fn metric_exporter(
    protocol: OtlpProtocol,
    endpoint: &str,
) -> Result<opentelemetry_otlp::MetricExporter, TelemetryError> {
    Ok(otlp_exporter!(
        opentelemetry_otlp::MetricExporter,
        protocol,
        endpoint
    )?)
}
