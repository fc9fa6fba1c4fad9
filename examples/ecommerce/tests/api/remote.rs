//! The client traits over HTTP (`ecommerce::remote`), against the app served on real sockets:
//! each answers what the routes say, with the same typed errors as in one process; machine
//! tokens are reused and renewed; a service that is down or hangs is an `Unavailable` error
//! after bounded retries, and a call that is not idempotent is not sent twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use ecommerce::catalog::{StockClient, product_ids};
use ecommerce::customers::{AccountRequest, AccountsClient, AccountsError};
use ecommerce::identity::DEVELOPMENT_CLIENT_ID;
use ecommerce::money::Currency;
use ecommerce::orders::{AddressBook, QuoteRefused, QuotesClient, ShipToRefused};
use ecommerce::payments::CreditClient;
use ecommerce::quotes::{PriceClient, PricesError};
use ecommerce::remote::clients::{HttpAccounts, HttpCustomers, HttpPrices, HttpQuotes, HttpStock};
use ecommerce::remote::{CallPolicy, ClientCredentials, MachineTokens, RemoteError, ServiceClient};
use rust_decimal::Decimal;
use serde_json::json;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::support::{Listener, TestApp, development_tokens};

/// The app of `app`, served on two sockets of its own until the test ends.
struct Served {
    public: String,
    internal: String,
    tokens: Arc<MachineTokens>,
}

async fn serve(app: &TestApp) -> Served {
    let (public, internal) = app.serve_on_sockets().await;
    let tokens = development_tokens(&public);
    Served {
        public,
        internal,
        tokens,
    }
}

impl Served {
    fn client(&self, service: &str) -> ServiceClient {
        ServiceClient::new(service, &self.internal, self.tokens.clone())
    }
}

/// A quote of `customer` with one unit of the first product; its id.
async fn quote_with_an_item(app: &TestApp, token: &str) -> Uuid {
    let quote = app
        .post(
            "/api/v2/quotes",
            Some(token),
            json!({ "currencyCode": "USD" }),
        )
        .await;
    assert_eq!(quote.status, StatusCode::CREATED, "{:?}", quote.body);
    let quote_id: Uuid = serde_json::from_value(quote.body["quoteId"].clone()).unwrap();
    let item = app
        .put(
            &format!("/api/v2/quotes/{quote_id}/items"),
            Some(token),
            json!({ "productId": product_ids()[0], "quantity": 2 }),
        )
        .await;
    assert_eq!(item.status, StatusCode::OK, "{:?}", item.body);
    quote_id
}

