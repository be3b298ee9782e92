//! Pure planning of a model answer's tool calls: which of them are over
//! the agent's fan-out limits, and, for each of the others, whether it is
//! made (and how), refused, or needs a person's approval. Nothing here
//! does I/O: the tenant's policies come in already compiled, so every
//! rule can be tested without a store, a vault or a model.

use bulkhead_auth::TenantScope;
use bulkhead_core::codes::{self, ErrorCode};
use bulkhead_core::{ApprovalId, Principal};
use bulkhead_policy::{PolicyEngine, TenantPolicies};
use bulkhead_tools::{Tool, ToolBox};
use bulkhead_vault::credential::ConnectionName;
use serde_json::Value;

use super::retrieval::{SEARCH_TOOL, search_tool_definition};
use crate::agent::{Agent, AgentSettings};

/// A tool call the model asked for that passed every check.
pub(super) struct Planned<'t> {
    pub(super) id: String,
    /// The tool's name (as the model called it).
    pub(super) name: String,
    pub(super) target: Target<'t>,
    pub(super) args: Value,
    pub(super) connection: Option<ConnectionName>,
    /// Made only once a person approves it.
    pub(super) needs_approval: bool,
    /// The approval it was made under.
    pub(super) approval: Option<ApprovalId>,
}

/// What a checked call runs.
pub(super) enum Target<'t> {
    /// A configured tool.
    Tool(&'t Tool),
    /// The built-in `search_knowledge` over the agent's collections.
    Search,
}

/// A tool call refused before anything was sent.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) id: String,
    pub(super) name: String,
    /// Its code, from the table: the model sees it as the tool result's
    /// `error`, the step and the audit event as `code`.
    pub(super) code: &'static ErrorCode,
    pub(super) message: String,
    /// The approval request it answers, if any.
    pub(super) approval: Option<ApprovalId>,
}

/// Everything a call is checked against, as of this round.
pub(super) struct Rules<'r, 't> {
    pub(super) agent: &'r Agent,
    pub(super) settings: &'r AgentSettings,
    pub(super) tools: &'t ToolBox,
    pub(super) scope: &'r TenantScope,
    /// Who the run acts for (its starter, also when an approver resumed it).
    pub(super) principal: &'r Principal,
    pub(super) engine: &'r PolicyEngine,
    /// The tenant's policies, or why they could not be read (every call
    /// is then refused: a store failure must not lift a forbid).
    pub(super) policies: &'r Result<TenantPolicies, String>,
}

/// A round's calls once the fan-out limits are applied.
#[derive(Debug)]
pub(super) struct Round {
    /// The calls within the limits, to check and make.
    pub(super) calls: Vec<Value>,
    /// What the assistant message keeps: `calls`, and the first call over
    /// the limits (which carries their refusal).
    pub(super) in_message: Vec<Value>,
    /// The refusal of the calls over the limits.
    pub(super) excess: Option<Refused>,
}

/// The call's id (the model's, else one made from its position).
fn call_id(call: &Value, index: usize) -> String {
    call.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("call_{index}"))
}

/// A tool name as shown back (the model's text, cut to 64 characters).
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

/// Applies the agent's `max_tool_calls_per_round` and
/// `max_tool_calls_per_run` (with `so_far` calls counted in the run) to an
/// answer's `calls`. Calls past the limits are not made: the model hears
/// of them as one tool error on the first of them; the others leave its
/// message, so the next request does not carry thousands of unanswered
/// calls.
pub(super) fn limit_round(agent: &Agent, so_far: usize, mut calls: Vec<Value>) -> Round {
    let requested = calls.len();
    let allowed = agent
        .max_tool_calls_per_round
        .min(agent.max_tool_calls_per_run.saturating_sub(so_far));
    if requested <= allowed {
        return Round {
            in_message: calls.clone(),
            calls,
            excess: None,
        };
    }
    let over = calls.split_off(allowed);
    let first = over[0].clone();
    let excess = Refused {
        id: call_id(&first, allowed),
        name: shown(
            first
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or(""),
        ),
        code: &codes::TOOL_CALL_LIMIT,
        message: format!(
            "this answer asked for {requested} tool calls; the agent makes at most {} per answer and {} per run ({so_far} so far), so the last {} were not made",
            agent.max_tool_calls_per_round,
            agent.max_tool_calls_per_run,
            requested - allowed
        ),
        approval: None,
    };
    let mut in_message = calls.clone();
    in_message.push(first);
    Round {
        calls,
        in_message,
        excess: Some(excess),
    }
}

