//! The registry of stable error codes: every `code` a client can see, in an
//! HTTP answer (problem+json or the OpenAI-compatible shape), a run's
//! `error`, or a tool result the model gets, declared once with its HTTP
//! status, its title and the section of `docs/errors.md` that documents it.
//!
//! The codes are contract: the error types of the layers above take their
//! code, status and title from here rather than from string literals, and a
//! test compares this table with `docs/errors.md` both ways, so the two
//! cannot drift apart.

/// One stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// The machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// The HTTP status an answer with this code has; `None` for a code only
    /// a run's `error`, a tool result or a stream's error event carries.
    pub status: Option<u16>,
    /// The problem's short summary (problem+json `title`): the same for
    /// every occurrence of the code, as RFC 9457 asks.
    pub title: &'static str,
    /// The anchor of the `docs/errors.md` section that documents the code.
    pub anchor: &'static str,
}

impl ErrorCode {
    /// The problem+json `type` of an answer with this code.
    pub fn problem_type(&self) -> String {
        format!("urn:bulkhead:problem:{}", self.code)
    }

    /// Where the code is documented, relative to the repository root.
    pub fn doc_link(&self) -> String {
        format!("docs/errors.md#{}", self.anchor)
    }

    /// The table's entry for `code`, if it has one.
    pub fn find(code: &str) -> Option<&'static ErrorCode> {
        ALL.iter().find(|c| c.code == code)
    }
}

/// `docs/errors.md` `# Errors`: the problem+json answers.
const PROBLEMS: &str = "errors";
/// `docs/errors.md` `## The OpenAI-compatible paths`.
const OPENAI: &str = "the-openai-compatible-paths";
/// `docs/errors.md` `## Runs that end without an answer` (run errors and
/// tool results).
const RUNS: &str = "runs-that-end-without-an-answer";

const fn http(
    code: &'static str,
    status: u16,
    title: &'static str,
    anchor: &'static str,
) -> ErrorCode {
    ErrorCode {
        code,
        status: Some(status),
        title,
        anchor,
    }
}

const fn no_status(code: &'static str, title: &'static str, anchor: &'static str) -> ErrorCode {
    ErrorCode {
        code,
        status: None,
        title,
        anchor,
    }
}

// The titles of the 409 state codes and of the knowledge codes are the
// ones the API served before this table existed ("Conflict", "Knowledge
// request refused"); they are kept so that no answer changes.

/// Malformed JSON, wrong types, unknown fields in a body.
pub const INVALID_BODY: ErrorCode = http("invalid_body", 400, "Invalid request body", PROBLEMS);
/// A bad query or path parameter.
pub const INVALID_PARAMETER: ErrorCode =
    http("invalid_parameter", 400, "Invalid parameter", PROBLEMS);
/// The body parsed but a value is unacceptable.
pub const VALIDATION_FAILED: ErrorCode =
    http("validation_failed", 400, "Validation failed", PROBLEMS);
/// No valid credential.
pub const UNAUTHENTICATED: ErrorCode = http("unauthenticated", 401, "Unauthenticated", PROBLEMS);
/// Valid credential, suspended tenant (also a cancelled run's error).
pub const TENANT_SUSPENDED: ErrorCode = http("tenant_suspended", 403, "Tenant suspended", PROBLEMS);
/// `X-Tenant-ID` differs from the credential's tenant.
pub const TENANT_MISMATCH: ErrorCode = http("tenant_mismatch", 403, "Tenant mismatch", PROBLEMS);
/// The tenant's policies do not allow the principal this action.
pub const FORBIDDEN: ErrorCode = http("forbidden", 403, "Forbidden", PROBLEMS);
/// Policy text that does not parse or validate.
pub const INVALID_POLICY: ErrorCode = http("invalid_policy", 400, "Invalid policy", PROBLEMS);
/// No such resource, or another tenant's.
pub const NOT_FOUND: ErrorCode = http("not_found", 404, "Not found", PROBLEMS);
/// The path exists, the method does not.
pub const METHOD_NOT_ALLOWED: ErrorCode =
    http("method_not_allowed", 405, "Method not allowed", PROBLEMS);
/// The resource already exists, or the key provider cannot do this.
pub const CONFLICT: ErrorCode = http("conflict", 409, "Conflict", PROBLEMS);
/// A body over `server.max_body_bytes`.
pub const PAYLOAD_TOO_LARGE: ErrorCode =
    http("payload_too_large", 413, "Payload too large", PROBLEMS);
