//! The OpenAI-compatible surface beyond chat: `POST /v1/embeddings`
//! (billed, limited, region- and allow-list-bound), `GET /v1/models/{id}`,
//! the Responses API (plain, streamed, tools, `previous_response_id` kept
//! per tenant), and the shapes of unknown paths and oversized bodies on
//! each plane.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use bulkhead_testkit::{FakeProvider, Reply};
use serde_json::{Value, json};

use crate::support::*;

fn tables(fake: &FakeProvider) -> String {
    let base = fake.base_url();
    format!(
        r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
[[providers]]
name = "fake-us"
kind = "openai"
base_url = "{base}/v1"
region = "us"
credential = "env:FAKE_KEY"
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[[providers]]
name = "fake-anthropic"
kind = "anthropic"
base_url = "{base}"
region = "eu"
credential = "env:FAKE_KEY"
[[models]]
name = "claude"
provider = "fake-anthropic"
upstream = "claude-fake"
[[models]]
name = "small-us"
provider = "fake-us"
upstream = "gpt-4o-mini"
[[embedding_models]]
name = "embed"
provider = "fake-eu"
upstream = "text-embedding-3-small"
dimensions = 64
price_input_per_mtok = "0.02"
[[embedding_models]]
name = "embed-us"
provider = "fake-us"
upstream = "text-embedding-3-small"
dimensions = 64
"#
    )
}

struct World {
    fake: FakeProvider,
    app: TestApp,
    acme: String,
    globex: String,
}

async fn world() -> World {
    let fake = FakeProvider::start().await;
    let app = TestApp::with_config("", &tables(&fake)).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (_, globex) = app.api_key("globex", &["admin"]).await;
    World {
        fake,
        app,
        acme,
        globex,
    }
}

/// Asserts an error in OpenAI's shape.
fn assert_openai(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/json",
        "{}",
        r.body
    );
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(r.body["error"]["message"].is_string(), "{}", r.body);
    assert!(r.body["error"]["type"].is_string(), "{}", r.body);
}

async fn tenant_db(app: &TestApp, key: &str) -> rusqlite::Connection {
    let uid = app.scope(key).await.partition();
    let db = app
        .dir
        .path()
        .join("data/tenants")
        .join(uid.to_string())
        .join("tenant.db");
    rusqlite::Connection::open(db).unwrap()
}

