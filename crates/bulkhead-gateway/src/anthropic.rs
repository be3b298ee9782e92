//! Translation between the OpenAI Chat Completions format (what clients
//! send) and the Anthropic Messages API (what Anthropic providers speak),
//! both ways, streaming included.

use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::sse::Event;
use crate::usage::Tokens;

/// Anthropic requires `max_tokens`; OpenAI clients often omit it.
const DEFAULT_MAX_TOKENS: u64 = 4096;

fn invalid(msg: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(msg.into())
}

/// The text of an OpenAI `content` (a string or an array of parts).
fn text_of(content: &Value, role: &str) -> Result<String, GatewayError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        out.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default())
                    }
                    Some(other) => {
                        return Err(invalid(format!(
                            "content parts of type `{other}` in a {role} message are not supported by this model's provider"
                        )));
                    }
                    None => return Err(invalid("every content part needs a `type`")),
                }
            }
            Ok(out)
        }
        _ => Err(invalid(
            "`content` must be a string, an array of parts, or null",
        )),
    }
}

fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    // Anthropic wants alternating roles: merge consecutive same-role turns.
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// Builds the Anthropic request body from an OpenAI one.
pub fn to_anthropic(
    req: &Map<String, Value>,
    upstream_model: &str,
    stream: bool,
) -> Result<Value, GatewayError> {
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    let list = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`messages` must be an array"))?;
    for m in list {
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("every message needs a `role`"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(text_of(content, role)?),
            "user" => {
                let text = text_of(content, role)?;
                push(
                    &mut messages,
                    "user",
                    vec![json!({"type": "text", "text": text})],
                );
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(content, role)?;
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("tool_calls[].id is required"))?;
                    let f = call
                        .get("function")
                        .ok_or_else(|| invalid("tool_calls[].function is required"))?;
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("tool_calls[].function.name is required"))?;
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = serde_json::from_str(args)
                        .map_err(|_| invalid("tool_calls[].function.arguments must be a JSON object encoded as a string"))?;
                    blocks
                        .push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                push(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("tool messages need `tool_call_id`"))?;
                let text = text_of(content, role)?;
                push(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                );
            }
            other => return Err(invalid(format!("unknown message role `{other}`"))),
        }
    }
    if messages.is_empty() {
        return Err(invalid(
            "`messages` must contain at least one user or assistant message",
        ));
    }
    let max_tokens = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut body = json!({
        "model": upstream_model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": stream,
    });
    if !system.is_empty() {
        body["system"] = Value::String(system.join("\n\n"));
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| v.is_number()) {
            body[key] = v.clone();
        }
    }
    match req.get("stop") {
        Some(Value::String(s)) => body["stop_sequences"] = json!([s]),
        Some(Value::Array(a)) => body["stop_sequences"] = Value::Array(a.clone()),
        _ => {}
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let mut out = Vec::new();
        for t in tools {
            let f = t
                .get("function")
                .ok_or_else(|| invalid("tools[].function is required"))?;
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tools[].function.name is required"))?;
            let mut tool = json!({
                "name": name,
                "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = f.get("description") {
                tool["description"] = d.clone();
            }
            out.push(tool);
        }
        if !out.is_empty() {
            body["tools"] = Value::Array(out);
            let mut choice = match req.get("tool_choice") {
                None | Some(Value::Null) => json!({"type": "auto"}),
                Some(Value::String(s)) if s == "auto" => json!({"type": "auto"}),
                Some(Value::String(s)) if s == "none" => json!({"type": "none"}),
                Some(Value::String(s)) if s == "required" => json!({"type": "any"}),
                Some(Value::Object(o)) => {
                    let name = o
                        .get("function")
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("tool_choice.function.name is required"))?;
                    json!({"type": "tool", "name": name})
                }
                Some(_) => {
                    return Err(invalid(
                        "`tool_choice` must be auto, none, required or a function",
                    ));
                }
            };
            if req.get("parallel_tool_calls") == Some(&Value::Bool(false))
                && choice["type"] != "none"
            {
                choice["disable_parallel_tool_use"] = Value::Bool(true);
            }
            body["tool_choice"] = choice;
        }
    }
    Ok(body)
}

fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("tool_use") => "tool_calls",
        Some("max_tokens") => "length",
        _ => "stop",
    }
}

fn tokens_of(usage: &Value) -> Tokens {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    Tokens {
        input: n("input_tokens") + cached + n("cache_creation_input_tokens"),
        output: n("output_tokens"),
        cached,
    }
}

/// The OpenAI `usage` object for token counts.
pub fn openai_usage(t: Tokens) -> Value {
    json!({
        "prompt_tokens": t.input,
        "completion_tokens": t.output,
        "total_tokens": t.input + t.output,
        "prompt_tokens_details": {"cached_tokens": t.cached},
    })
}