/// Checks one requested call (`call`, at `index` in the answer); nothing
/// is sent for a refused one.
pub(super) fn plan<'t>(
    rules: &Rules<'_, 't>,
    call: &Value,
    index: usize,
) -> Result<Planned<'t>, Refused> {
    let id = call_id(call, index);
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let refuse = |code, message: String| Refused {
        id: id.clone(),
        name: shown(&name),
        code,
        message,
        approval: None,
    };
    let agent = rules.agent;
    let builtin = name == SEARCH_TOOL && !agent.knowledge.is_empty();
    let tool = if builtin {
        None
    } else {
        agent
            .tools
            .contains(&name)
            .then(|| rules.tools.get(&name))
            .flatten()
    };
    if tool.is_none() && !builtin {
        return Err(refuse(
            &codes::UNKNOWN_TOOL,
            format!("this agent has no tool named {:?}", shown(&name)),
        ));
    }
    let args = match call.pointer("/function/arguments") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v,
            Err(_) => {
                return Err(refuse(
                    &codes::INVALID_ARGUMENTS,
                    "the arguments are not valid JSON".into(),
                ));
            }
        },
        Some(v @ Value::Object(_)) => v.clone(),
        _ => {
            return Err(refuse(
                &codes::INVALID_ARGUMENTS,
                "the call has no arguments object".into(),
            ));
        }
    };
    let Some(tool) = tool else {
        let schema = search_tool_definition(&agent.knowledge);
        if let Err(e) = bulkhead_tools::schema::validate(&schema["function"]["parameters"], &args) {
            return Err(refuse(
                &codes::INVALID_ARGUMENTS,
                format!("invalid arguments: {e}"),
            ));
        }
        check_policy(rules, &name, "read", "builtin", None, &args)
            .map_err(|(code, message)| refuse(code, message))?;
        return Ok(Planned {
            id,
            name,
            target: Target::Search,
            args,
            connection: None,
            needs_approval: false,
            approval: None,
        });
    };
    if let Err(e) = tool.validate(&args) {
        return Err(refuse(&codes::INVALID_ARGUMENTS, e.to_string()));
    }
    let region = rules.scope.region();
    if &tool.region != region {
        return Err(refuse(
            &codes::RESIDENCY_VIOLATION,
            format!(
                "the tool {name:?} is in region {:?}; this tenant's data stays in {:?}",
                tool.region.as_str(),
                region.as_str()
            ),
        ));
    }
    let connection = match rules
        .settings
        .connections
        .get(&name)
        .or(tool.connection.as_ref())
    {
        Some(c) => Some(ConnectionName::parse(c).map_err(|_| {
            refuse(
                &codes::MISSING_CREDENTIAL,
                format!("the connection name {c:?} is invalid"),
            )
        })?),
        None => None,
    };
    let needs_approval = check_policy(
        rules,
        &name,
        tool.risk.as_str(),
        tool.kind.as_str(),
        connection.as_ref(),
        &args,
    )
    .map_err(|(code, message)| refuse(code, message))?;
    let needs_approval = match tool.approval {
        bulkhead_core::config::ApprovalMode::Always => true,
        bulkhead_core::config::ApprovalMode::Never => false,
        bulkhead_core::config::ApprovalMode::Policy => needs_approval,
    };
    Ok(Planned {
        id,
        name,
        target: Target::Tool(tool),
        args,
        connection,
        needs_approval,
        approval: None,
    })
}

/// The tenant's `call_tool` decision: `Ok(needs approval)`, or the
/// refusal's code and message.
pub(super) fn check_policy(
    rules: &Rules<'_, '_>,
    name: &str,
    risk: &str,
    kind: &str,
    connection: Option<&ConnectionName>,
    args: &Value,
) -> Result<bool, (&'static ErrorCode, String)> {
    let compiled = rules.policies.as_ref().map_err(|e| {
        tracing::error!(error = %e, "could not load the tenant's policies");
        (
            &codes::INTERNAL,
            "the organisation's policies could not be read".to_owned(),
        )
    })?;
    let resource = bulkhead_policy::Resource::Tool {
        name,
        risk,
        kind,
        connection: connection.map_or("", ConnectionName::as_str),
        arguments: args,
    };
    match rules.engine.authorize_as(
        compiled,
        rules.scope,
        rules.principal,
        bulkhead_policy::Action::CallTool,
        &resource,
    ) {
        Ok(d) if !d.allowed => Err((
            &codes::POLICY_DENIED,
            format!(
                "the organisation's policies do not allow this call (decided by: {})",
                if d.policies.is_empty() {
                    "no permit applies".to_owned()
                } else {
                    d.policies.join(", ")
                }
            ),
        )),
        Ok(d) => Ok(d.approval),
        Err(e) => {
            tracing::error!(error = %e, "tool-call policy decision failed");
            Err((&codes::INTERNAL, "the policy decision failed".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests;
