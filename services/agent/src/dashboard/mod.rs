//! The lease dashboard: every agent serves the whole fleet as it sees it,
//! from the latest [`Status`] the driver published. Handlers never call
//! AWS; they only read the `watch` channel and the metrics registry, and
//! the write endpoints only send a [`Control`] to the driver.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /` | the HTML page ([`html`]) |
//! | `GET /api/v1/fleet` | the same as JSON ([`view::FleetView`], `openapi.yaml`) |
//! | `GET /metrics` | Prometheus / OpenMetrics text ([`metrics`]) |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 with a valid own lease and a fresh snapshot, else 503 and why |
//! | `POST /api/v1/drain`, `/api/v1/undrain` | 202 with the bearer token ([`auth`]); 401 without or with a wrong one; 404 when no token is configured |
//!
//! Any other path is 404, any other method on a known path 405.
//!
//! Modules: [`view`] (the JSON model), [`html`] (the page), [`metrics`],
//! [`scrape`] and [`metered`] (Prometheus families, the gauges computed per
//! scrape, call outcome labels), [`auth`] (the token), [`build_info`]
//! (version and commit), [`server`] (connection limits).

pub mod auth;
pub mod build_info;
pub mod html;
pub mod metered;
pub mod metrics;
pub mod scrape;
pub mod server;
pub mod view;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant as TokioInstant;
use tracing::{info, warn};

use crate::driver::Control;
use crate::status::Status;
use auth::{Token, Verdict};
use metrics::Metrics;
use view::FleetView;

pub use auth::TokenError;

/// A snapshot older than this many lease TTLs means the lease loop is
/// stuck (it publishes after every step, several times per scan interval).
const READY_MAX_SNAPSHOT_TTLS: u32 = 1;
/// What `Retry-After` suggests while the agent starts or the driver is busy.
const RETRY_AFTER_SECONDS: &str = "1";

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct DashboardState {
    /// The driver's latest published view.
    status: watch::Receiver<Status>,
    metrics: Arc<Metrics>,
    /// Where drain and undrain requests go.
    controls: mpsc::Sender<Control>,
    /// `None` disables the write endpoints.
    token: Option<Arc<Token>>,
}

impl DashboardState {
    pub fn new(
        status: watch::Receiver<Status>,
        metrics: Arc<Metrics>,
        controls: mpsc::Sender<Control>,
        token: Option<Token>,
    ) -> Self {
        Self {
            status,
            metrics,
            controls,
            token: token.map(Arc::new),
        }
    }

    /// The same state with `token` guarding the write endpoints (`None`
    /// disables them).
    pub fn with_token(self, token: Option<Token>) -> Self {
        Self {
            token: token.map(Arc::new),
            ..self
        }
    }

    fn view(&self) -> Option<FleetView> {
        FleetView::build(&self.status.borrow(), TokioInstant::now())
    }
}

pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/v1/fleet", get(fleet))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/drain", post(drain))
        .route("/api/v1/undrain", post(undrain))
        .fallback(not_found)
        .with_state(state)
}

/// Serves `router` on every listener until `shutdown` completes, then
/// closes connections once their request in progress is answered. Tests
/// pass listeners bound to `127.0.0.1:0`. Connections are bounded in
/// number and time ([`server`]).
pub async fn serve(
    listeners: Vec<TcpListener>,
    state: DashboardState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let metrics = state.metrics.clone();
    server::serve_with(listeners, router(state), metrics, server::Limits::DEFAULT, shutdown).await
}

fn no_store() -> [(axum::http::HeaderName, &'static str); 1] {
    [(CACHE_CONTROL, "no-store")]
}

async fn index(State(state): State<DashboardState>) -> Response {
    match state.view() {
        Some(view) => (no_store(), Html(html::render(&view))).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, RETRY_AFTER_SECONDS)],
            Html(html::starting_page()),
        )
            .into_response(),
    }
}

fn error_json(code: StatusCode, error: &str, detail: &str) -> Response {
    (code, no_store(), Json(json!({ "error": error, "detail": detail }))).into_response()
}

async fn fleet(State(state): State<DashboardState>) -> Response {
    match state.view() {
        Some(view) => (no_store(), Json(view)).into_response(),
        None => {
            let mut response = error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "the lease loop has not published a snapshot yet",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
            response
        }
    }
}

async fn metrics_text(State(state): State<DashboardState>) -> Response {
    let scrape = scrape::registry(state.view().as_ref());
    (
        [(CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render_with(Some(&scrape)),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Why this node is not ready, if it is not.
pub fn unready_reason(status: &Status, at: TokioInstant) -> Option<String> {
    let (Some(setup), Some(recorded_at)) = (&status.setup, status.recorded_at) else {
        return Some("starting: no snapshot from the lease loop yet".into());
    };
    if status.exited.is_some() {
        // It publishes nothing more: the snapshot's age says nothing.
        return Some("the lease loop has stopped (drained or superseded)".into());
    }
    let age = at.saturating_duration_since(recorded_at);
    let max_age = setup.lease.lease_ttl * READY_MAX_SNAPSHOT_TTLS;
    if age > max_age {
        return Some(format!(
            "the lease loop's last snapshot is {} ms old (limit {} ms): it is stuck",
            age.as_millis(),
            max_age.as_millis()
        ));
    }
    let now = status.now + age;
    if status.lease_deadline.is_none_or(|d| now >= d) {
        return Some("no valid own lease: no heartbeat has landed recently".into());
    }
    None
}

async fn readyz(State(state): State<DashboardState>) -> Response {
    let reason = unready_reason(&state.status.borrow(), TokioInstant::now());
    match reason {
        None => (no_store(), "ready\n").into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            no_store(),
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn drain(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    control(&state, &headers, Control::Drain, "drain")
}

async fn undrain(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    control(&state, &headers, Control::Undrain, "undrain")
}

fn control(state: &DashboardState, headers: &HeaderMap, control: Control, name: &'static str) -> Response {
    let Some(token) = &state.token else {
        // Disabled endpoints look like absent ones.
        return not_found_response();
    };
    let challenge = match token.check(headers) {
        Verdict::Allowed => None,
        Verdict::Missing => Some("Bearer realm=\"vipfleet\""),
        Verdict::Wrong => Some("Bearer realm=\"vipfleet\", error=\"invalid_token\""),
    };
    if let Some(challenge) = challenge {
        warn!(
            request = name,
            "dashboard: refused a request without the right bearer token"
        );
        let mut response = error_json(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        return response;
    }
    match state.controls.try_send(control) {
        Ok(()) => {
            info!(request = name, "dashboard: accepted");
            (StatusCode::ACCEPTED, no_store(), Json(json!({ "accepted": name }))).into_response()
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            let mut response = error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the lease loop has requests queued; try again",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
            response
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            error_json(StatusCode::SERVICE_UNAVAILABLE, "stopped", "the lease loop has stopped")
        }
    }
}

fn not_found_response() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn not_found() -> Response {
    not_found_response()
}
