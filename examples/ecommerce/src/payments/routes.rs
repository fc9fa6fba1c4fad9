//! Payments' routes: a customer's own payments (public), and what an order's payment stands
//! at for the checks that span services (machine clients).

use std::sync::Arc;

use axum::extract::State;
use es_core::TransactionalStore;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Payment, PaymentStatus, Payments};
use crate::auth::{Caller, Policy, Scope};
use crate::http::extract::IdPairPath;
use crate::http::problem::{ApiError, Problem};

/// A payment as its customer sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    /// The payment (derived from the order id: one per order).
    pub payment_id: Uuid,
    /// The order it pays.
    pub order_id: Uuid,
    /// The amount, in the currency of the customer's credit limit.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub amount: Decimal,
    /// That currency's code.
    pub currency_code: String,
    /// `Pending`, `Completed`, `Cancelled` or `Refunded`.
    #[schema(value_type = String)]
    pub status: PaymentStatus,
}

impl From<&Payment> for PaymentView {
    fn from(payment: &Payment) -> Self {
        Self {
            payment_id: payment.payment_id,
            order_id: payment.order_id,
            amount: payment.amount.amount(),
            currency_code: payment.amount.currency().code().to_owned(),
            status: payment.status,
        }
    }
}

/// Where an order's payment stands, for checks (machine clients).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRecord {
    /// The order.
    pub order_id: Uuid,
    /// `Pending`, `Completed`, `Cancelled` or `Refunded`; null when the order has none.
    #[schema(value_type = Option<String>)]
    pub status: Option<PaymentStatus>,
    /// How many payments were ever created for the order (one at most, whatever the
    /// retries).
    pub created: usize,
}

/// Payments' public routes.
pub fn public<S: TransactionalStore>() -> OpenApiRouter<Arc<Payments<S>>> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Payments' internal routes.
pub fn internal<S: TransactionalStore>() -> OpenApiRouter<Arc<Payments<S>>> {
    OpenApiRouter::new().routes(routes!(record))
}

/// The caller's payments, one per order that reached payment, oldest order id first.
#[utoipa::path(get, path = "/api/v2/payments", tag = "payments",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's payments", body = Vec<PaymentView>),
    ))]
async fn list<S: TransactionalStore>(
    State(payments): State<Arc<Payments<S>>>,
    caller: Caller,
) -> Result<axum::Json<Vec<PaymentView>>, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    let account = payments.account(customer_id).await?;
    Ok(axum::Json(
        account.payments().map(PaymentView::from).collect(),
    ))
}

/// Where an order's payment stands and how many were ever created for it (machine clients
/// with `read`; the invariants that span services read it).
#[utoipa::path(get, path = "/api/v2/internal/payments/{customerId}/{orderId}", tag = "internal",
    params(("customerId" = Uuid, Path, description = "Customer id"), ("orderId" = Uuid, Path, description = "Order id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The order's payment", body = PaymentRecord),
        (status = 403, description = "Not a machine token with `read`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn record<S: TransactionalStore>(
    State(payments): State<Arc<Payments<S>>>,
    caller: Caller,
    IdPairPath(customer_id, order_id): IdPairPath,
) -> Result<axum::Json<PaymentRecord>, ApiError> {
    caller.require(Policy::Machine(Scope::Read))?;
    let account = payments.account(customer_id).await?;
    let created = payments.payments_created(customer_id, order_id).await?;
    Ok(axum::Json(PaymentRecord {
        order_id,
        status: account.payment(&order_id).map(|p| p.status),
        created,
    }))
}