#[tokio::test]
async fn each_client_answers_what_its_service_says() {
    let app = TestApp::memory().await;
    let served = serve(&app).await;
    let ada = app.customer("Ada Lovelace").await;
    let bob = app.customer("Bob Babbage").await;
    let stranger = Uuid::new_v4();

    // Customers: credit limit and ship-to.
    let customers = HttpCustomers(served.client("customers"));
    let limit = customers
        .credit_limit(ada.customer_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(limit.amount(), Decimal::from(5000));
    assert_eq!(customers.credit_limit(stranger).await.unwrap(), None);
    let ship_to = customers.ship_to(ada.customer_id).await.unwrap();
    let shown = ship_to.value().unwrap();
    assert_eq!(
        (shown.name.as_str(), shown.address.as_str()),
        ("Ada Lovelace", "12 Analytical Row, London")
    );
    assert!(matches!(
        customers.ship_to(stranger).await,
        Err(ShipToRefused::UnknownCustomer(id)) if id == stranger
    ));

    // Catalog: the prices the public catalog shows, and unknown ids named.
    let prices = HttpPrices(served.client("catalog"));
    let ids = product_ids();
    let priced = prices.prices(&ids[..3], Currency::Eur).await.unwrap();
    let shown = app
        .post(
            "/api/v2/products",
            Some(&ada.access_token),
            json!({ "currencyCode": "EUR", "productIds": &ids[..3] }),
        )
        .await;
    for product in shown.body.as_array().unwrap() {
        let id: Uuid = serde_json::from_value(product["productId"].clone()).unwrap();
        let (name, price) = &priced[&id];
        assert_eq!(product["name"], json!(name));
        assert_eq!(
            product["price"].to_string(),
            price.normalize().to_string(),
            "{id}"
        );
    }
    assert_eq!(priced.len(), 3);
    let unknown = Uuid::new_v4();
    assert!(matches!(
        prices.prices(&[ids[0], unknown], Currency::Usd).await,
        Err(PricesError::UnknownProducts(named)) if named == vec![unknown]
    ));

    // Inventory: the quantities the catalog shows.
    let stock = HttpStock(served.client("inventory"));
    let quantities = stock.quantities(&ids[..3]).await.unwrap();
    for product in shown.body.as_array().unwrap() {
        let id: Uuid = serde_json::from_value(product["productId"].clone()).unwrap();
        assert_eq!(
            quantities.get(&id).copied().unwrap_or(0),
            u32::try_from(product["quantityInStock"].as_u64().unwrap()).unwrap()
        );
    }

    // Quotes: confirmation, again, and refusals.
    let quotes = HttpQuotes(served.client("quotes"));
    let quote_id = quote_with_an_item(&app, &ada.access_token).await;
    assert!(matches!(
        quotes.confirm(bob.customer_id, quote_id).await,
        Err(QuoteRefused::NotFound)
    ));
    let confirmed = quotes.confirm(ada.customer_id, quote_id).await.unwrap();
    assert_eq!(confirmed.currency, Currency::Usd);
    assert_eq!(confirmed.lines.len(), 1);
    assert_eq!(
        (confirmed.lines[0].product_id, confirmed.lines[0].quantity),
        (ids[0], 2)
    );
    let again = quotes.confirm(ada.customer_id, quote_id).await.unwrap();
    assert_eq!(again.lines, confirmed.lines);
    assert!(matches!(
        quotes.confirm(ada.customer_id, Uuid::new_v4()).await,
        Err(QuoteRefused::NotFound)
    ));
    let empty = app
        .post(
            "/api/v2/quotes",
            Some(&bob.access_token),
            json!({ "currencyCode": "USD" }),
        )
        .await;
    let empty: Uuid = serde_json::from_value(empty.body["quoteId"].clone()).unwrap();
    assert!(matches!(
        quotes.confirm(bob.customer_id, empty).await,
        Err(QuoteRefused::Rule(_))
    ));

    // Identity: accounts made, refused when taken, closed (twice), closed by email.
    let accounts = HttpAccounts(served.client("identity"));
    let email = format!("grace-{}@example.com", Uuid::new_v4().simple());
    let request = || AccountRequest {
        email: email.clone(),
        password: "secret-password".to_owned(),
        customer_id: Uuid::new_v4(),
    };
    let account = accounts.create_account(request()).await.unwrap();
    assert!(matches!(
        accounts.create_account(request()).await,
        Err(AccountsError::EmailTaken)
    ));
    accounts.close_account(account).await.unwrap();
    accounts.close_account(account).await.unwrap();
    let signed_in = app.login(&ada.email, "secret-password").await;
    assert_eq!(signed_in.status, StatusCode::OK);
    accounts.close_account_of(&ada.email).await.unwrap();
    let refused = app.login(&ada.email, "secret-password").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // A forgotten customer has no ship-to any more.
    let operator = app.m2m_token(None).await;
    let forgotten = app
        .call(
            Listener::Internal,
            Method::DELETE,
            &format!(
                "/api/v2/internal/customers/{}/personal-data",
                bob.customer_id
            ),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(
        forgotten.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        forgotten.body
    );
    assert!(matches!(
        customers.ship_to(bob.customer_id).await,
        Err(ShipToRefused::Forgotten)
    ));
    // One token served every call.
    assert_eq!(served.tokens.granted(), 1);
    assert!(!served.public.is_empty());
}

#[tokio::test]
async fn a_machine_token_is_reused_and_renewed_once_refused() {
    let app = TestApp::memory().await;
    let served = serve(&app).await;
    let first = served.tokens.token().await.unwrap();
    for _ in 0..5 {
        assert_eq!(served.tokens.token().await.unwrap(), first);
    }
    assert_eq!(served.tokens.granted(), 1);
    // Another token than the cached one being refused changes nothing.
    served.tokens.refused("some other token").await;
    assert_eq!(served.tokens.token().await.unwrap(), first);
    served.tokens.refused(&first).await;
    served.tokens.token().await.unwrap();
    assert_eq!(served.tokens.granted(), 2);

    // Wrong credentials: the identity service's refusal, typed.
    let wrong = MachineTokens::new(ClientCredentials {
        identity_url: served.public.clone(),
        client_id: DEVELOPMENT_CLIENT_ID.to_owned(),
        client_secret: "not the secret".to_owned(),
        scope: None,
    });
    match wrong.token().await {
        Err(RemoteError::Refused { status, .. }) => assert_eq!(status, StatusCode::UNAUTHORIZED),
        other => panic!("{other:?}"),
    }
}

/// An address nothing listens on (a port bound, then released).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A server that accepts connections and never answers; counts the connections.
async fn silent_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_service_that_is_down_or_silent_is_unavailable_after_bounded_retries() {
    let app = TestApp::memory().await;
    let served = serve(&app).await;
    let policy = CallPolicy {
        timeout: Duration::from_millis(300),
        attempts: 3,
        backoff: Duration::from_millis(50),
    };

    // Nothing listens: three attempts, 50 then 100 ms apart, then a typed error.
    let down = closed_port().await;
    let catalog = ServiceClient::new("catalog", &format!("http://{down}"), served.tokens.clone())
        .with_policy(policy);
    let started = Instant::now();
    let refused = HttpPrices(catalog.clone())
        .prices(&product_ids()[..1], Currency::Usd)
        .await;
    let took = started.elapsed();
    assert!(
        matches!(&refused, Err(PricesError::Unavailable(m)) if m.contains("catalog is unreachable")),
        "{refused:?}"
    );
    assert!(
        took >= Duration::from_millis(150),
        "backed off between attempts: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    match catalog.call(Method::GET, "/x", None, true).await {
        Err(error) => assert!(error.is_unavailable(), "{error:?}"),
        Ok(reply) => panic!("{reply:?}"),
    }

    // A server that never answers: an idempotent call is tried three times, each for the
    // timeout; one that is not idempotent only once.
    let (silent, accepted) = silent_server().await;
    let quotes = ServiceClient::new("quotes", &format!("http://{silent}"), served.tokens.clone())
        .with_policy(policy);
    let started = Instant::now();
    let timed_out = HttpQuotes(quotes)
        .confirm(Uuid::new_v4(), Uuid::new_v4())
        .await;
    assert!(
        matches!(&timed_out, Err(QuoteRefused::Unavailable(m)) if m.contains("did not answer")),
        "{timed_out:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);

    let (silent, accepted) = silent_server().await;
    let identity = ServiceClient::new(
        "identity",
        &format!("http://{silent}"),
        served.tokens.clone(),
    )
    .with_policy(policy);
    let started = Instant::now();
    let once = HttpAccounts(identity)
        .create_account(AccountRequest {
            email: "once@example.com".to_owned(),
            password: "secret-password".to_owned(),
            customer_id: Uuid::new_v4(),
        })
        .await;
    assert!(
        matches!(once, Err(AccountsError::Unavailable(_))),
        "{once:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "an account request is not sent twice"
    );
}
