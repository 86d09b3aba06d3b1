//! HTTP `/live`, `/ready` and Prometheus `/metrics` (off by default; `[health_checks]`).
//! `/ready` answers 200 once the agent holds its trust domain's bundle (it can serve), 503
//! before.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tessera_actors::agent::view::WorkloadSource;
use tokio::net::TcpListener;

use crate::workload_api::Metrics;

#[derive(Debug, Clone)]
struct Ctx {
    metrics: Arc<Metrics>,
    source: Arc<dyn WorkloadSource>,
}

async fn live() -> impl IntoResponse {
    (StatusCode::OK, "live\n")
}

async fn ready(State(c): State<Ctx>) -> impl IntoResponse {
    if c.source.identities().borrow().bundle.is_some() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no trust bundle yet\n",
        )
    }
}

async fn scrape(State(c): State<Ctx>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        c.metrics.render(),
    )
}

/// Serves `/live`, `/ready` and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    source: Arc<dyn WorkloadSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/metrics", get(scrape))
        .with_state(Ctx { metrics, source });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
