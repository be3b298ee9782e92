//! Attacks on the agent runtime by a compromised model or a hostile tool:
//! fan-out (thousands of tool calls, huge tool results), secrets echoed
//! back in an encoding, and a run that outlives its tenant's suspension.

use std::sync::Mutex;
use std::time::Duration;

use bulkhead_agent::{RunRequest, RunStatus};
use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, ToolCall};
use serde_json::{Value, json};

use crate::support::*;

/// The tenant's credential the tools echo back (long enough to have its
/// halves redacted; `/`, `+` and the space exercise URL and JSON forms).
const CANARY: &str = "lk-Acme/canary+7f3a 9c2e51d04b8e";
const SLACK_TOKEN: &str = "xoxb-acme-fanout-5e1c7a9d3b";

fn tables(fake: &FakeProvider, saas: &SaasStandIn) -> String {
    let base = fake.base_url();
    let s = saas.base_url();
    let host = saas.addr().to_string();
    format!(
        r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
timeout_s = 30
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[[tools]]
name = "slack"
kind = "slack"
base_url = "{s}"
region = "eu"
connection = "slack"
[[tools]]
name = "big"
kind = "http"
region = "eu"
url = "{s}/big?bytes=60000"
allowed_hosts = ["{host}"]
max_response_bytes = 100000
[tools.parameters]
type = "object"
additionalProperties = false
[[tools]]
name = "leak"
kind = "http"
region = "eu"
connection = "leaky"
url = "{s}/status/200/as-{{{{ encoding }}}}"
allowed_hosts = ["{host}"]
[tools.parameters]
type = "object"
required = ["encoding"]
additionalProperties = false
properties.encoding = {{ type = "string" }}
[[tools]]
name = "jira401"
kind = "jira"
base_url = "{s}/status/401/as-hex"
region = "eu"
connection = "leaky"
[[agents]]
name = "fan"
model = "small"
prompt = "Fan out."
tools = ["slack", "big"]
max_steps = 5
[[agents]]
name = "wide"
model = "small"
prompt = "Fan out wide."
tools = ["big"]
max_steps = 3
max_tool_calls_per_round = 100
max_tool_calls_per_run = 100
max_tool_result_bytes = 65536
max_tool_result_bytes_per_round = 67108864
context_tokens = 8000
[[agents]]
name = "leaker"
model = "small"
prompt = "Leak."
tools = ["leak", "jira401"]
max_steps = 3
[[agents]]
name = "slow"
model = "small"
prompt = "Post slowly."
tools = ["slack"]
max_steps = 3
timeout_s = 60
"#
    )
}

struct World {
    fake: FakeProvider,
    saas: SaasStandIn,
    app: TestApp,
    key: String,
}

