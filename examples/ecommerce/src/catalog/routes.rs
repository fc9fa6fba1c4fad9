//! The catalog's route.

use std::sync::Arc;

use axum::extract::State;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Catalog, CatalogError, PricedProduct};
use crate::auth::{Caller, Policy, Scope};
use crate::http::extract::Json;
use crate::http::problem::{ApiError, Problem};
use crate::money::Currency;

/// `POST /api/v2/products`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductsRequest {
    /// `USD`, `CAD` or `EUR`.
    #[schema(pattern = "^(USD|CAD|EUR)$")]
    pub currency_code: String,
    /// The products wanted; empty for all.
    #[serde(default)]
    pub product_ids: Vec<Uuid>,
}

/// A product priced in the requested currency.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    /// The product id.
    pub product_id: Uuid,
    /// Name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Description.
    pub description: String,
    /// Image URL.
    pub image_url: String,
    /// Unit price in the requested currency.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub price: Decimal,
    /// The currency's code.
    pub currency_code: String,
    /// The currency's symbol.
    pub currency_symbol: String,
    /// Quantity in stock.
    pub quantity_in_stock: u32,
}

impl From<PricedProduct> for ProductView {
    fn from(priced: PricedProduct) -> Self {
        Self {
            product_id: priced.product.product_id,
            name: priced.product.name,
            category: priced.product.category,
            description: priced.product.description,
            image_url: priced.product.image_url,
            price: priced.price.amount(),
            currency_code: priced.price.currency().code().to_owned(),
            currency_symbol: priced.price.currency().symbol().to_owned(),
            quantity_in_stock: priced.quantity_in_stock,
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::UnknownProducts(_) => ApiError::NotFound(error.to_string()),
            CatalogError::Storage(e) => e.into(),
            CatalogError::Stock(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// The catalog's public routes.
pub fn public() -> OpenApiRouter<Arc<Catalog>> {
    OpenApiRouter::new().routes(routes!(products))
}

/// The catalog's internal routes.
pub fn internal() -> OpenApiRouter<Arc<Catalog>> {
    OpenApiRouter::new().routes(routes!(prices))
}

/// `POST /api/v2/internal/catalog/prices`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PricesRequest {
    /// `USD`, `CAD` or `EUR`.
    #[schema(pattern = "^(USD|CAD|EUR)$")]
    pub currency_code: String,
    /// The products to price.
    pub product_ids: Vec<Uuid>,
}

/// A product's name and unit price.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPrice {
    /// The product id.
    pub product_id: Uuid,
    /// Name.
    pub name: String,
    /// Unit price in the requested currency.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub unit_price: Decimal,
}

/// Prices in one currency, and the ids that name no product.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    /// The currency's code.
    pub currency_code: String,
    /// The products' prices, in the order asked.
    pub prices: Vec<ProductPrice>,
    /// Ids asked for that name no product (nothing is priced then).
    pub unknown_product_ids: Vec<Uuid>,
}

/// Names and unit prices of products in a currency, for quotes (machine clients).
#[utoipa::path(post, path = "/api/v2/internal/catalog/prices", tag = "internal",
    request_body = PricesRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prices, or the ids that name no product", body = Prices),
        (status = 422, description = "Unsupported currency or nil id", body = Problem, content_type = "application/problem+json"),
    ))]
async fn prices(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    Json(request): Json<PricesRequest>,
) -> Result<axum::Json<Prices>, ApiError> {
    caller.require(Policy::Machine(Scope::Read))?;
    let currency = currency(&request.currency_code)?;
    if request.product_ids.iter().any(Uuid::is_nil) {
        return Err(ApiError::field(
            "productIds",
            "the nil UUID is not a valid id",
        ));
    }
    let (prices, unknown_product_ids) = match catalog.prices(&request.product_ids, currency).await {
        Ok(prices) => (prices, Vec::new()),
        Err(CatalogError::UnknownProducts(unknown)) => (Vec::new(), unknown),
        Err(other) => return Err(other.into()),
    };
    Ok(axum::Json(Prices {
        currency_code: currency.code().to_owned(),
        prices: prices
            .into_iter()
            .map(|(product_id, name, price)| ProductPrice {
                product_id,
                name,
                unit_price: price.amount(),
            })
            .collect(),
        unknown_product_ids,
    }))
}

fn currency(code: &str) -> Result<Currency, ApiError> {
    code.parse()
        .map_err(|e: crate::money::MoneyError| ApiError::field("currencyCode", e.to_string()))
}

/// Products with their price in a currency and their stock (customers and machine clients).
#[utoipa::path(post, path = "/api/v2/products", tag = "catalog",
    request_body = ProductsRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Products", body = Vec<ProductView>),
        (status = 404, description = "An id names no product", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unsupported currency or nil id", body = Problem, content_type = "application/problem+json"),
    ))]
async fn products(
    State(catalog): State<Arc<Catalog>>,
    caller: Caller,
    Json(request): Json<ProductsRequest>,
) -> Result<axum::Json<Vec<ProductView>>, ApiError> {
    caller.require(Policy::Any(Scope::Read))?;
    let currency = currency(&request.currency_code)?;
    if request.product_ids.iter().any(Uuid::is_nil) {
        return Err(ApiError::field(
            "productIds",
            "the nil UUID is not a valid id",
        ));
    }
    let priced = catalog.priced(&request.product_ids, currency).await?;
    Ok(axum::Json(
        priced.into_iter().map(ProductView::from).collect(),
    ))
}
