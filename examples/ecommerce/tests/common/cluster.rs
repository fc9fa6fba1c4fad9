//! The shop split into its eight services behind the gateway, on PostgreSQL and a broker of
//! the test's own: each service an `App::start_service` in the test's process on listeners
//! of its own, or the `ecommerce` binary as a child process the test can kill (`SIGKILL`)
//! and start again on the same ports.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ecommerce::app::{App, AppConfig, KafkaSettings, WorkflowConfig};
use ecommerce::backend::Backend;
use ecommerce::failures::FailureRules;
use ecommerce::gateway::{Gateway, RouteTable};
use ecommerce::split::{ServiceName, SplitConfig};
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::broker::PrivateBroker;

/// How one service runs.
pub enum Runs {
    /// In this process.
    InProcess(Box<App>),
    /// As a child process (none while killed).
    Process(Option<Child>),
}

/// One service: its base URLs and how it runs.
pub struct Service {
    /// `http://127.0.0.1:PORT` of its public listener.
    pub public: String,
    /// The same of its internal listener.
    pub internal: String,
    /// How it runs.
    pub runs: Runs,
}

/// The eight services and the gateway.
pub struct Cluster {
    /// The broker (the fault tests freeze it).
    pub broker: PrivateBroker,
    /// The prefix of every service's schemas.
    pub schema_prefix: String,
    /// The prefix of the topics.
    pub topic_prefix: String,
    /// The services.
    pub services: BTreeMap<ServiceName, Service>,
    /// The gateway's base URL.
    pub gateway: String,
    database_url: String,
    tune: fn(&mut AppConfig),
}