async fn world() -> World {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas)).await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["admin"]).await;
    for (conn, secret) in [("slack", SLACK_TOKEN), ("leaky", CANARY)] {
        let r = app
            .call(
                "PUT",
                &format!("/v1/credentials/{conn}"),
                Some(&key),
                Some(json!({"kind": "bearer", "secret": secret})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    World {
        fake,
        saas,
        app,
        key,
    }
}

async fn run(app: &TestApp, key: &str, agent: &str) -> Value {
    let r = app
        .call(
            "POST",
            &format!("/v1/agents/{agent}/runs"),
            Some(key),
            Some(json!({"input": "go"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn last_role(req: &Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["role"].as_str())
        .unwrap_or("")
        .to_owned()
}

fn posts(saas: &SaasStandIn) -> Vec<Value> {
    saas.requests()
        .into_iter()
        .filter(|r| r.path == "/api/chat.postMessage")
        .filter_map(|r| r.json())
        .collect()
}

// ---------------------------------------------------------------- fan-out

#[tokio::test]
async fn five_thousand_tool_calls_in_one_answer_make_at_most_the_cap() {
    let w = world().await;
    let calls: Vec<ToolCall> = (0..5000)
        .map(|i| {
            ToolCall::new(
                "slack",
                json!({"channel": "#spam", "text": format!("m{i}")}),
            )
        })
        .collect();
    w.fake.push(Reply::tool_calls(calls));
    w.fake.push(Reply::text("done"));
    let r = run(&w.app, &w.key, "fan").await;
    assert_eq!(r["status"], "completed", "{r}");
    // The default cap: 16 calls per answer.
    assert_eq!(posts(&w.saas).len(), 16);
    // The model heard of the rest as one tool error, on the first of them,
    // and its next request carries 17 calls, not 5,000.
    let next = &w.fake.requests()[1].body;
    let messages = next["messages"].as_array().unwrap();
    let assistant = messages.iter().find(|m| m["role"] == "assistant").unwrap();
    assert_eq!(assistant["tool_calls"].as_array().unwrap().len(), 17);
    let tools: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tools.len(), 17);
    let refusal: Value = serde_json::from_str(tools[16]["content"].as_str().unwrap()).unwrap();
    assert_eq!(refusal["error"], "tool_call_limit");
    assert!(
        refusal["message"].as_str().unwrap().contains("4984"),
        "{refusal}"
    );
    assert!(
        next.to_string().len() < 64 * 1024,
        "{}",
        next.to_string().len()
    );
    // Steps and audit record the refusal.
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(
        steps.iter().filter(|s| s["kind"] == "tool_call").count(),
        16
    );
    assert_eq!(steps[0]["data"]["tool_calls"], 5000);
    assert!(
        steps
            .iter()
            .any(|s| s["kind"] == "tool_refused" && s["data"]["code"] == "tool_call_limit")
    );
    let audit = w.app.audit(&w.key).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "tool.refused" && e["details"]["code"] == "tool_call_limit"),
    );
    assert_eq!(
        audit.iter().filter(|e| e["action"] == "tool.call").count(),
        16
    );
}

#[tokio::test]
async fn the_per_run_cap_holds_across_rounds() {
    let w = world().await;
    // Every answer asks for 16 posts: four answers reach the run's cap of
    // 64, and the fifth gets nothing made.
    w.fake.set_responder(|_| {
        Some(Reply::tool_calls((0..16).map(|i| {
            ToolCall::new(
                "slack",
                json!({"channel": "#spam", "text": format!("m{i}")}),
            )
        })))
    });
    let r = run(&w.app, &w.key, "fan").await;
    assert_eq!(r["error"]["code"], "step_limit", "{r}");
    assert_eq!(posts(&w.saas).len(), 64);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(
        steps.iter().filter(|s| s["kind"] == "tool_call").count(),
        64
    );
    let refused: Vec<&Value> = steps
        .iter()
        .filter(|s| s["kind"] == "tool_refused" && s["data"]["code"] == "tool_call_limit")
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0]["data"]["message"]
            .as_str()
            .unwrap()
            .contains("64 so far"),
        "{}",
        refused[0]
    );
}

#[tokio::test]
async fn two_thousand_large_tool_results_do_not_grow_the_next_request_past_the_budget() {
    let w = world().await;
    // With the default caps: 16 of the 2,000 are made, each 60 KB answer
    // cut to 32 KiB and the round to 128 KiB, then the newest turn to the
    // agent's context budget (12,000 tokens).
    w.fake.push(Reply::tool_calls(
        (0..2000).map(|_| ToolCall::new("big", json!({}))),
    ));
    w.fake.push(Reply::text("done"));
    let r = run(&w.app, &w.key, "fan").await;
    assert_eq!(r["status"], "completed", "{}", r["error"]);
    let next = &w.fake.requests()[1].body;
    assert!(prompt_tokens(next) <= 12_000, "{}", prompt_tokens(next));
    let size = next.to_string().len();
    assert!(size < 200 * 1024, "{size}");
    let tool = next["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(
        tool["content"]
            .as_str()
            .unwrap()
            .contains("[truncated by bulkhead:")
    );
    // The stored result is cut too (to the per-result cap).
    let result = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "tool_result")
        .unwrap();
    assert!(result["data"]["content"].as_str().unwrap().len() <= 32 * 1024);
}

