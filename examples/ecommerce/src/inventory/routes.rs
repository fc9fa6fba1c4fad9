//! Inventory's routes: a product's history (public), and stock, reservations and releases
//! (internal).

use es_core::TransactionalStore;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Inventory, InventoryError, ReservationStatus, StockError, StockLine, StockMovement};
use crate::auth::{Caller, Policy, Scope};
use crate::history::{Page, Paged};
use crate::http::extract::{IdPath, Json, check_id};
use crate::http::problem::{ApiError, Problem, Validator};

/// A product's stock.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockView {
    /// The product.
    pub product_id: Uuid,
    /// Available quantity.
    pub quantity: u32,
    /// Quantity held for orders.
    pub reserved: u32,
}

/// The largest quantity of one product an order reserves.
pub const MAX_LINE_QUANTITY: u32 = 1_000_000;

/// A line to reserve.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationLine {
    /// The product.
    pub product_id: Uuid,
    /// How many (1 to 1,000,000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: u32,
}

/// `POST /api/v2/internal/inventory/reservations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationRequest {
    /// The order.
    pub order_id: Uuid,
    /// Its lines.
    pub lines: Vec<ReservationLine>,
}

/// Where a reservation stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationView {
    /// The order.
    pub order_id: Uuid,
    /// `Reserved`, `Released` or `Refused`.
    pub status: String,
}

impl From<InventoryError> for ApiError {
    fn from(error: InventoryError) -> Self {
        match error {
            InventoryError::Rejected(StockError::UnknownProduct(_)) => {
                ApiError::NotFound(error.to_string())
            }
            InventoryError::Rejected(rejected) => ApiError::Rule(rejected.to_string()),
            InventoryError::Storage(e) => e.into(),
        }
    }
}

/// Inventory's public routes.
pub fn public<S: TransactionalStore>() -> OpenApiRouter<Arc<Inventory<S>>> {
    OpenApiRouter::new().routes(routes!(product_history))
}

/// Inventory's internal routes.
pub fn internal<S: TransactionalStore>() -> OpenApiRouter<Arc<Inventory<S>>> {
    OpenApiRouter::new()
        .routes(routes!(stock))
        .routes(routes!(reservation))
        .routes(routes!(reserve))
        .routes(routes!(release))
}

/// A page of a product's stock movements, oldest first (no order is named).
#[utoipa::path(get, path = "/api/v2/inventory/{id}/history", tag = "inventory",
    params(("id" = Uuid, Path, description = "Product id"), Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stock movements; a `Link` header names the next page", body = Vec<StockMovement>),
        (status = 404, description = "No stock unit for the product", body = Problem, content_type = "application/problem+json"),
    ))]
async fn product_history<S: TransactionalStore>(
    State(inventory): State<Arc<Inventory<S>>>,
    caller: Caller,
    IdPath(product_id): IdPath,
    page: Page,
) -> Result<Paged<StockMovement>, ApiError> {
    caller.require(Policy::Customer(Scope::Read))?;
    let entries = inventory.movements(product_id, page).await?;
    if entries.entries.is_empty() && page.after.is_none() {
        return Err(ApiError::NotFound(format!(
            "product {product_id} has no stock unit"
        )));
    }
    Ok(entries)
}

/// A product's stock (machine clients).
#[utoipa::path(get, path = "/api/v2/internal/inventory/{id}", tag = "internal",
    params(("id" = Uuid, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stock", body = StockView),
        (status = 404, description = "No stock unit", body = Problem, content_type = "application/problem+json"),
    ))]
async fn stock<S: TransactionalStore>(
    State(inventory): State<Arc<Inventory<S>>>,
    caller: Caller,
    IdPath(product_id): IdPath,
) -> Result<axum::Json<StockView>, ApiError> {
    caller.require(Policy::Machine(Scope::Read))?;
    let unit = inventory.stock(product_id).await?;
    if !unit.entered {
        return Err(ApiError::NotFound(format!(
            "product {product_id} has no stock unit"
        )));
    }
    Ok(axum::Json(StockView {
        product_id,
        quantity: unit.available,
        reserved: unit.held,
    }))
}

