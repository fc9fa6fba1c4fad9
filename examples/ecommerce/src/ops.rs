//! The operational view: relays, consumers with their lag, paused partitions, the read
//! model's projection, dead letters, orders by status and the spec's invariants, on the
//! internal listener.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use std::sync::{Arc, Mutex};

use crate::auth::{Caller, Policy, Scope};
use crate::http::problem::{ApiError, Problem};
use crate::invariants::{self, Books};
use crate::orders::{RebuildError, ViewStatus};
use crate::runtime::{Runtime, lock};

/// One relay.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayView {
    /// Its name (`orders-relay`, ...).
    pub name: String,
    /// Messages published.
    pub published: u64,
    /// Messages waiting in its outbox, as of its last read.
    pub backlog: usize,
    /// Seconds the oldest waiting message has waited.
    pub oldest_unpublished_seconds: f64,
    /// Failed batches (retried).
    pub errors: u64,
}

/// One of the workflow's services (a relay, a consumer loop, the deadline scheduler, the
/// orders view), as its runtime reports it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// Its name (a relay's, a consumer's group, `deadline-scheduler`, `orders-view`).
    pub name: String,
    /// `running`, `leading`, `standby`, `restarting`, `stopped`, `completed` or `aborted`.
    pub state: String,
    /// Whether it is ready (a consumer once it has partitions).
    pub ready: bool,
    /// How many times it was restarted after a failure.
    pub restarts: u32,
    /// Its last failure.
    pub last_error: Option<String>,
    /// What it reports of itself (a consumer's counts).
    pub detail: Option<String>,
}

/// One consumer group.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    /// The group.
    pub group: String,
    /// Messages handled.
    pub handled: u64,
    /// Transient failures retried.
    pub retried: u64,
    /// Records on its partitions the group has not committed yet (null on the in-process
    /// bus, or when the broker did not answer: see `lagError`).
    pub lag: Option<i64>,
    /// Why the lag could not be measured.
    pub lag_error: Option<String>,
}

/// A consumer partition paused at a message its handler kept failing on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PausedPartitionView {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// Where it stands: the failing message's offset.
    pub offset: u64,
    /// The failing message.
    pub message_id: uuid::Uuid,
    /// The handler's last error.
    pub reason: String,
    /// Since when.
    pub paused_at: chrono::DateTime<chrono::Utc>,
}

/// The operational status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `memory` or `postgres`.
    pub backend: String,
    /// Whether every service is ready (what `/ready` also requires).
    pub ready: bool,
    /// The workflow's services.
    pub services: Vec<ServiceView>,
    /// Relays.
    pub relays: Vec<RelayView>,
    /// Consumers.
    pub consumers: Vec<ConsumerView>,
    /// Consumer partitions paused by policy until an operator resumes them.
    pub paused_partitions: Vec<PausedPartitionView>,
    /// Why the paused partitions could not be read.
    pub paused_partitions_error: Option<String>,
    /// The read models' projections: state (`running`, `paused`, ...) and lag.
    pub projections: Vec<ViewStatus>,
    /// Messages refused for good, with why.
    pub dead_letters: Vec<String>,
    /// Orders.
    pub orders: usize,
    /// Orders per status.
    pub by_status: BTreeMap<String, usize>,
    /// Cancelled orders per reason.
    pub by_reason: BTreeMap<String, usize>,
    /// Whether this instance checks the spec's invariants: one process does, and in the split
    /// deployment the orders service (a service that keeps no order says `false`, and its
    /// `invariantsHold` is vacuously true).
    pub invariants_checked: bool,
    /// Whether every invariant of the spec holds right now (false while orders are in flight).
    pub invariants_hold: bool,
    /// What does not hold.
    pub violations: Vec<String>,
}

/// What the operational view reads: the backend's name, the running workflow (replaced when
/// it restarts) and the books the invariants check.
#[derive(Debug, Clone)]
pub struct Operations {
    /// `memory` or `postgres`.
    pub backend: &'static str,
    /// The running workflow.
    pub runtime: Arc<Mutex<Arc<Runtime>>>,
    /// The orders, stock, payments and saga.
    pub books: Arc<dyn Books>,
}

