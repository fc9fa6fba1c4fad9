//! Quotes' routes (customers only, each checking the quote is the caller's).

use es_core::TransactionalStore;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{PricedQuote, QuoteError, QuoteStatus, Quotes, QuotesError};
use crate::auth::{Caller, Scope};
use crate::history::{HistoryEntry, Page, Paged};
use crate::http::extract::{IdPairPath, IdPath, Json, check_id};
use crate::http::problem::{ApiError, Problem};
use crate::money::Currency;

/// `POST /api/v2/quotes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateQuoteRequest {
    /// `USD`, `CAD` or `EUR`.
    #[schema(pattern = "^(USD|CAD|EUR)$")]
    pub currency_code: String,
}

/// A new quote's id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteCreated {
    /// The quote id.
    pub quote_id: Uuid,
}

/// `PUT /api/v2/quotes/{id}/items`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetItemRequest {
    /// The product.
    pub product_id: Uuid,
    /// The quantity (1 to 1,000,000); sets it when the product is already in the quote.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
}

/// An item of a quote.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteItemView {
    /// The product.
    pub product_id: Uuid,
    /// Its name.
    pub product_name: String,
    /// Unit price in the quote's currency.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub unit_price: Decimal,
    /// Quantity.
    pub quantity: u32,
}

/// A quote at current prices.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuoteView {
    /// The quote.
    pub quote_id: Uuid,
    /// Its customer.
    pub customer_id: Uuid,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// `Open`, `Confirmed` or `Cancelled`.
    pub quote_status: String,
    /// Currency code.
    pub currency_code: String,
    /// Currency symbol.
    pub currency_symbol: String,
    /// Items.
    pub items: Vec<QuoteItemView>,
    /// Total.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub total_price: Decimal,
}

impl From<PricedQuote> for QuoteView {
    fn from(priced: PricedQuote) -> Self {
        let quote = priced.quote;
        Self {
            quote_id: quote.quote_id,
            customer_id: priced.customer_id,
            created_at: quote.created_at,
            quote_status: status_text(quote.status).to_owned(),
            currency_code: quote.currency.code().to_owned(),
            currency_symbol: quote.currency.symbol().to_owned(),
            items: quote
                .items
                .into_iter()
                .map(|i| QuoteItemView {
                    product_id: i.product_id,
                    product_name: i.product_name,
                    unit_price: i.unit_price,
                    quantity: i.quantity,
                })
                .collect(),
            total_price: priced.total,
        }
    }
}

fn status_text(status: QuoteStatus) -> &'static str {
    match status {
        QuoteStatus::Open => "Open",
        QuoteStatus::Confirmed => "Confirmed",
        QuoteStatus::Cancelled => "Cancelled",
    }
}

/// The largest quantity of one product in a quote.
pub const MAX_QUANTITY: u32 = 1_000_000;

impl From<QuotesError> for ApiError {
    fn from(error: QuotesError) -> Self {
        match error {
            QuotesError::Rejected(QuoteError::NotFound) => {
                ApiError::NotFound("no such quote".to_owned())
            }
            QuotesError::Rejected(QuoteError::InvalidQuantity) => {
                ApiError::field("quantity", "must be greater than zero")
            }
            QuotesError::Rejected(rejected) => ApiError::Rule(rejected.to_string()),
            QuotesError::UnknownProduct(message) => ApiError::NotFound(message),
            QuotesError::Storage(e) => e.into(),
            QuotesError::Prices(e) => ApiError::internal(e),
        }
    }
}

/// Quotes' routes.
pub fn public<S: TransactionalStore>() -> OpenApiRouter<Arc<Quotes<S>>> {
    OpenApiRouter::new()
        .routes(routes!(current, create))
        .routes(routes!(set_item))
        .routes(routes!(remove_item))
        .routes(routes!(cancel))
        .routes(routes!(history))
}

/// Quotes' internal routes.
pub fn internal<S: TransactionalStore>() -> OpenApiRouter<Arc<Quotes<S>>> {
    OpenApiRouter::new().routes(routes!(confirm))
}

/// `POST /api/v2/internal/quotes/{id}/confirmation`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationRequest {
    /// The customer whose quote it must be.
    pub customer_id: Uuid,
}

/// A confirmed quote's lines, priced when it was confirmed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Confirmation {
    /// The lines.
    #[schema(value_type = Vec<Object>)]
    pub lines: Vec<crate::messages::Line>,
    /// The quote's currency.
    pub currency_code: String,
}

/// Confirms a customer's quote into its priced lines, for an order; confirming it again
/// answers the same lines (machine clients).
#[utoipa::path(post, path = "/api/v2/internal/quotes/{id}/confirmation", tag = "internal",
    params(("id" = Uuid, Path, description = "Quote id")),
    request_body = ConfirmationRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Confirmed", body = Confirmation),
        (status = 404, description = "No such quote for the customer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The quote kept changing; try again", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A quote rule refused, or an item names no product (`errors.items`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The catalog did not price the items", body = Problem, content_type = "application/problem+json"),
    ))]
