//! The router: every route, its middleware, and the fallback.
//!
//! Authentication is not a layer here but an extractor on each handler
//! ([`crate::extract::TenantCtx`] or [`crate::extract::OperatorCtx`]);
//! a handler without one is public, and the public handlers are exactly
//! those in [`PUBLIC_ROUTES`] (a test checks the list against the OpenAPI
//! document's security requirements).

pub mod admin;
pub mod agents;
pub mod approvals;
pub mod credentials;
pub mod kms;
pub mod knowledge;
pub mod openai;
pub mod policies;
pub mod system;
pub mod tenant;
pub mod usage;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

use crate::request;
use crate::state::AppState;

/// Chat requests carry whole conversations (long contexts, tool results):
/// they get a larger body limit than the rest of the API.
const CHAT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Routes that need no credential.
pub const PUBLIC_ROUTES: &[&str] = &["/healthz", "/metrics", "/openapi.json"];

/// Builds the application router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.max_body_bytes;
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route("/v1/me", get(tenant::me))
        .route("/v1/audit", get(tenant::audit))
        .route(
            "/admin/v1/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route(
            "/admin/v1/tenants/{id}",
            get(admin::get_tenant)
                .patch(admin::update_tenant)
                .delete(admin::delete_tenant),
        )
        .route(
            "/admin/v1/tenants/{id}/api-keys",
            get(admin::list_keys).post(admin::create_key),
        )
        .route(
            "/admin/v1/tenants/{id}/api-keys/{key_id}",
            delete(admin::revoke_key),
        )
        .route("/admin/v1/audit", get(admin::operator_audit))
        .route("/v1/credentials", get(credentials::list))
        .route(
            "/v1/credentials/{connection}",
            put(credentials::put).delete(credentials::delete),
        )
        .route(
            "/admin/v1/tenants/{id}/credentials",
            get(credentials::operator_list),
        )
        .route(
            "/admin/v1/tenants/{id}/credentials/{connection}",
            put(credentials::operator_put).delete(credentials::operator_delete),
        )
        .route(
            "/admin/v1/platform/credentials",
            get(credentials::platform_list),
        )
        .route(
            "/admin/v1/platform/credentials/{connection}",
            put(credentials::platform_put).delete(credentials::platform_delete),
        )
        .route(
            openai::CHAT_PATH,
            post(openai::chat).layer(DefaultBodyLimit::max(CHAT_BODY_LIMIT)),
        )
        .route("/v1/models", get(openai::models))
        .route("/v1/collections", get(knowledge::list_collections))
        .route(
            "/v1/collections/{collection}",
            delete(knowledge::delete_collection),
        )
        .route(
            "/v1/collections/{collection}/documents",
            post(knowledge::put_document)
                .layer(DefaultBodyLimit::max(knowledge::DOCUMENT_BODY_LIMIT)),
        )
        .route(
            "/v1/collections/{collection}/documents/{id}",
            delete(knowledge::delete_document),
        )
        .route(
            "/v1/collections/{collection}/search",
            post(knowledge::search),
        )
        .route(
            "/admin/v1/tenants/{id}/collections/{collection}/documents",
            post(knowledge::operator_put_document)
                .layer(DefaultBodyLimit::max(knowledge::DOCUMENT_BODY_LIMIT)),
        )
        .route(
            "/admin/v1/tenants/{id}/collections/{collection}/search",
            post(knowledge::operator_search),
        )
        .route("/v1/agents", get(agents::list))
        .route(
            "/v1/agents/{agent}/settings",
            get(agents::get_settings).put(agents::put_settings),
        )
        .route("/v1/agents/{agent}/runs", post(agents::start))
        .route(
            "/v1/runs/{id}",
            get(agents::get_run).delete(agents::delete_run),
        )
        .route("/v1/runs/{id}/cancel", post(agents::cancel))
        .route("/v1/threads/{id}/messages", get(agents::messages))
        .route("/v1/threads/{id}", delete(agents::delete_thread))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::get))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route("/v1/usage", get(usage::usage))
        .route("/v1/policies", get(policies::get).put(policies::put))
        .route("/admin/v1/usage", get(usage::operator_usage))
        .route(
            "/admin/v1/tenants/{id}/models",
            get(usage::get_models).put(usage::put_models),
        )
        .route(
            "/admin/v1/tenants/{id}/settings",
            get(usage::get_settings).put(usage::put_settings),
        )
        .route("/admin/v1/kms/rotate", post(kms::rotate))
        .route("/admin/v1/kms/rewrap", post(kms::rewrap))
        .route(
            "/admin/v1/tenants/{id}/data-key/rotate",
            post(kms::rotate_tenant_key),
        )
        .route_layer(axum::middleware::from_fn(request::expose_matched_path))
        .fallback(request::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(request::method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request::middleware,
        ))
        .with_state(state)
}
