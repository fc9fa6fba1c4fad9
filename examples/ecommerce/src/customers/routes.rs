//! Customers' routes.

use es_core::TransactionalStore;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AccountsError, Customers, CustomersError, Profile, Registration};
use crate::auth::{Caller, Policy, Scope};
use crate::history::{HistoryEntry, Page, Paged};
use crate::http::extract::{IdPath, Json};
use crate::http::problem::{ApiError, FieldErrors, Problem, Validator};
use crate::money::{Currency, Money};

/// `POST /api/v2/customers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterCustomerRequest {
    /// 2 to 100 characters (once trimmed).
    #[schema(min_length = 2, max_length = 100)]
    pub name: String,
    /// A valid email (at most 254 characters, no spaces or invisible characters), not used by
    /// another account.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// 5 to 100 characters.
    #[schema(min_length = 5, max_length = 100)]
    pub password: String,
    /// Must equal `password`.
    #[schema(min_length = 5, max_length = 100)]
    pub password_confirm: String,
    /// 5 to 100 characters (once trimmed).
    #[schema(min_length = 5, max_length = 100)]
    pub shipping_address: String,
    /// Above zero, at most a trillion, at most 2 decimals: a number, or a decimal string for
    /// more than 15 significant digits.
    #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1_000_000_000_000_f64)]
    #[serde(with = "crate::money::amount")]
    pub credit_limit: Decimal,
    /// The credit limit's currency (`USD` when absent).
    #[serde(default)]
    #[schema(pattern = "^(USD|CAD|EUR)$")]
    pub currency_code: Option<String>,
}

/// A new customer's id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerCreated {
    /// The customer id.
    pub customer_id: Uuid,
}

/// A customer's details.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerDetails {
    /// The customer id.
    pub customer_id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Shipping address.
    pub shipping_address: String,
    /// Credit limit.
    #[schema(value_type = f64)]
    #[serde(with = "crate::money::amount")]
    pub credit_limit: Decimal,
    /// The credit limit's currency code.
    pub currency_code: String,
}

impl From<Profile> for CustomerDetails {
    fn from(profile: Profile) -> Self {
        Self {
            customer_id: profile.customer_id,
            name: profile.name().to_owned(),
            email: profile.email().to_owned(),
            shipping_address: profile.shipping_address().to_owned(),
            credit_limit: profile.credit_limit.amount(),
            currency_code: profile.credit_limit.currency().code().to_owned(),
        }
    }
}

/// `PUT /api/v2/customers/update`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCustomerRequest {
    /// 2 to 100 characters (once trimmed).
    #[schema(min_length = 2, max_length = 100)]
    pub name: String,
    /// 5 to 100 characters (once trimmed).
    #[schema(min_length = 5, max_length = 100)]
    pub shipping_address: String,
    /// Refused: customers cannot change their own credit limit.
    #[serde(default)]
    #[schema(value_type = Option<f64>)]
    pub credit_limit: Option<Value>,
}

/// `PUT /api/v2/internal/customers/{id}/credit-limit`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditLimitRequest {
    /// Above zero, at most a trillion, at most 2 decimals: a number, or a decimal string for
    /// more than 15 significant digits.
    #[schema(value_type = f64, exclusive_minimum = 0, maximum = 1_000_000_000_000_f64)]
    #[serde(with = "crate::money::amount")]
    pub credit_limit: Decimal,
    /// Its currency (`USD` when absent).
    #[serde(default)]
    #[schema(pattern = "^(USD|CAD|EUR)$")]
    pub currency_code: Option<String>,
}

impl From<CustomersError> for ApiError {
    fn from(error: CustomersError) -> Self {
        match error {
            CustomersError::Invalid(broken) => {
                let mut errors = FieldErrors::new();
                for (field, reason) in broken {
                    errors.entry(field.to_owned()).or_default().push(reason);
                }
                ApiError::Validation(errors)
            }
            CustomersError::EmailTaken => ApiError::field("email", error.to_string()),
            CustomersError::NotFound => ApiError::NotFound(error.to_string()),
            CustomersError::Conflict => ApiError::Conflict(error.to_string()),
            CustomersError::Storage(e) => e.into(),
            CustomersError::Accounts(AccountsError::Busy(retry_after)) => ApiError::Busy {
                message: "the server is busy; try again shortly".to_owned(),
                retry_after,
            },
            CustomersError::Accounts(e) => ApiError::internal(e),
        }
    }
}