/// Converts an Anthropic message response to a chat completion.
pub fn from_anthropic(
    resp: &Value,
    alias: &str,
    created: u64,
) -> Result<(Value, Tokens), GatewayError> {
    let content = resp
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| GatewayError::Upstream("response without content".into()))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let tokens = tokens_of(resp.get("usage").unwrap_or(&Value::Null));
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("msg");
    Ok((
        json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": created,
            "model": alias,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(resp.get("stop_reason").and_then(Value::as_str)), "logprobs": null}],
            "usage": openai_usage(tokens),
        }),
        tokens,
    ))
}

/// Turns Anthropic stream events into OpenAI chunks.
pub struct StreamTranslator {
    id: String,
    alias: String,
    created: u64,
    /// Token counts seen so far.
    pub tokens: Tokens,
    /// Whether `message_stop` arrived.
    pub finished: bool,
    tool_index: i64,
    block_is_tool: bool,
}

impl StreamTranslator {
    /// A translator for one stream.
    pub fn new(alias: &str, created: u64) -> Self {
        Self {
            id: "chatcmpl-stream".into(),
            alias: alias.to_owned(),
            created,
            tokens: Tokens::default(),
            finished: false,
            tool_index: -1,
            block_is_tool: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.alias,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    }

    /// The final usage-only chunk.
    pub fn usage_chunk(&self) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.alias,
            "choices": [], "usage": openai_usage(self.tokens),
        })
    }

    /// Chunks for one event; `Err` carries an upstream error message.
    pub fn on_event(&mut self, ev: &Event) -> Result<Vec<Value>, GatewayError> {
        let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
        let kind = ev
            .event
            .as_deref()
            .or_else(|| data.get("type").and_then(Value::as_str))
            .unwrap_or_default();
        Ok(match kind {
            "message_start" => {
                let msg = &data["message"];
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{id}");
                }
                self.tokens = tokens_of(&msg["usage"]);
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            "content_block_start" => {
                let block = &data["content_block"];
                self.block_is_tool = block["type"] == "tool_use";
                if self.block_is_tool {
                    self.tool_index += 1;
                    vec![self.chunk(
                        json!({"tool_calls": [{"index": self.tool_index, "id": block["id"], "type": "function",
                               "function": {"name": block["name"], "arguments": ""}}]}),
                        None,
                    )]
                } else {
                    vec![]
                }
            }
            "content_block_delta" => {
                let d = &data["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => vec![self.chunk(json!({"content": d["text"]}), None)],
                    Some("input_json_delta") => vec![self.chunk(
                        json!({"tool_calls": [{"index": self.tool_index, "function": {"arguments": d["partial_json"]}}]}),
                        None,
                    )],
                    _ => vec![],
                }
            }
            "message_delta" => {
                if let Some(out) = data["usage"].get("output_tokens").and_then(Value::as_u64) {
                    self.tokens.output = out;
                }
                let reason = finish_reason(data["delta"]["stop_reason"].as_str());
                vec![self.chunk(json!({}), Some(reason))]
            }
            "message_stop" => {
                self.finished = true;
                vec![]
            }
            "error" => {
                let msg = data["error"]["message"]
                    .as_str()
                    .unwrap_or("stream error")
                    .to_owned();
                return Err(GatewayError::Upstream(msg));
            }
            _ => vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_translate_with_system_tools_and_tool_results() {
        let req: Map<String, Value> = serde_json::from_value(json!({
            "model": "m", "max_tokens": 100, "temperature": 0.2, "stop": "END", "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "notify", "arguments": "{\"text\":\"x\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ],
            "tools": [{"type": "function", "function": {"name": "notify", "description": "post", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
        }))
        .unwrap();
        let body = to_anthropic(&req, "claude-x", false).unwrap();
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], 100);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["messages"][1]["content"][0]["type"], "tool_use");
        assert_eq!(
            body["messages"][1]["content"][0]["input"],
            json!({"text": "x"})
        );
        assert_eq!(
            body["messages"][2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "c1", "content": "ok"})
        );
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn responses_translate_back_with_usage() {
        let resp = json!({"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "tool_use",
            "content": [{"type": "text", "text": "calling"}, {"type": "tool_use", "id": "t1", "name": "notify", "input": {"a": 1}}],
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 4}});
        let (c, t) = from_anthropic(&resp, "small", 7).unwrap();
        assert_eq!(
            t,
            Tokens {
                input: 14,
                output: 5,
                cached: 4
            }
        );
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(c["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(c["model"], "small");
    }
}