#[tokio::test]
async fn the_newest_turns_results_are_cut_to_the_context_budget() {
    let w = world().await;
    // An agent whose caps let 100 results of 60 KB through (6 MB): only
    // the context budget (8,000 tokens) stands between them and the model.
    w.fake.push(Reply::tool_calls(
        (0..100).map(|_| ToolCall::new("big", json!({}))),
    ));
    w.fake.push(Reply::text("done"));
    let r = run(&w.app, &w.key, "wide").await;
    assert_eq!(r["status"], "completed", "{}", r["error"]);
    let made = w
        .saas
        .requests()
        .iter()
        .filter(|r| r.path == "/big")
        .count();
    assert_eq!(made, 100);
    let next = &w.fake.requests()[1].body;
    assert!(prompt_tokens(next) <= 8_000, "{}", prompt_tokens(next));
    assert!(next.to_string().len() < 200 * 1024);
}

/// The prompt's tokens by the estimate the runtime budgets with.
fn prompt_tokens(req: &Value) -> u64 {
    req["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let content = match &m["content"] {
                Value::String(s) => bulkhead_knowledge::estimate_tokens(s) as u64,
                Value::Null => 0,
                other => bulkhead_knowledge::estimate_tokens(&other.to_string()) as u64,
            };
            let calls = m.get("tool_calls").map_or(0, |c| {
                bulkhead_knowledge::estimate_tokens(&c.to_string()) as u64
            });
            content + calls + 4
        })
        .sum()
}

// -------------------------------------------------------------- redaction

/// Every form of the canary a scan looks for.
fn canary_forms() -> Vec<(String, String)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let hex: String = CANARY.bytes().map(|b| format!("{b:02x}")).collect();
    let percent = |form: bool| {
        CANARY
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' if form => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let (a, b) = CANARY.split_at(CANARY.len() / 2);
    let mid = STANDARD.encode(format!("user-id=42;{CANARY};end"));
    vec![
        ("plain".into(), CANARY.to_owned()),
        ("reversed".into(), CANARY.chars().rev().collect()),
        ("base64".into(), STANDARD.encode(CANARY)),
        ("base64url".into(), URL_SAFE_NO_PAD.encode(CANARY)),
        // The part of the mid-stream encoding that only the canary decides.
        ("base64-mid".into(), mid[16..52].to_owned()),
        ("url".into(), percent(false)),
        ("form".into(), percent(true)),
        ("json-slash".into(), CANARY.replace('/', "\\/")),
        (
            "json-unicode".into(),
            CANARY
                .encode_utf16()
                .map(|u| format!("\\u{u:04x}"))
                .collect(),
        ),
        ("hex".into(), hex),
        ("first half".into(), a.to_owned()),
        ("second half".into(), b.to_owned()),
    ]
}

fn strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The forms of the canary found (case-insensitively) in `v`, as stored
/// JSON and as the strings it holds.
fn found_in(v: &Value) -> Vec<String> {
    let mut text = v.to_string();
    text.push('\n');
    strings(v, &mut text);
    let text = text.to_lowercase();
    canary_forms()
        .into_iter()
        .filter(|(_, f)| text.contains(&f.to_lowercase()))
        .map(|(name, _)| name)
        .collect()
}

/// Runs the leaker agent with one `leak` call in `encoding` (or the
/// connector whose upstream answers 401 echoing the token), then scans the
/// model's next request, the thread, the run's steps and the audit chain.
async fn assert_redacted(call: ToolCall) {
    let w = world().await;
    w.fake.push(Reply::tool_calls([call]));
    w.fake.push(Reply::text("done"));
    let r = run(&w.app, &w.key, "leaker").await;
    assert_eq!(r["status"], "completed", "{r}");
    // The tool did answer with the secret (the attack happened).
    let result = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "tool_result")
        .unwrap()
        .clone();
    assert!(
        result["data"]["content"]
            .as_str()
            .unwrap()
            .contains("[redacted]"),
        "{result}"
    );
    let requests = w.fake.requests();
    assert_eq!(requests.len(), 2);
    let thread = r["thread_id"].as_str().unwrap();
    let messages = w
        .app
        .call(
            "GET",
            &format!("/v1/threads/{thread}/messages"),
            Some(&w.key),
            None,
        )
        .await;
    assert_eq!(messages.status, 200);
    let id = r["id"].as_str().unwrap();
    let stored = w
        .app
        .call("GET", &format!("/v1/runs/{id}"), Some(&w.key), None)
        .await;
    let audit = Value::Array(w.app.audit(&w.key).await);
    for (place, v) in [
        ("the model's next request", &requests[1].body),
        ("the thread", &messages.body),
        ("the run's steps", &stored.body),
        ("the run as answered", &r),
        ("the audit chain", &audit),
    ] {
        let found = found_in(v);
        assert!(found.is_empty(), "{found:?} of the canary in {place}: {v}");
    }
}