async fn embed_rows(app: &TestApp, key: &str) -> Vec<(String, i64, String)> {
    let conn = tenant_db(app, key).await;
    let mut stmt = conn
        .prepare(
            "SELECT model, input_tokens, status FROM usage WHERE kind = 'embed' ORDER BY rowid",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn embeddings_answer_in_openai_shape_and_are_billed_and_audited() {
    let w = world().await;
    let r = w
        .app
        .call(
            "POST",
            "/v1/embeddings",
            Some(&w.acme),
            Some(json!({"model": "embed", "input": "hello world"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["object"], "list");
    assert_eq!(r.body["model"], "embed");
    assert_eq!(r.body["data"][0]["object"], "embedding");
    assert_eq!(r.body["data"][0]["index"], 0);
    assert_eq!(r.body["data"][0]["embedding"].as_array().unwrap().len(), 64);
    let tokens = r.body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens > 0, "{}", r.body);
    assert_eq!(r.body["usage"]["total_tokens"], tokens);

    // A batch, base64 (what the Python SDK asks for by default): the
    // little-endian f32 values of the same vectors, in input order.
    let r = w
        .app
        .call(
            "POST",
            "/v1/embeddings",
            Some(&w.acme),
            Some(json!({"model": "embed", "input": ["a", "hello world", "c"],
                "encoding_format": "base64"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let decoded: Vec<Vec<f32>> = data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d["embedding"].as_str().unwrap())
                .unwrap();
            bytes
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .collect();
    assert_eq!(decoded[1].len(), 64);
    let single = w
        .app
        .call(
            "POST",
            "/v1/embeddings",
            Some(&w.acme),
            Some(json!({"model": "embed", "input": ["hello world"]})),
        )
        .await;
    let floats: Vec<f32> = single.body["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(decoded[1], floats, "base64 carries the same vector");
    // The provider got one call per request, the batch in one.
    let calls: Vec<_> = w
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/embeddings")
        .collect();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1].body["input"], json!(["a", "hello world", "c"]));

    // One ledger row of kind `embed` per call, with its tokens, and one
    // `model.embed` audit event each.
    bulkhead_testkit::wait::eventually(
        "three settled embed rows",
        Duration::from_secs(30),
        || async {
            let rows = embed_rows(&w.app, &w.acme).await;
            rows.len() == 3 && rows.iter().all(|(_, _, s)| s != "in_flight")
        },
    )
    .await;
    let rows = embed_rows(&w.app, &w.acme).await;
    assert!(
        rows.iter()
            .all(|(m, t, s)| m == "embed" && *t > 0 && s == "ok"),
        "{rows:?}"
    );
    let events = w.app.audit(&w.acme).await;
    let embeds = events
        .iter()
        .filter(|e| e["action"] == "model.embed")
        .count();
    assert_eq!(embeds, 3);
    // globex was not billed.
    assert!(embed_rows(&w.app, &w.globex).await.is_empty());
}

#[tokio::test]
async fn embeddings_are_refused_by_region_allow_list_limits_and_bad_input() {
    let w = world().await;
    let post = |key: String, body: Value| {
        let app = &w.app;
        async move {
            app.call("POST", "/v1/embeddings", Some(&key), Some(body))
                .await
        }
    };
    // Another region's model: refused, never rerouted.
    let r = post(w.acme.clone(), json!({"model": "embed-us", "input": "x"})).await;
    assert_openai(&r, 403, "residency_violation");
    // Unknown, or not on the tenant's allow-list: the same 404.
    let r = post(w.acme.clone(), json!({"model": "nope", "input": "x"})).await;
    assert_openai(&r, 404, "model_not_found");
    let put = w
        .app
        .call(
            "PUT",
            "/admin/v1/tenants/globex/models",
            Some(OPERATOR_TOKEN),
            Some(json!({"allowed": ["small"]})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let r = post(w.globex.clone(), json!({"model": "embed", "input": "x"})).await;
    assert_openai(&r, 404, "model_not_found");
    // Bad input names the member.
    for (body, param) in [
        (json!({"input": "x"}), "model"),
        (json!({"model": "embed"}), "input"),
        (json!({"model": "embed", "input": [1, 2, 3]}), "input"),
        (json!({"model": "embed", "input": [[1, 2]]}), "input"),
        (json!({"model": "embed", "input": []}), "input"),
        (json!({"model": "embed", "input": ["a", ""]}), "input[1]"),
        (
            json!({"model": "embed", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "embed", "input": "x", "dimensions": 0}),
            "dimensions",
        ),
    ] {
        let r = post(w.acme.clone(), body.clone()).await;
        assert_openai(&r, 400, "invalid_request");
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.body);
    }
    assert!(
        w.fake.requests().iter().all(|r| r.path != "/v1/embeddings"),
        "a refused request reached the provider"
    );
    // A request limit trips in OpenAI's shape, with Retry-After.
    let r = w
        .app
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            Some(json!({"quotas": {"requests_per_minute": 2}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut limited = None;
    for _ in 0..6 {
        let r = post(w.acme.clone(), json!({"model": "embed", "input": "x"})).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the request limit never tripped");
    assert_openai(&r, 429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    // A token budget too: one token a minute is less than any input.
    let r = w
        .app
        .call(
            "PATCH",
            "/admin/v1/tenants/globex",
            Some(OPERATOR_TOKEN),
            Some(json!({"quotas": {"tokens_per_minute": 1}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let put = w
        .app
        .call(
            "PUT",
            "/admin/v1/tenants/globex/models",
            Some(OPERATOR_TOKEN),
            Some(json!({"allowed": ["small", "embed"]})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let r = post(
        w.globex.clone(),
        json!({"model": "embed", "input": "a text longer than one token"}),
    )
    .await;
    assert_openai(&r, 429, "rate_limited");
}

#[tokio::test]
async fn a_model_is_retrieved_as_listed_and_others_are_not_found() {
    let w = world().await;
    let r = w
        .app
        .call("GET", "/v1/models/small", Some(&w.acme), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"id": "small", "object": "model", "created": 0, "owned_by": "bulkhead"})
    );
    let list = w.app.call("GET", "/v1/models", Some(&w.acme), None).await;
    assert_eq!(list.body["data"][1], r.body);
    // Unknown, another region's, or off the allow-list: one 404.
    for model in ["nope", "small-us"] {
        let r = w
            .app
            .call("GET", &format!("/v1/models/{model}"), Some(&w.acme), None)
            .await;
        assert_openai(&r, 404, "model_not_found");
    }
    w.app
        .call(
            "PUT",
            "/admin/v1/tenants/globex/models",
            Some(OPERATOR_TOKEN),
            Some(json!({"allowed": []})),
        )
        .await;
    let r = w
        .app
        .call("GET", "/v1/models/small", Some(&w.globex), None)
        .await;
    assert_openai(&r, 404, "model_not_found");
    let r = w.app.call("GET", "/v1/models/small", None, None).await;
    assert_openai(&r, 401, "invalid_api_key");
}

async fn respond(w: &World, key: &str, body: Value) -> Resp {
    w.app
        .call("POST", "/v1/responses", Some(key), Some(body))
        .await
}

#[tokio::test]
async fn responses_are_translated_continued_and_kept_per_tenant() {
    let w = world().await;
    w.fake.push_all([
        Reply::text("first answer"),
        Reply::tool_call("lookup", json!({"city": "Oslo"})),
        Reply::text("it is sunny"),
    ]);
    let r = respond(
        &w,
        &w.acme,
        json!({"model": "small", "input": "hello", "instructions": "be brief",
            "temperature": 0.3, "max_output_tokens": 50}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.body.clone();
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("resp_"), "{first}");
    assert_eq!(first["object"], "response");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["model"], "small");
    assert_eq!(first["output"][0]["type"], "message");
    assert_eq!(first["output"][0]["role"], "assistant");
    assert_eq!(first["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(first["output"][0]["content"][0]["text"], "first answer");
    let u = &first["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
    // The chat call the provider saw.
    let sent = w.fake.requests().last().unwrap().body.clone();
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    );
    assert_eq!(sent["max_completion_tokens"], 50);
    assert_eq!(sent["temperature"], 0.3);

    // A function tool, continuing the first response.
    let tools = json!([{"type": "function", "name": "lookup", "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let r = respond(
        &w,
        &w.acme,
        json!({"model": "small", "previous_response_id": id, "tools": tools,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "weather?"}]}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.body.clone();
    let call = &second["output"][0];
    assert_eq!(call["type"], "function_call", "{second}");
    assert_eq!(call["name"], "lookup");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    let sent = w.fake.requests().last().unwrap().body.clone();
    assert_eq!(sent["tools"][0]["function"]["name"], "lookup");
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    // The instructions are not carried over (as with OpenAI).
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(sent["messages"][1]["content"], "first answer");

    // The tool's output, continuing the second.
    let r = respond(
        &w,
        &w.acme,
        json!({"model": "small", "previous_response_id": second["id"], "tools": tools,
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["output"][0]["content"][0]["text"], "it is sunny");
    let sent = w.fake.requests().last().unwrap().body.clone();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5, "{sent}");
    assert_eq!(msgs[3]["tool_calls"][0]["id"], call["call_id"]);
    assert_eq!(msgs[4]["role"], "tool");
    assert_eq!(msgs[4]["content"], "sunny");

    // Kept in acme's partition only: globex cannot read, continue or
    // delete it, and is answered exactly as for an id that never existed.
    let get = w
        .app
        .call("GET", &format!("/v1/responses/{id}"), Some(&w.acme), None)
        .await;
    assert_eq!(get.status, 200, "{}", get.body);
    assert_eq!(get.body, first);
    let calls = w.fake.requests().len();
    let missing = "resp_0000000000000000000000000000000";
    for other in [id.as_str(), missing] {
        let r = w
            .app
            .call(
                "GET",
                &format!("/v1/responses/{other}"),
                Some(&w.globex),
                None,
            )
            .await;
        assert_openai(&r, 404, "response_not_found");
        let r = respond(
            &w,
            &w.globex,
            json!({"model": "small", "input": "go on", "previous_response_id": other}),
        )
        .await;
        assert_openai(&r, 404, "response_not_found");
        assert_eq!(r.body["error"]["param"], "previous_response_id");
        let r = w
            .app
            .call(
                "DELETE",
                &format!("/v1/responses/{other}"),
                Some(&w.globex),
                None,
            )
            .await;
        assert_openai(&r, 404, "response_not_found");
    }
    assert_eq!(
        w.fake.requests().len(),
        calls,
        "a refusal reached the provider"
    );
    let r = w
        .app
        .call(
            "DELETE",
            &format!("/v1/responses/{id}"),
            Some(&w.acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"id": id, "object": "response", "deleted": true})
    );
    let r = w
        .app
        .call("GET", &format!("/v1/responses/{id}"), Some(&w.acme), None)
        .await;
    assert_openai(&r, 404, "response_not_found");

    // Retention covers stored responses as it covers thread messages.
    w.fake.push(Reply::text("to be forgotten"));
    let r = respond(
        &w,
        &w.acme,
        json!({"model": "small", "input": "remember me"}),
    )
    .await;
    let old = r.body["id"].as_str().unwrap().to_owned();
    let r = w
        .app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            Some(OPERATOR_TOKEN),
            Some(json!({"message_retention_days": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Aged by hand (time cannot be waited for in a test).
    tenant_db(&w.app, &w.acme)
        .await
        .execute(
            "UPDATE responses SET created_micros = 0 WHERE id = ?1",
            [&old],
        )
        .unwrap();
    let op = w.app.operator_scope();
    assert!(bulkhead_server::retention::apply_once(&w.app.state, &op).await >= 1);
    let r = w
        .app
        .call("GET", &format!("/v1/responses/{old}"), Some(&w.acme), None)
        .await;
    assert_openai(&r, 404, "response_not_found");
    let events = w.app.audit(&w.acme).await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "retention.apply" && e["details"]["deleted_responses"] == 1),
        "no retention event"
    );

    // `store: false` keeps nothing.
    w.fake.push(Reply::text("unkept"));
    let r = respond(
        &w,
        &w.acme,
        json!({"model": "small", "input": "x", "store": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let unkept = r.body["id"].as_str().unwrap();
    let r = w
        .app
        .call(
            "GET",
            &format!("/v1/responses/{unkept}"),
            Some(&w.acme),
            None,
        )
        .await;
    assert_openai(&r, 404, "response_not_found");

    // Unsupported members are refused, naming the member.
    for (body, param) in [
        (
            json!({"model": "small", "input": "x", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"model": "small", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "small", "input": [{"type": "item_reference", "id": "x"}]}),
            "input[0].type",
        ),
        (json!({"input": "x"}), "model"),
    ] {
        let r = respond(&w, &w.acme, body.clone()).await;
        assert_openai(&r, 400, "invalid_request");
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.body);
    }
    // Region and models as for chat.
    let r = respond(&w, &w.acme, json!({"model": "small-us", "input": "x"})).await;
    assert_openai(&r, 403, "residency_violation");
    // Each call is a chat call of the tenant in the ledger.
    let usage = w.app.call("GET", "/v1/usage", Some(&w.acme), None).await;
    assert_eq!(usage.body["total"]["requests"], 5, "{}", usage.body);
}

#[tokio::test]
async fn a_streamed_response_sends_the_responses_events_and_is_kept() {
    let w = world().await;
    w.fake.push_all([
        Reply::text("streamed words here"),
        Reply::tool_call("lookup", json!({"city": "Oslo"})),
    ]);
    let stream = |body: Value| {
        Request::builder()
            .method("POST")
            .uri("/v1/responses")
            .header("authorization", format!("Bearer {}", w.acme))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let r = w
        .app
        .request(stream(
            json!({"model": "small", "input": "hi", "stream": true}),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "text/event-stream");
    let events = parse_events(r.body.as_str().unwrap());
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        kinds[kinds.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let text: String = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "streamed words here");
    for (i, (_, d)) in events.iter().enumerate() {
        assert_eq!(d["sequence_number"], i, "{d}");
    }
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"][0]["content"][0]["text"],
        "streamed words here"
    );
    assert!(
        done["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );
    let id = done["id"].as_str().unwrap();
    // Kept before the last event: it can be read and continued at once.
    let get = w
        .app
        .call("GET", &format!("/v1/responses/{id}"), Some(&w.acme), None)
        .await;
    assert_eq!(get.status, 200, "{}", get.body);
    assert_eq!(&get.body, done);

    // A streamed function call: its argument events, then the item.
    let r = w
        .app
        .request(stream(
            json!({"model": "small", "input": "weather?", "stream": true,
            "previous_response_id": id,
            "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]}),
        ))
        .await;
    let events = parse_events(r.body.as_str().unwrap());
    let added = events
        .iter()
        .find(|(k, _)| k == "response.output_item.added")
        .unwrap();
    assert_eq!(added.1["item"]["type"], "function_call");
    assert_eq!(added.1["item"]["name"], "lookup");
    let args: String = events
        .iter()
        .filter(|(k, _)| k == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Oslo"})
    );
    let done = events
        .iter()
        .find(|(k, _)| k == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], args);
    assert_eq!(events.last().unwrap().0, "response.completed");
    let sent = w.fake.requests().last().unwrap().body.clone();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "{sent}");
}

fn parse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut kind = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            assert_eq!(data["type"], kind.as_str(), "{e}");
            (kind, data)
        })
        .collect()
}

#[tokio::test]
async fn unknown_paths_answer_in_the_shape_of_their_plane() {
    let w = world().await;
    for (method, path) in [
        ("POST", "/v1/foo"),
        ("GET", "/v1/files"),
        ("POST", "/v1/audio/speech"),
        ("GET", "/v1"),
        ("POST", "/v1/chat/completions/extra"),
    ] {
        let r = w.app.call(method, path, Some(&w.acme), None).await;
        assert_openai(&r, 404, "unknown_url");
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("Unknown request URL: {method} {path}")),
            "{message}"
        );
        // Without a credential too: the path is unknown whoever asks.
        let r = w.app.call(method, path, None, None).await;
        assert_openai(&r, 404, "unknown_url");
    }
    // A method a path does not have: OpenAI's shape there too.
    for (method, path) in [
        ("GET", "/v1/embeddings"),
        ("PUT", "/v1/models/small"),
        ("PATCH", "/v1/responses/x"),
    ] {
        let r = w.app.call(method, path, Some(&w.acme), None).await;
        assert_openai(&r, 405, "method_not_allowed");
    }
    w.app
        .call("PUT", "/v1/me", Some(&w.acme), None)
        .await
        .assert_problem(405, "method_not_allowed");
    // The tenant plane's own resources and everything outside /v1 keep
    // the problem format.
    for path in [
        "/v1/agents/a/b/c/d/e",
        "/v1/collections/c/x/y/z",
        "/nope",
        "/admin/v1/nope",
    ] {
        w.app
            .call("GET", path, Some(&w.acme), None)
            .await
            .assert_problem(404, "not_found");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_answer_in_the_shape_of_their_plane() {
    let w = world().await;
    let post = |path: &str, bytes: Vec<u8>| {
        Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {}", w.acme))
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .unwrap()
    };
    // The OpenAI paths' limit is 16 MiB.
    let huge = format!(
        "{{\"model\": \"small\", \"input\": \"{}\"}}",
        "x".repeat(17 * 1024 * 1024)
    )
    .into_bytes();
    for path in ["/v1/chat/completions", "/v1/embeddings", "/v1/responses"] {
        let r = w.app.request(post(path, huge.clone())).await;
        assert_openai(&r, 413, "request_too_large");
    }
    // Under it, a body past the server's own limit is taken.
    let long = json!({"model": "embed", "input": "y".repeat(2 * BODY_LIMIT)});
    let r = w
        .app
        .request(post("/v1/embeddings", long.to_string().into_bytes()))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The rest of the tenant plane: the server's limit, as a problem.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(BODY_LIMIT)).into_bytes();
    let put = Request::builder()
        .method("PUT")
        .uri("/v1/agents/a/settings")
        .header("authorization", format!("Bearer {}", w.acme))
        .header("content-type", "application/json")
        .body(Body::from(big))
        .unwrap();
    let r = w.app.request(put).await;
    r.assert_problem(413, "payload_too_large");
    // A chunked body (no Content-Length) over the limit too.
    let chunks = futures_util::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024 * 1024])),
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {}", w.acme))
        .header("content-type", "application/json")
        .body(Body::from_stream(chunks))
        .unwrap();
    let r = w.app.request(req).await;
    assert_openai(&r, 413, "request_too_large");
    assert_eq!(w.fake.requests().len(), 1, "only the embeddings call");
}

#[tokio::test]
async fn responses_run_on_anthropic_providers_too() {
    let w = world().await;
    let r = respond(
        &w,
        &w.acme,
        json!({"model": "claude", "input": "hello claude", "instructions": "be brief"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "completed");
    assert_eq!(
        r.body["output"][0]["content"][0]["text"],
        "echo: hello claude"
    );
    let sent = w.fake.requests().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["system"], "be brief", "{}", sent.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let req = Request::builder()
        .method("POST")
        .uri("/v1/responses")
        .header("authorization", format!("Bearer {}", w.acme))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"model": "claude", "input": "more", "stream": true,
                "previous_response_id": id})
            .to_string(),
        ))
        .unwrap();
    let r = w.app.request(req).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let events = parse_events(r.body.as_str().unwrap());
    let done = &events.last().unwrap().1["response"];
    assert_eq!(events.last().unwrap().0, "response.completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "echo: more");
    assert!(
        done["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{done}"
    );
    let sent = w.fake.requests().last().unwrap().body.clone();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3, "{sent}");
}