/// A body that is not JSON.
pub const UNSUPPORTED_MEDIA_TYPE: ErrorCode = http(
    "unsupported_media_type",
    415,
    "Unsupported media type",
    PROBLEMS,
);
/// The action would take the tenant's data out of its region.
pub const RESIDENCY_VIOLATION: ErrorCode =
    http("residency_violation", 403, "Residency violation", PROBLEMS);
/// `"isolation": "dedicated"`, which this build cannot provide.
pub const ISOLATION_UNAVAILABLE: ErrorCode =
    http("isolation_unavailable", 409, "Conflict", PROBLEMS);
/// The tenant disabled this agent.
pub const AGENT_DISABLED: ErrorCode = http("agent_disabled", 409, "Agent disabled", PROBLEMS);
/// Cancelling a run that has already ended.
pub const RUN_FINISHED: ErrorCode = http("run_finished", 409, "Run already ended", PROBLEMS);
/// Deciding an approval request that is no longer pending.
pub const APPROVAL_DECIDED: ErrorCode = http("approval_decided", 409, "Conflict", PROBLEMS);
/// A decision for other arguments than the request's (also a tool result).
pub const APPROVAL_MISMATCH: ErrorCode = http("approval_mismatch", 409, "Conflict", PROBLEMS);
/// Deleting a run (or thread) with a run in progress.
pub const RUN_IN_PROGRESS: ErrorCode = http("run_in_progress", 409, "Conflict", PROBLEMS);
/// Starting a run on a thread whose run awaits approval.
pub const THREAD_PAUSED: ErrorCode = http("thread_paused", 409, "Conflict", PROBLEMS);
/// The agent's template cannot be rendered with the tenant's settings.
pub const PROMPT_ERROR: ErrorCode = http("prompt_error", 422, "Prompt error", PROBLEMS);
/// Knowledge: an empty document.
pub const EMPTY_DOCUMENT: ErrorCode =
    http("empty_document", 400, "Knowledge request refused", PROBLEMS);
/// Knowledge: a collection or external id outside its grammar.
pub const INVALID_NAME: ErrorCode =
    http("invalid_name", 400, "Knowledge request refused", PROBLEMS);
/// Knowledge: metadata that is not an object of scalars.
pub const INVALID_METADATA: ErrorCode = http(
    "invalid_metadata",
    400,
    "Knowledge request refused",
    PROBLEMS,
);
/// Knowledge: a search filter the language does not have.
pub const INVALID_FILTER: ErrorCode =
    http("invalid_filter", 400, "Knowledge request refused", PROBLEMS);
/// Knowledge: a document over 2 MiB.
pub const DOCUMENT_TOO_LARGE: ErrorCode = http(
    "document_too_large",
    413,
    "Knowledge request refused",
    PROBLEMS,
);
/// Knowledge: the document would take the tenant over a storage quota.
pub const STORAGE_QUOTA_EXCEEDED: ErrorCode = http(
    "storage_quota_exceeded",
    403,
    "Knowledge request refused",
    PROBLEMS,
);
/// Over a per-minute limit (also the OpenAI shape and a tool result).
pub const RATE_LIMITED: ErrorCode = http("rate_limited", 429, "Rate limited", PROBLEMS);
/// Starting a run with `concurrent_runs` already in progress.
pub const CONCURRENCY_LIMITED: ErrorCode = http(
    "concurrency_limited",
    429,
    "Too many concurrent runs",
    PROBLEMS,
);
/// The call could take the tenant over its budget.
pub const BUDGET_EXCEEDED: ErrorCode = http("budget_exceeded", 429, "Budget exceeded", PROBLEMS);
/// The limit counters cannot be reached.
pub const LIMITS_UNAVAILABLE: ErrorCode =
    http("limits_unavailable", 503, "Limits unavailable", PROBLEMS);
/// Knowledge: the embedding provider failed.
pub const EMBEDDING_FAILED: ErrorCode = http(
    "embedding_failed",
    502,
    "Knowledge request refused",
    PROBLEMS,
);
/// A bug or an unexpected failure.
pub const INTERNAL: ErrorCode = http("internal", 500, "Internal error", PROBLEMS);
/// A dependency (the store) failed.
pub const UNAVAILABLE: ErrorCode = http("unavailable", 503, "Service unavailable", PROBLEMS);
/// The request exceeded `server.request_timeout_s` (also a run's and a
/// tool's timeout).
pub const TIMEOUT: ErrorCode = http("timeout", 504, "Timeout", PROBLEMS);

