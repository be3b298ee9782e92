//! The OpenAI Responses API, translated to and from a chat completion:
//! the request ([`ResponsesRequest`]) becomes a Chat Completions body for
//! the gateway's own chat call (so it is resolved, limited, billed and
//! audited exactly like one), and the chat answer becomes a `response`
//! object, or — streamed — the Responses event sequence
//! ([`StreamTranslator`]).
//!
//! A conversation is the list of its input and output items; a stored
//! response keeps the whole list ([`Stored`]), so a request naming it as
//! `previous_response_id` continues from there.

use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::sse;
use crate::validate::InvalidMessage;

fn invalid(param: impl Into<String>, reason: impl Into<String>) -> GatewayError {
    GatewayError::InvalidMessage(InvalidMessage {
        param: param.into(),
        reason: reason.into(),
    })
}

/// A new id with an OpenAI-style prefix (`resp`, `msg`, `fc`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Members that are accepted and not acted on (they change nothing a
/// chat call could do differently).
const IGNORED: [&str; 10] = [
    "include",
    "truncation",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "stream_options",
    "top_logprobs",
    "max_tool_calls",
    "user",
];

/// Members read below.
const READ: [&str; 15] = [
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "previous_response_id",
    "store",
    "metadata",
    "parallel_tool_calls",
    "text",
    "reasoning",
];

/// A checked Responses API request.
#[derive(Debug, Clone)]
pub struct ResponsesRequest {
    /// The model alias.
    pub model: String,
    /// Whether the answer is streamed.
    pub stream: bool,
    /// Whether the response is kept for `previous_response_id` and
    /// `GET /v1/responses/{id}` (the default).
    pub store: bool,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// A system message put before the conversation (not carried over to
    /// a response that continues this one, as with OpenAI).
    pub instructions: Option<String>,
    /// This request's input items (a string input is one user message).
    pub input: Vec<Value>,
    /// The chat members the request sets (tools, limits, sampling).
    chat: Map<String, Value>,
    /// What the response object echoes back.
    echo: Map<String, Value>,
}