async fn confirm<S: TransactionalStore>(
    State(quotes): State<Arc<Quotes<S>>>,
    caller: Caller,
    IdPath(quote_id): IdPath,
    Json(request): Json<ConfirmationRequest>,
) -> Result<axum::Json<Confirmation>, ApiError> {
    caller.require(crate::auth::Policy::Machine(Scope::Write))?;
    check_id("customerId", request.customer_id)?;
    match quotes.confirm(request.customer_id, quote_id).await {
        Ok(quote) => Ok(axum::Json(Confirmation {
            lines: quote.items,
            currency_code: quote.currency.code().to_owned(),
        })),
        Err(QuotesError::UnknownProduct(message)) => Err(ApiError::field("items", message)),
        Err(QuotesError::Prices(e)) => Err(ApiError::Unavailable(e.to_string())),
        Err(other) => Err(other.into()),
    }
}

/// The caller's open quote at current prices.
#[utoipa::path(get, path = "/api/v2/quotes", tag = "quotes",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The open quote", body = QuoteView),
        (status = 404, description = "No open quote", body = Problem, content_type = "application/problem+json"),
    ))]
async fn current<S: TransactionalStore>(
    State(quotes): State<Arc<Quotes<S>>>,
    caller: Caller,
) -> Result<axum::Json<QuoteView>, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    Ok(axum::Json(quotes.current(customer_id).await?.into()))
}

/// Opens a quote (one open quote per customer).
#[utoipa::path(post, path = "/api/v2/quotes", tag = "quotes",
    request_body = CreateQuoteRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Opened", body = QuoteCreated),
        (status = 422, description = "Unsupported currency, or a quote is already open", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create<S: TransactionalStore>(
    State(quotes): State<Arc<Quotes<S>>>,
    caller: Caller,
    Json(request): Json<CreateQuoteRequest>,
) -> Result<(StatusCode, axum::Json<QuoteCreated>), ApiError> {
    let customer_id = caller.customer(Scope::Write)?;
    let currency: Currency = request
        .currency_code
        .parse()
        .map_err(|e: crate::money::MoneyError| ApiError::field("currencyCode", e.to_string()))?;
    let quote_id = quotes.create(customer_id, currency).await?;
    Ok((StatusCode::CREATED, axum::Json(QuoteCreated { quote_id })))
}

/// Adds a product to the quote, or sets its quantity.
#[utoipa::path(put, path = "/api/v2/quotes/{id}/items", tag = "quotes",
    params(("id" = Uuid, Path, description = "Quote id")),
    request_body = SetItemRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The quote", body = QuoteView),
        (status = 404, description = "No such quote of the caller's, or no such product", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Quantity not above zero, or the quote is not open", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_item<S: TransactionalStore>(
    State(quotes): State<Arc<Quotes<S>>>,
    caller: Caller,
    IdPath(quote_id): IdPath,
    Json(request): Json<SetItemRequest>,
) -> Result<axum::Json<QuoteView>, ApiError> {
    let customer_id = caller.customer(Scope::Write)?;
    let product_id = check_id("productId", request.product_id)?;
    let quantity = match u32::try_from(request.quantity) {
        Ok(0) | Err(_) if request.quantity <= 0 => {
            return Err(ApiError::field("quantity", "must be greater than zero"));
        }
        Ok(quantity) if quantity <= MAX_QUANTITY => quantity,
        _ => {
            return Err(ApiError::field(
                "quantity",
                format!("must be at most {MAX_QUANTITY}"),
            ));
        }
    };
    let quote = quotes
        .set_item(customer_id, quote_id, product_id, quantity)
        .await?;
    Ok(axum::Json(quote.into()))
}

/// Removes a product from the quote.
#[utoipa::path(delete, path = "/api/v2/quotes/{id}/items/{productId}", tag = "quotes",
    params(("id" = Uuid, Path, description = "Quote id"), ("productId" = Uuid, Path, description = "Product id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The quote", body = QuoteView),
        (status = 404, description = "No such quote of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not in the quote, or the quote is not open", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove_item<S: TransactionalStore>(
    State(quotes): State<Arc<Quotes<S>>>,
    caller: Caller,
    IdPairPath(quote_id, product_id): IdPairPath,
) -> Result<axum::Json<QuoteView>, ApiError> {
    let customer_id = caller.customer(Scope::Write)?;
    let quote = quotes
        .remove_item(customer_id, quote_id, product_id)
        .await?;
    Ok(axum::Json(quote.into()))
}

/// Cancels the quote.
#[utoipa::path(delete, path = "/api/v2/quotes/{id}", tag = "quotes",
    params(("id" = Uuid, Path, description = "Quote id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 404, description = "No such quote of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The quote is not open", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel<S: TransactionalStore>(
    State(quotes): State<Arc<Quotes<S>>>,
    caller: Caller,
    IdPath(quote_id): IdPath,
) -> Result<StatusCode, ApiError> {
    let customer_id = caller.customer(Scope::Delete)?;
    quotes.cancel(customer_id, quote_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of a quote's history, oldest first.
#[utoipa::path(get, path = "/api/v2/quotes/{id}/history", tag = "quotes",
    params(("id" = Uuid, Path, description = "Quote id"), Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "History", body = Vec<HistoryEntry>),
        (status = 404, description = "No such quote of the caller's", body = Problem, content_type = "application/problem+json"),
    ))]
async fn history<S: TransactionalStore>(
    State(quotes): State<Arc<Quotes<S>>>,
    caller: Caller,
    IdPath(quote_id): IdPath,
    page: Page,
) -> Result<Paged<HistoryEntry>, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    Ok(quotes.history(customer_id, quote_id, page).await?)
}
