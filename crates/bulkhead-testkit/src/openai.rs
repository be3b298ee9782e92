//! The OpenAI wire format: Chat Completions (JSON and SSE chunks),
//! `GET /v1/models`, `POST /v1/embeddings`, and errors shaped
//! `{"error":{"message","type","param","code"}}`.

use base64::Engine as _;
use hyper::HeaderMap;
use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::conversation::{Conversation, json_fragments, text_pieces, words};
use crate::script::{Answer, Stop, Usage};
use crate::server::{
    Ctx, Generation, Meta, RequestBody, Res, Wire, error_response, generate, header, json_response,
    sse_data,
};

/// The models `GET /v1/models` lists. Generation and embeddings accept any
/// model name and echo it back.
pub const MODELS: &[&str] = &["gpt-4o-mini", "text-embedding-3-small"];

/// Embedding length when the request gives no `dimensions`: that of
/// `text-embedding-3-small`.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 1536;

/// Largest `dimensions` accepted: that of `text-embedding-3-large`, the
/// largest real model; more would only let a test allocate without bound.
pub const MAX_EMBEDDING_DIMENSIONS: usize = 3072;

/// The OpenAI format.
pub(crate) struct OpenAi;

impl Wire for OpenAi {
    const REQUEST_ID_HEADER: &'static str = "x-request-id";
    const REQUEST_ID_PREFIX: &'static str = "req_fake";
    const MALFORMED_BODY: &'static str =
        r#"{"id":"chatcmpl-fake","object":"chat.completion","choices":[{"index":0,"message":{"#;

    fn error(status: StatusCode, message: &str, retry_after: Option<u64>) -> Res {
        let (kind, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            404 => ("invalid_request_error", Some("unknown_url")),
            429 => ("requests", Some("rate_limit_exceeded")),
            500..=599 => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        let body = json!({
            "error": {"message": message, "type": kind, "param": null, "code": code}
        });
        error_response(status, &body, retry_after)
    }

    fn body(answer: &Answer, meta: &Meta) -> Value {
        let mut message = json!({
            "role": "assistant",
            "content": if answer.text.is_empty() && !answer.calls.is_empty() {
                Value::Null
            } else {
                Value::from(answer.text.as_str())
            },
            "refusal": null,
        });
        if !answer.calls.is_empty()
            && let Some(m) = message.as_object_mut()
        {
            let calls: Vec<Value> = answer
                .calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    json!({
                        "id": call_id(meta, i),
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_text()},
                    })
                })
                .collect();
            m.insert("tool_calls".to_owned(), Value::from(calls));
        }
        json!({
            "id": completion_id(meta),
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(answer.stop),
            }],
            "usage": usage_json(&answer.usage),
        })
    }

    fn events(answer: &Answer, meta: &Meta, include_usage: bool) -> Vec<Bytes> {
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut chunk = json!({
                "id": completion_id(meta),
                "object": "chat.completion.chunk",
                "created": meta.created,
                "model": meta.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            });
            // With include_usage, OpenAI puts `"usage": null` in every chunk
            // but the last.
            if include_usage && let Some(c) = chunk.as_object_mut() {
                c.insert("usage".to_owned(), Value::Null);
            }
            sse_data(&chunk.to_string())
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        for piece in text_pieces(&answer.text) {
            events.push(chunk(json!({"content": piece}), None));
        }
        for (i, call) in answer.calls.iter().enumerate() {
            events.push(chunk(
                json!({"tool_calls": [{
                    "index": i,
                    "id": call_id(meta, i),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }]}),
                None,
            ));
            for fragment in json_fragments(&call.arguments_text()) {
                events.push(chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}),
                    None,
                ));
            }
        }
        events.push(chunk(json!({}), Some(finish_reason(answer.stop))));
        if include_usage {
            let last = json!({
                "id": completion_id(meta),
                "object": "chat.completion.chunk",
                "created": meta.created,
                "model": meta.model,
                "choices": [],
                "usage": usage_json(&answer.usage),
            });
            events.push(sse_data(&last.to_string()));
        }
        events.push(sse_data("[DONE]"));
        events
    }

    fn malformed_events() -> Vec<Bytes> {
        vec![
            sse_data(r#"{"id":"chatcmpl-fake","object":"chat.completion.chunk","choices":[{"#),
            sse_data("[DONE]"),
        ]
    }
}

fn completion_id(meta: &Meta) -> String {
    format!("chatcmpl-fake{}", meta.number)
}

fn call_id(meta: &Meta, index: usize) -> String {
    format!("call_fake{}_{index}", meta.number)
}

fn finish_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::EndTurn => "stop",
        Stop::ToolUse => "tool_calls",
        Stop::MaxTokens => "length",
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input.saturating_add(usage.output),
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

fn bad_request(message: &str) -> Res {
    OpenAi::error(StatusCode::BAD_REQUEST, message, None)
}

