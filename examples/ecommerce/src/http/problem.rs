//! Errors as `application/problem+json` (RFC 9457), with the status codes of the spec.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Field name → what is wrong with it.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Why a request failed, mapped to one HTTP status each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the body is not JSON, or a path or query value does not parse.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or an invalid or expired one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token without the role or scope the route needs.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// 410: the resource existed and is gone for good (a forgotten customer's data).
    #[error("{0}")]
    Gone(String),
    /// 405: the route does not take this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 408: the client paused too long while sending the request body.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409: the resource changed concurrently and the change could not be retried.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not declared as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: fields failed validation.
    #[error("validation failed")]
    Validation(FieldErrors),
    /// 422: a domain rule refused the request.
    #[error("{0}")]
    Rule(String),
    /// 429: too many requests; try again after the given time.
    #[error("{message}")]
    TooManyRequests {
        /// What to tell the client.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// 503 with `Retry-After`: the server is busy right now.
    #[error("{message}")]
    Busy {
        /// What to tell the client.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// 503: a dependency does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// 500: anything else; logged with a trace id and its causes, never shown.
    #[error("internal error: {0}")]
    Internal(es_core::BoxError),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::new();
        errors.insert(field.to_owned(), vec![message.into()]);
        ApiError::Validation(errors)
    }

    /// A 500 from any error; the details (with every cause) go to the log only.
    pub fn internal(error: impl Into<es_core::BoxError>) -> Self {
        ApiError::Internal(error.into())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) | ApiError::Rule(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An `application/problem+json` body.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` for plain HTTP statuses).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// The same as `detail`: the domain's message for a broken rule.
    pub message: String,
    /// Field errors of a failed validation.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: FieldErrors,
    /// For a 500: the id under which the error was logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl Problem {
    /// An `application/problem+json` response.
    pub fn response(
        status: StatusCode,
        detail: String,
        errors: FieldErrors,
        trace_id: Option<String>,
    ) -> Response {
        let problem = Problem {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            message: detail.clone(),
            detail,
            errors,
            trace_id,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<crate::storage::StorageError> for ApiError {
    /// A stream that kept moving is a 409 (try again); anything else a 500.
    fn from(error: crate::storage::StorageError) -> Self {
        if error.is_conflict() {
            ApiError::Conflict("the resource changed concurrently; try again".to_owned())
        } else {
            ApiError::internal(error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } | ApiError::Busy { retry_after, .. } => {
                Some(retry_after.as_secs().max(1))
            }
            _ => None,
        };
        let mut trace_id = None;
        let (detail, errors) = match self {
            ApiError::Validation(errors) => ("one or more fields are invalid".to_owned(), errors),
            ApiError::Internal(error) => {
                let id = Uuid::new_v4().to_string();
                let mut causes = error.to_string();
                let mut source = error.source();
                while let Some(cause) = source {
                    causes.push_str(": ");
                    causes.push_str(&cause.to_string());
                    source = cause.source();
                }
                tracing::error!(trace_id = %id, error = %causes, "request failed");
                trace_id = Some(id);
                ("an internal error occurred".to_owned(), FieldErrors::new())
            }
            other => (other.to_string(), FieldErrors::new()),
        };
        let mut response = Problem::response(status, detail, errors, trace_id);
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Collects field errors, then yields a 422 if any.
#[derive(Debug, Default)]
pub struct Validator {
    errors: FieldErrors,
}

impl Validator {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.add(field, message);
        }
        self
    }

    /// Records `message` for `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) -> &mut Self {
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
        self
    }

    /// Checks that `value` has between `min` and `max` characters once trimmed.
    pub fn length(&mut self, value: &str, field: &str, min: usize, max: usize) -> &mut Self {
        let length = value.trim().chars().count();
        self.check(
            (min..=max).contains(&length),
            field,
            format!("must be {min} to {max} characters long"),
        )
    }

    /// `Ok` when nothing was recorded, else [`ApiError::Validation`].
    ///
    /// # Errors
    /// The recorded field errors.
    pub fn finish(&mut self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(std::mem::take(&mut self.errors)))
        }
    }
}

/// Whether `email` looks like a deliverable address: one `@`, a non-empty local part, a dotted
/// domain, no spaces, at most 254 characters.
pub fn is_valid_email(email: &str) -> bool {
    if email.len() > 254
        || email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_format_character(c))
    {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// Whether `c` is an invisible formatting character (Unicode category Cf: zero-width spaces
/// and joiners, directional marks, the soft hyphen, the byte-order mark...), which would let
/// two emails that look the same register twice.
pub fn is_format_character(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(is_valid_email("ada@example.com"));
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "a@b..c",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }
}
