//! The vocabulary of bulkhead's traces, in one crate so that a rename of
//! the (still experimental) OpenTelemetry GenAI conventions is a one-file
//! change: every span's name, kind and attributes, and the hook through
//! which outbound requests carry the W3C `traceparent` of the span they
//! are made in.
//!
//! Spans are ordinary `tracing` spans with target [`TARGET`]; the server
//! turns them into OpenTelemetry spans when `[telemetry] otlp_endpoint` is
//! set (`bulkhead_server::telemetry`), and its log formatter reads
//! `tenant.id`, `request_id` and `trace_id` from them. Every span made
//! here carries `tenant.id`, taken from a [`TenantScope`], so a span of
//! work done for a tenant cannot be made without naming it. No span
//! carries prompt or completion text, or any secret.

use std::sync::OnceLock;

use bulkhead_auth::TenantScope;
use tracing::Span;
use tracing::field::Empty;

/// The target of every span made here: the log filter always enables it
/// (`bulkhead=warn` does not turn tracing off), and nothing else uses it.
pub const TARGET: &str = "bulkhead::span";

/// The agent and run a span's work belongs to.
#[derive(Debug, Clone, Copy)]
pub struct RunRef<'a> {
    /// The agent.
    pub agent: &'a str,
    /// The run id.
    pub run_id: &'a str,
}

/// `gen_ai.provider.name` of a provider's wire format.
pub fn provider_name(kind: &str) -> &'static str {
    match kind {
        "anthropic" => "anthropic",
        "azure-openai" => "azure.ai.openai",
        _ => "openai",
    }
}

/// The host of a base URL, for `server.address`.
pub fn server_address(base_url: &str) -> &str {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port
            .split_once(']')
            .map_or(host_port, |(h, _)| &h[1..]);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

/// The server span of one HTTP request. `tenant.id` is recorded once the
/// caller is authenticated ([`record_tenant`]); `route` and `status` when
/// known.
pub fn request_span(method: &'static str, request_id: &str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = Empty,
        http.response.status_code = Empty,
        request_id = request_id,
        tenant.id = Empty,
        trace_id = Empty,
        traceparent = Empty,
        error.type = Empty,
    )
}

/// Names a span for the export (`chat small`), only when spans are
/// exported: the name costs an allocation per span otherwise wasted.
fn name(span: &Span, name: impl FnOnce() -> String) {
    if exporting() {
        span.record("otel.name", name().as_str());
    }
}

/// Records the authenticated tenant on the current request span.
pub fn record_tenant(scope: &TenantScope) {
    Span::current().record("tenant.id", scope.tenant().as_str());
}

/// An agent run: `invoke_agent <agent>` (internal: the agent runs in
/// process). Its outcome goes on with [`record_outcome`].
pub fn run_span(scope: &TenantScope, run: RunRef<'_>, resumed: bool) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "invoke_agent",
        otel.name = Empty,
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = run.agent,
        gen_ai.conversation.id = Empty,
        tenant.id = scope.tenant().as_str(),
        request_id = scope.request_id().as_str(),
        bulkhead.agent = run.agent,
        bulkhead.run_id = run.run_id,
        bulkhead.run.resumed = resumed,
        bulkhead.run.status = Empty,
        error.type = Empty,
    );
    name(&span, || format!("invoke_agent {}", run.agent));
    span
}

/// What a model or embedding call is: for the span's attributes.
#[derive(Debug, Clone, Copy)]
pub struct ModelRef<'a> {
    /// `chat` or `embeddings`.
    pub operation: &'static str,
    /// The model name the caller asked for (`gen_ai.request.model`).
    pub model: &'a str,
    /// The provider's wire format (`openai`, `anthropic`, `azure-openai`).
    pub provider_kind: &'a str,
    /// The provider's configured name (`bulkhead.provider`).
    pub provider: &'a str,
    /// The provider's base URL (for `server.address`).
    pub base_url: &'a str,
    /// Whether the answer is streamed.
    pub stream: bool,
}

/// A model call (`chat <model>`) or embedding call (`embeddings
/// <model>`), client kind. Its answer and usage go on with
/// [`record_response`], [`record_usage`] and [`record_outcome`].
pub fn model_span(scope: &TenantScope, m: ModelRef<'_>, run: Option<RunRef<'_>>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "model_call",
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = m.operation,
        gen_ai.provider.name = provider_name(m.provider_kind),
        gen_ai.request.model = m.model,
        gen_ai.request.stream = m.stream,
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        server.address = server_address(m.base_url),
        tenant.id = scope.tenant().as_str(),
        request_id = scope.request_id().as_str(),
        bulkhead.agent = run.map(|r| r.agent),
        bulkhead.run_id = run.map(|r| r.run_id),
        bulkhead.provider = m.provider,
        bulkhead.cost_usd = Empty,
        bulkhead.status = Empty,
        error.type = Empty,
    );
    name(&span, || format!("{} {}", m.operation, m.model));
    span
}

/// The provider's answer on a model span: `gen_ai.response.id`,
/// `gen_ai.response.model` and the finish reasons (comma-separated here;
/// the exporter sends them as the string array the convention asks for).
pub fn record_response(span: &Span, id: Option<&str>, model: Option<&str>, finish: &[&str]) {
    if let Some(id) = id {
        span.record("gen_ai.response.id", id);
    }
    if let Some(model) = model {
        span.record("gen_ai.response.model", model);
    }
    if !finish.is_empty() {
        span.record("gen_ai.response.finish_reasons", finish.join(",").as_str());
    }
}