macro_rules! leak_tests {
    ($($name:ident: $encoding:literal,)*) => {$(
        #[tokio::test]
        async fn $name() {
            assert_redacted(ToolCall::new("leak", json!({"encoding": $encoding}))).await;
        }
    )*};
}

leak_tests! {
    a_secret_echoed_verbatim_is_redacted: "plain",
    a_secret_echoed_in_upper_case_is_redacted: "upper",
    a_secret_echoed_reversed_is_redacted: "reversed",
    a_secret_echoed_in_base64_is_redacted: "base64",
    a_secret_echoed_in_url_safe_base64_is_redacted: "base64url",
    a_secret_echoed_in_base64_mid_stream_is_redacted: "base64-mid",
    a_secret_echoed_percent_encoded_is_redacted: "url",
    a_secret_echoed_form_encoded_is_redacted: "form",
    a_secret_echoed_with_json_escaped_slashes_is_redacted: "json-slash",
    a_secret_echoed_as_json_unicode_escapes_is_redacted: "json-unicode",
    a_secret_echoed_in_hex_is_redacted: "hex",
    a_secret_echoed_in_upper_case_hex_is_redacted: "HEX",
    a_secret_echoed_in_two_halves_is_redacted: "split",
}

#[tokio::test]
async fn a_secret_in_a_connectors_401_snippet_is_redacted() {
    // The Jira stand-in answers 401 with the bearer token hex-encoded.
    assert_redacted(ToolCall::new(
        "jira401",
        json!({"project": "OPS", "summary": "x"}),
    ))
    .await;
}

