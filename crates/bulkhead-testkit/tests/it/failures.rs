//! Scripted failures in both formats: errors with `Retry-After`, delays
//! (client timeouts), malformed bodies, cut streams and dropped
//! connections; and the order in which replies are consumed.

use std::time::{Duration, Instant};

use bulkhead_testkit::{FakeProvider, Reply};
use serde_json::{Value, json};

use crate::support::{End, anthropic, json_of, openai, read_events};

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "tell me more"}],
    })
}

fn message(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "tell me more"}],
    })
}

#[tokio::test]
async fn errors_come_in_each_format_with_retry_after_when_set() {
    let fake = FakeProvider::start().await;
    fake.push_all([
        Reply::error(429, "Rate limit reached").with_retry_after(7),
        Reply::error(529, "Overloaded"),
        Reply::error(503, "Unavailable").with_retry_after(1),
        Reply::error(500, "Boom"),
    ]);

    let res = openai(&fake, "/chat/completions", &chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "7");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": null,
            "code": "rate_limit_exceeded",
        }})
    );

    let res = anthropic(&fake, &message(false)).send().await.unwrap();
    assert!(res.headers().get("retry-after").is_none());
    let (status, body) = json_of(res).await;
    assert_eq!(status, 529);
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );

    // A streaming request that fails gets a JSON error, not an event stream.
    let res = anthropic(&fake, &message(true)).send().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "api_error");

    let (status, body) = json_of(
        openai(&fake, "/chat/completions", &chat(true))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["message"], "Boom");
}

#[tokio::test]
async fn a_delay_longer_than_the_client_timeout_times_the_client_out() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::delay(
        Duration::from_secs(30),
        Reply::text("too late"),
    ));
    let err = openai(&fake, "/chat/completions", &chat(false))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(fake.pending_replies(), 0);
}

#[tokio::test]
async fn a_delay_then_answers() {
    let fake = FakeProvider::start().await;
    let delay = Duration::from_millis(150);
    fake.push(Reply::delay(delay, Reply::text("late but here")));
    fake.push(Reply::delay(delay, Reply::error(429, "later")).with_retry_after(3));
    let started = Instant::now();
    let (status, body) = json_of(anthropic(&fake, &message(false)).send().await.unwrap()).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(status, 200);
    assert_eq!(body["content"][0]["text"], "late but here");

    let started = Instant::now();
    let res = openai(&fake, "/chat/completions", &chat(false))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "3");
}

#[tokio::test]
async fn malformed_answers_are_not_json() {
    let fake = FakeProvider::start().await;
    fake.push_all([Reply::malformed(), Reply::malformed()]);
    for request in [
        openai(&fake, "/chat/completions", &chat(false)),
        anthropic(&fake, &message(false)),
    ] {
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let text = res.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }

    fake.push(Reply::malformed());
    let (events, end) = read_events(
        openai(&fake, "/chat/completions", &chat(true))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end, End::Complete);
    assert_eq!(events.len(), 2);
    assert!(serde_json::from_str::<Value>(&events[0].data).is_err());
    assert_eq!(events[1].data, "[DONE]");

    fake.push(Reply::malformed());
    let (events, end) = read_events(anthropic(&fake, &message(true)).send().await.unwrap()).await;
    assert_eq!(end, End::Complete);
    assert_eq!(events[0].event.as_deref(), Some("message_start"));
    assert!(serde_json::from_str::<Value>(&events[0].data).is_err());
    assert_eq!(events[1].event.as_deref(), Some("message_stop"));
}

#[tokio::test]
async fn a_cut_openai_stream_ends_without_done() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::cut_stream(3));
    let (events, end) = read_events(
        openai(&fake, "/chat/completions", &chat(true))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end, End::Broken);
    assert_eq!(events.len(), 3);
    // The role chunk, then the default answer's first two deltas.
    let deltas: Vec<Value> = events
        .iter()
        .map(|e| e.json()["choices"][0]["delta"].clone())
        .collect();
    assert_eq!(
        deltas,
        [
            json!({"role": "assistant", "content": ""}),
            json!({"content": "echo:"}),
            json!({"content": " tell"}),
        ]
    );

    // The fake still serves, on a new connection.
    let (status, _) = json_of(
        openai(&fake, "/chat/completions", &chat(false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_cut_anthropic_stream_ends_without_message_stop() {
    let fake = FakeProvider::start().await;
    fake.push(Reply::cut_stream(2));
    let (events, end) = read_events(anthropic(&fake, &message(true)).send().await.unwrap()).await;
    assert_eq!(end, End::Broken);
    let names: Vec<_> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names, ["message_start", "content_block_start"]);
}

#[tokio::test]
async fn a_cut_longer_than_the_stream_still_withholds_the_terminator() {
    let fake = FakeProvider::start().await;
    fake.push_all([Reply::cut_stream(1000), Reply::cut_stream(0)]);
    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let (events, end) = read_events(
        openai(&fake, "/chat/completions", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(end, End::Broken);
    // role, 4 content deltas, finish, usage — but no [DONE].
    assert_eq!(events.len(), 7);
    assert!(events[6].json()["usage"].is_object());
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    // Zero events: the headers, then nothing.
    let (events, end) = read_events(anthropic(&fake, &message(true)).send().await.unwrap()).await;
    assert_eq!(end, End::Broken);
    assert!(events.is_empty());
}

#[tokio::test]
async fn a_cut_without_streaming_drops_the_connection_before_answering() {
    let fake = FakeProvider::start().await;
    fake.push_all([Reply::cut_stream(0), Reply::cut_stream(5)]);
    let err = openai(&fake, "/chat/completions", &chat(false))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err}");
    let err = anthropic(&fake, &message(false)).send().await.unwrap_err();
    assert!(err.status().is_none(), "{err}");
    // Both cuts were consumed by exactly one request each (no retries).
    assert_eq!(fake.pending_replies(), 0);
    assert_eq!(fake.request_count(), 2);
}

#[tokio::test]
async fn replies_are_consumed_in_order_by_both_formats_then_the_default() {
    let fake = FakeProvider::start().await;
    fake.push_all([Reply::text("first"), Reply::text("second")]);
    assert_eq!(fake.pending_replies(), 2);
    let (_, a) = json_of(
        openai(&fake, "/chat/completions", &chat(false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let (_, b) = json_of(anthropic(&fake, &message(false)).send().await.unwrap()).await;
    let (_, c) = json_of(
        openai(&fake, "/chat/completions", &chat(false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a["choices"][0]["message"]["content"], "first");
    assert_eq!(b["content"][0]["text"], "second");
    assert_eq!(c["choices"][0]["message"]["content"], "echo: tell me more");

    fake.push(Reply::text("dropped"));
    fake.clear_replies();
    let (_, d) = json_of(anthropic(&fake, &message(false)).send().await.unwrap()).await;
    assert_eq!(d["content"][0]["text"], "echo: tell me more");
}