/// Where an order's reservation stands (machine clients with `read`; the invariants that
/// span services read it).
#[utoipa::path(get, path = "/api/v2/internal/inventory/reservations/{id}", tag = "internal",
    params(("id" = Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`Reserved`, `Released` or `Refused`", body = ReservationView),
        (status = 404, description = "The order never asked for stock", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reservation<S: TransactionalStore>(
    State(inventory): State<Arc<Inventory<S>>>,
    caller: Caller,
    IdPath(order_id): IdPath,
) -> Result<axum::Json<ReservationView>, ApiError> {
    caller.require(Policy::Machine(Scope::Read))?;
    let reservation = inventory.reservation(order_id).await?;
    if reservation.status.is_none() {
        return Err(ApiError::NotFound(format!(
            "no reservation for order {order_id}"
        )));
    }
    Ok(axum::Json(reservation_view(order_id, reservation.status)))
}

/// Reserves stock for every line of an order, or none (machine clients; idempotent per order).
#[utoipa::path(post, path = "/api/v2/internal/inventory/reservations", tag = "internal",
    request_body = ReservationRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Where the reservation stands: `Reserved` or `Refused`", body = ReservationView),
        (status = 422, description = "No line, or a zero quantity", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reserve<S: TransactionalStore>(
    State(inventory): State<Arc<Inventory<S>>>,
    caller: Caller,
    Json(request): Json<ReservationRequest>,
) -> Result<axum::Json<ReservationView>, ApiError> {
    caller.require(Policy::Machine(Scope::Write))?;
    let order_id = check_id("orderId", request.order_id)?;
    let mut validator = Validator::new();
    for (i, line) in request.lines.iter().enumerate() {
        validator.check(
            (1..=MAX_LINE_QUANTITY).contains(&line.quantity),
            &format!("lines[{i}].quantity"),
            format!("must be between 1 and {MAX_LINE_QUANTITY}"),
        );
    }
    validator.finish()?;
    let lines: Vec<StockLine> = request
        .lines
        .iter()
        .map(|l| StockLine {
            product_id: l.product_id,
            quantity: l.quantity,
        })
        .collect();
    let context = es_core::CommandContext::new().with_actor(caller.claims().sub.clone());
    let status = inventory.reserve(order_id, &lines, &context).await?;
    Ok(axum::Json(reservation_view(order_id, Some(status))))
}

/// Releases an order's reservation (machine clients; idempotent).
#[utoipa::path(delete, path = "/api/v2/internal/inventory/reservations/{id}", tag = "internal",
    params(("id" = Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Where the reservation stands", body = ReservationView),
        (status = 404, description = "No reservation for the order", body = Problem, content_type = "application/problem+json"),
    ))]
async fn release<S: TransactionalStore>(
    State(inventory): State<Arc<Inventory<S>>>,
    caller: Caller,
    IdPath(order_id): IdPath,
) -> Result<(StatusCode, axum::Json<ReservationView>), ApiError> {
    caller.require(Policy::Machine(Scope::Write))?;
    let context = es_core::CommandContext::new().with_actor(caller.claims().sub.clone());
    let status = inventory.release(order_id, &context).await?;
    if status.is_none() {
        return Err(ApiError::NotFound(format!(
            "no reservation for order {order_id}"
        )));
    }
    Ok((
        StatusCode::OK,
        axum::Json(reservation_view(order_id, status)),
    ))
}

fn reservation_view(order_id: Uuid, status: Option<ReservationStatus>) -> ReservationView {
    let status = match status {
        Some(ReservationStatus::Reserved) => "Reserved",
        Some(ReservationStatus::Released) => "Released",
        Some(ReservationStatus::Refused) | None => "Refused",
    };
    ReservationView {
        order_id,
        status: status.to_owned(),
    }
}
