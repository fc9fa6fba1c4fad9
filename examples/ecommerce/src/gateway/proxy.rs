//! Forwarding one request: the body read within its route's limit, the headers a proxy must
//! not pass dropped, the request id and trace context set, the answer streamed back.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::Full;
use tracing::Instrument as _;

use super::table::INTERNAL_PREFIX;
use super::{Gateway, unavailable};
use crate::http::REQUEST_ID;
use crate::http::problem::Problem;

/// Headers that describe one connection, not the request (RFC 9110 7.6.1), and `host`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// The longest request id passed on as it came; a longer or malformed one is replaced.
const MAX_REQUEST_ID: usize = 128;

fn problem(status: StatusCode, detail: String) -> Response {
    Problem::response(status, detail, Default::default(), None)
}

/// Whether the path could reach an internal route, or is ambiguous (encoded or dot
/// segments, empty segments): such paths are refused rather than normalised.
fn refused_path(path: &str) -> Option<(StatusCode, String)> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("//")
        || lower.contains("%2f")
        || lower.contains("%2e")
        || lower.contains("%5c")
        || lower.split('/').any(|s| s == "." || s == "..")
    {
        return Some((
            StatusCode::BAD_REQUEST,
            format!("the path {path:?} has empty, dot or encoded separators"),
        ));
    }
    let decoded = percent_decode(&lower);
    if super::table::covers(INTERNAL_PREFIX, &decoded) {
        return Some((StatusCode::NOT_FOUND, format!("no route for {path}")));
    }
    None
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request id to pass on: the caller's when it is a sane one, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| {
            v.len() <= MAX_REQUEST_ID
                && v.to_str()
                    .is_ok_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// The headers to send on: the caller's, without hop-by-hop ones (and those the
/// `Connection` header names).
fn forwarded_headers(incoming: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = incoming
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut headers = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower) || named.iter().any(|n| n == lower) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers
}

/// Forwards a request to the service its path routes to.
pub(super) async fn forward(State(gateway): State<Gateway>, request: Request) -> Response {
    let connect = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .copied();
    let path = request.uri().path().to_owned();
    if let Some((status, detail)) = refused_path(&path) {
        return problem(status, detail);
    }
    let Some(target) = gateway.table().target(&path) else {
        return problem(StatusCode::NOT_FOUND, format!("no route for {path}"));
    };
    let (parts, body) = request.into_parts();
    let request_id = request_id(&parts.headers);
    let span = tracing::info_span!(
        "gateway",
        otel.name = %format_args!("{} {}", parts.method, target.service),
        otel.kind = "server",
        http.request.method = %parts.method,
        url.path = %path,
        es.service = %target.service,
        http.response.status_code = tracing::field::Empty,
    );
    let trace: BTreeMap<String, String> = [
        es_core::telemetry::TRACEPARENT,
        es_core::telemetry::TRACESTATE,
    ]
    .into_iter()
    .filter_map(|name| {
        let value = parts.headers.get(name)?.to_str().ok()?;
        Some((name.to_owned(), value.to_owned()))
    })
    .collect();
    es_core::telemetry::continue_trace(&span, &trace);
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} bytes", target.body_limit),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > target.body_limit) {
        return too_large();
    }
    let Ok(bytes) = axum::body::to_bytes(body, target.body_limit).await else {
        return too_large();
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut headers = forwarded_headers(&parts.headers);
    headers.insert(HeaderName::from_static(REQUEST_ID), request_id.clone());
    let mut injected = BTreeMap::new();
    if es_core::telemetry::inject(&span, &mut injected) {
        for (name, value) in injected {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
    }
    if let Some(ConnectInfo(peer)) = connect {
        let forwarded_for = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(earlier) => format!("{earlier}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    let mut outgoing = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}{query}", target.url));
    if let Some(all) = outgoing.headers_mut() {
        *all = headers;
    }
    let Ok(outgoing) = outgoing.body(Full::new(bytes)) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "the request cannot be forwarded".to_owned(),
        );
    };
    let service = target.service;
    let sent = tokio::time::timeout(target.timeout, gateway.inner.http.request(outgoing))
        .instrument(span.clone())
        .await;
    let mut response = match sent {
        Err(_) => problem(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the {service} service did not answer within {:?}",
                target.timeout
            ),
        ),
        Ok(Err(error)) => {
            tracing::warn!(parent: &span, service, %error, "service unreachable");
            unavailable(&format!("the {service} service is unavailable"))
        }
        Ok(Ok(answer)) => {
            let (mut parts, body) = answer.into_parts();
            let kept = forwarded_headers(&parts.headers);
            parts.headers = kept;
            Response::from_parts(parts, Body::new(body))
        }
    };
    span.record("http.response.status_code", response.status().as_u16());
    response
        .headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID), request_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_and_internal_paths_are_refused() {
        for path in [
            "/api/v2//orders",
            "/api/v2/./internal/status",
            "/api/v2/orders/../internal/status",
            "/api/v2%2finternal/status",
            "/api/v2/%2e%2e/x",
        ] {
            assert_eq!(
                refused_path(path).map(|r| r.0),
                Some(StatusCode::BAD_REQUEST),
                "{path}"
            );
        }
        for path in [
            "/api/v2/internal",
            "/api/v2/internal/status",
            "/API/V2/Internal/status",
            "/api/v2/%69nternal/status",
        ] {
            assert_eq!(
                refused_path(path).map(|r| r.0),
                Some(StatusCode::NOT_FOUND),
                "{path}"
            );
        }
        assert_eq!(refused_path("/api/v2/orders/7"), None);
        assert_eq!(refused_path("/api/v2/internalx"), None);
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        incoming.insert("x-secret", HeaderValue::from_static("1"));
        incoming.insert(header::HOST, HeaderValue::from_static("gateway"));
        incoming.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        incoming.insert(header::TE, HeaderValue::from_static("trailers"));
        let kept = forwarded_headers(&incoming);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[header::AUTHORIZATION], "Bearer t");
    }

    #[test]
    fn a_sane_request_id_is_kept_and_another_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }
}
