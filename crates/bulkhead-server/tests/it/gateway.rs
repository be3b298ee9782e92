//! The model gateway through the router, against the fake provider (both
//! wire formats): round trips, streaming, translation, usage and audit,
//! tenant keys, residency, upstream failures and bad input.

use std::time::Duration;

use bulkhead_testkit::{FakeProvider, Reply};
use serde_json::{Value, json};

use crate::support::*;

fn tables(fake: &FakeProvider, extra_provider: &str) -> String {
    let base = fake.base_url();
    format!(
        r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
timeout_s = 1
max_retries = 1
[[providers]]
name = "fake-anthropic"
kind = "anthropic"
base_url = "{base}"
region = "eu"
credential = "env:FAKE_KEY"
timeout_s = 1
max_retries = 0
[[providers]]
name = "fake-us"
kind = "openai"
base_url = "{base}/v1"
region = "us"
credential = "env:FAKE_KEY"
[[providers]]
name = "byok"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "tenant:openai"
max_retries = 0
{extra_provider}
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok = "0.15"
price_output_per_mtok = "0.60"
price_cached_input_per_mtok = "0.075"
[[models]]
name = "claude"
provider = "fake-anthropic"
upstream = "claude-fake"
price_input_per_mtok = "3"
price_output_per_mtok = "15"
[[models]]
name = "us-only"
provider = "fake-us"
upstream = "gpt-4o-mini"
[[models]]
name = "own-key"
provider = "byok"
upstream = "gpt-4o-mini"
"#
    )
}

async fn app_with(fake: &FakeProvider) -> TestApp {
    TestApp::with_config("", &tables(fake, "")).await
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Splits an SSE body into its `data:` payloads.
fn sse_data(body: &Value) -> Vec<String> {
    body.as_str()
        .unwrap_or_default()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

async fn usage(app: &TestApp, key: &str) -> Value {
    let r = app.call("GET", "/v1/usage", Some(key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn completions_stream_translate_and_are_billed() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;

    fake.push(Reply::text("hello back").with_usage((1000, 500, 200)));
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("small", "hi there")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["choices"][0]["message"]["content"], "hello back");
    assert_eq!(r.body["model"], "small", "the alias, not the upstream name");
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "gpt-4o-mini");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {PLATFORM_KEY}").as_str())
    );

    // Streaming without include_usage: no usage chunk reaches the client,
    // but the upstream was asked for it and the call is billed.
    let mut req = chat("small", "stream me");
    req["stream"] = json!(true);
    let r = app
        .call("POST", "/v1/chat/completions", Some(&key), Some(req))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-type").unwrap(), "text/event-stream");
    let events = sse_data(&r.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: stream me");
    assert!(
        chunks.iter().all(
            |c| c["model"] == "small" && c["choices"].as_array().is_some_and(|a| !a.is_empty())
        )
    );
    assert_eq!(
        fake.requests()[1].body["stream_options"],
        json!({"include_usage": true})
    );

    // Anthropic, translated both ways, plain and streamed with usage.
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(json!({"model": "claude", "max_tokens": 50,
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello claude"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["object"], "chat.completion");
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        "echo: hello claude"
    );
    let sent = &fake.requests()[2];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["system"], "be brief");
    assert_eq!(sent.header("x-api-key"), Some(PLATFORM_KEY));
    assert!(sent.header("anthropic-version").is_some());
    let mut req = chat("claude", "stream claude");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let r = app
        .call("POST", "/v1/chat/completions", Some(&key), Some(req))
        .await;
    let events = sse_data(&r.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: stream claude");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);

    // Tool calls come back in OpenAI's shape from both formats.
    for model in ["small", "claude"] {
        fake.push(Reply::tool_call(
            "notify",
            json!({"channel": "#ops", "text": "hi"}),
        ));
        let mut req = chat(model, "tell ops");
        req["tools"] = json!([{"type": "function", "function": {"name": "notify", "parameters": {"type": "object"}}}]);
        let r = app
            .call("POST", "/v1/chat/completions", Some(&key), Some(req))
            .await;
        assert_eq!(r.status, 200, "{model}: {}", r.body);
        assert_eq!(
            r.body["choices"][0]["finish_reason"], "tool_calls",
            "{model}"
        );
        let call = &r.body["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "notify");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"channel": "#ops", "text": "hi"}));
    }

    // Usage: six calls, the first one's cost exact to the nano-dollar.
    let u = usage(&app, &key).await;
    assert_eq!(u["total"]["requests"], 6, "{u}");
    let small = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["model"] == "small")
        .unwrap()
        .clone();
    assert_eq!(small["requests"], 3);
    assert!(small["cost_usd"].as_str().unwrap().starts_with("0.000"));
    // Audit: one event per call, no prompt text.
    let events = app.audit(&key).await;
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "model.call")
        .collect();
    assert_eq!(calls.len(), 6);
    assert_eq!(calls[0]["details"]["cost_usd"], "0.000435000");
    assert_eq!(calls[0]["details"]["input_tokens"], 1000);
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains("hi there") && !text.contains("stream me"),
        "prompt text reached the audit chain"
    );
}

#[tokio::test]
async fn each_tenant_sees_its_own_models_and_usage() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    app.create_tenant("usco", "us").await;
    let (_, acme) = app.api_key("acme", &["member"]).await;
    let (_, globex) = app.api_key("globex", &["member"]).await;
    let (_, usco) = app.api_key("usco", &["member"]).await;
    let r = app
        .call(
            "PUT",
            "/admin/v1/tenants/globex/models",
            Some(OPERATOR_TOKEN),
            Some(json!({"allowed": ["claude"]})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["available"].clone()),
        (200, json!(["claude"])),
        "{}",
        r.body
    );
    let r = app
        .call(
            "PUT",
            "/admin/v1/tenants/globex/models",
            Some(OPERATOR_TOKEN),
            Some(json!({"allowed": ["nope"]})),
        )
        .await;
    r.assert_problem(400, "validation_failed");

    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let m = app.call("GET", "/v1/models", Some(&acme), None).await;
    assert_eq!(m.body["object"], "list");
    assert_eq!(ids(&m.body), ["claude", "own-key", "small"]);
    assert_eq!(
        ids(&app
            .call("GET", "/v1/models", Some(&globex), None)
            .await
            .body),
        ["claude"]
    );
    assert_eq!(
        ids(&app.call("GET", "/v1/models", Some(&usco), None).await.body),
        ["us-only"]
    );

    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&globex),
            Some(chat("small", "x")),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("model_not_found")),
        "{}",
        r.body
    );
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&acme),
            Some(chat("small", "x")),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(usage(&app, &acme).await["total"]["requests"], 1);
    assert_eq!(usage(&app, &globex).await["total"]["requests"], 0);
}