/// Waits until `url` answers 200 (a service's `/ready`, the gateway's `/health`).
pub async fn wait_ready(url: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !answers_ok(url).await {
        assert!(
            Instant::now() < deadline,
            "{url} not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `url` answers 200 now.
pub async fn answers_ok(url: &str) -> bool {
    let http: hyper_util::client::legacy::Client<_, http_body_util::Full<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let request = hyper::Request::get(url)
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .unwrap();
    matches!(http.request(request).await, Ok(response) if response.status() == hyper::StatusCode::OK)
}

/// The failure rules every service runs with (the demo's: payments of amounts ending in .39
/// are declined, shipments of .13 fail).
const FAIL_PAYMENTS_ENDING_IN: u32 = 39;
const FAIL_SHIPMENTS_ENDING_IN: u32 = 13;

impl Cluster {
    /// Starts the broker, the services (those in `as_processes` as child processes, the
    /// others in this process) one at a time, each ready before the next (the test broker
    /// can hang when several consumer groups join at once: docs/kafka.md), then the gateway.
    pub async fn start(database_url: &str, as_processes: &[ServiceName]) -> Self {
        Self::start_tuned(database_url, as_processes, |_| {}).await
    }

    /// As [`start`](Self::start), each service in this process configured by `tune` last.
    pub async fn start_tuned(
        database_url: &str,
        as_processes: &[ServiceName],
        tune: fn(&mut AppConfig),
    ) -> Self {
        let broker = PrivateBroker::start();
        let run = Uuid::new_v4().simple().to_string();
        let schema_prefix = format!("es_test_split_{run}");
        let topic_prefix = format!("split-{run}-");
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
                let url = |l: &TcpListener| format!("http://{}", l.local_addr().unwrap());
                (*service, (url(public), url(internal)))
            })
            .collect();
        let mut cluster = Self {
            broker,
            schema_prefix,
            topic_prefix,
            services: BTreeMap::new(),
            gateway: String::new(),
            database_url: database_url.to_owned(),
            tune,
        };
        for service in ServiceName::ALL {
            let (public_listener, internal_listener) = listeners.remove(&service).unwrap();
            let (public, internal) = urls[&service].clone();
            let runs = if as_processes.contains(&service) {
                // The child binds the same ports once these are released.
                drop((public_listener, internal_listener));
                Runs::Process(Some(cluster.spawn(service, &urls)))
            } else {
                Runs::InProcess(Box::new(
                    cluster
                        .start_in_process(service, &urls, public_listener, internal_listener)
                        .await,
                ))
            };
            wait_ready(&format!("{internal}/ready"), Duration::from_secs(60)).await;
            cluster.services.insert(
                service,
                Service {
                    public,
                    internal,
                    runs,
                },
            );
        }
        cluster.gateway = cluster.start_gateway().await;
        cluster
    }

    async fn start_in_process(
        &self,
        service: ServiceName,
        urls: &BTreeMap<ServiceName, (String, String)>,
        public: TcpListener,
        internal: TcpListener,
    ) -> App {
        let backend = Backend::postgres(&self.database_url, 4, &self.schema_prefix).unwrap();
        let mut config = AppConfig {
            backend,
            workflow: WorkflowConfig {
                failures: FailureRules {
                    payment_cents: Some(FAIL_PAYMENTS_ENDING_IN),
                    shipment_cents: Some(FAIL_SHIPMENTS_ENDING_IN),
                },
                deadline_poll: Duration::from_millis(100),
                consumers: 1,
                ..WorkflowConfig::default()
            },
            kafka: Some(KafkaSettings {
                config: es_kafka::KafkaConfig::new(self.broker.bootstrap_servers()),
                topic_prefix: self.topic_prefix.clone(),
            }),
            // Behind the gateway on loopback: the sign-in limits count the forwarded address.
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..AppConfig::embedded()
        };
        (self.tune)(&mut config);
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
        app
    }

    /// `ecommerce serve --service NAME` with what `scripts/cluster` gives each service.
    fn spawn(&self, service: ServiceName, urls: &BTreeMap<ServiceName, (String, String)>) -> Child {
        let address = |url: &str| url.trim_start_matches("http://").to_owned();
        let (public, internal) = &urls[&service];
        let mut command = Command::new(env!("CARGO_BIN_EXE_ecommerce"));
        command
            .arg("serve")
            .env("ECOMMERCE_SERVICE", service.as_str())
            .env("ECOMMERCE_PUBLIC_ADDR", address(public))
            .env("ECOMMERCE_INTERNAL_ADDR", address(internal))
            .env("DATABASE_URL", &self.database_url)
            .env("ECOMMERCE_SCHEMA_PREFIX", &self.schema_prefix)
            .env("KAFKA_BOOTSTRAP_SERVERS", self.broker.bootstrap_servers())
            .env("ECOMMERCE_TOPIC_PREFIX", &self.topic_prefix)
            .env("ECOMMERCE_POOL_SIZE", "4")
            .env("ECOMMERCE_CONSUMERS", "1")
            .env("ECOMMERCE_TRUSTED_PROXIES", "127.0.0.1")
            .env(
                "ECOMMERCE_FAIL_PAYMENTS_ENDING_IN",
                FAIL_PAYMENTS_ENDING_IN.to_string(),
            )
            .env(
                "ECOMMERCE_FAIL_SHIPMENTS_ENDING_IN",
                FAIL_SHIPMENTS_ENDING_IN.to_string(),
            )
            .env(
                "ECOMMERCE_PEER_IDENTITY_PUBLIC_URL",
                &urls[&ServiceName::Identity].0,
            )
            .env_remove("ECOMMERCE_PRODUCTION")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (peer, (_, internal)) in urls {
            command.env(
                format!("ECOMMERCE_PEER_{}_URL", peer.as_str().to_uppercase()),
                internal,
            );
        }
        command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the ecommerce binary: {e}"))
    }

    async fn start_gateway(&self) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.json");
        let mut table = RouteTable::load(&path).unwrap();
        for (name, service) in &mut table.services {
            let service_name = ServiceName::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .unwrap();
            service.url = self.services[&service_name].public.clone();
        }
        let gateway = Gateway::new(table).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            gateway
                .serve(listener, std::future::pending())
                .await
                .unwrap();
        });
        wait_ready(&format!("{url}/health"), Duration::from_secs(10)).await;
        url
    }

    /// Every service's internal base URL.
    pub fn internal_urls(&self) -> Vec<String> {
        self.services.values().map(|s| s.internal.clone()).collect()
    }

    /// The service running in this process.
    pub fn app(&self, service: ServiceName) -> &App {
        match &self.services[&service].runs {
            Runs::InProcess(app) => app,
            Runs::Process(_) => panic!("{service} runs as a process"),
        }
    }

    /// The internal base URL of the service that serves `path` (an internal route's
    /// service: its second segment after `/api/v2/internal/`; the status and projections are
    /// the orders service's).
    pub fn internal_for(&self, path: &str) -> &str {
        let area = path
            .trim_start_matches("/api/v2/internal/")
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        let service = match area {
            "accounts" => ServiceName::Identity,
            "customers" | "keys" => ServiceName::Customers,
            "catalog" => ServiceName::Catalog,
            "inventory" => ServiceName::Inventory,
            "quotes" => ServiceName::Quotes,
            "payments" => ServiceName::Payments,
            _ => ServiceName::Orders,
        };
        &self.services[&service].internal
    }

    /// Kills a service run as a process with `SIGKILL`: no shutdown, no flush.
    pub fn kill(&mut self, service: ServiceName) {
        let Runs::Process(child) = &mut self.services.get_mut(&service).unwrap().runs else {
            panic!("{service} runs in this process");
        };
        let mut child = child.take().expect("it runs");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts a killed service again on its ports; returns once it is ready.
    pub async fn restart(&mut self, service: ServiceName) {
        let urls: BTreeMap<ServiceName, (String, String)> = self
            .services
            .iter()
            .map(|(s, running)| (*s, (running.public.clone(), running.internal.clone())))
            .collect();
        let child = self.spawn(service, &urls);
        let running = self.services.get_mut(&service).unwrap();
        running.runs = Runs::Process(Some(child));
        let internal = running.internal.clone();
        wait_ready(&format!("{internal}/ready"), Duration::from_secs(60)).await;
    }

    /// Stops every service: the ones in this process shut their runtimes down, the child
    /// processes are killed.
    pub async fn stop(mut self) {
        for service in self.services.values_mut() {
            match &mut service.runs {
                Runs::InProcess(app) => app.runtime().shutdown().await,
                Runs::Process(child) => {
                    if let Some(mut child) = child.take() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for service in self.services.values_mut() {
            if let Runs::Process(Some(child)) = &mut service.runs {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
