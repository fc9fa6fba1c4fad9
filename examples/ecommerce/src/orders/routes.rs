//! Orders' routes (customers, own orders only) and the notification stream.

use es_core::TransactionalStore;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{
    MAX_STREAMS_PER_CUSTOMER, Notification, OrderError, OrderSummary, Orders, OrdersError,
    QuoteRefused, ShipToRefused,
};
use crate::auth::{Caller, Scope};
use crate::history::{HistoryEntry, Page, Paged};
use crate::http::extract::IdPath;
use crate::http::problem::{ApiError, Problem};

/// A placed order's id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderAccepted {
    /// The order id (the same for every placement of one quote).
    pub order_id: Uuid,
}

/// A line of an order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineView {
    /// The product.
    pub product_id: Uuid,
    /// Its name.
    pub product_name: String,
    /// Unit price.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub unit_price: Decimal,
    /// Quantity.
    pub quantity: u32,
}

/// An order as listed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// The order.
    pub order_id: Uuid,
    /// Its quote.
    pub quote_id: Uuid,
    /// Its customer.
    pub customer_id: Uuid,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// 1 Placed, 2 Processed, 3 Paid, 4 Shipped, 5 Delivered, 6 Cancelled.
    pub status_code: u8,
    /// `Placed`, `Processed`, `Paid`, `Shipped`, `Delivered` or `Cancelled`.
    pub status_text: String,
    /// Why it was cancelled (`OutOfStock`, `CreditLimitReached`, `PaymentFailed`,
    /// `ShipmentFailed`, `CancelledByCustomer`, `ProcessingError`).
    pub cancellation_reason: Option<String>,
    /// Lines.
    pub order_lines: Vec<OrderLineView>,
    /// Currency code.
    pub currency_code: String,
    /// Currency symbol.
    pub currency_symbol: String,
    /// Total.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub total_price: Decimal,
}

impl From<OrderSummary> for OrderView {
    fn from(order: OrderSummary) -> Self {
        Self {
            order_id: order.order_id,
            quote_id: order.quote_id,
            customer_id: order.customer_id,
            created_at: order.created_at,
            status_code: order.status.code(),
            status_text: order.status.text().to_owned(),
            cancellation_reason: order.cancellation_reason,
            order_lines: order
                .lines
                .into_iter()
                .map(|l| OrderLineView {
                    product_id: l.product_id,
                    product_name: l.product_name,
                    unit_price: l.unit_price,
                    quantity: l.quantity,
                })
                .collect(),
            currency_code: order.currency.code().to_owned(),
            currency_symbol: order.currency.symbol().to_owned(),
            total_price: order.total,
        }
    }
}

impl From<OrdersError> for ApiError {
    fn from(error: OrdersError) -> Self {
        match error {
            OrdersError::Rejected(OrderError::NotFound)
            | OrdersError::Quote(QuoteRefused::NotFound | QuoteRefused::UnknownProduct(_)) => {
                ApiError::NotFound(error.to_string())
            }
            OrdersError::Rejected(rejected) => ApiError::Rule(rejected.to_string()),
            OrdersError::Quote(QuoteRefused::Rule(rule)) => ApiError::Rule(rule),
            OrdersError::Quote(QuoteRefused::Conflict) => ApiError::Conflict(error.to_string()),
            OrdersError::Quote(unavailable) => ApiError::internal(unavailable),
            OrdersError::ShipTo(ShipToRefused::Unavailable(why)) => ApiError::Unavailable(why),
            OrdersError::ShipTo(refused) => ApiError::Rule(refused.to_string()),
            OrdersError::Storage(e) => e.into(),
        }
    }
}

/// Orders' routes.
pub fn public<S: TransactionalStore>() -> OpenApiRouter<Arc<Orders<S>>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(place))
        .routes(routes!(history))
        .routes(routes!(cancel))
        .routes(routes!(confirm_delivery))
        .routes(routes!(notifications))
}

/// The caller's orders, newest last.
#[utoipa::path(get, path = "/api/v2/orders", tag = "orders",
    security(("bearer" = [])),
    responses((status = 200, description = "Orders", body = Vec<OrderView>)))]
async fn list<S: TransactionalStore>(
    State(orders): State<Arc<Orders<S>>>,
    caller: Caller,
) -> Result<axum::Json<Vec<OrderView>>, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    let list = orders.list(customer_id).await?;
    Ok(axum::Json(list.into_iter().map(OrderView::from).collect()))
}

/// Places the order of a quote (confirming it); the workflow continues asynchronously.
/// Placing the same quote again returns the same order.
#[utoipa::path(post, path = "/api/v2/orders/quote/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "Quote id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted", body = OrderAccepted),
        (status = 404, description = "No such quote of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The quote is cancelled or empty", body = Problem, content_type = "application/problem+json"),
    ))]