/// Tokens billed and cost on a model span.
pub fn record_usage(span: &Span, input: u64, output: u64, cost_usd: &str) {
    // As i64: the OpenTelemetry bridge exports integers from i64 fields.
    span.record(
        "gen_ai.usage.input_tokens",
        i64::try_from(input).unwrap_or(i64::MAX),
    );
    span.record(
        "gen_ai.usage.output_tokens",
        i64::try_from(output).unwrap_or(i64::MAX),
    );
    span.record("bulkhead.cost_usd", cost_usd);
}

/// How a span's work ended: `ok`, or the failure's code (also the span's
/// `error.type`, and its status `error`).
pub fn record_outcome(span: &Span, status: &str) {
    span.record("bulkhead.status", status);
    if status == "ok" || status == "completed" {
        span.record("otel.status_code", "ok");
    } else {
        span.record("error.type", status);
        span.record("otel.status_code", "error");
    }
}

/// One tool call: `execute_tool <tool>` (internal).
pub fn tool_span(scope: &TenantScope, run: RunRef<'_>, tool: &str, call_id: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "execute_tool",
        otel.name = Empty,
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool,
        gen_ai.tool.call.id = call_id,
        gen_ai.tool.type = "function",
        tenant.id = scope.tenant().as_str(),
        request_id = scope.request_id().as_str(),
        bulkhead.agent = run.agent,
        bulkhead.run_id = run.run_id,
        bulkhead.status = Empty,
        error.type = Empty,
    );
    name(&span, || format!("execute_tool {tool}"));
    span
}

/// A retrieval from the tenant's knowledge (`retrieval <collections>`,
/// internal: the index is in process).
pub fn retrieval_span(scope: &TenantScope, run: Option<RunRef<'_>>, collections: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "retrieval",
        otel.name = Empty,
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "retrieval",
        gen_ai.data_source.id = collections,
        tenant.id = scope.tenant().as_str(),
        request_id = scope.request_id().as_str(),
        bulkhead.agent = run.map(|r| r.agent),
        bulkhead.run_id = run.map(|r| r.run_id),
        bulkhead.retrieval.results = Empty,
        bulkhead.status = Empty,
        error.type = Empty,
    );
    name(&span, || format!("retrieval {collections}"));
    span
}

/// The number of passages a retrieval returned.
pub fn record_results(span: &Span, n: usize) {
    span.record(
        "bulkhead.retrieval.results",
        i64::try_from(n).unwrap_or(i64::MAX),
    );
}

/// A run's wait for a person's decision: opened when the approval is
/// requested and the run pauses (`bulkhead.approval.state` `requested`),
/// and again when the decision resumes it (`approved`, `denied`,
/// `expired`), with how long the wait was.
pub fn approval_span(
    scope: &TenantScope,
    run: RunRef<'_>,
    tool: &str,
    approval_id: &str,
    state: &str,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "approval",
        otel.name = Empty,
        otel.kind = "internal",
        gen_ai.tool.name = tool,
        tenant.id = scope.tenant().as_str(),
        request_id = scope.request_id().as_str(),
        bulkhead.agent = run.agent,
        bulkhead.run_id = run.run_id,
        bulkhead.approval.id = approval_id,
        bulkhead.approval.state = state,
        bulkhead.approval.wait_s = Empty,
    );
    name(&span, || format!("await_approval {tool}"));
    span
}

/// Work a background task does for one tenant (a retention sweep, an
/// approval expiry, a checkpoint): a root span of its own.
pub fn background_span(scope: &TenantScope, task: &'static str) -> Span {
    tracing::info_span!(
        target: TARGET,
        "background",
        otel.name = task,
        otel.kind = "internal",
        tenant.id = scope.tenant().as_str(),
        request_id = scope.request_id().as_str(),
    )
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says whether spans leave the process (set by the server's telemetry):
/// work done only to fill span attributes is skipped when they do not.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The string value of the first `"key":"..."` member in JSON text,
/// found without parsing (the sequence cannot occur inside a JSON string,
/// whose quotes are escaped); `None` if absent or escaped.
pub fn string_member<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let start = json.find(&pat)? + pat.len();
    let len = json[start..].find('"')?;
    let v = &json[start..start + len];
    (!v.contains('\\')).then_some(v)
}

/// Gives the `traceparent` header value of the current span (installed by
/// the server's telemetry).
pub type TraceparentSource = fn() -> Option<String>;

static TRACEPARENT: OnceLock<TraceparentSource> = OnceLock::new();

/// Installs the source of outbound `traceparent` headers, once per
/// process; later calls are ignored.
pub fn install_traceparent(source: TraceparentSource) {
    let _ = TRACEPARENT.set(source);
}

/// The W3C `traceparent` an outbound request made now should carry: that
/// of the span it is made in, or none without telemetry.
pub fn traceparent() -> Option<String> {
    TRACEPARENT.get().and_then(|f| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_is_the_host() {
        assert_eq!(
            server_address("https://api.openai.com/v1"),
            "api.openai.com"
        );
        assert_eq!(server_address("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(server_address("http://[::1]:9/x"), "::1");
        assert_eq!(server_address("http://u:p@h.example:1/"), "h.example");
        assert_eq!(provider_name("azure-openai"), "azure.ai.openai");
        assert_eq!(provider_name("anthropic"), "anthropic");
        let chunk = r#"{"id":"c1","model":"gpt-x","choices":[{"finish_reason":"stop"}]}"#;
        assert_eq!(string_member(chunk, "id"), Some("c1"));
        assert_eq!(string_member(chunk, "finish_reason"), Some("stop"));
        assert_eq!(
            string_member(r#"{"finish_reason":null}"#, "finish_reason"),
            None
        );
    }
}
