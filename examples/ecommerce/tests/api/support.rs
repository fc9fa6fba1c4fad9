//! An application under test, embedded or on PostgreSQL, driven through its routers; or the
//! split services on PostgreSQL and a broker, driven through the gateway.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use ecommerce::app::{App, AppConfig};
use ecommerce::backend::Backend;
use ecommerce::split::ServiceName;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

use crate::cluster::Cluster;

#[path = "../../../../es-postgres/tests/common/test_lock.rs"]
pub mod test_lock;

/// Which listener a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Internal,
}

/// A response, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub struct TestApp {
    /// The app (in split mode, the orders service: its books span the services).
    pub app: App,
    /// The prefix of its PostgreSQL schemas (none embedded).
    pub schema_prefix: Option<String>,
    target: Target,
}

/// Where requests go.
enum Target {
    /// The routers, in this process.
    Routers { public: Router, internal: Router },
    /// Loopback sockets: the public API through the gateway, each internal route to the
    /// service that serves it.
    Split {
        cluster: Arc<Cluster>,
        http: Client<HttpConnector, Full<Bytes>>,
    },
}

/// A registered, signed-in customer.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub customer_id: Uuid,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    pub async fn memory() -> Self {
        Self::with(AppConfig::embedded()).await
    }

    /// The app on PostgreSQL from `DATABASE_URL`, in schemas of its own; the test holds the
    /// suite's lock shared from then on (see [`test_lock`]).
    pub async fn postgres() -> Self {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
            panic!(
                "DATABASE_URL is not set: these tests need PostgreSQL. Run `scripts/test`, or start \
                 PostgreSQL (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
                 and export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
            )
        });
        test_lock::hold_shared();
        let prefix = format!("es_test_shop_{}", Uuid::new_v4().simple());
        let backend = Backend::postgres(&url, 8, &prefix).expect("DATABASE_URL parses");
        if let Err(error) = backend.check().await {
            panic!("PostgreSQL at {url} does not answer ({error}); start it or run `scripts/test`");
        }
        let mut app = Self::with(AppConfig {
            backend,
            ..AppConfig::embedded()
        })
        .await;
        app.schema_prefix = Some(prefix);
        app
    }

    pub async fn with(config: AppConfig) -> Self {
        let app = App::start(config).await.expect("the app starts");
        let public = app.public_router();
        let internal = app.internal_router();
        Self {
            app,
            schema_prefix: None,
            target: Target::Routers { public, internal },
        }
    }

    /// The split services of `cluster`, through its gateway.
    pub fn split(cluster: Arc<Cluster>) -> Self {
        Self {
            app: cluster.app(ServiceName::Orders).clone(),
            schema_prefix: Some(cluster.schema_prefix.clone()),
            target: Target::Split {
                cluster,
                http: Client::builder(TokioExecutor::new()).build_http(),
            },
        }
    }

    /// The app served on two loopback sockets of its own until the test ends: its public and
    /// internal base URLs.
    pub async fn serve_on_sockets(&self) -> (String, String) {
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let urls = (
            format!("http://{}", public.local_addr().unwrap()),
            format!("http://{}", internal.local_addr().unwrap()),
        );
        let served = self.app.clone();
        tokio::spawn(async move {
            served
                .serve_on(public, internal, std::future::pending())
                .await;
        });
        urls
    }

    /// The response to `request`, its body unread (a stream's events arrive as sent).
    pub async fn respond(&self, listener: Listener, request: Request<Body>) -> Response<Body> {
        match &self.target {
            Target::Routers { public, internal } => {
                let router = match listener {
                    Listener::Public => public.clone(),
                    Listener::Internal => internal.clone(),
                };
                router
                    .oneshot(request)
                    .await
                    .expect("routers are infallible")
            }
            Target::Split { cluster, http } => {
                let (mut parts, body) = request.into_parts();
                let bytes = body.collect().await.expect("body").to_bytes();
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let base = match listener {
                    Listener::Public => cluster.gateway.as_str(),
                    Listener::Internal => cluster.internal_for(&path),
                };
                parts.uri = format!("{base}{path}").parse().expect("a URI");
                let response = http
                    .request(Request::from_parts(parts, Full::new(bytes)))
                    .await
                    .unwrap_or_else(|e| panic!("{base}{path}: {e}"));
                response.map(Body::new)
            }
        }
    }

    pub async fn send(&self, listener: Listener, request: Request<Body>) -> Reply {
        let response = self.respond(listener, request).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        listener: Listener,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .expect("request");
        self.send(listener, request).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Listener::Public, Method::GET, path, token, None)
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Listener::Public, Method::POST, path, token, Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Listener::Public, Method::PUT, path, token, Some(body))
            .await
    }

    /// Registers a customer with a unique email and signs in.
    pub async fn customer(&self, name: &str) -> SignedIn {
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase().replace(' ', "."),
            Uuid::new_v4().simple()
        );
        let registered = self
            .post("/api/v2/customers", None, registration(name, &email))
            .await;
        assert_eq!(
            registered.status,
            StatusCode::CREATED,
            "{:?}",
            registered.body
        );
        let customer_id: Uuid =
            serde_json::from_value(registered.body["customerId"].clone()).unwrap();
        let tokens = self.login(&email, "secret-password").await;
        assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
        SignedIn {
            customer_id,
            email,
            access_token: tokens.body["accessToken"].as_str().unwrap().to_owned(),
            refresh_token: tokens.body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/api/v2/accounts/login",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// A machine token from the built-in development client.
    pub async fn m2m_token(&self, scope: Option<&str>) -> String {
        let reply = self
            .post(
                "/api/v2/accounts/token",
                None,
                json!({
                    "grantType": "client_credentials",
                    "clientId": ecommerce::config::DEVELOPMENT_CLIENT_ID,
                    "clientSecret": ecommerce::config::DEVELOPMENT_CLIENT_SECRET,
                    "scope": scope,
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body["accessToken"].as_str().unwrap().to_owned()
    }

    pub fn keys(&self) -> &Arc<ecommerce::auth::TokenKeys> {
        self.app.keys()
    }
}

/// A valid registration body.
pub fn registration(name: &str, email: &str) -> Value {
    json!({
        "name": name,
        "email": email,
        "password": "secret-password",
        "passwordConfirm": "secret-password",
        "shippingAddress": "12 Analytical Row, London",
        "creditLimit": 5000,
    })
}

/// Asserts a problem document with `status`.
pub fn assert_problem(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.content_type(), "application/problem+json");
    assert_eq!(reply.body["status"], status.as_u16());
}

/// A scenario the split-mode suite runs: its name and how to run it on an app.
pub type Scenario = (
    &'static str,
    fn(TestApp) -> futures::future::BoxFuture<'static, ()>,
);

/// Runs each scenario `async fn name(app: TestApp)` embedded and on PostgreSQL, and lists it
/// in the module's `split::SCENARIOS` for the suite run against the split services.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        pub(crate) mod split {
            /// This module's scenarios.
            pub(crate) const SCENARIOS: &[$crate::support::Scenario] = &[
                $(
                    (
                        concat!(module_path!(), "::", stringify!($scenario)),
                        |app| Box::pin(super::$scenario(app)),
                    ),
                )*
            ];
        }
        mod embedded {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($crate::support::TestApp::memory().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($crate::support::TestApp::postgres().await).await;
                }
            )*
        }
    };
}