async fn place<S: TransactionalStore>(
    State(orders): State<Arc<Orders<S>>>,
    caller: Caller,
    IdPath(quote_id): IdPath,
) -> Result<(StatusCode, axum::Json<OrderAccepted>), ApiError> {
    let customer_id = caller.customer(Scope::Write)?;
    let order_id = orders.place(customer_id, quote_id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(OrderAccepted { order_id })))
}

/// A page of an order's history, oldest first.
#[utoipa::path(get, path = "/api/v2/orders/{id}/history", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id"), Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "History", body = Vec<HistoryEntry>),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
    ))]
async fn history<S: TransactionalStore>(
    State(orders): State<Arc<Orders<S>>>,
    caller: Caller,
    IdPath(order_id): IdPath,
    page: Page,
) -> Result<Paged<HistoryEntry>, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    Ok(orders.history(customer_id, order_id, page).await?)
}

/// Asks to cancel the order (until it has shipped); the workflow decides and compensates.
#[utoipa::path(post, path = "/api/v2/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Cancellation requested"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Already shipped, delivered or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel<S: TransactionalStore>(
    State(orders): State<Arc<Orders<S>>>,
    caller: Caller,
    IdPath(order_id): IdPath,
) -> Result<StatusCode, ApiError> {
    let customer_id = caller.customer(Scope::Write)?;
    orders.request_cancellation(customer_id, order_id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Confirms the order was delivered.
#[utoipa::path(post, path = "/api/v2/orders/{id}/confirm-delivery", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Delivered"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not shipped", body = Problem, content_type = "application/problem+json"),
    ))]
async fn confirm_delivery<S: TransactionalStore>(
    State(orders): State<Arc<Orders<S>>>,
    caller: Caller,
    IdPath(order_id): IdPath,
) -> Result<StatusCode, ApiError> {
    let customer_id = caller.customer(Scope::Write)?;
    orders.confirm_delivery(customer_id, order_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's order status changes as Server-Sent Events (`event: order-status`, JSON
/// data, the id resumable with `Last-Event-ID`): past ones first, then live.
#[utoipa::path(get, path = "/api/v2/notifications", tag = "orders",
    security(("bearer" = [])),
    params(("Last-Event-ID" = Option<i64>, Header, minimum = 0, description = "Resume after this notification id")),
    responses(
        (status = 200, description = "An event stream of the caller's order status changes", content_type = "text/event-stream"),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The customer holds the most streams open already (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn notifications<S: TransactionalStore>(
    State(orders): State<Arc<Orders<S>>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    let slot = orders
        .open_stream(customer_id)
        .ok_or(ApiError::TooManyRequests {
            message: format!(
                "at most {MAX_STREAMS_PER_CUSTOMER} notification streams may be open at once"
            ),
            retry_after: Duration::from_secs(5),
        })?;
    // The stream ends when the token that opened it expires: the client reconnects with a
    // fresh token and `Last-Event-ID`.
    let expires_in =
        u64::try_from(caller.claims().exp - chrono::Utc::now().timestamp()).unwrap_or(0);
    let expired = tokio::time::sleep(Duration::from_secs(expires_in));
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|id| u64::try_from(id).ok())
            .ok_or_else(|| {
                ApiError::BadRequest("`Last-Event-ID` must be a notification id".to_owned())
            })?,
    };
    // Subscribe before reading the feed, then skip what the feed already gave: nothing is
    // missed between the two and nothing is sent twice.
    let live = orders.subscribe();
    let past = orders.notifications(customer_id, after).await?;
    let last_past = past.last().map_or(after, |n| n.id);
    let replay = futures::stream::iter(past.into_iter().map(to_event));
    let live = futures::stream::unfold(
        (live, last_past, slot),
        move |(mut live, mut last, slot)| async move {
            loop {
                match live.recv().await {
                    Ok(n) if n.customer_id == customer_id && n.id > last => {
                        last = n.id;
                        return Some((to_event(n), (live, last, slot)));
                    }
                    Ok(_) => {}
                    // Fell behind the live feed: end the stream; the client reconnects with
                    // `Last-Event-ID` and gets what it missed from the feed.
                    Err(RecvError::Lagged(_) | RecvError::Closed) => return None,
                }
            }
        },
    );
    let events: BoxStream<'static, Result<Event, Infallible>> =
        replay.chain(live).take_until(expired).boxed();
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn to_event(notification: Notification) -> Result<Event, Infallible> {
    let event = Event::default()
        .event("order-status")
        .id(notification.id.to_string());
    Ok(event
        .json_data(&notification)
        .unwrap_or_else(|_| Event::default().comment("unencodable notification")))
}