#[tokio::test]
async fn residency_is_refused_at_call_time_and_audited() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("us-only", "x")),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "residency_violation");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("region `us`")
    );
    assert!(fake.requests().is_empty(), "nothing may leave the region");
    let events = app.audit(&key).await;
    let denied = events.iter().find(|e| e["action"] == "model.call").unwrap();
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["details"]["reason"], "residency");
    assert_eq!(
        usage(&app, &key).await["total"]["requests"],
        0,
        "a refused call is not billed"
    );
}

#[tokio::test]
async fn a_tenants_own_key_goes_upstream_for_it_and_never_for_another() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (_, globex) = app.api_key("globex", &["admin"]).await;
    for (key, secret) in [
        (&acme, "sk-acme-own-key-1234"),
        (&globex, "sk-globex-own-key-5678"),
    ] {
        let r = app
            .call(
                "PUT",
                "/v1/credentials/openai",
                Some(key),
                Some(json!({"kind": "api_key", "secret": secret})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    for key in [&acme, &globex, &acme] {
        let r = app
            .call(
                "POST",
                "/v1/chat/completions",
                Some(key),
                Some(chat("own-key", "x")),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let auth: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(
        auth,
        [
            "Bearer sk-acme-own-key-1234",
            "Bearer sk-globex-own-key-5678",
            "Bearer sk-acme-own-key-1234"
        ]
    );
    // Without its credential a tenant's call is refused before anything is sent.
    app.call("DELETE", "/v1/credentials/openai", Some(&globex), None)
        .await;
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&globex),
            Some(chat("own-key", "x")),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("missing_credential")),
        "{}",
        r.body
    );
    assert_eq!(fake.requests().len(), 3);
    let uses = app.audit(&acme).await;
    assert!(
        uses.iter()
            .any(|e| e["action"] == "credential.use" && e["details"]["purpose"] == "model:own-key")
    );
}

#[tokio::test]
async fn upstream_failures_answer_cleanly_and_are_still_recorded() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;
    let post = |model: &'static str, stream: bool| {
        let mut body = chat(model, "x");
        body["stream"] = json!(stream);
        let app = &app;
        let key = key.clone();
        async move {
            app.call("POST", "/v1/chat/completions", Some(&key), Some(body))
                .await
        }
    };

    // One 500 then success: retried (max_retries = 1), the client sees 200.
    fake.push_all([Reply::error(500, "boom"), Reply::text("recovered")]);
    let r = post("small", false).await;
    assert_eq!(
        (
            r.status,
            r.body["choices"][0]["message"]["content"].as_str()
        ),
        (200, Some("recovered"))
    );
    // Two 500s: out of retries.
    fake.push_all([Reply::error(500, "boom"), Reply::error(503, "still down")]);
    let r = post("small", false).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (502, Some("upstream_error")),
        "{}",
        r.body
    );
    // 429 with a Retry-After longer than we wait out: passed on to the client.
    fake.push_all([Reply::error(429, "slow down").with_retry_after(30)]);
    let r = post("small", false).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (429, Some("rate_limit_exceeded"))
    );
    assert_eq!(r.headers.get("retry-after").unwrap(), "30");
    // Too slow (timeout_s = 1): a timeout is not retried, although the
    // OpenAI provider retries once (after 5xx, 429 or a failed connection).
    fake.push_all([
        Reply::delay(Duration::from_secs(5), Reply::text("late")),
        Reply::text("a retry would have got this"),
    ]);
    let before = fake.request_count();
    let r = post("small", false).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (504, Some("upstream_timeout")),
        "{}",
        r.body
    );
    assert_eq!(fake.request_count(), before + 1, "not retried");
    fake.clear_replies();
    // Malformed JSON.
    fake.push(Reply::malformed());
    let r = post("claude", false).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (502, Some("upstream_error")),
        "{}",
        r.body
    );
    // A stream cut mid-way: the client gets the chunks so far, then an error event, no [DONE].
    fake.push(Reply::cut_stream(2));
    let r = post("small", true).await;
    assert_eq!(r.status, 200);
    let events = sse_data(&r.body);
    assert!(events.len() >= 2, "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_cut");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    fake.push(Reply::cut_stream(1));
    let r = post("claude", true).await;
    let last: Value = serde_json::from_str(sse_data(&r.body).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_cut");

    // Every call that reached the provider left a usage row with its status.
    let statuses: Vec<String> = app
        .audit(&key)
        .await
        .iter()
        .filter(|e| e["action"] == "model.call")
        .map(|e| e["details"]["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        statuses,
        [
            "ok",
            "upstream_error",
            "upstream_rate_limited",
            "upstream_timeout",
            "upstream_error",
            "upstream_error",
            "upstream_error"
        ]
    );
    assert_eq!(usage(&app, &key).await["total"]["requests"], 7);
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_bill_nothing() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (chat("no-such-model", "x"), 404, "model_not_found"),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request",
        ),
        (json!({"model": "small"}), 400, "invalid_request"),
        (
            json!({"model": "small", "messages": []}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "small", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
            400,
            "invalid_request",
        ),
        (
            json!({"model": "claude", "messages": [{"role": "wizard", "content": "x"}]}),
            400,
            "invalid_request",
        ),
        (json!([1, 2, 3]), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let r = app
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {}",
            r.body
        );
        assert!(r.body["error"]["message"].is_string() && r.body["error"]["type"].is_string());
    }
    let raw = axum::http::Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    let r = app.request(raw).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    // Auth failures on these paths are OpenAI-shaped too.
    let r = app.call("GET", "/v1/models", Some("bk_wrong"), None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    assert!(fake.requests().is_empty());
    assert_eq!(usage(&app, &key).await["total"]["requests"], 0);
    let r = app
        .call("GET", "/v1/usage?from=2026-02-30", Some(&key), None)
        .await;
    r.assert_problem(400, "invalid_parameter");
}

#[tokio::test]
async fn malformed_messages_are_refused_before_anything_is_sent_or_billed() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;
    let call = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    let user = json!({"role": "user", "content": "hi"});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!([user, user, {"content": "no role"}]),
            "messages[2].role",
        ),
        (
            json!([{"role": "wizard", "content": "x"}]),
            "messages[0].role",
        ),
        (json!(["hi"]), "messages[0]"),
        (json!({"role": "user", "content": "x"}), "messages"),
        (
            json!([{"role": "user", "content": 42}]),
            "messages[0].content",
        ),
        (
            json!([{"role": "user", "content": null}]),
            "messages[0].content",
        ),
        (
            json!([{"role": "user", "content": [{"text": "x"}]}]),
            "messages[0].content[0].type",
        ),
        (
            json!([user, {"role": "tool", "content": "r"}]),
            "messages[1].tool_call_id",
        ),
        (
            json!([user, {"role": "tool", "tool_call_id": "c9", "content": "r"}]),
            "messages[1].tool_call_id",
        ),
        (
            json!([user, call, {"role": "tool", "tool_call_id": "c2", "content": "r"}]),
            "messages[2].tool_call_id",
        ),
        (
            json!([user, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}]}]),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!([user, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": 1, "arguments": "{}"}}]}]),
            "messages[1].tool_calls[0].function.name",
        ),
        (
            json!([user, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]),
            "messages[1].tool_calls[0].id",
        ),
        (
            json!([user, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "code", "function": {"name": "f", "arguments": "{}"}}]}]),
            "messages[1].tool_calls[0].type",
        ),
    ];
    for (messages, param) in cases {
        for stream in [false, true] {
            let body = json!({"model": "small", "messages": messages, "stream": stream});
            let r = app
                .call("POST", "/v1/chat/completions", Some(&key), Some(body))
                .await;
            assert_eq!(r.status, 400, "{messages}: {}", r.body);
            let e = &r.body["error"];
            assert_eq!(e["type"], "invalid_request_error", "{}", r.body);
            assert_eq!(e["code"], "invalid_request", "{}", r.body);
            assert_eq!(e["param"], param, "{messages}: {}", r.body);
            let message = e["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(&format!("{param}: ")), "{message}");
        }
    }
    assert!(fake.requests().is_empty(), "nothing may reach the provider");
    assert_eq!(usage(&app, &key).await["total"]["requests"], 0);
    // A well-formed tool conversation still goes through.
    let ok = json!({"model": "small", "messages": [user, call,
        {"role": "tool", "tool_call_id": "c1", "content": "r"}]});
    let r = app
        .call("POST", "/v1/chat/completions", Some(&key), Some(ok))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_still_billed() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let fake = FakeProvider::start().await;
    // The rest of an abandoned stream is read within the provider's
    // timeout: a generous one, so a loaded machine still reads it all.
    let patient = r#"
[[providers]]
name = "fake-patient"
kind = "openai"
base_url = "BASE/v1"
region = "eu"
credential = "env:FAKE_KEY"
timeout_s = 60
[[models]]
name = "patient"
provider = "fake-patient"
upstream = "gpt-4o-mini"
"#
    .replace("BASE", &fake.base_url());
    let app = TestApp::with_config("", &tables(&fake, &patient)).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;
    // Two thousand words stream as two thousand chunks: far more than the
    // gateway buffers, so the upstream reader is still busy when the client leaves.
    let long: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
    fake.push(Reply::text(long.join(" ")).with_usage((12, 2000, 0)));
    let mut body = chat("patient", "tell me a long story");
    body["stream"] = json!(true);
    let req = axum::http::Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.into_body();
    let first = stream.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(stream);

    // The call's task records the usage row when it notices; wait for that
    // event (bounded), rather than for a fixed time.
    let recorded = std::sync::Mutex::new(None);
    bulkhead_testkit::wait::eventually(
        "the usage record of the abandoned stream",
        Duration::from_secs(60),
        || async {
            let found = app
                .audit(&key)
                .await
                .into_iter()
                .find(|e| e["action"] == "model.call");
            let done = found.is_some();
            *recorded.lock().unwrap() = found;
            done
        },
    )
    .await;
    let event = recorded.into_inner().unwrap().unwrap();
    assert_eq!(event["details"]["status"], "client_disconnected");
    assert_eq!(event["details"]["stream"], true);
    // The rest of the answer was read for its usage: billed in full.
    assert_eq!(event["details"]["output_tokens"], 2000);
    assert_eq!(event["details"]["input_tokens"], 12);
    assert_eq!(usage(&app, &key).await["total"]["requests"], 1);
}

