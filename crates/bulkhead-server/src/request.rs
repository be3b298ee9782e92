//! Per-request plumbing: request ids, the tracing span, timeouts and
//! metrics, applied to every route by one middleware.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Deadline, RequestId};
use tracing::Instrument;

use crate::error::ApiError;
use crate::state::AppState;

/// Header carrying the request id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// The id of the request the current task serves, if any.
pub fn current_request_id() -> Option<RequestId> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The problem code of an error response (`ApiError` and the OpenAI
/// errors put it on the response), for the per-tenant metrics.
#[derive(Debug, Clone, Copy)]
pub struct ProblemCode(pub &'static str);

/// Where the tenant extractor leaves the request's scope, so that the
/// middleware can count the answer for the tenant (and its alert rules).
#[derive(Debug, Clone, Default)]
pub struct TenantSlot(pub std::sync::Arc<std::sync::OnceLock<bulkhead_auth::TenantScope>>);

/// When the request must be answered: `[server] request_timeout_s` from
/// its arrival.
#[derive(Debug, Clone, Copy)]
pub struct RequestDeadline(pub Deadline);

/// Assigns the request id, opens the request span (joined to the
/// caller's `traceparent`, with a `tenant.id` that authentication fills in), enforces the timeout
/// and records metrics.
pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestId::parse(v).ok())
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(request_id.clone());
    let tenant = TenantSlot::default();
    req.extensions_mut().insert(tenant.clone());
    let method = req.method().clone();
    // Only known methods by name: a client-chosen method of any length
    // must not reach the log verbatim.
    let method_label = crate::metrics::method_label(method.as_str());
    let span = bulkhead_telemetry::request_span(method_label, request_id.as_str());
    crate::telemetry::accept(&span, req.headers());
    let started = Instant::now();
    let timeout_s = state.settings.request_timeout_s;
    // The request's deadline, for handlers that pass it down to the calls
    // they make (a chat completion's provider calls and retries).
    req.extensions_mut().insert(RequestDeadline(Deadline::at(
        started + Duration::from_secs(timeout_s),
    )));
    // Model calls (chat, responses, embeddings) are bounded by this
    // deadline passed down to their provider calls instead: a stream that
    // has started must not be cut by the generic limit.
    let path = req.uri().path();
    // Runs are bounded by their agent's own `timeout_s`.
    let bounded = path != crate::routes::openai::CHAT_PATH
        && path != crate::routes::openai::RESPONSES_PATH
        && path != crate::routes::openai::EMBEDDINGS_PATH
        && !(path.starts_with("/v1/agents/")
            && path.ends_with(crate::routes::agents::RUNS_PATH_SUFFIX));
    let scoped_id = request_id.clone();
    let fut = async move {
        let mut res = if bounded {
            match tokio::time::timeout(Duration::from_secs(timeout_s), next.run(req)).await {
                Ok(res) => res,
                Err(_) => ApiError::Timeout(timeout_s).into_response(),
            }
        } else {
            next.run(req).await
        };
        // The route template is known only after routing; the inner
        // middleware hands it back on the response.
        let route = res
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| crate::metrics::UNMATCHED.to_owned());
        let status = res.status().as_u16();
        let span = tracing::Span::current();
        span.record("http.route", route.as_str());
        // The exported span is named `<METHOD> <route>` from these two
        // attributes (`telemetry::otlp::shape`): it cannot be renamed here
        // once it has children.
        span.record("http.response.status_code", i64::from(status));
        if status >= 500 {
            span.record("otel.status_code", "error");
            span.record("error.type", status.to_string().as_str());
        }
        let elapsed = started.elapsed();
        tracing::info!(
            method = method_label,
            route = route.as_str(),
            status,
            elapsed_us = elapsed.as_micros() as u64,
            "request finished"
        );
        state
            .metrics
            .observe_request(method.as_str(), &route, status, elapsed);
        if let Some(scope) = tenant.0.get() {
            let code = match res.extensions().get::<ProblemCode>() {
                Some(c) => c.0,
                None if status < 400 => "ok",
                None => crate::metrics::OTHER,
            };
            state.alerts.request(scope, status, code);
        }
        if let Ok(v) = HeaderValue::from_str(request_id.as_str()) {
            res.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        res
    };
    REQUEST_ID.scope(scoped_id, fut.instrument(span)).await
}

/// Copies the matched route template onto the response for the outer
/// middleware's span and metrics.
pub async fn expose_matched_path(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut res = next.run(req).await;
    if let Some(m) = matched {
        res.extensions_mut().insert(m);
    }
    res
}

/// Answers paths no route matches, in the shape of the plane the path is
/// on: under `/v1`, OpenAI's (`unknown_url`), as OpenAI answers, unless
/// the path's first segment is one of `problem_segments` (the tenant
/// plane's own resources, which answer problems); elsewhere a problem.
pub fn not_found(req: &Request, problem_segments: &[String]) -> Response {
    let path = req.uri().path();
    let openai = path == "/v1"
        || path.strip_prefix("/v1/").is_some_and(|rest| {
            let first = rest.split('/').next().unwrap_or_default();
            !problem_segments.iter().any(|s| s == first)
        });
    if openai {
        return crate::routes::openai::OpenAiError::unknown_url(req.method().as_str(), path)
            .into_response();
    }
    ApiError::NotFound.into_response()
}

/// Turns axum's bare 405 into an error body: OpenAI's shape on the
/// OpenAI-compatible paths, a problem elsewhere.
pub async fn method_not_allowed(req: Request, next: Next) -> Response {
    let openai = req
        .uri()
        .path()
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|first| crate::routes::openai::OPENAI_SEGMENTS.contains(&first));
    let method = req.method().clone();
    let res = next.run(req).await;
    if res.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED && !is_problem(&res) {
        if openai {
            return crate::routes::openai::OpenAiError::method_not_allowed(method.as_str())
                .into_response();
        }
        return ApiError::MethodNotAllowed.into_response();
    }
    res
}

fn is_problem(res: &Response) -> bool {
    res.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"))
}