impl ResponsesRequest {
    /// Checks a request body. Unsupported members (built-in tools,
    /// `background`, `conversation`, `prompt`) are refused with a 400
    /// naming the member.
    pub fn parse(body: &Value) -> Result<Self, GatewayError> {
        let Some(obj) = body.as_object() else {
            return Err(GatewayError::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        };
        for (key, value) in obj {
            if value.is_null() || READ.contains(&key.as_str()) || IGNORED.contains(&key.as_str()) {
                continue;
            }
            let reason = match key.as_str() {
                "background" if value == &Value::Bool(false) => continue,
                "background" => "background responses are not supported",
                "conversation" => "conversations are not supported; use previous_response_id",
                "prompt" => "stored prompts are not supported",
                _ => "unknown parameter",
            };
            return Err(invalid(key.clone(), reason));
        }
        let Some(model) = obj.get("model").and_then(Value::as_str) else {
            return Err(invalid("model", "is required and must be a string"));
        };
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("stream", "must be a boolean")),
        };
        let store = match obj.get("store") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("store", "must be a boolean")),
        };
        let previous_response_id = match obj.get("previous_response_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("previous_response_id", "must be a string")),
        };
        let instructions = match obj.get("instructions") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid("instructions", "must be a string")),
        };
        let input = match obj.get("input") {
            Some(Value::String(s)) => {
                vec![json!({"type": "message", "role": "user", "content": s})]
            }
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) if previous_response_id.is_some() => Vec::new(),
            None | Some(Value::Null) => return Err(invalid("input", "is required")),
            Some(_) => return Err(invalid("input", "must be a string or an array of items")),
        };
        let mut chat = Map::new();
        let mut echo = Map::new();
        let tools = match obj.get("tools") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(t)) => t.clone(),
            Some(_) => return Err(invalid("tools", "must be an array")),
        };
        if !tools.is_empty() {
            chat.insert("tools".into(), Value::from(chat_tools(&tools)?));
        }
        echo.insert("tools".into(), Value::from(tools));
        match obj.get("tool_choice") {
            None | Some(Value::Null) => {
                echo.insert("tool_choice".into(), json!("auto"));
            }
            Some(choice) => {
                chat.insert("tool_choice".into(), chat_tool_choice(choice)?);
                echo.insert("tool_choice".into(), choice.clone());
            }
        }
        match obj.get("max_output_tokens") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64().is_some_and(|n| n > 0) => {
                chat.insert("max_completion_tokens".into(), v.clone());
                echo.insert("max_output_tokens".into(), v.clone());
            }
            Some(_) => return Err(invalid("max_output_tokens", "must be a positive integer")),
        }
        for key in ["temperature", "top_p"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(v) if v.is_number() => {
                    chat.insert(key.into(), v.clone());
                    echo.insert(key.into(), v.clone());
                }
                Some(_) => return Err(invalid(key, "must be a number")),
            }
        }
        match obj.get("parallel_tool_calls") {
            None | Some(Value::Null) => {
                echo.insert("parallel_tool_calls".into(), Value::Bool(true));
            }
            Some(Value::Bool(b)) => {
                if obj
                    .get("tools")
                    .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()))
                {
                    chat.insert("parallel_tool_calls".into(), Value::Bool(*b));
                }
                echo.insert("parallel_tool_calls".into(), Value::Bool(*b));
            }
            Some(_) => return Err(invalid("parallel_tool_calls", "must be a boolean")),
        }
        match obj.get("metadata") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                echo.insert("metadata".into(), Value::Object(m.clone()));
            }
            Some(_) => return Err(invalid("metadata", "must be an object")),
        }
        if let Some(text) = obj.get("text").filter(|t| !t.is_null()) {
            if let Some(format) = response_format(text)? {
                chat.insert("response_format".into(), format);
            }
            echo.insert("text".into(), text.clone());
        }
        if let Some(effort) = obj
            .get("reasoning")
            .and_then(|r| r.get("effort"))
            .and_then(Value::as_str)
        {
            chat.insert("reasoning_effort".into(), Value::from(effort));
        }
        Ok(Self {
            model: model.to_owned(),
            stream,
            store,
            previous_response_id,
            instructions,
            input,
            chat,
            echo,
        })
    }

    /// The Chat Completions body for `messages` (the conversation so far).
    pub fn chat_body(&self, messages: Vec<Value>) -> Value {
        let mut body = self.chat.clone();
        body.insert("model".into(), Value::from(self.model.as_str()));
        body.insert("messages".into(), Value::from(messages));
        if self.stream {
            body.insert("stream".into(), Value::Bool(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(body)
    }

    /// The response object's fields that do not depend on the answer.
    pub fn skeleton(&self, id: &str, created_at: u64) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), Value::from(id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), Value::from(created_at));
        r.insert("status".into(), json!("in_progress"));
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.insert(
            "instructions".into(),
            self.instructions.clone().map_or(Value::Null, Value::from),
        );
        r.insert("model".into(), Value::from(self.model.as_str()));
        r.insert("output".into(), json!([]));
        r.insert(
            "previous_response_id".into(),
            self.previous_response_id
                .clone()
                .map_or(Value::Null, Value::from),
        );
        r.insert("store".into(), Value::Bool(self.store));
        r.insert("metadata".into(), json!({}));
        r.insert("temperature".into(), Value::Null);
        r.insert("top_p".into(), Value::Null);
        r.insert("max_output_tokens".into(), Value::Null);
        r.insert("text".into(), json!({"format": {"type": "text"}}));
        r.insert("usage".into(), Value::Null);
        for (k, v) in &self.echo {
            r.insert(k.clone(), v.clone());
        }
        Value::Object(r)
    }
}

/// The `tools` of a Responses request as chat tools: function tools only.
fn chat_tools(tools: &[Value]) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(invalid(
                    format!("tools[{i}].type"),
                    format!("tool type `{other}` is not supported; only `function` tools are"),
                ));
            }
            None => return Err(invalid(format!("tools[{i}].type"), "is required")),
        }
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            return Err(invalid(
                format!("tools[{i}].name"),
                "is required and must be a string",
            ));
        };
        let mut f = Map::new();
        f.insert("name".into(), Value::from(name));
        for key in ["description", "parameters", "strict"] {
            if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                f.insert(key.into(), v.clone());
            }
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(out)
}