#[tokio::test]
async fn prompts_reach_the_audit_chain_only_when_the_tenant_opts_in() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("small", "first secret plan")),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            Some(OPERATOR_TOKEN),
            Some(json!({"audit_prompts": true})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["audit_prompts"].as_bool()),
        (200, Some(true)),
        "{}",
        r.body
    );
    let r = app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            Some(OPERATOR_TOKEN),
            Some(json!({"audit_prompts": "yes"})),
        )
        .await;
    r.assert_problem(400, "invalid_body");
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("small", "second kept plan")),
        )
        .await;
    assert_eq!(r.status, 200);
    let calls: Vec<Value> = app
        .audit(&key)
        .await
        .into_iter()
        .filter(|e| e["action"] == "model.call")
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(calls[0]["details"].get("messages").is_none());
    assert!(!calls[0].to_string().contains("first secret plan"));
    assert_eq!(
        calls[1]["details"]["messages"][0]["content"],
        "second kept plan"
    );
}

#[tokio::test]
async fn azure_openai_gets_its_own_url_and_key_header() {
    let fake = FakeProvider::start().await;
    let extra = format!(
        r#"
[[providers]]
name = "azure"
kind = "azure-openai"
base_url = "{}"
region = "eu"
credential = "env:FAKE_KEY"
api_version = "2024-10-21"
max_retries = 0
[[models]]
name = "azure-small"
provider = "azure"
upstream = "my-deployment"
"#,
        fake.base_url()
    );
    let app = TestApp::with_config("", &format!("{}{extra}", tables(&fake, ""))).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["member"]).await;
    fake.push(Reply::text("from azure"));
    let r = app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(&key),
            Some(chat("azure-small", "hi")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["choices"][0]["message"]["content"], "from azure");
    assert_eq!(r.body["model"], "azure-small");
    let sent = fake.requests().pop().unwrap();
    assert_eq!(
        sent.path,
        "/openai/deployments/my-deployment/chat/completions"
    );
    assert_eq!(sent.header("api-key"), Some(PLATFORM_KEY));
    assert_eq!(sent.header("authorization"), None);
    // Streamed too, with usage recorded.
    fake.push(Reply::text("streamed from azure"));
    let mut body = chat("azure-small", "hi");
    body["stream"] = json!(true);
    let r = app
        .call("POST", "/v1/chat/completions", Some(&key), Some(body))
        .await;
    assert_eq!(r.status, 200);
    assert!(sse_data(&r.body).last().is_some_and(|d| d == "[DONE]"));
    assert_eq!(usage(&app, &key).await["total"]["requests"], 2);
}