#[tokio::test]
async fn a_basic_credentials_header_form_is_redacted() {
    let w = world().await;
    let r = w
        .app
        .call(
            "PUT",
            "/v1/credentials/leaky",
            Some(&w.key),
            Some(json!({"kind": "basic", "username": "svc-bot", "password": CANARY})),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    // `plain` echoes what follows `Basic `: base64("svc-bot:" + password).
    w.fake
        .push(Reply::tool_call("leak", json!({"encoding": "plain"})));
    w.fake.push(Reply::text("done"));
    let r = run(&w.app, &w.key, "leaker").await;
    assert_eq!(r["status"], "completed", "{r}");
    use base64::Engine as _;
    let header = base64::engine::general_purpose::STANDARD.encode(format!("svc-bot:{CANARY}"));
    let next = w.fake.requests()[1].body.to_string();
    assert!(!next.contains(&header[8..]), "{next}");
    assert!(next.contains("[redacted]"), "{next}");
    assert!(!r.to_string().contains(&header[8..]));
}

// ------------------------------------------------------------- suspension

/// A model that posts once, then holds its second answer until the test
/// releases it; every later answer asks for another post.
struct Gate {
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

fn gated_model(fake: &FakeProvider) -> Gate {
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(held);
    fake.set_responder(move |req| {
        if last_role(req) == "user" {
            return Some(Reply::tool_call(
                "slack",
                json!({"channel": "#ops", "text": "before"}),
            ));
        }
        let _ = arrived_tx.send(());
        // Bounded, so that a broken test fails instead of hanging.
        let _ = held.lock().unwrap().recv_timeout(Duration::from_secs(20));
        Some(Reply::tool_call(
            "slack",
            json!({"channel": "#ops", "text": "after"}),
        ))
    });
    Gate { arrived, release }
}

fn posts_after(saas: &SaasStandIn) -> usize {
    posts(saas).iter().filter(|p| p["text"] == "after").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspending_a_tenant_ends_its_running_run_before_the_answer() {
    let w = world().await;
    let mut gate = gated_model(&w.fake);
    let scope = w.app.scope(&w.key).await;
    let runtime = w.app.state.runtime.clone();
    let started = runtime
        .start(
            &scope,
            "slow",
            RunRequest {
                input: "go".into(),
                thread_id: None,
            },
        )
        .await
        .unwrap();
    // The first post is made; the second model call is in flight.
    tokio::time::timeout(Duration::from_secs(20), gate.arrived.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(posts(&w.saas).len(), 1);
    let r = w
        .app
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // By the time the suspension is answered the run's end is stored.
    let stored = runtime.run(&scope, started.run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert_eq!(stored.error.as_ref().unwrap().code, "tenant_suspended");
    let ended = tokio::time::timeout(Duration::from_secs(20), started.finished)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled);
    // The model's answer asking for another post arrives after: nothing
    // is left to make it.
    gate.release.send(()).unwrap();
    drop(gate.release);
    let stored = runtime
        .wait(&scope, ended.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert_eq!(posts_after(&w.saas), 0);
    assert_eq!(posts(&w.saas).len(), 1);
    // Resumed, the tenant reads the run's end in its own chain.
    let r = w
        .app
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let events = w.app.audit(&w.key).await;
    let finish = events.iter().find(|e| e["action"] == "run.finish").unwrap();
    assert_eq!(finish["details"]["error"], "tenant_suspended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_that_missed_the_suspension_stops_at_its_next_call() {
    let w = world().await;
    let mut gate = gated_model(&w.fake);
    let scope = w.app.scope(&w.key).await;
    let runtime = w.app.state.runtime.clone();
    let started = runtime
        .start(
            &scope,
            "slow",
            RunRequest {
                input: "go".into(),
                thread_id: None,
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), gate.arrived.recv())
        .await
        .unwrap()
        .unwrap();
    // Suspended in the store only, as another replica would: this
    // process's runtime hears nothing of it.
    let op = w.app.operator_scope();
    bulkhead_store::ControlStore::update_tenant(
        &w.app.store,
        &op,
        &bulkhead_core::TenantId::parse("acme").unwrap(),
        bulkhead_core::tenant::TenantPatch {
            status: Some(bulkhead_core::TenantStatus::Suspended),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    gate.release.send(()).unwrap();
    drop(gate.release);
    let ended = tokio::time::timeout(Duration::from_secs(20), started.finished)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled, "{:?}", ended.error);
    assert_eq!(ended.error.as_ref().unwrap().code, "tenant_suspended");
    assert_eq!(posts_after(&w.saas), 0);
    assert_eq!(posts(&w.saas).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_tenant_ends_its_running_run_first() {
    let w = world().await;
    let mut gate = gated_model(&w.fake);
    let scope = w.app.scope(&w.key).await;
    let runtime = w.app.state.runtime.clone();
    let started = runtime
        .start(
            &scope,
            "slow",
            RunRequest {
                input: "go".into(),
                thread_id: None,
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), gate.arrived.recv())
        .await
        .unwrap()
        .unwrap();
    let r = w
        .app
        .call(
            "DELETE",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let ended = tokio::time::timeout(Duration::from_secs(20), started.finished)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.status, RunStatus::Cancelled);
    assert_eq!(ended.error.as_ref().unwrap().code, "tenant_deleted");
    // The run's task is gone: the model's late answer has nobody to act
    // on it.
    gate.release.send(()).unwrap();
    drop(gate.release);
    assert!(
        runtime
            .wait(&scope, ended.id, Duration::from_secs(1))
            .await
            .is_err()
    );
    assert_eq!(posts_after(&w.saas), 0);
    assert_eq!(posts(&w.saas).len(), 1);
}