fn chat_tool_choice(choice: &Value) -> Result<Value, GatewayError> {
    match choice {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(invalid("tool_choice.name", "is required")),
            }
        }
        _ => Err(invalid(
            "tool_choice",
            "must be `auto`, `none`, `required` or a function tool choice",
        )),
    }
}

/// `text.format` as a chat `response_format`.
fn response_format(text: &Value) -> Result<Option<Value>, GatewayError> {
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(invalid(
            "text.format.type",
            "must be `text`, `json_object` or `json_schema`",
        )),
    }
}

/// The text of a content value: a string, or the `text` of its parts.
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                out.push_str(p.get("text").and_then(Value::as_str)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// A conversation's items as chat messages, `instructions` first as a
/// system message. Consecutive function calls (and an assistant message
/// just before them) make one assistant message with `tool_calls`;
/// reasoning items are dropped.
pub fn to_messages(
    instructions: Option<&str>,
    items: &[Value],
) -> Result<Vec<Value>, GatewayError> {
    let mut out: Vec<Value> = Vec::new();
    if let Some(i) = instructions {
        out.push(json!({"role": "system", "content": i}));
    }
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}]");
        let kind = match item.get("type").and_then(Value::as_str) {
            Some(t) => t,
            None if item.get("role").is_some() => "message",
            None => return Err(invalid(format!("{at}.type"), "is required")),
        };
        match kind {
            "message" => out.push(message(item, &at)?),
            "function_call" => {
                let call_id = item.get("call_id").and_then(Value::as_str);
                let name = item.get("name").and_then(Value::as_str);
                let (Some(call_id), Some(name)) = (call_id, name) else {
                    return Err(invalid(at, "a function_call needs `call_id` and `name`"));
                };
                let arguments = item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}");
                let call = json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}});
                let joins = out
                    .last()
                    .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
                if joins && let Some(Value::Object(last)) = out.last_mut() {
                    let calls = last.entry("tool_calls").or_insert_with(|| json!([]));
                    if let Value::Array(calls) = calls {
                        calls.push(call);
                    }
                } else {
                    out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
                }
            }
            "function_call_output" => {
                let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                    return Err(invalid(
                        format!("{at}.call_id"),
                        "is required and must be a string",
                    ));
                };
                let output = item
                    .get("output")
                    .and_then(text_of)
                    .ok_or_else(|| invalid(format!("{at}.output"), "must be a string"))?;
                out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            "reasoning" => {}
            other => {
                return Err(invalid(
                    format!("{at}.type"),
                    format!("input item type `{other}` is not supported"),
                ));
            }
        }
    }
    Ok(out)
}

fn message(item: &Value, at: &str) -> Result<Value, GatewayError> {
    let role = match item.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant" | "system" | "developer")) => r,
        _ => {
            return Err(invalid(
                format!("{at}.role"),
                "must be `user`, `assistant`, `system` or `developer`",
            ));
        }
    };
    let content = match item.get("content") {
        Some(Value::String(s)) => Value::from(s.as_str()),
        Some(Value::Array(parts)) => {
            let mut chat_parts = Vec::with_capacity(parts.len());
            let mut all_text = true;
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text" | "refusal") => {
                        let text = p
                            .get("text")
                            .or_else(|| p.get("refusal"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("{pat}.text"), "must be a string"))?;
                        chat_parts.push(json!({"type": "text", "text": text}));
                    }
                    Some("input_image") if role == "user" => {
                        let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                            return Err(invalid(
                                format!("{pat}.image_url"),
                                "is required (file ids are not supported)",
                            ));
                        };
                        let mut image = json!({"url": url});
                        if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                            image["detail"] = d.clone();
                        }
                        chat_parts.push(json!({"type": "image_url", "image_url": image}));
                        all_text = false;
                    }
                    Some(other) => {
                        return Err(invalid(
                            format!("{pat}.type"),
                            format!("content type `{other}` is not supported here"),
                        ));
                    }
                    None => return Err(invalid(format!("{pat}.type"), "is required")),
                }
            }
            if all_text {
                let text: String = chat_parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                Value::from(text)
            } else {
                Value::from(chat_parts)
            }
        }
        _ => {
            return Err(invalid(
                format!("{at}.content"),
                "must be a string or an array of content parts",
            ));
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// A message output item.
fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [output_text(text)]})
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn function_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status})
}

