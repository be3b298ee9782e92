//! Extractors: JSON bodies, path and query parameters, and the two
//! authentication extractors. Every rejection becomes an [`ApiError`], so
//! bad input always answers in the problem format.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use bulkhead_core::audit::AuditAction;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bulkhead_auth::{AuthFailure, OperatorScope, TenantScope};
use bulkhead_core::RequestId;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::auth_failures::Verdict;
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
        let peer = peer_ip(parts);
        let token = match bearer(parts) {
            Ok(t) => t,
            Err(()) => {
                state.metrics.auth_failure("malformed_authorization");
                return Err(throttled_or(
                    state.auth_failures.failed(None, peer, None).0,
                    ApiError::Unauthenticated,
                ));
            }
        };
        // A credential that failed too often this minute is not looked up.
        if let Some(retry) = state.auth_failures.blocked(token) {
            state.metrics.auth_failure("throttled");
            return Err(ApiError::AuthThrottled(retry));
        }
        match state.auth.authenticate(token, tenant_header, &rid).await {
            Ok(scope) => {
                bulkhead_telemetry::record_tenant(&scope);
                state.metrics.tenant_request(scope.tenant().as_str());
                if let Some(slot) = parts.extensions.get::<crate::request::TenantSlot>() {
                    let _ = slot.0.set(scope.clone());
                }
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
                // A store outage is not the caller's failure.
                let (verdict, audit_now) = if matches!(err.failure, AuthFailure::Unavailable) {
                    (Verdict::Refuse, false)
                } else {
                    state
                        .auth_failures
                        .failed(token, peer, err.attribution.as_ref())
                };
                if let Some(attribution) = &err.attribution {
                    tracing::Span::current().record("tenant.id", attribution.tenant().as_str());
                    if matches!(err.failure, AuthFailure::TenantMismatch) {
                        state.alerts.header_mismatch(attribution.tenant());
                    }
                    if audit_now {
                        let event = NewAuditEvent::new(
                            AuditAction::AuthFailure,
                            format!("tenant:{}", attribution.tenant()),
                            Outcome::Denied,
                            rid.clone(),
                        )
                        .with_details(json!({
                            "reason": attribution.reason(),
                            "method": parts.method.as_str(),
                            "path": parts.uri.path(),
                            "count": 1,
                        }));
                        if let Err(e) = state.tenants.append_failure(attribution, event).await {
                            // Refusing is still right; the missing event is logged.
                            tracing::error!(error = %e, "could not audit an authentication failure");
                        }
                    }
                }
                Err(throttled_or(
                    verdict,
                    match err.failure {
                        AuthFailure::Missing | AuthFailure::Invalid(_) => ApiError::Unauthenticated,
                        AuthFailure::Suspended => ApiError::TenantSuspended,
                        AuthFailure::TenantMismatch => ApiError::TenantMismatch,
                        AuthFailure::Unavailable => ApiError::Unavailable,
                    },
                ))
            }
        }
    }
}

/// The peer's address, when the server recorded it for the connection.
fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

fn throttled_or(verdict: Verdict, otherwise: ApiError) -> ApiError {
    match verdict {
        Verdict::Throttle(retry) => ApiError::AuthThrottled(retry),
        Verdict::Refuse => otherwise,
    }
}

/// Writes the aggregated `auth.failure` events that are due (`all`: also
/// the current window's, at shutdown); returns how many were written.
pub async fn flush_auth_failures(state: &AppState, all: bool) -> u64 {
    let mut written = 0;
    for agg in state.auth_failures.take_due(all) {
        let a = &agg.attribution;
        let event = NewAuditEvent::new(
            AuditAction::AuthFailure,
            format!("tenant:{}", a.tenant()),
            Outcome::Denied,
            a.request_id().clone(),
        )
        .with_details(json!({
            "reason": a.reason(),
            "count": agg.count,
            "aggregated": true,
            "window_start": agg.window_start,
            "window_s": crate::auth_failures::WINDOW_S,
        }));
        match state.tenants.append_failure(a, event).await {
            Ok(_) => written += 1,
            Err(e) => {
                tracing::error!(error = %e, "could not audit aggregated authentication failures")
            }
        }
    }
    written
}

/// An authenticated operator-plane request.
pub struct OperatorCtx(pub OperatorScope);

impl FromRequestParts<AppState> for OperatorCtx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(parts);
        let token = bearer(parts).ok().flatten();
        if let Some(retry) = state.auth_failures.blocked(token) {
            state.metrics.auth_failure("throttled");
            return Err(ApiError::AuthThrottled(retry));
        }
        match state.operator.verify(token, &rid) {
            Some(scope) => Ok(OperatorCtx(scope)),
            None => {
                state.metrics.auth_failure("operator_token");
                tracing::info!("operator authentication refused");
                let (verdict, _) = state.auth_failures.failed(token, peer_ip(parts), None);
                Err(throttled_or(verdict, ApiError::Unauthenticated))
            }
        }
    }
}