/// OpenAI shape: any authentication failure.
pub const INVALID_API_KEY: ErrorCode = http("invalid_api_key", 401, "Invalid API key", OPENAI);
/// OpenAI shape: a malformed chat request.
pub const INVALID_REQUEST: ErrorCode = http("invalid_request", 400, "Invalid request", OPENAI);
/// OpenAI shape: a chat request body over 16 MiB.
pub const REQUEST_TOO_LARGE: ErrorCode =
    http("request_too_large", 413, "Request too large", OPENAI);
/// OpenAI shape: unknown model, or one this tenant may not use.
pub const MODEL_NOT_FOUND: ErrorCode = http("model_not_found", 404, "Model not found", OPENAI);
/// OpenAI shape: no stored response of this id in the tenant's partition
/// (another tenant's answers the same).
pub const RESPONSE_NOT_FOUND: ErrorCode =
    http("response_not_found", 404, "Response not found", OPENAI);
/// OpenAI shape: no endpoint at this path under `/v1`.
pub const UNKNOWN_URL: ErrorCode = http("unknown_url", 404, "Unknown URL", OPENAI);
/// The tenant has no usable credential for the connection (also a tool
/// result).
pub const MISSING_CREDENTIAL: ErrorCode =
    http("missing_credential", 400, "Missing credential", OPENAI);
/// The provider kept answering 429.
pub const RATE_LIMIT_EXCEEDED: ErrorCode =
    http("rate_limit_exceeded", 429, "Provider rate limited", OPENAI);
/// The provider did not answer within `timeout_s`.
pub const UPSTREAM_TIMEOUT: ErrorCode = http("upstream_timeout", 504, "Upstream timeout", OPENAI);
/// The provider failed.
pub const UPSTREAM_ERROR: ErrorCode = http("upstream_error", 502, "Upstream error", OPENAI);
/// The provider's answer passed its `max_response_bytes`.
pub const UPSTREAM_TOO_LARGE: ErrorCode = http(
    "upstream_too_large",
    502,
    "Upstream answer too large",
    OPENAI,
);
/// The request carried another tenant's canary.
pub const CROSS_TENANT_LEAK: ErrorCode =
    http("cross_tenant_leak", 403, "Cross-tenant leak", OPENAI);
/// A stream the provider ended early (an event in a stream that began).
pub const UPSTREAM_STREAM_CUT: ErrorCode = no_status("upstream_stream_cut", "Stream cut", OPENAI);

/// Run: still asking for tools after `max_steps` model calls.
pub const STEP_LIMIT: ErrorCode = no_status("step_limit", "Step limit", RUNS);
/// Run: over `max_tokens`.
pub const TOKEN_LIMIT: ErrorCode = no_status("token_limit", "Token limit", RUNS);
/// Run: cancelled.
pub const CANCELLED: ErrorCode = no_status("cancelled", "Cancelled", RUNS);
/// Run: the tenant was deleted while it ran.
pub const TENANT_DELETED: ErrorCode = no_status("tenant_deleted", "Tenant deleted", RUNS);
/// Run: prompt and input alone exceed `context_tokens`.
pub const CONTEXT_LIMIT: ErrorCode = no_status("context_limit", "Context limit", RUNS);
/// Run: the server stopped while it ran.
pub const INTERRUPTED: ErrorCode = no_status("interrupted", "Interrupted", RUNS);
/// Run: the prompt held text owned by another tenant.
pub const FOREIGN_FRAGMENT: ErrorCode = no_status("foreign_fragment", "Foreign fragment", RUNS);
/// Run: an approver denied a tool call.
pub const APPROVAL_DENIED: ErrorCode = no_status("approval_denied", "Approval denied", RUNS);
/// Run: nobody decided a tool call before `[approvals] ttl_s`.
pub const APPROVAL_EXPIRED: ErrorCode = no_status("approval_expired", "Approval expired", RUNS);
/// Tool result: the model named a tool the agent does not have.
pub const UNKNOWN_TOOL: ErrorCode = no_status("unknown_tool", "Unknown tool", RUNS);
/// Tool result: the arguments do not fit the tool.
pub const INVALID_ARGUMENTS: ErrorCode = no_status("invalid_arguments", "Invalid arguments", RUNS);
/// Tool result: the request's `host:port` is not allowed for the tool.
pub const HOST_NOT_ALLOWED: ErrorCode = no_status("host_not_allowed", "Host not allowed", RUNS);
/// Tool result: the egress guard refused the destination.
pub const EGRESS_REFUSED: ErrorCode = no_status("egress_refused", "Egress refused", RUNS);
/// Tool result: the tool's upstream answered with a failure.
pub const UPSTREAM: ErrorCode = no_status("upstream", "Upstream failure", RUNS);
/// Tool result: the answer passed the tool's `max_response_bytes`.
pub const RESPONSE_TOO_LARGE: ErrorCode =
    no_status("response_too_large", "Response too large", RUNS);
