//! The HTTP layer of bulkhead.
//!
//! Handlers are thin: they extract and validate input, call a store or
//! domain function with the caller's scope, and map the result to an API
//! type. Only this crate knows axum.

pub mod alerting;
pub mod alerts;
pub mod audit_keys;
pub mod auth_failures;
pub mod authz;
pub mod boot;
pub mod conn;
pub mod error;
pub mod extract;
pub mod jwks;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod request;
pub mod retention;
pub mod routes;
mod sse;
pub mod state;
pub mod telemetry;
pub mod tenant_metrics;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub use routes::router;
pub use state::AppState;

/// Serves `state` on a bound listener until `shutdown` completes, then
/// drains in-flight requests and the usage records of finished model calls.
/// Connections are capped and timed out as `[server]` says ([`conn`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let gateway = state.gateway.clone();
    let runtime = state.runtime.clone();
    let flush_state = state.clone();
    let limits = state.settings.connections.clone();
    let grace = limits.shutdown_grace;
    let metrics = state.metrics.clone();
    // The grace is counted from the signal.
    let signalled = Arc::new(OnceLock::new());
    let mark = signalled.clone();
    let shutdown = async move {
        shutdown.await;
        let _ = mark.set(Instant::now());
    };
    conn::serve_connections(listener, router(state), limits, metrics, shutdown).await;
    let left = || {
        signalled
            .get()
            .map_or(grace, |at: &Instant| grace.saturating_sub(at.elapsed()))
    };
    // Failed authentications counted but not yet audited are written.
    extract::flush_auth_failures(&flush_state, true).await;
    // Runs still going (their clients left) may finish within the grace;
    // then they end as cancelled, recorded, and so do their model calls.
    runtime.shutdown_within(left()).await;
    // Answers no longer wait for their usage rows; nothing is lost on a
    // clean stop because the rows still queued are written here. Calls
    // still going past the grace (a stream read on for its usage) stop
    // and are recorded `cancelled`.
    if tokio::time::timeout(left(), gateway.drain()).await.is_err() {
        tracing::warn!("shutdown grace is over; cancelling the model calls still going");
        gateway.cancel_in_flight();
        gateway.drain().await;
    }
    Ok(())
}
