//! Extractors: JSON bodies, path and query parameters, and the two
//! authentication extractors. Every rejection becomes an [`ApiError`], so
//! bad input always answers in the problem format.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bulkhead_auth::{AuthFailure, OperatorScope, TenantScope};
use bulkhead_core::RequestId;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body; parse failures answer 400/413/415 problems.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection, state.settings.max_body_bytes)),
        }
    }
}

fn json_rejection(r: JsonRejection, limit: usize) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(limit),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        _ => ApiError::InvalidBody(r.body_text()),
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|r: PathRejection| ApiError::InvalidParameter(r.body_text()))
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|r: QueryRejection| ApiError::InvalidParameter(r.body_text()))
    }
}

fn request_id(parts: &Parts) -> RequestId {
    parts
        .extensions
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate)
}

/// The bearer credential, if the `Authorization` header holds exactly one
/// well-formed `Bearer` value. Anything else counts as no credential at all
/// for the operator plane and as an invalid one for the tenant plane.
fn bearer(parts: &Parts) -> Result<Option<&str>, ()> {
    let mut values = parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, token) = value.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(());
    }
    Ok(Some(token))
}

/// An authenticated tenant-plane request.
pub struct TenantCtx(pub TenantScope);

impl FromRequestParts<AppState> for TenantCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(parts);
        let tenant_header = match parts.headers.get("x-tenant-id") {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| ApiError::TenantMismatch)?),
        };
        let token = match bearer(parts) {
            Ok(t) => t,
            Err(()) => {
                state.metrics.auth_failure("malformed_authorization");
                return Err(ApiError::Unauthenticated);
            }
        };
        match state.auth.authenticate(token, tenant_header, &rid).await {
            Ok(scope) => {
                tracing::Span::current().record("tenant_id", scope.tenant().as_str());
                state.metrics.tenant_request(scope.tenant().as_str());
                // Every tenant-plane request counts against the tenant's
                // requests per minute, whatever it asks for.
                if let Err(refusal) = state.limiter.request(&scope).await {
                    state.metrics.limited(refusal.code());
                    state
                        .gateway
                        .audit_refusal(&scope, parts.uri.path(), "request", &refusal)
                        .await;
                    return Err(ApiError::Limited(refusal));
                }
                Ok(TenantCtx(scope))
            }
            Err(err) => {
                let reason = match err.failure {
                    AuthFailure::Missing => "missing",
                    AuthFailure::Invalid(r) => r,
                    AuthFailure::Suspended => "tenant_suspended",
                    AuthFailure::TenantMismatch => "tenant_header_mismatch",
                    AuthFailure::Unavailable => "unavailable",
                };
                state.metrics.auth_failure(reason);
                tracing::info!(reason, "authentication refused");
                if let Some(attribution) = &err.attribution {
                    tracing::Span::current().record("tenant_id", attribution.tenant().as_str());
                    let event = NewAuditEvent::new(
                        "auth.failure",
                        format!("tenant:{}", attribution.tenant()),
                        Outcome::Denied,
                        rid.clone(),
                    )
                    .with_details(json!({
                        "reason": attribution.reason(),
                        "method": parts.method.as_str(),
                        "path": parts.uri.path(),
                    }));
                    if let Err(e) = state.tenants.append_failure(attribution, event).await {
                        // Refusing is still right; the missing event is logged.
                        tracing::error!(error = %e, "could not audit an authentication failure");
                    }
                }
                Err(match err.failure {
                    AuthFailure::Missing | AuthFailure::Invalid(_) => ApiError::Unauthenticated,
                    AuthFailure::Suspended => ApiError::TenantSuspended,
                    AuthFailure::TenantMismatch => ApiError::TenantMismatch,
                    AuthFailure::Unavailable => ApiError::Unavailable,
                })
            }
        }
    }
}

/// An authenticated operator-plane request.
pub struct OperatorCtx(pub OperatorScope);

impl FromRequestParts<AppState> for OperatorCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(parts);
        let token = bearer(parts).ok().flatten();
        match state.operator.verify(token, &rid) {
            Some(scope) => Ok(OperatorCtx(scope)),
            None => {
                state.metrics.auth_failure("operator_token");
                tracing::info!("operator authentication refused");
                Err(ApiError::Unauthenticated)
            }
        }
    }
}
