//! The Anthropic format: Messages (JSON and SSE with `event:` lines),
//! tool use, usage with cached tokens, required headers.

use bulkhead_testkit::{FakeProvider, Reply, ToolCall};
use serde_json::{Value, json};

use crate::support::{End, Event, anthropic, client, json_of, read_events};

fn messages(text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
            {"role": "user", "content": [{"type": "text", "text": text}]},
        ],
    })
}

fn streaming(text: &str) -> Value {
    let mut body = messages(text);
    body["stream"] = json!(true);
    body
}

/// Event names, each checked against its data's `type`.
fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let name = e.event.clone().expect("Anthropic events are named");
            assert_eq!(e.json()["type"], name.as_str());
            name
        })
        .collect()
}

fn names_of(parts: &[(&str, usize)]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|(name, n)| vec![(*name).to_owned(); *n])
        .collect()
}

#[tokio::test]
async fn headers_and_fields_are_required_with_anthropic_errors() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::text("kept"));
    let url = format!("{}/v1/messages", fake.base_url());
    let mut no_max_tokens = messages("x");
    no_max_tokens.as_object_mut().unwrap().remove("max_tokens");
    let cases = [
        (
            "no key",
            client()
                .post(&url)
                .header("anthropic-version", "2023-06-01")
                .json(&messages("x")),
            401,
            "authentication_error",
        ),
        (
            "no version",
            client()
                .post(&url)
                .header("x-api-key", "k")
                .json(&messages("x")),
            400,
            "invalid_request_error",
        ),
        (
            "no max_tokens",
            anthropic(&fake, &no_max_tokens),
            400,
            "invalid_request_error",
        ),
        (
            "not JSON",
            client()
                .post(&url)
                .header("x-api-key", "k")
                .header("anthropic-version", "2023-06-01")
                .body("{nope"),
            400,
            "invalid_request_error",
        ),
    ];
    for (case, request, status, kind) in cases {
        let (got, body) = json_of(request.send().await.unwrap()).await;
        assert_eq!(got, status, "{case}");
        assert_eq!(body["type"], "error", "{case}");
        assert_eq!(body["error"]["type"], kind, "{case}");
        assert!(
            !body["error"]["message"].as_str().unwrap().is_empty(),
            "{case}"
        );
    }
    assert_eq!(fake.pending_replies(), 1);
}

#[tokio::test]
async fn default_answer_echoes_the_last_user_message() {
    let fake = FakeProvider::start().await;
    let res = anthropic(&fake, &messages("what is the weather"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["request-id"], "req_fake1");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "id": "msg_fake1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "echo: what is the weather"}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            // system 3 + 2 + 2 + 4 words, plus 3: the same count as OpenAI's.
            "usage": {
                "input_tokens": 14,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 5,
            },
        })
    );
}

#[tokio::test]
async fn cached_tokens_are_reported_apart_from_input_tokens() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::text("Paris.").with_usage((100, 7, 40)));
    let (_, body) = json_of(
        anthropic(&fake, &messages("capital?"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["usage"]["input_tokens"], 60);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 40);
    assert_eq!(body["usage"]["output_tokens"], 7);
}

#[tokio::test]
async fn max_tokens_stops_the_text() {
    let fake = FakeProvider::start().await;
    let mut body = messages("one two three");
    body["max_tokens"] = json!(3);
    let (_, body) = json_of(anthropic(&fake, &body).send().await.unwrap()).await;
    assert_eq!(body["content"][0]["text"], "echo: one two");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn streaming_sends_the_message_events_in_order() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::text("It is sunny today.").with_usage((50, 4, 20)));
    let (events, end) = read_events(
        anthropic(&fake, &streaming("weather?"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end, End::Complete);
    assert_eq!(
        names(&events),
        names_of(&[
            ("message_start", 1),
            ("content_block_start", 1),
            ("content_block_delta", 4),
            ("content_block_stop", 1),
            ("message_delta", 1),
            ("message_stop", 1),
        ])
    );
    let start = events[0].json();
    assert_eq!(start["message"]["id"], "msg_fake1");
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["usage"]["input_tokens"], 30);
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 20);
    assert_eq!(
        events[1].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events[2..6]
        .iter()
        .map(|e| {
            let delta = e.json()["delta"].clone();
            assert_eq!(delta["type"], "text_delta");
            assert_eq!(e.json()["index"], 0);
            delta["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "It is sunny today.");
    let delta = events[7].json();
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(delta["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn tool_use_without_streaming() {
    let fake = FakeProvider::start().await;
    fake.push(
        Reply::tool_calls([
            ToolCall::new("get_weather", json!({"city": "Paris"})),
            ToolCall::new("get_time", json!({"zone": "CET"})),
        ])
        .with_text("Let me check."),
    );
    let (status, body) = json_of(anthropic(&fake, &messages("?")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(
        body["content"],
        json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_fake1_0", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_fake1_1", "name": "get_time", "input": {"zone": "CET"}},
        ])
    );
}

#[tokio::test]
async fn tool_use_streams_input_json_deltas() {
    let fake = FakeProvider::start().await;
    let arguments = json!({"city": "Paris", "unit": "celsius"});
    fake.push(Reply::tool_call("get_weather", arguments.clone()));
    let (events, end) = read_events(anthropic(&fake, &streaming("?")).send().await.unwrap()).await;
    assert_eq!(end, End::Complete);
    let fragments = arguments.to_string().len().div_ceil(8);
    assert_eq!(
        names(&events),
        names_of(&[
            ("message_start", 1),
            ("content_block_start", 1),
            ("content_block_delta", fragments),
            ("content_block_stop", 1),
            ("message_delta", 1),
            ("message_stop", 1),
        ])
    );
    assert_eq!(
        events[1].json()["content_block"],
        json!({"type": "tool_use", "id": "toolu_fake1_0", "name": "get_weather", "input": {}})
    );
    let partial: String = events[2..2 + fragments]
        .iter()
        .map(|e| {
            let delta = e.json()["delta"].clone();
            assert_eq!(delta["type"], "input_json_delta");
            delta["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), arguments);
    assert_eq!(
        events[events.len() - 2].json()["delta"]["stop_reason"],
        "tool_use"
    );
}
