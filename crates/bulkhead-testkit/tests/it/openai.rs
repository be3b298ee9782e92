//! The OpenAI format: Chat Completions (JSON and SSE), tool calls, usage,
//! request checks, models and embeddings.

use base64::Engine as _;
use bulkhead_testkit::{DEFAULT_EMBEDDING_DIMENSIONS, FakeProvider, Reply, ToolCall};
use serde_json::{Value, json};

use crate::support::{End, Event, client, json_of, openai, read_events};

fn chat(text: &str) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": text},
        ],
    })
}

fn streaming(text: &str, include_usage: Option<bool>) -> Value {
    let mut body = chat(text);
    body["stream"] = json!(true);
    if let Some(include) = include_usage {
        body["stream_options"] = json!({"include_usage": include});
    }
    body
}

/// A chunk's kind, for comparing event sequences.
fn kind(event: &Event) -> String {
    assert_eq!(event.event, None, "OpenAI sends data-only events");
    if event.data == "[DONE]" {
        return "[DONE]".to_owned();
    }
    let chunk = event.json();
    assert_eq!(chunk["object"], "chat.completion.chunk");
    let choices = chunk["choices"].as_array().unwrap();
    if choices.is_empty() {
        assert!(chunk["usage"].is_object());
        return "usage".to_owned();
    }
    let choice = &choices[0];
    let delta = &choice["delta"];
    if let Some(reason) = choice["finish_reason"].as_str() {
        assert_eq!(delta, &json!({}));
        return format!("finish:{reason}");
    }
    assert!(choice["finish_reason"].is_null());
    if delta.get("role").is_some() {
        assert_eq!(delta, &json!({"role": "assistant", "content": ""}));
        return "role".to_owned();
    }
    if let Some(call) = delta.get("tool_calls") {
        let call = &call[0];
        let index = call["index"].as_u64().unwrap();
        return if call.get("id").is_some() {
            format!("tool:{index}")
        } else {
            format!("args:{index}")
        };
    }
    assert!(delta["content"].is_string(), "unexpected delta {delta}");
    "content".to_owned()
}

fn kinds(events: &[Event]) -> Vec<String> {
    events.iter().map(kind).collect()
}

/// `n` copies of `kind`.
fn times(kind: &str, n: usize) -> Vec<String> {
    vec![kind.to_owned(); n]
}

fn content_of(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn default_answer_echoes_the_last_user_message_with_computed_usage() {
    let fake = FakeProvider::start().await;
    let res = openai(&fake, "/chat/completions", &chat("what is the weather"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req_fake1");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "chatcmpl-fake1");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "echo: what is the weather");
    assert!(choice["message"].get("tool_calls").is_none());
    // 3 + 2 + 2 + 4 words, plus 3; the reply has 5 words.
    assert_eq!(body["usage"]["prompt_tokens"], 14);
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(body["usage"]["total_tokens"], 19);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn scripted_text_reports_the_scripted_usage() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::text("Paris.").with_usage((100, 7, 40)));
    let (status, body) = json_of(
        openai(&fake, "/chat/completions", &chat("capital of France?"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "Paris.");
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "total_tokens": 107,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 0},
        })
    );
}