/// A quote with `lines` (product, quantity) in `currency`, placed; returns the order id.
pub async fn place_order(
    app: &TestApp,
    who: &SignedIn,
    currency: &str,
    lines: &[(Uuid, u32)],
) -> Uuid {
    let token = Some(who.access_token.as_str());
    let quote = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": currency }))
        .await;
    assert_eq!(quote.status, StatusCode::CREATED, "{:?}", quote.body);
    let quote_id = quote.body["quoteId"].as_str().unwrap().to_owned();
    for (product_id, quantity) in lines {
        let item = app
            .put(
                &format!("/api/v2/quotes/{quote_id}/items"),
                token,
                json!({ "productId": product_id, "quantity": quantity }),
            )
            .await;
        assert_eq!(item.status, StatusCode::OK, "{:?}", item.body);
    }
    let placed = app
        .post(
            &format!("/api/v2/orders/quote/{quote_id}"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(placed.status, StatusCode::ACCEPTED, "{:?}", placed.body);
    serde_json::from_value(placed.body["orderId"].clone()).unwrap()
}

/// The caller's order as listed, once `done` holds for it (or panics after `timeout`).
pub async fn wait_for_order(
    app: &TestApp,
    who: &SignedIn,
    order_id: Uuid,
    timeout: std::time::Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let orders = app.get("/api/v2/orders", Some(&who.access_token)).await;
        let order = orders.body.as_array().and_then(|all| {
            all.iter()
                .find(|o| o["orderId"] == json!(order_id))
                .cloned()
        });
        if let Some(order) = order {
            if done(&order) {
                return order;
            }
            if started.elapsed() > timeout {
                panic!("order {order_id} did not get there: {order}");
            }
        } else if started.elapsed() > timeout {
            panic!("order {order_id} is not listed");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether an order reached Shipped, Delivered or Cancelled.
pub fn terminal(order: &Value) -> bool {
    matches!(
        order["statusText"].as_str(),
        Some("Shipped" | "Delivered" | "Cancelled")
    )
}

/// Lines (product, quantity) whose USD total ends in `cents`.
pub fn lines_ending_in(cents: u32) -> Vec<(Uuid, u32)> {
    let products = ecommerce::catalog::seed();
    let cents_of = |p: &ecommerce::catalog::Product, q: u32| -> u32 {
        ecommerce::money::cents(p.price.amount() * rust_decimal::Decimal::from(q))
    };
    for a in &products {
        for qa in 1..=5 {
            if cents_of(a, qa) == cents {
                return vec![(a.product_id, qa)];
            }
        }
    }
    for a in &products {
        for b in &products {
            if a.product_id == b.product_id {
                continue;
            }
            for qa in 1..=2 {
                for qb in 1..=2 {
                    if (cents_of(a, qa) + cents_of(b, qb)) % 100 == cents {
                        return vec![(a.product_id, qa), (b.product_id, qb)];
                    }
                }
            }
        }
    }
    panic!("no small basket ends in .{cents:02}");
}

/// Machine tokens of the development client from the identity service at `identity_url`.
pub fn development_tokens(identity_url: &str) -> Arc<ecommerce::remote::MachineTokens> {
    Arc::new(ecommerce::remote::MachineTokens::new(
        ecommerce::remote::ClientCredentials {
            identity_url: identity_url.to_owned(),
            client_id: ecommerce::identity::DEVELOPMENT_CLIENT_ID.to_owned(),
            client_secret: ecommerce::identity::DEVELOPMENT_CLIENT_SECRET.to_owned(),
            scope: None,
        },
    ))
}
