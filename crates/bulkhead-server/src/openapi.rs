//! The OpenAPI document, generated from the route table and the
//! handlers' annotations.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::problems;

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

/// The API description without its paths, which come from the route
/// table ([`crate::routes::table()`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "bulkhead", description = "Multi-tenant runtime for AI agents", license(name = "Apache-2.0")),
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

/// The whole document: the description above with every route of the
/// table (and the schemas their annotations name).
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, paths) = crate::routes::table().split();
    ApiDoc::openapi().merge_from(paths)
}

/// The document as JSON text, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| document().to_json().unwrap_or_default())
}
