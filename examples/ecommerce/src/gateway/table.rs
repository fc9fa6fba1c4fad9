//! The gateway's route table: which service answers which public path, read from a JSON file
//! (as the reference system's Ocelot files are), and checked before anything is served.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The paths no route may reach: the services' internal APIs.
pub const INTERNAL_PREFIX: &str = "/api/v2/internal";

/// A service behind the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// The service's public base URL (`http://127.0.0.1:5101`): its routes, `/health` and
    /// `/api/v2/openapi.json`.
    pub url: String,
}

/// A path prefix and the service that answers it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// A path prefix, whole segments (`/api/v2/orders` matches `/api/v2/orders` and
    /// `/api/v2/orders/7`, not `/api/v2/ordersx`).
    pub path: String,
    /// The service's name in [`RouteTable::services`].
    pub service: String,
    /// How long the service has to start answering (its headers; a stream then flows as long
    /// as it lasts); the table's default when absent.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// The largest request body; the table's default when absent.
    #[serde(default)]
    pub body_limit_bytes: Option<usize>,
}

/// The route table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTable {
    /// Every service by name (those without public routes too: `/health` reports them all).
    pub services: BTreeMap<String, Service>,
    /// The routes; the longest matching prefix wins.
    pub routes: Vec<Route>,
    /// The default of [`Route::timeout_seconds`].
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The default of [`Route::body_limit_bytes`].
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
}

fn default_timeout() -> u64 {
    10
}

fn default_body_limit() -> usize {
    64 * 1024
}

/// Why a route table was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The file could not be read.
    #[error("route table {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a route table.
    #[error("route table {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        #[source]
        source: serde_json::Error,
    },
    /// The table is inconsistent.
    #[error("route table: {0}")]
    Invalid(String),
}

/// What the gateway does with a request's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The service's name.
    pub service: &'a str,
    /// Its public base URL.
    pub url: &'a str,
    /// How long it has to start answering.
    pub timeout: Duration,
    /// The largest request body.
    pub body_limit: usize,
}

impl RouteTable {
    /// Reads and checks the table in `path`.
    ///
    /// # Errors
    /// [`TableError`] when the file cannot be read, parsed, or [`check`](Self::check)ed.
    pub fn load(path: &Path) -> Result<Self, TableError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TableError::Read {
            path: name.clone(),
            source,
        })?;
        let table: Self = serde_json::from_str(&text)
            .map_err(|source| TableError::Parse { path: name, source })?;
        table.check()?;
        Ok(table)
    }

    /// Refuses a table that could expose an internal route (a prefix of or under
    /// [`INTERNAL_PREFIX`]), names an unknown service, repeats a prefix, or has a malformed
    /// prefix or URL.
    ///
    /// # Errors
    /// [`TableError::Invalid`] saying what is wrong.
    pub fn check(&self) -> Result<(), TableError> {
        let invalid = |message: String| Err(TableError::Invalid(message));
        for (name, service) in &self.services {
            if !(service.url.starts_with("http://") && service.url.len() > "http://".len()) {
                return invalid(format!(
                    "service {name}: the url must be http://host:port, not {:?}",
                    service.url
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for route in &self.routes {
            let path = route.path.as_str();
            let well_formed = path.starts_with('/')
                && !path.ends_with('/')
                && path[1..].split('/').all(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !well_formed {
                return invalid(format!(
                    "route {path:?}: a prefix is /segment/segment, of letters, digits, - and _"
                ));
            }
            if covers(path, INTERNAL_PREFIX) || covers(INTERNAL_PREFIX, path) {
                return invalid(format!(
                    "route {path:?} would expose the internal API ({INTERNAL_PREFIX})"
                ));
            }
            if !self.services.contains_key(&route.service) {
                return invalid(format!(
                    "route {path:?} names the unknown service {:?}",
                    route.service
                ));
            }
            if !seen.insert(path.to_ascii_lowercase()) {
                return invalid(format!("route {path:?} appears twice"));
            }
            if route.timeout_seconds == Some(0) || route.body_limit_bytes == Some(0) {
                return invalid(format!("route {path:?}: a timeout or limit of zero"));
            }
        }
        Ok(())
    }

    /// Where `path` goes: the longest route prefix it is under (whole segments, matched
    /// without regard to case); `None` when no route takes it.
    pub fn target(&self, path: &str) -> Option<Target<'_>> {
        let route = self
            .routes
            .iter()
            .filter(|route| covers(&route.path, path))
            .max_by_key(|route| route.path.len())?;
        let service = self.services.get(&route.service)?;
        Some(Target {
            service: &route.service,
            url: service.url.trim_end_matches('/'),
            timeout: Duration::from_secs(route.timeout_seconds.unwrap_or(self.timeout_seconds)),
            body_limit: route.body_limit_bytes.unwrap_or(self.body_limit_bytes),
        })
    }
}

/// Whether `prefix` covers `path` in whole segments, without regard to case.
pub(crate) fn covers(prefix: &str, path: &str) -> bool {
    let (prefix, path) = (prefix.to_ascii_lowercase(), path.to_ascii_lowercase());
    path == prefix
        || path
            .strip_prefix(&prefix)
            .is_some_and(|rest| rest.starts_with('/') || prefix.ends_with('/'))
}
