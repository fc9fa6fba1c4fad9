//! Forgetting on PostgreSQL and the broker: a customer's name and address travel with their
//! order through every context, yet no message on any topic and no row of any table holds
//! them in clear, before or after they are forgotten; the order keeps its status and total.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::demo::shop::{InProcess, Listener, Shop};
use crate::{app_named, broker, database_url, test_lock};

/// One call that must answer `status`.
async fn call(
    shop: &InProcess,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    status: StatusCode,
) -> Value {
    let reply = shop
        .call(Listener::Public, method, path, token, body)
        .await
        .unwrap();
    assert_eq!(reply.status, status, "{path}: {:?}", reply.body);
    reply.body
}

/// A registration body.
fn registration(name: &str, email: &str, address: &str) -> Value {
    json!({
        "name": name,
        "email": email,
        "password": "secret-password",
        "passwordConfirm": "secret-password",
        "shippingAddress": address,
        "creditLimit": 5000,
    })
}

/// The order `order_id` as the customer's order list shows it.
async fn listed(shop: &InProcess, token: Option<&str>, order_id: &Value) -> Option<Value> {
    let orders = call(
        shop,
        Method::GET,
        "/api/v2/orders",
        token,
        None,
        StatusCode::OK,
    )
    .await;
    orders
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["orderId"] == *order_id)
        .cloned()
}

/// Every record of every topic on the broker, from the beginning: (topic, its text: key,
/// headers and payload).
fn every_record(bootstrap: &str) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("privacy-audit-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0;
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))
                .unwrap();
            if high > low {
                assignment
                    .add_partition_offset(topic.name(), partition.id(), Offset::Beginning)
                    .unwrap();
                remaining += usize::try_from(high - low).unwrap();
            }
        }
    }
    assert!(remaining > 0, "the broker holds no records");
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < remaining {
        assert!(
            Instant::now() < deadline,
            "read {} of {remaining} records",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.unwrap();
        let mut text = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                text.push_str(header.key);
                text.push_str(&String::from_utf8_lossy(header.value.unwrap_or_default()));
            }
        }
        text.push_str(&String::from_utf8_lossy(
            message.payload().unwrap_or_default(),
        ));
        records.push((message.topic().to_owned(), text));
    }
    records
}

/// The tables of the app's schemas with a row holding `marker`, and those holding `needle`.
async fn tables_holding(prefix: &str, marker: &str, needle: &str) -> (Vec<String>, Vec<String>) {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_schema LIKE $1 AND table_type = 'BASE TABLE'",
            &[&format!("{prefix}%")],
        )
        .await
        .unwrap();
    let (mut marked, mut sealed) = (Vec::new(), Vec::new());
    for table in tables {
        let name = format!(
            "\"{}\".\"{}\"",
            table.get::<_, String>(0),
            table.get::<_, String>(1)
        );
        for (text, found) in [(marker, &mut marked), (needle, &mut sealed)] {
            let count: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {name} t WHERE t::text LIKE $1"),
                    &[&format!("%{text}%")],
                )
                .await
                .unwrap()
                .get(0);
            if count > 0 {
                found.push(name.clone());
            }
        }
    }
    (marked, sealed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_forgotten_customer_is_on_no_topic_and_in_no_table() {
    test_lock::alone();
    let broker = broker::PrivateBroker::start();
    let run = Uuid::new_v4().simple().to_string();
    let app = app_named(&broker.bootstrap_servers(), false, super::Via::Broker, &run).await;
    let shop = InProcess::new(&app);
    let marker = format!("Marker{}", Uuid::new_v4().simple());
    let email = format!("{marker}@example.com");
    call(
        &shop,
        Method::POST,
        "/api/v2/customers",
        None,
        Some(registration(
            &format!("Ada {marker}"),
            &email,
            &format!("1 {marker} Street"),
        )),
        StatusCode::CREATED,
    )
    .await;
    let login = call(
        &shop,
        Method::POST,
        "/api/v2/accounts/login",
        None,
        Some(json!({ "email": email, "password": "secret-password" })),
        StatusCode::OK,
    )
    .await;
    let token = login["accessToken"].as_str().unwrap().to_owned();
    let token = Some(token.as_str());
    let quote = call(
        &shop,
        Method::POST,
        "/api/v2/quotes",
        token,
        Some(json!({ "currencyCode": "USD" })),
        StatusCode::CREATED,
    )
    .await;
    let quote_id = quote["quoteId"].as_str().unwrap().to_owned();
    call(
        &shop,
        Method::PUT,
        &format!("/api/v2/quotes/{quote_id}/items"),
        token,
        Some(json!({ "productId": ecommerce::catalog::product_id("Yoga Mat"), "quantity": 1 })),
        StatusCode::OK,
    )
    .await;
    let placed = call(
        &shop,
        Method::POST,
        &format!("/api/v2/orders/quote/{quote_id}"),
        token,
        Some(json!({})),
        StatusCode::ACCEPTED,
    )
    .await;
    let order_id = placed["orderId"].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let shipped = loop {
        let order = listed(&shop, token, &order_id).await;
        if let Some(order) = order.filter(|o| o["statusText"] == "Shipped") {
            break order;
        }
        assert!(Instant::now() < deadline, "not shipped: {order_id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // The ship-to crossed the broker (OrderPlaced to the saga, RequestShipment to
    // shipments) sealed, and shipments stored it sealed.
    let records = every_record(&broker.bootstrap_servers());
    let carrying: Vec<&str> = records
        .iter()
        .filter(|(_, text)| text.contains("shipTo") && text.contains("cipher"))
        .map(|(topic, _)| topic.as_str())
        .collect();
    assert!(
        carrying.iter().any(|t| t.ends_with("-orders"))
            && carrying.iter().any(|t| t.ends_with("-shipments-commands")),
        "sealed ship-tos on: {carrying:?}"
    );
    let prefix = format!("es_test_shop_{run}");
    let (marked, sealed) = tables_holding(&prefix, &marker, "shipTo").await;
    assert!(marked.is_empty(), "in clear in: {marked:?}");
    assert!(
        sealed.iter().any(|t| t.contains("_shipments\"")),
        "shipments holds no ship-to: {sealed:?}"
    );

    call(
        &shop,
        Method::DELETE,
        "/api/v2/customers/me",
        token,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let history = call(
        &shop,
        Method::GET,
        &format!("/api/v2/orders/{}/history", order_id.as_str().unwrap()),
        token,
        None,
        StatusCode::OK,
    )
    .await;
    assert_eq!(history[0]["data"]["shipTo"], "[forgotten]", "{history:?}");
    let after = listed(&shop, token, &order_id).await.unwrap();
    assert_eq!(after, shipped, "the order keeps its status and total");

    // Nowhere in clear: every record of every topic, every row of every table.
    let records = every_record(&broker.bootstrap_servers());
    let leaked: Vec<&String> = records
        .iter()
        .filter(|(_, text)| text.contains(&marker))
        .map(|(topic, _)| topic)
        .collect();
    assert!(leaked.is_empty(), "in clear on: {leaked:?}");
    let (marked, _) = tables_holding(&prefix, &marker, "shipTo").await;
    assert!(marked.is_empty(), "in clear in: {marked:?}");

    // The same email registers again, as a new person.
    let again = call(
        &shop,
        Method::POST,
        "/api/v2/customers",
        None,
        Some(registration("Ada Again", &email, "2 Other Street")),
        StatusCode::CREATED,
    )
    .await;
    assert!(again["customerId"].is_string());
    app.runtime().shutdown().await;
}
