//! The OpenAPI document, generated from the handlers' annotations.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::problems;
use crate::routes::{
    admin, agents, approvals, credentials, kms, knowledge, openai, policies, system, tenant, usage,
};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A bulkhead API key (bk_...) or a JWT from a configured issuer",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator token"))
                    .build(),
            ),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "bulkhead", description = "Multi-tenant runtime for AI agents", license(name = "Apache-2.0")),
    paths(
        system::healthz, system::metrics, system::openapi,
        tenant::me, tenant::audit,
        admin::create_tenant, admin::list_tenants, admin::get_tenant, admin::update_tenant, admin::delete_tenant,
        admin::create_key, admin::list_keys, admin::revoke_key, admin::operator_audit,
        credentials::put, credentials::list, credentials::delete,
        credentials::operator_put, credentials::operator_list, credentials::operator_delete,
        credentials::platform_put, credentials::platform_list, credentials::platform_delete,
        kms::rotate, kms::rewrap, kms::rotate_tenant_key,
        knowledge::list_collections, knowledge::delete_collection, knowledge::put_document, knowledge::delete_document, knowledge::search,
        knowledge::operator_put_document, knowledge::operator_search,
        approvals::list, approvals::get, approvals::approve, approvals::deny,
        agents::list, agents::get_settings, agents::put_settings, agents::start, agents::get_run, agents::cancel, agents::messages, agents::delete_run, agents::delete_thread,
        openai::chat, openai::models, usage::usage, usage::operator_usage, policies::get, policies::put, usage::get_models, usage::put_models, usage::get_settings, usage::put_settings,
    ),
    components(
        schemas(crate::error::Problem),
        responses(
            problems::BadRequest, problems::Unauthorized, problems::Forbidden, problems::NotFound,
            problems::Conflict, problems::PayloadTooLarge, problems::UnsupportedMediaType,
            problems::UnprocessableEntity, problems::TooManyRequests, problems::BadGateway,
            problems::ServiceUnavailable, problems::GatewayTimeout,
        )
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document as JSON text, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
}