/// Customers' public routes.
pub fn public<S: TransactionalStore>() -> OpenApiRouter<Arc<Customers<S>>> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(details))
        .routes(routes!(history))
        .routes(routes!(update))
        .routes(routes!(forget_me))
}

/// Customers' internal routes.
pub fn internal<S: TransactionalStore>() -> OpenApiRouter<Arc<Customers<S>>> {
    OpenApiRouter::new()
        .routes(routes!(customer_by_id))
        .routes(routes!(ship_to))
        .routes(routes!(change_credit_limit))
        .routes(routes!(forget_customer))
}

fn money(validator: &mut Validator, amount: Decimal, code: Option<&str>) -> Option<Money> {
    let currency = match code.unwrap_or("USD").parse::<Currency>() {
        Ok(currency) => currency,
        Err(error) => {
            validator.add("currencyCode", error.to_string());
            return None;
        }
    };
    match Money::accepted(amount, currency) {
        Ok(money) => Some(money),
        Err(error) => {
            validator.add("creditLimit", error.to_string());
            None
        }
    }
}

/// Registers a customer and its account (anonymous).
#[utoipa::path(post, path = "/api/v2/customers", tag = "customers",
    request_body = RegisterCustomerRequest,
    responses(
        (status = 201, description = "Registered", body = CustomerCreated),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or email taken", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every password-hashing slot is busy (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn register<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    Json(request): Json<RegisterCustomerRequest>,
) -> Result<(StatusCode, axum::Json<CustomerCreated>), ApiError> {
    let mut validator = Validator::new();
    validator
        .length(&request.password, "password", 5, 100)
        .check(
            request.password == request.password_confirm,
            "passwordConfirm",
            "must match the password",
        );
    let limit = money(
        &mut validator,
        request.credit_limit,
        request.currency_code.as_deref(),
    );
    let broken = super::check_fields(
        &request.name,
        Some(&request.email),
        &request.shipping_address,
        limit.as_ref(),
    );
    for (field, reason) in broken {
        validator.add(field, reason);
    }
    validator.finish()?;
    let Some(credit_limit) = limit else {
        return Err(ApiError::field("creditLimit", "is required"));
    };
    let customer_id = customers
        .register(Registration {
            name: request.name,
            email: request.email,
            password: request.password,
            shipping_address: request.shipping_address,
            credit_limit,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CustomerCreated { customer_id }),
    ))
}

/// The caller's own details.
#[utoipa::path(get, path = "/api/v2/customers/details", tag = "customers",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Details", body = CustomerDetails),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a customer token with `read`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn details<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
) -> Result<axum::Json<CustomerDetails>, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    Ok(axum::Json(customers.profile(customer_id).await?.into()))
}

/// The caller's own event history, oldest first.
#[utoipa::path(get, path = "/api/v2/customers/history", tag = "customers",
    params(Page),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "History", body = Vec<HistoryEntry>),
        (status = 401, description = "No or invalid token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn history<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
    page: Page,
) -> Result<Paged<HistoryEntry>, ApiError> {
    let customer_id = caller.customer(Scope::Read)?;
    Ok(customers.history(customer_id, page).await?)
}

/// Changes the caller's name and shipping address (never the credit limit).
#[utoipa::path(put, path = "/api/v2/customers/update", tag = "customers",
    request_body = UpdateCustomerRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Updated", body = CustomerDetails),
        (status = 403, description = "Not a customer token with `write`, or a credit limit in the body", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
    Json(request): Json<UpdateCustomerRequest>,
) -> Result<axum::Json<CustomerDetails>, ApiError> {
    let customer_id = caller.customer(Scope::Write)?;
    if request.credit_limit.is_some() {
        return Err(ApiError::Forbidden(
            "customers cannot change their own credit limit".to_owned(),
        ));
    }
    let profile = customers
        .update(customer_id, request.name, request.shipping_address)
        .await?;
    Ok(axum::Json(profile.into()))
}