/// The checks every OpenAI endpoint makes first: a bearer key, a readable
/// JSON body (`None` for a body-less endpoint). The rejection is boxed: a
/// response is large and the check passes on the hot path.
fn check(headers: &HeaderMap, body: Option<RequestBody>) -> Result<Value, Box<Res>> {
    let key = header(headers, "authorization")
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
        .filter(|k| !k.is_empty());
    if key.is_none() {
        return Err(Box::new(OpenAi::error(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
        )));
    }
    match body {
        None => Ok(Value::Null),
        Some(RequestBody::Json(json)) if json.is_object() => Ok(json),
        Some(RequestBody::TooLarge) => Err(Box::new(OpenAi::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large.",
            None,
        ))),
        Some(_) => Err(Box::new(bad_request(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
        ))),
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(ctx: &Ctx, headers: &HeaderMap, body: RequestBody) -> Res {
    let request = match check(headers, Some(body)) {
        Ok(request) => request,
        Err(res) => return *res,
    };
    chat_checked(ctx, request).await
}

/// Azure OpenAI's `POST /openai/deployments/{deployment}/chat/completions
/// ?api-version=…`: OpenAI's wire format, an `api-key` header instead of a
/// bearer key, and the deployment in the path standing for the model.
pub(crate) async fn azure_chat(
    ctx: &Ctx,
    headers: &HeaderMap,
    body: RequestBody,
    deployment: &str,
    query: Option<&str>,
) -> Res {
    if header(headers, "api-key").is_none_or(|k| k.trim().is_empty()) {
        return OpenAi::error(
            StatusCode::UNAUTHORIZED,
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            None,
        );
    }
    let has_version = query.unwrap_or_default().split('&').any(|kv| {
        kv.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    });
    if !has_version {
        return bad_request("Missing required query parameter 'api-version'.");
    }
    let mut request = match body {
        RequestBody::Json(json) if json.is_object() => json,
        _ => {
            return bad_request(
                "We could not parse the JSON body of your request. The body must be a JSON object.",
            );
        }
    };
    request["model"] = Value::String(deployment.to_owned());
    chat_checked(ctx, request).await
}

async fn chat_checked(ctx: &Ctx, request: Value) -> Res {
    let Some(model) = request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return bad_request("you must provide a model parameter");
    };
    let Some(messages) = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
    else {
        return bad_request("'messages' must be a non-empty array");
    };
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad_request("'stream' must be a boolean"),
    };
    let include_usage = match request.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(_) if !stream => {
            return bad_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            );
        }
        Some(options) => options.get("include_usage").and_then(Value::as_bool) == Some(true),
    };
    let max_tokens = match ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| request.get(*k).filter(|v| !v.is_null()))
    {
        None => None,
        Some(v) => match v.as_u64().filter(|n| *n > 0) {
            Some(n) => Some(n),
            None => return bad_request("'max_completion_tokens' must be a positive integer"),
        },
    };
    let g = Generation {
        conversation: Conversation::openai(messages, max_tokens),
        model: model.to_owned(),
        stream,
        include_usage,
        request: request.clone(),
    };
    generate::<OpenAi>(ctx, g).await
}

/// `GET /v1/models`.
pub(crate) fn models(headers: &HeaderMap) -> Res {
    if let Err(res) = check(headers, None) {
        return *res;
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "bulkhead-testkit"}))
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `POST /v1/embeddings`: a deterministic unit vector per input.
pub(crate) fn embeddings(headers: &HeaderMap, body: RequestBody) -> Res {
    let request = match check(headers, Some(body)) {
        Ok(request) => request,
        Err(res) => return *res,
    };
    let Some(model) = request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return bad_request("you must provide a model parameter");
    };
    let Some(inputs) = request.get("input").and_then(embedding_inputs) else {
        return bad_request(
            "'input' must be a non-empty string, array of strings, array of tokens or array of token arrays",
        );
    };
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_EMBEDDING_DIMENSIONS,
        Some(v) => match v
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| (1..=MAX_EMBEDDING_DIMENSIONS).contains(d))
        {
            Some(d) => d,
            None => {
                return bad_request(&format!(
                    "'dimensions' must be an integer from 1 to {MAX_EMBEDDING_DIMENSIONS}"
                ));
            }
        },
    };
    let base64 = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return bad_request("'encoding_format' must be 'float' or 'base64'"),
    };
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            tokens += input.tokens;
            let vector = embedding(&input.key, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Value::from(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

/// One input to embed: what its vector is derived from, and its tokens.
struct EmbeddingInput {
    key: String,
    tokens: u64,
}

/// A string, an array of strings, an array of token ids or an array of
/// arrays of token ids; `None` when empty or anything else.
fn embedding_inputs(input: &Value) -> Option<Vec<EmbeddingInput>> {
    let text = |s: &str| EmbeddingInput {
        key: s.to_owned(),
        tokens: words(s),
    };
    let token_ids = |ids: &[Value]| -> Option<EmbeddingInput> {
        let ids: Option<Vec<u64>> = ids.iter().map(Value::as_u64).collect();
        let ids = ids.filter(|ids| !ids.is_empty())?;
        Some(EmbeddingInput {
            key: format!("{ids:?}"),
            tokens: ids.len() as u64,
        })
    };
    let inputs = match input {
        Value::String(s) => vec![text(s)],
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).map(text).collect()
        }
        Value::Array(items) if items.iter().all(Value::is_number) => vec![token_ids(items)?],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_array().and_then(|ids| token_ids(ids)))
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    (!inputs.is_empty() && inputs.iter().all(|i| !i.key.is_empty())).then_some(inputs)
}

/// A unit vector of `dimensions` derived from `key` alone (FNV-1a seed,
/// SplitMix64 stream), so equal inputs embed equally across runs.
fn embedding(key: &str, dimensions: usize) -> Vec<f32> {
    let mut state = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    // 24 random bits map exactly onto an f32 in [-1, 1).
    let raw: Vec<f32> = (0..dimensions)
        .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return raw;
    }
    raw.into_iter().map(|x| x / norm).collect()
}
