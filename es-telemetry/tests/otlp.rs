//! With the standard variables pointing at a collector, spans and metrics are exported over
//! OTLP (here `http/json`, to a collector stand-in on loopback that records each request).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use es_core::memory::MemoryEventStore;
use es_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, NewEvent, StreamId, SystemClock,
};
use es_telemetry::{OtlpProtocol, Telemetry, TelemetryConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Each request the stand-in received: its path and body.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// Answers every request `200 OK`, recording its path and body.
async fn collector(listener: TcpListener, received: Received) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let received = received.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            loop {
                let mut request_line = String::new();
                if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                    return;
                }
                let path = request_line
                    .split(' ')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    stream.read_line(&mut header).await.unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                received
                    .lock()
                    .unwrap()
                    .push((path, String::from_utf8_lossy(&body).into_owned()));
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_the_collector_the_variables_name() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    tokio::spawn(collector(listener, received.clone()));

    let config = TelemetryConfig::from_vars(
        "unnamed",
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", "otlp-test"),
        ],
    );
    assert_eq!(config.otlp(), Some(OtlpProtocol::HttpJson));
    let telemetry = Telemetry::init(config).unwrap();

    // An append: a span, and the framework's metrics.
    let store = MemoryEventStore::new();
    let event = NewEvent {
        event_type: "Counted".into(),
        schema_version: 1,
        data: serde_json::json!({}),
        metadata: CommandContext::new().metadata(&SystemClock),
    };
    store
        .append(
            AppendRequest::new(StreamId::new("tally-1").unwrap(), ExpectedVersion::NoStream)
                .with_events([event]),
        )
        .await
        .unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let received = received.lock().unwrap().clone();
    let traces: Vec<&String> = received
        .iter()
        .filter(|(path, _)| path == "/v1/traces")
        .map(|(_, body)| body)
        .collect();
    let metrics: Vec<&String> = received
        .iter()
        .filter(|(path, _)| path == "/v1/metrics")
        .map(|(_, body)| body)
        .collect();
    let paths: Vec<&String> = received.iter().map(|(path, _)| path).collect();
    assert!(
        traces
            .iter()
            .any(|body| body.contains("append memory") && body.contains("otlp-test")),
        "the append's span, from the named service, over /v1/traces: {paths:?}"
    );
    assert!(
        metrics.iter().any(|body| body.contains("es_append_events")),
        "the framework's metrics over /v1/metrics: {paths:?}"
    );
}