/// The status the operational view shows.
pub async fn status(ops: &Operations) -> Status {
    let now = chrono::Utc::now();
    let checked = ops.books.checks_invariants();
    let report = if checked {
        invariants::check(ops.books.as_ref()).await
    } else {
        invariants::Report::default()
    };
    let runtime = lock(&ops.runtime).clone();
    let lags = runtime.consumer_lag().await;
    let paused = runtime.paused_partitions().await;
    Status {
        backend: ops.backend.to_owned(),
        ready: runtime.is_ready(),
        services: runtime
            .services()
            .into_iter()
            .map(|service| ServiceView {
                state: service.state.name().to_owned(),
                name: service.name,
                ready: service.ready,
                restarts: service.restarts,
                last_error: service.last_error,
                detail: service.detail,
            })
            .collect(),
        relays: runtime
            .relay_stats()
            .into_iter()
            .map(|(name, stats)| RelayView {
                name,
                published: stats.published,
                backlog: stats.backlog,
                oldest_unpublished_seconds: stats
                    .oldest_unpublished_at
                    .map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0)),
                errors: stats.errors,
            })
            .collect(),
        consumers: runtime
            .consumer_stats()
            .into_iter()
            .map(|(group, handled, retried)| {
                let lag = lags.get(&group).cloned().unwrap_or(Ok(None));
                ConsumerView {
                    group,
                    handled,
                    retried,
                    lag: lag.clone().ok().flatten(),
                    lag_error: lag.err(),
                }
            })
            .collect(),
        paused_partitions: paused
            .as_ref()
            .map(|paused| {
                paused
                    .iter()
                    .map(|p| PausedPartitionView {
                        group: p.group.clone(),
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: p.offset,
                        message_id: p.message_id,
                        reason: p.reason.clone(),
                        paused_at: p.paused_at,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        paused_partitions_error: paused.err().map(|e| e.to_string()),
        projections: vec![ops.books.view_status().await],
        dead_letters: runtime
            .dead_letters()
            .into_iter()
            .map(|d| {
                format!(
                    "{} {} ({}): {}",
                    d.group,
                    d.delivery.message.message_type,
                    d.delivery.message.message_id,
                    d.reason
                )
            })
            .collect(),
        orders: report.orders,
        by_status: report.by_status.clone(),
        by_reason: report.by_reason.clone(),
        invariants_checked: checked,
        invariants_hold: report.holds(),
        violations: report.violations,
    }
}

/// The operational routes.
pub fn internal() -> OpenApiRouter<Operations> {
    OpenApiRouter::new()
        .routes(routes!(status_route))
        .routes(routes!(rebuild_view))
}

/// A rebuild that started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebuildStarted {
    /// The projection.
    pub projection: String,
    /// The version being filled; reads switch to it once it caught up (the status's
    /// `projections[].version`).
    pub version: u32,
}

/// Rebuilds the orders view from the event log into a new version while the current one
/// serves reads (after a change to the projection, or to drop what a forgotten customer left
/// in it): machine clients with `write`.
#[utoipa::path(post, path = "/api/v2/internal/projections/orders-view/rebuild", tag = "internal",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Rebuilding", body = RebuildStarted),
        (status = 403, description = "Not a machine token with `write`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A rebuild is under way", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rebuild_view(
    State(ops): State<Operations>,
    caller: Caller,
) -> Result<(axum::http::StatusCode, axum::Json<RebuildStarted>), ApiError> {
    caller.require(Policy::Machine(Scope::Write))?;
    let version = ops
        .books
        .rebuild_view()
        .await
        .map_err(|error| match error {
            RebuildError::AlreadyRebuilding(_) => ApiError::Conflict(error.to_string()),
            RebuildError::Storage(storage) => storage.into(),
        })?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(RebuildStarted {
            projection: "orders-view".to_owned(),
            version,
        }),
    ))
}

/// Relays, consumers and their lag, paused partitions, projections and their lag, dead
/// letters, orders by status and the invariants (machine clients).
#[utoipa::path(get, path = "/api/v2/internal/status", tag = "internal",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Status", body = Status),
        (status = 403, description = "Not a machine token with `read`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn status_route(
    State(ops): State<Operations>,
    caller: Caller,
) -> Result<axum::Json<Status>, ApiError> {
    caller.require(Policy::Machine(Scope::Read))?;
    Ok(axum::Json(status(&ops).await))
}