/// A customer's details by id, credit limit included (machine clients).
#[utoipa::path(get, path = "/api/v2/internal/customers/{id}", tag = "internal",
    params(("id" = Uuid, Path, description = "Customer id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Details", body = CustomerDetails),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    ))]
async fn customer_by_id<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<axum::Json<CustomerDetails>, ApiError> {
    caller.require(Policy::Machine(Scope::Read))?;
    Ok(axum::Json(customers.profile(id).await?.into()))
}

/// Where a customer's orders go: their name and shipping address, and the data subject
/// they belong to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShipToView {
    /// The data subject whose key seals them wherever they are stored.
    pub subject: String,
    /// Name.
    pub name: String,
    /// Shipping address.
    pub address: String,
}

/// A customer's ship-to, for orders (machine clients).
#[utoipa::path(get, path = "/api/v2/internal/customers/{id}/ship-to", tag = "internal",
    params(("id" = Uuid, Path, description = "Customer id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Name and address", body = ShipToView),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The customer's personal data was forgotten", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ship_to<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<axum::Json<ShipToView>, ApiError> {
    caller.require(Policy::Machine(Scope::Read))?;
    let profile = customers.profile(id).await?;
    match (profile.name.value(), profile.shipping_address.value()) {
        (Some(name), Some(address)) => Ok(axum::Json(ShipToView {
            subject: profile.name.subject().as_str().to_owned(),
            name: name.clone(),
            address: address.clone(),
        })),
        _ => Err(ApiError::Gone(format!(
            "customer {id}'s personal data was forgotten"
        ))),
    }
}

/// Changes a customer's credit limit (machine clients with `write`).
#[utoipa::path(put, path = "/api/v2/internal/customers/{id}/credit-limit", tag = "internal",
    params(("id" = Uuid, Path, description = "Customer id")),
    request_body = CreditLimitRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = CustomerDetails),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_credit_limit<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
    IdPath(id): IdPath,
    Json(request): Json<CreditLimitRequest>,
) -> Result<axum::Json<CustomerDetails>, ApiError> {
    caller.require(Policy::Machine(Scope::Write))?;
    let mut validator = Validator::new();
    let limit = money(
        &mut validator,
        request.credit_limit,
        request.currency_code.as_deref(),
    );
    validator.finish()?;
    let Some(limit) = limit else {
        return Err(ApiError::field("creditLimit", "is required"));
    };
    Ok(axum::Json(
        customers.change_credit_limit(id, limit).await?.into(),
    ))
}

/// Forgets the caller (their right to erasure): their account is closed and their name, email
/// and address become `[forgotten]` everywhere they were stored, while their orders and
/// payments keep their amounts and statuses. The access token keeps working until it expires
/// (it signs in as nobody who can be named); the email can register again, as a new customer.
#[utoipa::path(delete, path = "/api/v2/customers/me", tag = "customers",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 403, description = "Not a customer token with `delete`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn forget_me<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let customer_id = caller.customer(Scope::Delete)?;
    customers
        .forget(customer_id, &format!("customer {customer_id}"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets a customer by id, at their request made elsewhere (machine clients with `delete`;
/// idempotent). The operator's client id is recorded.
#[utoipa::path(delete, path = "/api/v2/internal/customers/{id}/personal-data", tag = "internal",
    params(("id" = Uuid, Path, description = "Customer id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    ))]
async fn forget_customer<S: TransactionalStore>(
    State(customers): State<Arc<Customers<S>>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    caller.require(Policy::Machine(Scope::Delete))?;
    customers.forget(id, &caller.claims().sub).await?;
    Ok(StatusCode::NO_CONTENT)
}
