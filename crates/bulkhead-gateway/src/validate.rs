//! The shape check of a chat request's `messages`, made before anything is
//! resolved, sent or billed.
//!
//! Providers answer a malformed message with an error of their own, but
//! only after the call was sent (and billed, and counted against the
//! tenant's limits); some accept it and guess. Refusing it here keeps the
//! ledger to calls that could succeed and gives the client OpenAI's own
//! `invalid_request_error` naming the offending field (`param`).

use std::collections::HashSet;

use serde_json::{Map, Value};

/// The roles a message may have.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Why `messages` was refused: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {reason}")]
pub struct InvalidMessage {
    /// The field at fault, e.g. `messages[2].role`.
    pub param: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(param: impl Into<String>, reason: impl Into<String>) -> InvalidMessage {
    InvalidMessage {
        param: param.into(),
        reason: reason.into(),
    }
}

/// Checks `messages` (the member's value, `None` when absent): a non-empty
/// array of objects, each with a known `role` and a `content` its role may
/// carry; assistant `tool_calls` well formed; every `tool` message answering
/// a tool call of an earlier assistant message.
pub fn messages(messages: Option<&Value>) -> Result<(), InvalidMessage> {
    let list = match messages {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return Err(invalid("messages", "must not be empty")),
        None | Some(Value::Null) => return Err(invalid("messages", "is required")),
        Some(_) => return Err(invalid("messages", "must be an array")),
    };
    let mut calls: HashSet<&str> = HashSet::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(m) = m else {
            return Err(invalid(at, "must be an object"));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.as_str(),
            Some(Value::String(r)) => {
                return Err(invalid(
                    format!("{at}.role"),
                    format!("unknown role {r:?}; expected one of {}", ROLES.join(", ")),
                ));
            }
            None | Some(Value::Null) => {
                return Err(invalid(format!("{at}.role"), "is required"));
            }
            Some(_) => return Err(invalid(format!("{at}.role"), "must be a string")),
        };
        let has_calls = if role == "assistant" {
            tool_calls(m, &at, &mut calls)?
        } else {
            if m.get("tool_calls").is_some_and(|c| !c.is_null()) {
                return Err(invalid(
                    format!("{at}.tool_calls"),
                    "only an assistant message may carry tool calls",
                ));
            }
            false
        };
        content(m.get("content"), &format!("{at}.content"), has_calls)?;
        if role == "tool" {
            let id = match m.get("tool_call_id") {
                Some(Value::String(id)) => id.as_str(),
                None | Some(Value::Null) => {
                    return Err(invalid(format!("{at}.tool_call_id"), "is required"));
                }
                Some(_) => {
                    return Err(invalid(format!("{at}.tool_call_id"), "must be a string"));
                }
            };
            if !calls.contains(id) {
                return Err(invalid(
                    format!("{at}.tool_call_id"),
                    format!("{id:?} names no tool call of an earlier assistant message"),
                ));
            }
        }
    }
    Ok(())
}

/// `content`: a string, an array of parts each an object with a string
/// `type`, or null/absent only for an assistant message with tool calls.
fn content(content: Option<&Value>, at: &str, may_be_null: bool) -> Result<(), InvalidMessage> {
    match content {
        Some(Value::String(_)) => Ok(()),
        None | Some(Value::Null) if may_be_null => Ok(()),
        None | Some(Value::Null) => Err(invalid(
            at,
            "is required (it may be null only in an assistant message with tool_calls)",
        )),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match part.get("type") {
                    Some(Value::String(_)) if part.is_object() => {}
                    _ if !part.is_object() => {
                        return Err(invalid(format!("{at}[{j}]"), "must be an object"));
                    }
                    _ => {
                        return Err(invalid(
                            format!("{at}[{j}].type"),
                            "is required and must be a string",
                        ));
                    }
                }
            }
            Ok(())
        }
        Some(_) => Err(invalid(at, "must be a string or an array of content parts")),
    }
}