/// A chat `usage` as a Responses `usage`.
fn usage(chat: &Value) -> Value {
    let n = |p: &str| chat.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let (input, output) = (n("/prompt_tokens"), n("/completion_tokens"));
    json!({"input_tokens": input,
        "input_tokens_details": {"cached_tokens": n("/prompt_tokens_details/cached_tokens")},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": input + output})
}

/// Sets `status` (and `incomplete_details`) from a chat finish reason.
fn finish(response: &mut Value, finish_reason: Option<&str>) {
    let reason = match finish_reason {
        Some("length") => Some("max_output_tokens"),
        Some("content_filter") => Some("content_filter"),
        _ => None,
    };
    match reason {
        Some(r) => {
            response["status"] = json!("incomplete");
            response["incomplete_details"] = json!({"reason": r});
        }
        None => response["status"] = json!("completed"),
    }
}

/// A whole chat completion as the response `skeleton` completed.
pub fn from_completion(mut response: Value, completion: &Value) -> Value {
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    let mut output = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        output.push(message_item(&new_id("msg"), text, "completed"));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let f = &call["function"];
        output.push(function_item(
            &new_id("fc"),
            call["id"].as_str().unwrap_or_default(),
            f["name"].as_str().unwrap_or_default(),
            f["arguments"].as_str().unwrap_or("{}"),
            "completed",
        ));
    }
    response["output"] = Value::from(output);
    response["usage"] = usage(&completion["usage"]);
    finish(&mut response, choice["finish_reason"].as_str());
    response
}

/// What is kept of a stored response: the response object and the whole
/// conversation it ends (earlier items, its input, its output).
#[derive(Debug, Clone)]
pub struct Stored {
    /// The response object as answered.
    pub response: Value,
    /// The conversation's items, oldest first.
    pub items: Vec<Value>,
}

impl Stored {
    /// As kept in the store.
    pub fn to_json(&self) -> String {
        json!({"response": self.response, "items": self.items}).to_string()
    }

    /// From the store's text.
    pub fn from_json(text: &str) -> Result<Self, GatewayError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| GatewayError::Internal(format!("a stored response is corrupt: {e}")))?;
        Ok(Self {
            response: v["response"].clone(),
            items: v["items"].as_array().cloned().unwrap_or_default(),
        })
    }
}

/// One Responses stream event, SSE-framed (`event:` is its type).
fn event(kind: &str, seq: &mut u64, mut data: Value) -> Vec<u8> {
    data["type"] = Value::from(kind);
    data["sequence_number"] = Value::from(*seq);
    *seq += 1;
    format!("event: {kind}\ndata: {data}\n\n").into_bytes()
}

