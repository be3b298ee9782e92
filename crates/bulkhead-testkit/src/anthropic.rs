//! The Anthropic wire format: `POST /v1/messages` (JSON, and SSE with
//! `event:` lines), and errors shaped `{"type":"error","error":{"type","message"}}`.

use hyper::HeaderMap;
use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::conversation::{Conversation, json_fragments, text_pieces};
use crate::script::{Answer, Stop, Usage};
use crate::server::{
    Ctx, Generation, Meta, RequestBody, Res, Wire, error_response, generate, header, sse_event,
};

/// The Anthropic format.
pub(crate) struct Anthropic;

impl Wire for Anthropic {
    const REQUEST_ID_HEADER: &'static str = "request-id";
    const REQUEST_ID_PREFIX: &'static str = "req_fake";
    const MALFORMED_BODY: &'static str =
        r#"{"id":"msg_fake","type":"message","role":"assistant","content":[{"type":"text","#;

    fn error(status: StatusCode, message: &str, retry_after: Option<u64>) -> Res {
        let kind = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        };
        let body = json!({"type": "error", "error": {"type": kind, "message": message}});
        error_response(status, &body, retry_after)
    }

    fn body(answer: &Answer, meta: &Meta) -> Value {
        let mut content = Vec::new();
        if !answer.text.is_empty() || answer.calls.is_empty() {
            content.push(json!({"type": "text", "text": answer.text}));
        }
        for (i, call) in answer.calls.iter().enumerate() {
            content.push(json!({
                "type": "tool_use",
                "id": tool_use_id(meta, i),
                "name": call.name,
                "input": call.arguments,
            }));
        }
        json!({
            "id": message_id(meta),
            "type": "message",
            "role": "assistant",
            "model": meta.model,
            "content": content,
            "stop_reason": stop_reason(answer.stop),
            "stop_sequence": null,
            "usage": usage_json(&answer.usage, answer.usage.output),
        })
    }

    fn events(answer: &Answer, meta: &Meta, _include_usage: bool) -> Vec<Bytes> {
        let event = |name: &str, data: Value| sse_event(name, &data.to_string());
        // Like the real service, message_start reports the input tokens and
        // a placeholder output count; message_delta carries the final one.
        let mut events = vec![event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": message_id(meta),
                "type": "message",
                "role": "assistant",
                "model": meta.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_json(&answer.usage, 1),
            }}),
        )];
        let mut index = 0;
        if !answer.text.is_empty() {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                       "content_block": {"type": "text", "text": ""}}),
            ));
            for piece in text_pieces(&answer.text) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
            index += 1;
        }
        for (i, call) in answer.calls.iter().enumerate() {
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": tool_use_id(meta, i), "name": call.name, "input": {},
                }}),
            ));
            for fragment in json_fragments(&call.arguments.to_string()) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                ));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
            index += 1;
        }
        events.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(answer.stop), "stop_sequence": null},
                   "usage": {"output_tokens": answer.usage.output}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        events
    }

    fn malformed_events() -> Vec<Bytes> {
        vec![
            sse_event(
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_fake","#,
            ),
            sse_event("message_stop", r#"{"type":"message_stop"}"#),
        ]
    }
}

fn message_id(meta: &Meta) -> String {
    format!("msg_fake{}", meta.number)
}

fn tool_use_id(meta: &Meta, index: usize) -> String {
    format!("toolu_fake{}_{index}", meta.number)
}

fn stop_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn => "end_turn",
        Stop::ToolUse => "tool_use",
        Stop::MaxTokens => "max_tokens",
    }
}

/// Anthropic counts cached prompt tokens apart from `input_tokens`.
fn usage_json(usage: &Usage, output: u64) -> Value {
    json!({
        "input_tokens": usage.input.saturating_sub(usage.cached),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": output,
    })
}

fn bad_request(message: &str) -> Res {
    Anthropic::error(StatusCode::BAD_REQUEST, message, None)
}

/// `POST /v1/messages`.
pub(crate) async fn messages(ctx: &Ctx, headers: &HeaderMap, body: RequestBody) -> Res {
    if header(headers, "x-api-key").is_none() {
        return Anthropic::error(
            StatusCode::UNAUTHORIZED,
            "x-api-key header is required",
            None,
        );
    }
    if header(headers, "anthropic-version").is_none() {
        return bad_request("anthropic-version: header is required");
    }
    let request = match body {
        RequestBody::Json(json) if json.is_object() => json,
        RequestBody::TooLarge => {
            return Anthropic::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request exceeds the maximum allowed number of bytes.",
                None,
            );
        }
        _ => return bad_request("The request body is not valid JSON."),
    };
    let Some(model) = request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return bad_request("model: Field required");
    };
    let Some(max_tokens) = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0)
    else {
        return bad_request("max_tokens: Field required (a positive integer)");
    };
    let Some(messages) = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return bad_request("messages: at least one message is required");
    };
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad_request("stream: Input should be a valid boolean"),
    };
    let g = Generation {
        conversation: Conversation::anthropic(request.get("system"), messages, max_tokens),
        model: model.to_owned(),
        stream,
        include_usage: true,
        request: request.clone(),
    };
    generate::<Anthropic>(ctx, g).await
}
