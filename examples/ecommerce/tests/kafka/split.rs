//! The shop split into its eight services (each an `App::start_service` on its own
//! listeners, schemas and consumer group, calling the others over HTTP with machine tokens)
//! behind the gateway, on PostgreSQL and a broker of the test's own: orders placed through
//! the gateway end as their kind says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ecommerce::app::{App, AppConfig, KafkaSettings, WorkflowConfig};
use ecommerce::backend::Backend;
use ecommerce::failures::FailureRules;
use ecommerce::gateway::{Gateway, RouteTable};
use ecommerce::split::{ServiceName, SplitConfig};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::demo::shop::Remote;
use crate::demo::{DemoOptions, run};
use crate::{broker, database_url, test_lock};

struct Running {
    public: String,
    internal: String,
    app: App,
}

/// Waits until `url` answers 200 (a service's `/ready`: its storage, bus and consumers).
async fn wait_ready(url: &str, within: Duration) {
    let http: hyper_util::client::legacy::Client<_, http_body_util::Full<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let deadline = Instant::now() + within;
    loop {
        let request = hyper::Request::get(url)
            .body(http_body_util::Full::new(hyper::body::Bytes::new()))
            .unwrap();
        if let Ok(response) = http.request(request).await
            && response.status() == hyper::StatusCode::OK
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_the_split_services_run_the_workflow_behind_the_gateway() {
    test_lock::alone();
    let broker = broker::PrivateBroker::start();
    let run_id = Uuid::new_v4().simple().to_string();
    let url = database_url();
    // Every listener first: each service knows where the others are before any starts.
    let mut listeners = BTreeMap::new();
    for service in ServiceName::ALL {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(service, (public, internal));
    }
    let urls: BTreeMap<ServiceName, (String, String)> = listeners
        .iter()
        .map(|(service, (public, internal))| {
            (
                *service,
                (
                    format!("http://{}", public.local_addr().unwrap()),
                    format!("http://{}", internal.local_addr().unwrap()),
                ),
            )
        })
        .collect();
    let mut running = BTreeMap::new();
    // One at a time, each ready (its consumer group joined) before the next: the test
    // broker can hang when several groups join at once (docs/kafka.md).
    for service in ServiceName::ALL {
        let (public, internal) = listeners.remove(&service).unwrap();
        let backend = Backend::postgres(&url, 4, &format!("es_test_split_{run_id}")).unwrap();
        let config = AppConfig {
            backend,
            workflow: WorkflowConfig {
                failures: FailureRules::demo(),
                deadline_poll: Duration::from_millis(100),
                consumers: 1,
                ..WorkflowConfig::default()
            },
            kafka: Some(KafkaSettings {
                config: es_kafka::KafkaConfig::new(broker.bootstrap_servers()),
                topic_prefix: format!("split-{run_id}-"),
            }),
            ..AppConfig::embedded()
        };
        let split = SplitConfig {
            internal: urls.iter().map(|(s, (_, i))| (*s, i.clone())).collect(),
            identity_url: urls[&ServiceName::Identity].0.clone(),
            ..SplitConfig::local(service)
        };
        let app = App::start_service(config, split)
            .await
            .unwrap_or_else(|e| panic!("{service} did not start: {e}"));
        let served = app.clone();
        tokio::spawn(async move {
            served
                .serve_on(public, internal, std::future::pending())
                .await;
        });
        let (public, internal) = urls[&service].clone();
        wait_ready(&format!("{internal}/ready"), Duration::from_secs(60)).await;
        running.insert(
            service,
            Running {
                public,
                internal,
                app,
            },
        );
    }

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.json");
    let mut table = RouteTable::load(&path).unwrap();
    for (name, service) in &mut table.services {
        let service_name = ServiceName::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .unwrap();
        service.url = running[&service_name].public.clone();
    }
    let gateway = Gateway::new(table).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        gateway
            .serve(listener, std::future::pending())
            .await
            .unwrap();
    });
    wait_ready(&format!("{gateway_url}/health"), Duration::from_secs(10)).await;

    // The demo's orders through the gateway, each kind (shipped, out of stock, payment
    // failed, cancelled by the customer, shipment failed, over the credit limit) ending as
    // it should. Its invariant check reads one instance's books, which a split service does
    // not hold whole: only the orders' ends are checked here.
    let shop = Arc::new(Remote::new(
        &gateway_url,
        &running[&ServiceName::Orders].internal,
    ));
    let options = DemoOptions {
        customers: 6,
        orders: 24,
        concurrency: 3,
        settle: Duration::from_secs(30),
        progress: false,
        ..DemoOptions::default()
    };
    let report = run(shop, &options).await.unwrap();
    assert_eq!(report.outcomes.len(), 24);
    assert!(report.unexpected.is_empty(), "{:#?}", report.unexpected);
    let ended: BTreeMap<&str, usize> =
        report
            .outcomes
            .iter()
            .fold(BTreeMap::new(), |mut by, outcome| {
                *by.entry(outcome.status.as_str()).or_default() += 1;
                by
            });
    assert!(!ended.contains_key("missing"), "{ended:?}");
    assert!(
        ended.contains_key("Shipped") || ended.contains_key("Delivered"),
        "{ended:?}"
    );
    assert!(ended.contains_key("Cancelled"), "{ended:?}");

    for running in running.into_values() {
        running.app.runtime().shutdown().await;
    }
}