/// Tool result: the request could not be made.
pub const REQUEST: ErrorCode = no_status("request", "Request failed", RUNS);
/// Tool result: the tool's configuration cannot serve the call.
pub const TOOL_CONFIG: ErrorCode = no_status("tool_config", "Tool misconfigured", RUNS);
/// Tool result: more calls than the agent's limits allow.
pub const TOOL_CALL_LIMIT: ErrorCode = no_status("tool_call_limit", "Tool call limit", RUNS);
/// Tool result: the tenant's policies forbid this call.
pub const POLICY_DENIED: ErrorCode = no_status("policy_denied", "Policy denied", RUNS);

/// Every code, each once.
pub const ALL: &[ErrorCode] = &[
    INVALID_BODY,
    INVALID_PARAMETER,
    VALIDATION_FAILED,
    UNAUTHENTICATED,
    TENANT_SUSPENDED,
    TENANT_MISMATCH,
    FORBIDDEN,
    INVALID_POLICY,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    CONFLICT,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    RESIDENCY_VIOLATION,
    ISOLATION_UNAVAILABLE,
    AGENT_DISABLED,
    RUN_FINISHED,
    APPROVAL_DECIDED,
    APPROVAL_MISMATCH,
    RUN_IN_PROGRESS,
    THREAD_PAUSED,
    PROMPT_ERROR,
    EMPTY_DOCUMENT,
    INVALID_NAME,
    INVALID_METADATA,
    INVALID_FILTER,
    DOCUMENT_TOO_LARGE,
    STORAGE_QUOTA_EXCEEDED,
    RATE_LIMITED,
    CONCURRENCY_LIMITED,
    BUDGET_EXCEEDED,
    LIMITS_UNAVAILABLE,
    EMBEDDING_FAILED,
    INTERNAL,
    UNAVAILABLE,
    TIMEOUT,
    INVALID_API_KEY,
    INVALID_REQUEST,
    REQUEST_TOO_LARGE,
    MODEL_NOT_FOUND,
    RESPONSE_NOT_FOUND,
    UNKNOWN_URL,
    MISSING_CREDENTIAL,
    RATE_LIMIT_EXCEEDED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_ERROR,
    UPSTREAM_TOO_LARGE,
    CROSS_TENANT_LEAK,
    UPSTREAM_STREAM_CUT,
    STEP_LIMIT,
    TOKEN_LIMIT,
    CANCELLED,
    TENANT_DELETED,
    CONTEXT_LIMIT,
    INTERRUPTED,
    FOREIGN_FRAGMENT,
    APPROVAL_DENIED,
    APPROVAL_EXPIRED,
    UNKNOWN_TOOL,
    INVALID_ARGUMENTS,
    HOST_NOT_ALLOWED,
    EGRESS_REFUSED,
    UPSTREAM,
    RESPONSE_TOO_LARGE,
    REQUEST,
    TOOL_CONFIG,
    TOOL_CALL_LIMIT,
    POLICY_DENIED,
];

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const DOC: &str = include_str!("../../../docs/errors.md");

    /// A heading's GitHub anchor: lower case, spaces as `-`, punctuation
    /// other than `-` and `_` dropped.
    fn slug(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect()
    }

    /// One code as a table row of `docs/errors.md` documents it.
    #[derive(Debug)]
    struct Documented {
        anchor: String,
        /// `None` when the table has no status column; `Some(None)` for a
        /// row whose status is `—` (no HTTP answer).
        status: Option<Option<u16>>,
    }

    /// Every code in the first column of every table, by section.
    fn documented() -> BTreeMap<String, Vec<Documented>> {
        let mut out: BTreeMap<String, Vec<Documented>> = BTreeMap::new();
        let mut anchor = String::new();
        let mut header: Option<Vec<String>> = None;
        for line in DOC.lines() {
            if let Some(h) = line.strip_prefix("# ").or_else(|| line.strip_prefix("## ")) {
                anchor = slug(h);
                continue;
            }
            let Some(row) = line.strip_prefix('|') else {
                header = None;
                continue;
            };
            let cells: Vec<String> = row.split('|').map(|c| c.trim().to_owned()).collect();
            let Some(columns) = &header else {
                header = Some(cells);
                continue;
            };
            if cells[0].starts_with("---") {
                continue;
            }
            let status_col = columns.iter().position(|c| c == "status");
            let status = status_col.map(|i| cells[i].parse::<u16>().ok());
            if let Some(i) = status_col {
                assert!(
                    status == Some(None) && cells[i] == "—" || status.is_some_and(|s| s.is_some()),
                    "docs/errors.md: {line:?} has status {:?}",
                    cells[i]
                );
            }
            for code in cells[0].split('`').skip(1).step_by(2) {
                out.entry(code.to_owned()).or_default().push(Documented {
                    anchor: anchor.clone(),
                    status,
                });
            }
        }
        out
    }

    #[test]
    fn every_code_is_declared_once() {
        let mut seen = BTreeSet::new();
        for c in ALL {
            assert!(seen.insert(c.code), "{} is in ALL twice", c.code);
            assert_eq!(ErrorCode::find(c.code), Some(c));
        }
        assert_eq!(ErrorCode::find("no_such_code"), None);
    }

    /// The table and `docs/errors.md` agree both ways: every code is
    /// documented in the section its anchor names, with its status
    /// wherever a table has a status column, and every documented code is
    /// in the table.
    #[test]
    fn the_table_and_docs_errors_md_agree() {
        let docs = documented();
        let anchors: BTreeSet<String> = DOC
            .lines()
            .filter_map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix("## ")))
            .map(slug)
            .collect();
        for c in ALL {
            assert!(
                anchors.contains(c.anchor),
                "{}: no section #{}",
                c.code,
                c.anchor
            );
            let Some(rows) = docs.get(c.code) else {
                panic!("{} is not documented in docs/errors.md", c.code);
            };
            assert!(
                rows.iter().any(|r| r.anchor == c.anchor),
                "{} is not documented in #{} (only in {:?})",
                c.code,
                c.anchor,
                rows.iter().map(|r| &r.anchor).collect::<Vec<_>>()
            );
            for r in rows {
                if let Some(status) = r.status {
                    assert_eq!(
                        status, c.status,
                        "{}: docs/errors.md #{} says status {status:?}",
                        c.code, r.anchor
                    );
                }
            }
            if c.status.is_some() {
                assert!(
                    rows.iter().any(|r| r.status.is_some()),
                    "{} has a status but no table with a status column lists it",
                    c.code
                );
            }
        }
        for code in docs.keys() {
            assert!(
                ErrorCode::find(code).is_some(),
                "docs/errors.md documents {code}, which is not in codes::ALL"
            );
        }
    }

    /// The problem type the server answers with is the one the example in
    /// `docs/errors.md` shows.
    #[test]
    fn the_problem_type_is_the_documented_urn() {
        let example = DOC
            .lines()
            .find_map(|l| l.trim().strip_prefix("\"type\": \""))
            .and_then(|t| t.strip_suffix("\","))
            .expect("docs/errors.md shows a problem body with a type");
        let code = DOC
            .lines()
            .find_map(|l| l.trim().strip_prefix("\"code\": \""))
            .and_then(|t| t.strip_suffix("\","))
            .expect("docs/errors.md shows a problem body with a code");
        let entry = ErrorCode::find(code).expect("the example's code is in the table");
        assert_eq!(entry.problem_type(), example);
        assert!(
            DOC.contains(&format!("\"title\": \"{}\",", entry.title)),
            "the example's title is the table's"
        );
        assert_eq!(NOT_FOUND.problem_type(), "urn:bulkhead:problem:not_found");
        assert_eq!(
            RUN_FINISHED.doc_link(),
            "docs/errors.md#errors",
            "an anchor links to its section"
        );
    }
}
