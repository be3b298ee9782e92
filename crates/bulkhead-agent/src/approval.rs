//! Approval requests: a tool call that needs a person's approval pauses
//! its run until an approver decides.
//!
//! A request binds the exact call: tool, connection (whose credential it
//! would use) and arguments, with the SHA-256 of the arguments' JSON
//! ([`arguments_hash`]). Its life is `pending` → `approved` | `denied` |
//! `expired`, each change a compare-and-set in the store, so two
//! concurrent decisions have exactly one outcome. The decision that
//! leaves no request of the run pending also moves the run from
//! `awaiting_approval` back to `running`, in the same transaction: only
//! that caller resumes it, so an approved call runs once.

use bulkhead_core::{ApprovalId, Role, RunId, Timestamp};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved: the call is made when the run resumes.
    Approved,
    /// Denied: the call is never made and the run ends.
    Denied,
    /// Nobody decided in time (or the run was cancelled): as denied.
    Expired,
}

impl ApprovalStatus {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            _ => return None,
        })
    }
}

/// One approval request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    /// Id.
    pub id: ApprovalId,
    /// State.
    pub status: ApprovalStatus,
    /// The paused run.
    pub run_id: RunId,
    /// The run's agent.
    pub agent: String,
    /// The tool the model asked for.
    pub tool: String,
    /// The model's id of the call (answered with the tool result).
    pub tool_call_id: String,
    /// The connection whose credential the call would use.
    pub connection: Option<String>,
    /// The exact arguments.
    pub arguments: Value,
    /// SHA-256 (hex) of the arguments' JSON ([`arguments_hash`]).
    pub arguments_hash: String,
    /// What the call does, for a person.
    pub summary: String,
    /// The principal who started the run.
    pub requested_by: String,
    /// That principal's roles (the resumed run acts with them).
    #[serde(skip)]
    pub requested_roles: Vec<Role>,
    /// The run's model call that asked for it (its step number): a run
    /// paused twice resumes with the latest round's requests only.
    #[serde(skip)]
    pub round: u32,
    /// When it was asked for.
    pub created_at: Timestamp,
    /// When it expires if nobody decides.
    pub expires_at: Timestamp,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<Timestamp>,
    /// The decider's comment.
    pub comment: Option<String>,
}

/// A person's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Make the call.
    Approve,
    /// Never make it; end the run.
    Deny,
}

impl Verdict {
    /// The status it leads to.
    pub fn status(self) -> ApprovalStatus {
        match self {
            Verdict::Approve => ApprovalStatus::Approved,
            Verdict::Deny => ApprovalStatus::Denied,
        }
    }
}

/// What a compare-and-set on a request did.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// This call changed it; `resume` when it was the run's last pending
    /// request and this call now owns the run's resumption.
    Changed {
        /// The request as it now stands.
        approval: Approval,
        /// Whether the caller must resume the run.
        resume: bool,
    },
    /// It was no longer pending (another decision won, or it expired).
    Unchanged(Approval),
}

/// Told of new approval requests (the tenant's approval webhook). Called
/// after the requests are stored, off the run's path.
#[async_trait::async_trait]
pub trait ApprovalNotifier: Send + Sync {
    /// A run paused with these requests.
    async fn requested(&self, scope: &bulkhead_auth::TenantScope, approvals: &[Approval]);
}

/// A notifier that tells nobody: for a server without an approval
/// webhook signing key (requests are only listed), and for tests and
/// embedding.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

#[async_trait::async_trait]
impl ApprovalNotifier for NoNotifier {
    async fn requested(&self, _scope: &bulkhead_auth::TenantScope, _approvals: &[Approval]) {}
}

/// SHA-256 (lowercase hex) of `arguments` serialised as compact JSON with
/// object keys in sorted order: what an approval is bound to.
pub fn arguments_hash(arguments: &Value) -> String {
    let mut text = String::new();
    canonical(arguments, &mut text);
    bulkhead_core::audit::hex(&Sha256::digest(text.as_bytes()))
}

/// Compact JSON with object keys sorted at every level (serde_json may
/// keep insertion order, depending on the features another crate turns on).
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Longest comment kept with a decision.
pub const MAX_COMMENT_CHARS: usize = 2_000;

/// A one-line description of a call for the person asked to approve it,
/// e.g. ``Agent `support` acting for tenant `acme` wants to call
/// `slack_post` (write, slack) with connection `slack`: channel="#ops", …``.
pub fn summary(
    agent: &str,
    tenant: &str,
    tool: &str,
    risk: &str,
    kind: &str,
    connection: Option<&str>,
    arguments: &Value,
) -> String {
    let mut out = format!(
        "Agent `{agent}` acting for tenant `{tenant}` wants to call `{tool}` ({risk}, {kind})"
    );
    if let Some(c) = connection {
        out.push_str(&format!(" with connection `{c}`"));
    }
    if let Some(map) = arguments.as_object().filter(|m| !m.is_empty()) {
        let parts: Vec<String> = map
            .iter()
            .map(|(k, v)| {
                let text = v.to_string();
                let short: String = text.chars().take(80).collect();
                if short.len() < text.len() {
                    format!("{k}={short}…")
                } else {
                    format!("{k}={short}")
                }
            })
            .collect();
        out.push_str(": ");
        out.push_str(&parts.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_does_not_depend_on_key_order() {
        let a: Value = serde_json::from_str(r##"{"text":"hi","channel":"#ops"}"##).unwrap();
        let b: Value = serde_json::from_str(r##"{"channel":"#ops","text":"hi"}"##).unwrap();
        assert_eq!(arguments_hash(&a), arguments_hash(&b));
        assert_ne!(
            arguments_hash(&a),
            arguments_hash(&json!({"channel": "#ops", "text": "hi!"}))
        );
        assert_eq!(arguments_hash(&a).len(), 64);
        // Nested objects too, and the form is compact sorted JSON.
        let nested: Value =
            serde_json::from_str(r#"{"b":{"y":1,"x":[{"d":1,"c":2}]},"a":"é"}"#).unwrap();
        let mut text = String::new();
        canonical(&nested, &mut text);
        assert_eq!(text, r#"{"a":"é","b":{"x":[{"c":2,"d":1}],"y":1}}"#);
    }

    #[test]
    fn the_summary_names_agent_tenant_tool_connection_and_arguments() {
        let s = summary(
            "support",
            "acme",
            "slack_post",
            "write",
            "slack",
            Some("slack"),
            &json!({"channel": "#incidents", "text": "x".repeat(200)}),
        );
        assert!(s.starts_with("Agent `support` acting for tenant `acme` wants to call `slack_post` (write, slack) with connection `slack`: channel=\"#incidents\", text=\"xxx"), "{s}");
        assert!(s.ends_with('…') && s.len() < 250, "{s}");
    }
}
