//! Extractors whose rejections are problem documents: bad JSON is a 400, JSON of the wrong
//! shape (a missing field, a wrong type) a 422, a wrong content type a 415, an oversized body
//! a 413, a body paused past the read timeout a 408, a malformed id a 400 and the nil UUID a
//! 422.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::problem::ApiError;

/// A JSON body; rejections become problem documents.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(json_rejection)?;
        if let Some(field) = control_character(&value, "") {
            return Err(ApiError::field(
                &field,
                "must not contain control characters",
            ));
        }
        // The field a wrong value is in (`items[2].quantity`), else the body.
        serde_path_to_error::deserialize(value)
            .map(Json)
            .map_err(|error| {
                let path = error.path().to_string();
                let field = if path == "." { "body" } else { path.as_str() };
                ApiError::field(field, error.inner().to_string())
            })
    }
}

/// The path (`shippingAddress.city`, `items[2].name`) of the first string holding a control
/// character (NUL, escapes, line breaks...), keys included: no field of the API takes one, and
/// PostgreSQL's `jsonb` refuses NUL.
fn control_character(value: &serde_json::Value, path: &str) -> Option<String> {
    let has_control = |text: &str| text.chars().any(char::is_control);
    match value {
        serde_json::Value::String(text) if has_control(text) => Some(if path.is_empty() {
            "body".to_owned()
        } else {
            path.to_owned()
        }),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| control_character(item, &format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if has_control(key) {
                return Some(path);
            }
            control_character(item, &path)
        }),
        _ => None,
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "the body must be JSON with `Content-Type: application/json`".to_owned(),
        ),
        JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is larger than the limit".to_owned())
        }
        JsonRejection::BytesRejection(bytes) if timed_out(&bytes) => ApiError::RequestTimeout(
            "the request body paused longer than the body read timeout".to_owned(),
        ),
        JsonRejection::JsonDataError(error) => ApiError::field("body", error.body_text()),
        other => ApiError::BadRequest(format!("malformed JSON body: {}", other.body_text())),
    }
}

/// Whether reading the body failed because the client paused longer than the server's body
/// read timeout (tower-http's `TimeoutError` somewhere in the causes).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A non-nil UUID from the path (routes with one path parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(path_rejection)?;
        parse_id("id", &raw).map(IdPath)
    }
}

/// Two non-nil UUIDs from the path, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPairPath(pub Uuid, pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPairPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path((first, second)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(path_rejection)?;
        Ok(IdPairPath(
            parse_id("id", &first)?,
            parse_id("id", &second)?,
        ))
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

/// Parses a UUID, refusing the nil one.
///
/// # Errors
/// 400 when `raw` is not a UUID, 422 (naming `field`) when it is the nil UUID.
pub fn parse_id(field: &str, raw: &str) -> Result<Uuid, ApiError> {
    let id = Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("{field} `{raw}` is not a UUID")))?;
    check_id(field, id)
}

/// Refuses the nil UUID.
///
/// # Errors
/// 422 naming `field`.
pub fn check_id(field: &str, id: Uuid) -> Result<Uuid, ApiError> {
    if id.is_nil() {
        Err(ApiError::field(field, "the nil UUID is not a valid id"))
    } else {
        Ok(id)
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`AppConfig::trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub std::sync::Arc<[std::net::IpAddr]>);

/// The client's address, when the server knows it (served with connection info; absent when
/// a router is driven in process). A request from a trusted proxy counts as coming from the
/// last address of its `X-Forwarded-For` that is not a trusted proxy itself (the header's
/// earlier entries are the client's to write, so they are not believed).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    /// The client behind `peer`, as `forwarded_for` (every `X-Forwarded-For` value, in
    /// order) says when `peer` is one of `trusted`.
    pub fn behind(
        peer: std::net::IpAddr,
        forwarded_for: &[&str],
        trusted: &[std::net::IpAddr],
    ) -> std::net::IpAddr {
        if !trusted.contains(&peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for
            .iter()
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            match hop.parse::<std::net::IpAddr>() {
                Ok(address) if trusted.contains(&address) => {}
                Ok(address) => return address,
                // A malformed entry: what lies before it cannot be believed either.
                Err(_) => return peer,
            }
        }
        peer
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(peer) = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip())
        else {
            return Ok(Self(None));
        };
        let trusted = parts
            .extensions
            .get::<TrustedProxies>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        if trusted.is_empty() {
            return Ok(Self(Some(peer)));
        }
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        Ok(Self(Some(Self::behind(peer, &forwarded, &trusted))))
    }
}

#[cfg(test)]
mod trusted_proxies {
    use std::net::IpAddr;

    use super::ClientAddr;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let behind =
            |peer: &str, forwarded: &[&str]| ClientAddr::behind(ip(peer), forwarded, &trusted);
        // Not through a trusted proxy: the header is the client's own word.
        assert_eq!(behind("192.0.2.5", &["203.0.113.7"]), ip("192.0.2.5"));
        // Through one: the address it forwarded for, not what the client wrote before it.
        assert_eq!(
            behind("10.0.0.1", &["6.6.6.6, 203.0.113.7"]),
            ip("203.0.113.7")
        );
        // Through two, in several header lines.
        assert_eq!(
            behind("10.0.0.2", &["203.0.113.7", "10.0.0.1"]),
            ip("203.0.113.7")
        );
        // Nothing forwarded, or a malformed hop: the proxy itself.
        assert_eq!(behind("10.0.0.1", &[]), ip("10.0.0.1"));
        assert_eq!(
            behind("10.0.0.1", &["203.0.113.7, not-an-ip"]),
            ip("10.0.0.1")
        );
    }
}