/// An assistant message's `tool_calls`, whose ids it adds to `calls`;
/// whether it has any.
fn tool_calls<'a>(
    m: &'a Map<String, Value>,
    at: &str,
    calls: &mut HashSet<&'a str>,
) -> Result<bool, InvalidMessage> {
    let list = match m.get("tool_calls") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(invalid(format!("{at}.tool_calls"), "must be an array")),
    };
    for (j, call) in list.iter().enumerate() {
        let at = format!("{at}.tool_calls[{j}]");
        let Value::Object(call) = call else {
            return Err(invalid(at, "must be an object"));
        };
        let Some(Value::String(id)) = call.get("id") else {
            return Err(invalid(
                format!("{at}.id"),
                "is required and must be a string",
            ));
        };
        if call.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(format!("{at}.type"), "must be \"function\""));
        }
        let Some(Value::Object(function)) = call.get("function") else {
            return Err(invalid(
                format!("{at}.function"),
                "is required and must be an object",
            ));
        };
        for field in ["name", "arguments"] {
            if !matches!(function.get(field), Some(Value::String(_))) {
                return Err(invalid(
                    format!("{at}.function.{field}"),
                    "is required and must be a string",
                ));
            }
        }
        calls.insert(id.as_str());
    }
    Ok(!list.is_empty())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn param(v: Value) -> Option<String> {
        messages(Some(&v)).err().map(|e| e.param)
    }

    #[test]
    fn a_well_formed_conversation_passes() {
        let v = json!([
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "really"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "assistant", "content": "done"}
        ]);
        assert_eq!(messages(Some(&v)), Ok(()));
    }

    #[test]
    fn each_malformed_message_names_its_field() {
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
        let cases = [
            (json!([]), "messages"),
            (json!({"role": "user"}), "messages"),
            (json!(["hi"]), "messages[0]"),
            (
                json!([{"role": "user", "content": "a"}, {"content": "b"}]),
                "messages[1].role",
            ),
            (
                json!([{"role": "root", "content": "a"}]),
                "messages[0].role",
            ),
            (json!([{"role": 7, "content": "a"}]), "messages[0].role"),
            (json!([{"role": "user"}]), "messages[0].content"),
            (
                json!([{"role": "user", "content": null}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "assistant", "content": null}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": 3}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": ["x"]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"text": "x"}]}]),
                "messages[0].content[0].type",
            ),
            (
                json!([{"role": "tool", "content": "r"}]),
                "messages[0].tool_call_id",
            ),
            (
                json!([{"role": "tool", "tool_call_id": 1, "content": "r"}]),
                "messages[0].tool_call_id",
            ),
            (
                json!([{"role": "tool", "tool_call_id": "c1", "content": "r"}]),
                "messages[0].tool_call_id",
            ),
            (
                json!([{"role": "tool", "tool_call_id": "c1", "content": "r"}, call]),
                "messages[0].tool_call_id",
            ),
            (
                json!([call.clone(), {"role": "tool", "tool_call_id": "c2", "content": "r"}]),
                "messages[1].tool_call_id",
            ),
            (
                json!([{"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]),
                "messages[0].tool_calls[0].id",
            ),
            (
                json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "tool", "function": {"name": "f", "arguments": "{}"}}]}]),
                "messages[0].tool_calls[0].type",
            ),
            (
                json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function"}]}]),
                "messages[0].tool_calls[0].function",
            ),
            (
                json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": "{}"}}]}]),
                "messages[0].tool_calls[0].function.name",
            ),
            (
                json!([{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}]),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!([{"role": "user", "content": "a", "tool_calls": []}]),
                "messages[0].tool_calls",
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(param(v.clone()).as_deref(), Some(expected), "{v}");
        }
        assert_eq!(param(json!(null)).as_deref(), Some("messages"));
    }
}
