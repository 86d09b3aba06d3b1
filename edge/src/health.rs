//! The HTTP health endpoint both processes serve (off by default; `[health_checks]`), with
//! SPIRE's paths:
//!
//! | path | 200 | 503 |
//! |---|---|---|
//! | `/live` | `live` | `failed: <why>`: the process should be restarted |
//! | `/ready` | `ready` | `not ready: <why>`: do not send it work yet (or any more) |
//! | `/metrics` | the Prometheus text exposition | |
//!
//! What "live" and "ready" mean is the process's: it implements [`Health`].

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// What a process reports on its health endpoint.
pub trait Health: Send + Sync + 'static {
    /// `Ok` while the process runs; `Err(why)` once it has failed for good.
    fn live(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// `Ok` when the process can serve; `Err(why)` when it cannot (yet, or any more).
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// The Prometheus text exposition of the process's metrics.
    fn metrics(&self) -> impl Future<Output = String> + Send;
}

async fn live<H: Health>(State(h): State<Arc<H>>) -> impl IntoResponse {
    match h.live().await {
        Ok(()) => (StatusCode::OK, "live\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {why}\n")),
    }
}

async fn ready<H: Health>(State(h): State<Arc<H>>) -> impl IntoResponse {
    match h.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn scrape<H: Health>(State(h): State<Arc<H>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        h.metrics().await,
    )
}

/// The endpoint's routes over `health`.
pub fn router<H: Health>(health: Arc<H>) -> Router {
    Router::new()
        .route("/live", get(live::<H>))
        .route("/ready", get(ready::<H>))
        .route("/metrics", get(scrape::<H>))
        .with_state(health)
}

/// Serves `/live`, `/ready` and `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve<H: Health>(
    listener: TcpListener,
    health: Arc<H>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
