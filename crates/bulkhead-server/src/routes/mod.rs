//! The router: every route, its middleware, and the fallback.
//!
//! Each routes module declares its routes once, in its `table()` (a
//! [`RouteTable`]); the router here and the OpenAPI document
//! ([`crate::openapi`]) are both built from [`table()`], and the isolation
//! matrix (`tests/it/matrix.rs`) enumerates it.
//!
//! Authentication is not a layer here but an extractor on each handler
//! ([`crate::extract::TenantCtx`] or [`crate::extract::OperatorCtx`]);
//! a handler without one is public, and is declared so in the table (a
//! test checks each route's plane against the OpenAPI document's security
//! requirements and against what the route answers without a credential).

pub mod admin;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod credentials;
pub mod kms;
pub mod knowledge;
pub mod observability;
pub mod openai;
pub mod policies;
pub mod system;
pub mod table;
pub mod tenant;
pub mod usage;

pub use table::{Plane, Route, RouteTable};

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::request;
use crate::state::AppState;

/// Every route of the API.
pub fn table() -> RouteTable {
    RouteTable::new()
        .merge(system::table())
        .merge(tenant::table())
        .merge(audit::table())
        .merge(admin::table())
        .merge(credentials::table())
        .merge(openai::table())
        .merge(knowledge::table())
        // Before `agents`: where two modules' schemas share a name (today
        // both have a `SettingsBody`), the document keeps the first
        // module's, and it has always kept usage's.
        .merge(usage::table())
        .merge(agents::table())
        .merge(approvals::table())
        .merge(policies::table())
        .merge(kms::table())
        .merge(observability::table())
}

/// Builds the application router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    let table = table();
    // The first segments of the tenant plane's own paths under `/v1`: an
    // unmatched path there answers a problem, any other under `/v1` an
    // OpenAI-shaped 404.
    let mut problem_segments: Vec<String> = table
        .routes()
        .iter()
        .filter_map(|r| r.path.strip_prefix("/v1/"))
        .filter_map(|rest| rest.split('/').next())
        .filter(|s| !openai::OPENAI_SEGMENTS.contains(s))
        .map(str::to_owned)
        .collect();
    problem_segments.sort();
    problem_segments.dedup();
    let problem_segments = std::sync::Arc::new(problem_segments);
    let (routes, _) = table.split();
    routes
        .route_layer(axum::middleware::from_fn(request::expose_matched_path))
        .fallback(move |req: axum::extract::Request| {
            let segments = problem_segments.clone();
            async move { request::not_found(&req, &segments) }
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(request::method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request::middleware,
        ))
        .with_state(state)
}