#[tokio::test]
async fn max_tokens_cuts_the_text_with_finish_reason_length() {
    let fake = FakeProvider::start().await;
    let mut body = chat("one two three");
    body["max_completion_tokens"] = json!(2);
    let (_, body) = json_of(
        openai(&fake, "/chat/completions", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["choices"][0]["message"]["content"], "echo: one");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn streaming_sends_role_content_deltas_finish_then_done() {
    let fake = FakeProvider::start().await;
    let res = openai(
        &fake,
        "/chat/completions",
        &streaming("hello brave new world", None),
    )
    .send()
    .await
    .unwrap();
    let (events, end) = read_events(res).await;
    assert_eq!(end, End::Complete);
    let expected: Vec<String> = [times("role", 1), times("content", 5)]
        .concat()
        .into_iter()
        .chain(["finish:stop".to_owned(), "[DONE]".to_owned()])
        .collect();
    assert_eq!(kinds(&events), expected);
    assert_eq!(content_of(&events), "echo: hello brave new world");
    for event in &events[..events.len() - 1] {
        let chunk = event.json();
        assert_eq!(chunk["id"], "chatcmpl-fake1");
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert!(chunk.get("usage").is_none(), "usage without include_usage");
    }
}

#[tokio::test]
async fn include_usage_adds_a_usage_chunk_before_done() {
    let fake = FakeProvider::start().await;
    for include in [false, true] {
        let res = openai(&fake, "/chat/completions", &streaming("hi", Some(include)))
            .send()
            .await
            .unwrap();
        let (events, end) = read_events(res).await;
        assert_eq!(end, End::Complete);
        let mut expected = vec!["role", "content", "content", "finish:stop"];
        if include {
            expected.push("usage");
        }
        expected.push("[DONE]");
        assert_eq!(kinds(&events), expected);
        if include {
            let usage = events[events.len() - 2].json();
            assert_eq!(usage["usage"]["prompt_tokens"], 11);
            assert_eq!(usage["usage"]["completion_tokens"], 2);
            assert_eq!(usage["usage"]["total_tokens"], 13);
            // Every other chunk says `"usage": null`, as OpenAI does.
            for event in &events[..events.len() - 2] {
                assert_eq!(event.json()["usage"], Value::Null);
                assert!(event.json().as_object().unwrap().contains_key("usage"));
            }
        }
    }
}

fn two_calls() -> Reply {
    Reply::tool_calls([
        ToolCall::new("get_weather", json!({"city": "Paris", "unit": "celsius"})),
        ToolCall::new("get_time", json!({"zone": "Europe/Paris"})),
    ])
}

#[tokio::test]
async fn tool_calls_without_streaming() {
    let fake = FakeProvider::start().await;
    fake.push(two_calls());
    let (status, body) = json_of(
        openai(&fake, "/chat/completions", &chat("weather and time?"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "call_fake1_0");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(calls[1]["id"], "call_fake1_1");
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 2);
}

#[tokio::test]
async fn tool_calls_stream_as_indexed_deltas_with_argument_fragments() {
    let fake = FakeProvider::start().await;
    fake.push(two_calls().with_text("Checking."));
    let res = openai(
        &fake,
        "/chat/completions",
        &streaming("weather and time?", Some(true)),
    )
    .send()
    .await
    .unwrap();
    let (events, end) = read_events(res).await;
    assert_eq!(end, End::Complete);

    // Arguments are cut into fragments of at most 8 bytes.
    let weather = json!({"city": "Paris", "unit": "celsius"}).to_string();
    let time = json!({"zone": "Europe/Paris"}).to_string();
    let expected = [
        times("role", 1),
        times("content", 1),
        times("tool:0", 1),
        times("args:0", weather.len().div_ceil(8)),
        times("tool:1", 1),
        times("args:1", time.len().div_ceil(8)),
        times("finish:tool_calls", 1),
        times("usage", 1),
        times("[DONE]", 1),
    ]
    .concat();
    assert_eq!(kinds(&events), expected);
    assert_eq!(content_of(&events), "Checking.");

    // Reassemble the calls the way a client does.
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for event in events.iter().filter(|e| e.data != "[DONE]") {
        let chunk = event.json();
        let Some(deltas) = chunk["choices"][0]["delta"]["tool_calls"].as_array() else {
            continue;
        };
        for delta in deltas {
            let index = delta["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                calls.push((
                    delta["id"].as_str().unwrap().to_owned(),
                    delta["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            calls[index]
                .2
                .push_str(delta["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(
        calls,
        [
            ("call_fake1_0".to_owned(), "get_weather".to_owned(), weather),
            ("call_fake1_1".to_owned(), "get_time".to_owned(), time),
        ]
    );
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_do_not_consume_the_script() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::text("kept"));
    let url = format!("{}/v1/chat/completions", fake.base_url());
    let mut no_model = chat("x");
    no_model.as_object_mut().unwrap().remove("model");
    let mut options_without_stream = chat("x");
    options_without_stream["stream_options"] = json!({"include_usage": true});
    let cases = [
        (
            "no key",
            client().post(&url).json(&chat("x")),
            401,
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        (
            "not JSON",
            client()
                .post(&url)
                .bearer_auth("k")
                .header("content-type", "application/json")
                .body("{nope"),
            400,
            "invalid_request_error",
            Value::Null,
        ),
        (
            "no model",
            client().post(&url).bearer_auth("k").json(&no_model),
            400,
            "invalid_request_error",
            Value::Null,
        ),
        (
            "stream_options without stream",
            client()
                .post(&url)
                .bearer_auth("k")
                .json(&options_without_stream),
            400,
            "invalid_request_error",
            Value::Null,
        ),
        (
            "unknown URL",
            client()
                .post(format!("{}/v1/completions", fake.base_url()))
                .bearer_auth("k")
                .json(&chat("x")),
            404,
            "invalid_request_error",
            json!("unknown_url"),
        ),
    ];
    for (case, request, status, kind, code) in cases {
        let (got, body) = json_of(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{case}");
        let error = &body["error"];
        assert_eq!(error["type"], kind, "{case}");
        assert_eq!(error["code"], code, "{case}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{case}");
    }
    assert_eq!(fake.pending_replies(), 1);
    let (_, body) = json_of(
        openai(&fake, "/chat/completions", &chat("x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["choices"][0]["message"]["content"], "kept");
}

#[tokio::test]
async fn models_are_listed() {
    let fake = FakeProvider::start().await;
    let (status, body) = json_of(
        client()
            .get(format!("{}/v1/models", fake.base_url()))
            .bearer_auth("k")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, bulkhead_testkit::MODELS);
}

async fn embed(fake: &FakeProvider, body: Value) -> (u16, Value) {
    json_of(openai(fake, "/embeddings", &body).send().await.unwrap()).await
}

fn vector(item: &Value) -> Vec<f32> {
    item["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let fake = FakeProvider::start().await;
    let (status, body) = embed(
        &fake,
        json!({"model": "text-embedding-3-small", "input": ["the cat sat", "a dog", "the cat sat"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "text-embedding-3-small");
    assert_eq!(body["usage"]["prompt_tokens"], 3 + 2 + 3);
    assert_eq!(body["usage"]["total_tokens"], 8);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vectors: Vec<Vec<f32>> = data.iter().map(vector).collect();
    for (i, (item, v)) in data.iter().zip(&vectors).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert_eq!(v.len(), DEFAULT_EMBEDDING_DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);

    // The same input in a later request, at a requested dimension, and
    // base64-encoded (what the official SDKs ask for by default).
    let (_, small) = embed(
        &fake,
        json!({"model": "m", "input": "the cat sat", "dimensions": 8}),
    )
    .await;
    let small = vector(&small["data"][0]);
    assert_eq!(small.len(), 8);
    let (_, encoded) = embed(
        &fake,
        json!({"model": "m", "input": "the cat sat", "dimensions": 8, "encoding_format": "base64"}),
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, small);

    let (status, body) = embed(&fake, json!({"model": "m", "input": []})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, _) = embed(&fake, json!({"model": "m", "input": "x", "dimensions": 0})).await;
    assert_eq!(status, 400);
}