/// An output item being streamed.
enum Open {
    Text {
        index: usize,
        id: String,
        text: String,
    },
    Call {
        index: usize,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Turns a chat completion's SSE stream into the Responses event
/// sequence: `response.created` and `response.in_progress`, then per
/// output item `output_item.added`, its deltas (text, or function call
/// arguments) and `.done` events, and last `response.completed` (or
/// `response.incomplete` / `response.failed`).
pub struct StreamTranslator {
    response: Value,
    seq: u64,
    parser: sse::Parser,
    output: Vec<Value>,
    open: Option<Open>,
    /// Chat tool-call index → position in `output` of its item.
    calls: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    usage: Value,
    /// The stream has ended (`[DONE]` or an error).
    pub ended: bool,
    failed: Option<Value>,
}

impl StreamTranslator {
    /// A translator for the response `skeleton`.
    pub fn new(skeleton: Value) -> Self {
        Self {
            response: skeleton,
            seq: 0,
            parser: sse::Parser::default(),
            output: Vec::new(),
            open: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: Value::Null,
            ended: false,
            failed: None,
        }
    }

    /// The first events: `response.created`, `response.in_progress`.
    pub fn start(&mut self) -> Vec<u8> {
        let mut out = event(
            "response.created",
            &mut self.seq,
            json!({"response": self.response}),
        );
        out.extend(event(
            "response.in_progress",
            &mut self.seq,
            json!({"response": self.response}),
        ));
        out
    }

    /// Feeds chat SSE bytes; returns the Responses events they make.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        let Ok(events) = self.parser.feed(bytes) else {
            self.fail(json!({"code": "upstream_error", "message": "a stream event was too large"}));
            return out;
        };
        for ev in events {
            if ev.data.trim() == "[DONE]" {
                self.ended = true;
                return out;
            }
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            if let Some(e) = v.get("error") {
                self.fail(
                    json!({"code": e["code"].as_str().unwrap_or("upstream_error"),
                    "message": e["message"].as_str().unwrap_or("the model call failed")}),
                );
                return out;
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                self.usage = usage(u);
            }
            let Some(choice) = v["choices"].get(0) else {
                continue;
            };
            if let Some(r) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(r.to_owned());
            }
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                out.extend(self.text(text));
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                out.extend(self.call(call));
            }
        }
        out
    }

    fn fail(&mut self, error: Value) {
        self.ended = true;
        self.failed = Some(error);
    }

    fn text(&mut self, delta: &str) -> Vec<u8> {
        let mut out = Vec::new();
        if !matches!(self.open, Some(Open::Text { .. })) {
            out.extend(self.close());
            let index = self.output.len();
            let id = new_id("msg");
            let item = json!({"type": "message", "id": id, "status": "in_progress",
                "role": "assistant", "content": []});
            self.output.push(item.clone());
            out.extend(event(
                "response.output_item.added",
                &mut self.seq,
                json!({"output_index": index, "item": item}),
            ));
            out.extend(event(
                "response.content_part.added",
                &mut self.seq,
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": output_text("")}),
            ));
            self.open = Some(Open::Text {
                index,
                id,
                text: String::new(),
            });
        }
        if let Some(Open::Text { index, id, text }) = &mut self.open {
            text.push_str(delta);
            out.extend(event(
                "response.output_text.delta",
                &mut self.seq,
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "delta": delta, "logprobs": []}),
            ));
        }
        out
    }

    fn call(&mut self, call: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let chat_index = call["index"].as_u64().unwrap_or(0);
        let known = self
            .calls
            .iter()
            .find(|(c, _)| *c == chat_index)
            .map(|(_, i)| *i);
        let current = match &self.open {
            Some(Open::Call { index, .. }) => Some(*index),
            _ => None,
        };
        if known.is_none() || known != current {
            out.extend(self.close());
            if known.is_some() {
                // A call resumed after another began: OpenAI streams calls
                // one after another, so this does not happen; its further
                // deltas are dropped rather than misplaced.
                return out;
            }
            let index = self.output.len();
            let id = new_id("fc");
            let call_id = call["id"].as_str().unwrap_or_default().to_owned();
            let name = call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let item = function_item(&id, &call_id, &name, "", "in_progress");
            self.output.push(item.clone());
            self.calls.push((chat_index, index));
            out.extend(event(
                "response.output_item.added",
                &mut self.seq,
                json!({"output_index": index, "item": item}),
            ));
            self.open = Some(Open::Call {
                index,
                id,
                call_id,
                name,
                arguments: String::new(),
            });
        }
        if let Some(Open::Call {
            index,
            id,
            arguments,
            ..
        }) = &mut self.open
            && let Some(delta) = call["function"]["arguments"]
                .as_str()
                .filter(|d| !d.is_empty())
        {
            arguments.push_str(delta);
            out.extend(event(
                "response.function_call_arguments.delta",
                &mut self.seq,
                json!({"item_id": id, "output_index": index, "delta": delta}),
            ));
        }
        out
    }

    /// Closes the item being streamed, if any, with its `.done` events.
    fn close(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.open.take() {
            None => {}
            Some(Open::Text { index, id, text }) => {
                out.extend(event(
                    "response.output_text.done",
                    &mut self.seq,
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "text": text, "logprobs": []}),
                ));
                out.extend(event(
                    "response.content_part.done",
                    &mut self.seq,
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": output_text(&text)}),
                ));
                let item = message_item(&id, &text, "completed");
                out.extend(event(
                    "response.output_item.done",
                    &mut self.seq,
                    json!({"output_index": index, "item": item}),
                ));
                self.output[index] = item;
            }
            Some(Open::Call {
                index,
                id,
                call_id,
                name,
                arguments,
            }) => {
                out.extend(event(
                    "response.function_call_arguments.done",
                    &mut self.seq,
                    json!({"item_id": id, "output_index": index, "name": name,
                        "arguments": arguments}),
                ));
                let item = function_item(&id, &call_id, &name, &arguments, "completed");
                out.extend(event(
                    "response.output_item.done",
                    &mut self.seq,
                    json!({"output_index": index, "item": item}),
                ));
                self.output[index] = item;
            }
        }
        out
    }

    /// Closes what is open and returns the events before the last one and
    /// the final response object (whether it `failed`, from its status).
    pub fn finish(&mut self) -> (Vec<u8>, Value) {
        let out = self.close();
        let mut response = self.response.clone();
        response["output"] = Value::from(self.output.clone());
        response["usage"] = self.usage.clone();
        match (&self.failed, self.ended) {
            (Some(error), _) => {
                response["status"] = json!("failed");
                response["error"] = error.clone();
            }
            (None, false) => {
                response["status"] = json!("failed");
                response["error"] =
                    json!({"code": "upstream_error", "message": "the model's stream ended early"});
            }
            (None, true) => finish(&mut response, self.finish_reason.as_deref()),
        }
        (out, response)
    }

    /// The last event, for the final response object.
    pub fn last(&mut self, response: &Value) -> Vec<u8> {
        let kind = match response["status"].as_str() {
            Some("failed") => "response.failed",
            Some("incomplete") => "response.incomplete",
            _ => "response.completed",
        };
        event(kind, &mut self.seq, json!({"response": response}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_chat_messages() {
        let items = json!([
            {"role": "user", "content": "weather?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": "rain"},
            {"type": "reasoning", "summary": []},
        ]);
        let m = to_messages(Some("be brief"), items.as_array().unwrap()).unwrap();
        assert_eq!(m.len(), 5);
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[2]["content"], "checking");
        assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "c2", "content": "rain"})
        );
        crate::validate::messages(Some(&Value::from(m))).unwrap();
    }

    #[test]
    fn unsupported_members_are_named() {
        let e = ResponsesRequest::parse(
            &json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
        )
        .unwrap_err();
        assert_eq!(e.param(), Some("tools[0].type"));
        let e = ResponsesRequest::parse(&json!({"model": "m", "input": "x", "background": true}))
            .unwrap_err();
        assert_eq!(e.param(), Some("background"));
        let e = ResponsesRequest::parse(&json!({"input": "x"})).unwrap_err();
        assert_eq!(e.param(), Some("model"));
    }

    #[test]
    fn a_chat_stream_becomes_the_responses_sequence() {
        let r =
            ResponsesRequest::parse(&json!({"model": "m", "input": "x", "stream": true})).unwrap();
        let mut t = StreamTranslator::new(r.skeleton("resp_1", 1));
        let mut out = t.start();
        let chunk = |d: Value| format!("data: {d}\n\n");
        let body = [
            chunk(
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            ),
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "hel"}}]})),
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]})),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c1",
                "function": {"name": "f", "arguments": "{\"a\""}}]}}]}),
            ),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]}),
            ),
            chunk(json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})),
            "data: [DONE]\n\n".to_owned(),
        ]
        .concat();
        out.extend(t.feed(body.as_bytes()));
        assert!(t.ended);
        let (rest, response) = t.finish();
        out.extend(rest);
        out.extend(t.last(&response));
        let text = String::from_utf8(out).unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(response["status"], "completed");
        assert_eq!(response["output"][0]["content"][0]["text"], "hello");
        assert_eq!(response["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(response["usage"]["total_tokens"], 5);
    }
}