#[tokio::test]
async fn an_operator_change_to_a_tenant_is_one_event_in_both_chains() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["admin"]).await;
    let r = app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            Some(OPERATOR_TOKEN),
            Some(json!({"audit_prompts": true, "message_retention_days": 30})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["message_retention_days"], 30);
    let mine: Vec<Value> = app
        .audit(&key)
        .await
        .into_iter()
        .filter(|e| e["action"] == "tenant.settings")
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["details"]["audit_prompts"], true);
    assert_eq!(mine[0]["details"]["message_retention_days"], 30);
    assert!(mine[0]["details"].get("approval_webhook_set").is_none());
    let ops = app
        .call(
            "GET",
            "/admin/v1/audit?limit=1000",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    let theirs: Vec<&Value> = ops.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.settings")
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["details"], mine[0]["details"]);
    // The allow-list is an operator change to the tenant too: both chains.
    let r = app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/models",
            Some(OPERATOR_TOKEN),
            Some(json!({"allowed": ["small"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mine = app.audit(&key).await;
    let ops = app
        .call(
            "GET",
            "/admin/v1/audit?limit=1000",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    for chain in [&mine, ops.body["events"].as_array().unwrap()] {
        let models: Vec<&Value> = chain
            .iter()
            .filter(|e| e["action"] == "tenant.models")
            .collect();
        assert_eq!(models.len(), 1, "{chain:?}");
        assert_eq!(models[0]["details"]["allowed"], json!(["small"]));
    }
}
