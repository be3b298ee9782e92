//! Quotas and budgets through the router: concurrent calls against a
//! budget, streams that end early, per-minute limits with `Retry-After`,
//! concurrent runs, tool calls, the cost ledger's reports, quota patches
//! and the signed budget alert.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, ToolCall, Usage};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::*;

/// Every call answers 1,000 input and 100 output tokens: at $1 and $2 per
/// million that is $0.0012 (1,200,000 nano-dollars) a call.
const CALL_NANOS: u64 = 1_200_000;

fn tables(fake: &FakeProvider, saas: &SaasStandIn, quotas: &str) -> String {
    let base = fake.base_url();
    let notify = notify_tool(saas);
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
name = "metered"
provider = "fake-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok = "1"
price_output_per_mtok = "2"
[[embedding_models]]
name = "embed"
provider = "fake-eu"
upstream = "text-embedding-3-small"
dimensions = 16
price_input_per_mtok = "1000"
[knowledge]
embedding_model = "embed"
{notify}
[[agents]]
name = "support"
model = "metered"
prompt = "You are support."
tools = ["notify"]
max_steps = 3
[quotas.alerts]
thresholds = [50, 100]
signing_key = "env:ALERT_KEY"
{quotas}
"#
    )
}

struct World {
    fake: FakeProvider,
    saas: SaasStandIn,
    app: Arc<TestApp>,
    acme: String,
    globex: String,
}

async fn world(quotas: &str) -> World {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    fake.set_responder(|req| {
        // By the conversation, so concurrent runs get their own answers:
        // tool rounds end in text, "slow" never gets an answer in time,
        // "post" asks for two notifications; anything else is echoed.
        let last = req["messages"].as_array()?.last()?.clone();
        if last["role"] == "tool" {
            return Some(Reply::text("done").with_usage(Usage::new(1000, 100)));
        }
        match last["content"].as_str()? {
            "slow" => Some(Reply::delay(
                std::time::Duration::from_secs(3600),
                Reply::text("late"),
            )),
            // Answers after a short while (the provider's own time).
            "slowish" => Some(Reply::delay(
                std::time::Duration::from_millis(200),
                Reply::text("eventually").with_usage(Usage::new(1000, 100)),
            )),
            "post" => Some(
                Reply::tool_calls([
                    ToolCall::new("notify", json!({"text": "one"})),
                    ToolCall::new("notify", json!({"text": "two"})),
                ])
                .with_usage(Usage::new(1000, 100)),
            ),
            _ => None,
        }
    });
    let app = TestApp::with_config("", &tables(&fake, &saas, quotas)).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (_, globex) = app.api_key("globex", &["admin"]).await;
    World {
        fake,
        saas,
        app: Arc::new(app),
        acme,
        globex,
    }
}

fn metered(max_tokens: u64) -> Value {
    json!({"model": "metered", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "hello"}]})
}

/// Starts a streamed run of `support` as acme; returns its id (from the
/// first event) and the still-open event stream.
async fn start_streamed(w: &World, input: &str) -> (String, Body) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/agents/support/runs")
        .header("authorization", format!("Bearer {}", w.acme))
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::to_vec(&json!({"input": input, "stream": true})).unwrap(),
        ))
        .unwrap();
    let res = w.app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut stream = res.into_body();
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    let first = String::from_utf8_lossy(&first).into_owned();
    let data = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let run_id = serde_json::from_str::<Value>(data).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (run_id, stream)
}

/// Cancels acme's run `run_id` (202: it ends in its own task).
async fn cancel(w: &World, run_id: &str) {
    let r = w
        .app
        .call(
            "POST",
            &format!("/v1/runs/{run_id}/cancel"),
            Some(&w.acme),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
}

/// A metered chat completion as `key`.
async fn chat(w: &World, key: &str, max_tokens: u64) -> Resp {
    w.app
        .call(
            "POST",
            "/v1/chat/completions",
            Some(key),
            Some(metered(max_tokens)),
        )
        .await
}

/// Runs the `support` agent on `input` as `key` (the ended run).
async fn run(w: &World, key: &str, input: &str) -> Resp {
    w.app
        .call(
            "POST",
            "/v1/agents/support/runs",
            Some(key),
            Some(json!({ "input": input })),
        )
        .await
}

fn answer_all(fake: &FakeProvider) {
    fake.set_responder(|_| Some(Reply::text("ok").with_usage(Usage::new(1000, 100))));
}

async fn patch_quotas(app: &TestApp, tenant: &str, quotas: Value) -> Resp {
    app.call(
        "PATCH",
        &format!("/admin/v1/tenants/{tenant}"),
        Some(OPERATOR_TOKEN),
        Some(json!({ "quotas": quotas })),
    )
    .await
}

/// The tenant's audit chain read through the store (a tenant-plane read
/// would itself count against a per-minute limit).
async fn events(app: &TestApp, key: &str) -> Vec<bulkhead_core::audit::AuditEvent> {
    use bulkhead_store::TenantStore;
    let scope = app.scope(key).await;
    app.store
        .audit(
            &scope,
            bulkhead_store::Page {
                after: 0,
                limit: 10_000,
            },
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn fifty_concurrent_calls_never_bill_past_the_budget_and_the_ledger_sums_to_the_spend() {
    // Room for ten calls' actual cost; each reserves its estimate first
    // (max_tokens 1000 → about 2 ms-dollars), more than it will cost.
    let w = world("[quotas.default]\nmonthly_budget_usd = \"0.012\"").await;
    answer_all(&w.fake);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = w.app.clone();
        let key = w.acme.clone();
        tasks.push(tokio::spawn(async move {
            app.call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(metered(1000)),
            )
            .await
        }));
    }
    let (mut ok, mut refused) = (0u64, 0u64);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.body["error"]["code"], "budget_exceeded", "{}", r.body);
                let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(after >= 1, "Retry-After {after}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(ok + refused, 50);
    assert!(
        (1..=10).contains(&ok),
        "{ok} calls billed against a budget for 10"
    );
    w.app.state.gateway.drain().await;
    // The ledger: one row per billed call, summing to the spend, within budget.
    let u = w
        .app
        .call("GET", "/v1/usage", Some(&w.acme), None)
        .await
        .body;
    assert_eq!(u["total"]["requests"], ok, "{u}");
    let spent = ok * CALL_NANOS;
    assert_eq!(
        u["total"]["cost_usd"],
        bulkhead_gateway::usage::nanos_to_usd(spent),
        "{u}"
    );
    assert!(spent <= 12_000_000);
    assert_eq!(
        w.fake.request_count(),
        ok,
        "refused calls never reach the provider"
    );
    // Every refusal is audited.
    let refusals = events(&w.app, &w.acme)
        .await
        .into_iter()
        .filter(|e| e.action == "limit.exceeded")
        .count() as u64;
    assert_eq!(refusals, refused);
    // Sequential calls fill the budget up to one estimate below it, then stop.
    let mut more = 0;
    loop {
        let r = chat(&w, &w.acme, 1000).await;
        w.app.state.gateway.drain().await;
        if r.status == 429 {
            assert_eq!(r.body["error"]["code"], "budget_exceeded");
            // Nothing in flight now: the budget itself is what is spent,
            // so the wait is until the month turns (more than a second).
            let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(after > 1, "Retry-After {after}");
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        more += 1;
        assert!(ok + more <= 10, "billed past the budget");
    }
    assert_eq!(
        ok + more,
        9,
        "the tenth call's estimate would overrun the budget"
    );
    // Another tenant's budget is its own.
    let r = chat(&w, &w.globex, 1000).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn stream_then_drop(app: &TestApp, key: &str, body: Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let mut body = res.into_body();
    // One chunk, then the client goes away.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
}

#[tokio::test]
async fn streams_that_end_early_settle_their_reservation() {
    // Room for the actual cost of one call plus one estimate, not for two
    // estimates: a reservation left behind would refuse the next call.
    let w = world("[quotas.default]\nmonthly_budget_usd = \"0.0035\"").await;
    let long = "word ".repeat(400);
    w.fake
        .set_responder(move |_| Some(Reply::text(long.clone()).with_usage(Usage::new(1000, 100))));
    let mut req = metered(1000);
    req["stream"] = json!(true);
    stream_then_drop(&w.app, &w.acme, req).await;
    w.app.state.gateway.drain().await;
    let u = w
        .app
        .call("GET", "/v1/usage", Some(&w.acme), None)
        .await
        .body;
    assert_eq!(
        u["total"]["cost_usd"],
        bulkhead_gateway::usage::nanos_to_usd(CALL_NANOS),
        "the abandoned stream is billed what it used: {u}"
    );
    // The upstream breaks a stream mid-way: no usage reported, the
    // reservation is still given back.
    w.fake.clear_responder();
    w.fake.push(Reply::cut_stream(2));
    let mut req = metered(1000);
    req["stream"] = json!(true);
    let r = w
        .app
        .call("POST", "/v1/chat/completions", Some(&w.acme), Some(req))
        .await;
    assert_eq!(r.status, 200);
    w.app.state.gateway.drain().await;
    answer_all(&w.fake);
    let r = chat(&w, &w.acme, 1000).await;
    assert_eq!(r.status, 200, "a reservation was left behind: {}", r.body);
    w.app.state.gateway.drain().await;
    // Now 2 × 1.2 spent: another estimate does not fit.
    let r = chat(&w, &w.acme, 1000).await;
    assert_eq!(r.status, 429, "{}", r.body);
}

#[tokio::test]
async fn requests_per_minute_answer_429_with_retry_after_and_an_audit_event() {
    let w = world("").await;
    let r = patch_quotas(&w.app, "acme", json!({"requests_per_minute": 5})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["quotas"], json!({"requests_per_minute": 5}));
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..12 {
        let r = w.app.call("GET", "/v1/me", Some(&w.acme), None).await;
        if r.status == 200 {
            ok += 1;
        } else {
            r.assert_problem(429, "rate_limited");
            let after: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&after), "Retry-After {after}");
            refused += 1;
        }
    }
    // Five a window; a minute turning during the loop allows five more.
    assert!((5..=10).contains(&ok), "{ok} admitted");
    assert!(refused >= 2);
    // The OpenAI-compatible paths answer in OpenAI's shape, same header.
    let r = w.app.call("GET", "/v1/models", Some(&w.acme), None).await;
    if r.status == 429 {
        assert_eq!(r.body["error"]["code"], "rate_limited", "{}", r.body);
        assert!(r.headers.contains_key("retry-after"));
    }
    // globex has no such limit.
    for _ in 0..12 {
        let r = w.app.call("GET", "/v1/me", Some(&w.globex), None).await;
        assert_eq!(r.status, 200);
    }
    let audited = events(&w.app, &w.acme)
        .await
        .into_iter()
        .filter(|e| e.action == "limit.exceeded")
        .count();
    assert!(
        audited >= refused,
        "{audited} events for {refused} refusals"
    );
}

#[tokio::test]
async fn quota_patches_merge_validate_and_clear() {
    let w = world("[quotas.default]\nrequests_per_minute = 600").await;
    let r = patch_quotas(&w.app, "acme", json!({"tokens_per_minute": 1000})).await;
    assert_eq!(r.body["quotas"], json!({"tokens_per_minute": 1000}));
    let r = patch_quotas(
        &w.app,
        "acme",
        json!({"daily_budget_usd": "1.5", "weight": 3, "alert_webhook": "https://hooks.example/x"}),
    )
    .await;
    assert_eq!(
        r.body["quotas"],
        json!({"tokens_per_minute": 1000, "daily_budget_usd": "1.5", "weight": 3,
               "alert_webhook": "https://hooks.example/x"})
    );
    let r = patch_quotas(&w.app, "acme", json!({"tokens_per_minute": null})).await;
    assert_eq!(
        r.body["quotas"],
        json!({"daily_budget_usd": "1.5", "weight": 3, "alert_webhook": "https://hooks.example/x"})
    );
    for (bad, names) in [
        (json!({"bogus": 1}), "bogus"),
        (json!({"daily_budget_usd": "1.2.3"}), "daily_budget_usd"),
        (json!({"daily_budget_usd": 5}), "daily_budget_usd"),
        (json!({"weight": 0}), "weight"),
        (json!({"requests_per_minute": -1}), "requests_per_minute"),
        (json!({"alert_webhook": "ftp://x"}), "alert_webhook"),
    ] {
        let r = patch_quotas(&w.app, "acme", bad.clone()).await;
        r.assert_problem(400, "validation_failed");
        assert!(
            r.body["detail"].as_str().unwrap().contains(names),
            "{bad} → {}",
            r.body
        );
    }
    // The refused patches changed nothing.
    let r = w
        .app
        .call("GET", "/admin/v1/tenants/acme", Some(OPERATOR_TOKEN), None)
        .await;
    assert_eq!(r.body["quotas"]["weight"], 3, "{}", r.body);
    assert_eq!(r.body["quotas"].as_object().unwrap().len(), 3);
    let r = patch_quotas(&w.app, "nobody", json!({"weight": 2})).await;
    r.assert_problem(404, "not_found");
}

#[tokio::test]
async fn concurrent_runs_and_tool_calls_are_limited_and_tool_calls_enter_the_ledger() {
    let w = world("").await;
    patch_quotas(
        &w.app,
        "acme",
        json!({"concurrent_runs": 1, "tool_calls_per_minute": 1}),
    )
    .await;
    // Run 1 is held by a slow model answer while run 2 is asked for.
    let (run_id, stream) = start_streamed(&w, "slow").await;
    let r = run(&w, &w.acme, "again").await;
    r.assert_problem(429, "concurrency_limited");
    assert_eq!(r.headers["retry-after"], "1");
    // Another tenant is not held back.
    let r = run(&w, &w.globex, "hi").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Run 1 is cancelled; it ends (and frees its slot) in its own task.
    cancel(&w, &run_id).await;
    drop(stream);
    // Two tool calls in one turn against one tool call a minute: the first
    // runs, the second is refused to the model; the run completes.
    let started = std::time::Instant::now();
    let r = loop {
        let r = run(&w, &w.acme, "post").await;
        // Run 1's cancellation is recorded in its own task; until then the
        // slot is held (bounded wait, not a timing assumption).
        if r.status != 429 || started.elapsed().as_secs() > 30 {
            break r;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "completed", "{}", r.body);
    let results: Vec<&Value> = r.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "tool_result")
        .collect();
    let codes: Vec<&Value> = results.iter().map(|s| &s["data"]["code"]).collect();
    assert_eq!(codes.iter().filter(|c| c.is_null()).count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == "rate_limited").count(),
        1,
        "{codes:?}"
    );
    assert_eq!(w.saas.requests().len(), 1, "the refused call was not sent");
    // (No drain: rows are queued before the run answers, and reads wait
    // for what was queued before them; run 1's call is still in flight.)
    // The ledger by agent and tool: the model calls and the one tool call.
    let u = w
        .app
        .call("GET", "/v1/usage?group_by=agent,tool", Some(&w.acme), None)
        .await
        .body;
    let rows = u["rows"].as_array().unwrap();
    let tool_row = rows
        .iter()
        .find(|r| r["tool"] == "notify")
        .unwrap_or_else(|| panic!("{u}"));
    assert_eq!(tool_row["agent"], "support");
    assert_eq!(tool_row["requests"], 1);
    assert_eq!(tool_row["cost_usd"], "0.000000000");
    let model_row = rows
        .iter()
        .find(|r| r["tool"].is_null() && r["agent"] == "support")
        .unwrap_or_else(|| panic!("{u}"));
    assert!(model_row["requests"].as_u64().unwrap() >= 2, "{u}");
    assert!(
        rows.iter()
            .all(|r| r.get("day").is_none() && r.get("model").is_none())
    );
}

#[tokio::test]
async fn usage_reports_group_export_csv_and_the_operator_sees_every_tenant() {
    let w = world("").await;
    answer_all(&w.fake);
    for key in [&w.acme, &w.acme, &w.globex] {
        let r = w
            .app
            .call("POST", "/v1/chat/completions", Some(key), Some(metered(10)))
            .await;
        assert_eq!(r.status, 200);
    }
    w.app.state.gateway.drain().await;
    let u = w
        .app
        .call("GET", "/v1/usage", Some(&w.acme), None)
        .await
        .body;
    let rows = u["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{u}");
    assert_eq!(rows[0]["model"], "metered");
    assert!(rows[0]["day"].is_string());
    assert_eq!(rows[0]["requests"], 2);
    let r = w
        .app
        .call(
            "GET",
            "/v1/usage?group_by=model&format=csv",
            Some(&w.acme),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = r.body.as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "tenant,day,agent,model,tool,requests,input_tokens,output_tokens,cached_tokens,cost_usd",
            ",,,metered,,2,2000,200,0,0.002400000",
        ]
    );
    for bad in [
        "/v1/usage?group_by=week",
        "/v1/usage?group_by=day,day",
        "/v1/usage?format=xml",
        "/v1/usage?from=2026-13-01",
        "/v1/usage?bogus=1",
    ] {
        let r = w.app.call("GET", bad, Some(&w.acme), None).await;
        r.assert_problem(400, "invalid_parameter");
    }
    // The operator's view: each tenant's own rows.
    let r = w
        .app
        .call(
            "GET",
            "/admin/v1/usage?group_by=model",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.body["rows"].as_array().unwrap();
    let by: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().unwrap(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by, [("acme", 2), ("globex", 1)]);
    assert_eq!(r.body["total"]["requests"], 3);
    // A tenant's key is not the operator's.
    let r = w
        .app
        .call("GET", "/admin/v1/usage", Some(&w.acme), None)
        .await;
    r.assert_problem(401, "unauthenticated");
}

#[tokio::test]
async fn crossing_half_the_monthly_budget_posts_one_signed_webhook() {
    let w = world("[quotas.default]\nmonthly_budget_usd = \"0.012\"").await;
    let hook = format!("{}/echo", w.saas.base_url());
    patch_quotas(&w.app, "acme", json!({"alert_webhook": hook})).await;
    answer_all(&w.fake);
    // 50 % is 6,000,000 nano-dollars: the fifth call crosses it.
    for i in 1..=7 {
        let r = chat(&w, &w.acme, 100).await;
        assert_eq!(r.status, 200, "{}", r.body);
        w.app.state.gateway.drain().await;
        let posted = w.saas.requests().len();
        assert_eq!(posted, usize::from(i >= 5), "after call {i}");
    }
    let req = &w.saas.requests()[0];
    assert_eq!(req.path, "/echo");
    let body = String::from_utf8(req.body.clone()).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "budget.threshold");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["threshold_percent"], 50);
    assert_eq!(v["spent_usd"], "0.006000000");
    assert_eq!(v["monthly_budget_usd"], "0.012000000");
    // The signature verifies with the configured key over "<t>.<body>".
    assert_signed(req, &body);
    let alert_events: Vec<_> = events(&w.app, &w.acme)
        .await
        .into_iter()
        .filter(|e| e.action == "budget.alert")
        .collect();
    assert_eq!(alert_events.len(), 1);
    assert_eq!(
        alert_events[0].outcome,
        bulkhead_core::audit::Outcome::Success
    );
    // globex has no webhook: nothing posted for it.
    let r = chat(&w, &w.globex, 100).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn embeddings_count_against_the_budget_and_a_refused_ingestion_stores_nothing() {
    let w = world("").await;
    // A thousandth of a cent: less than one embedding call's estimate.
    patch_quotas(&w.app, "acme", json!({"daily_budget_usd": "0.00001"})).await;
    let doc = json!({"content": "The incident runbook says to page the on-call engineer."});
    let r = w
        .app
        .call(
            "POST",
            "/v1/collections/faq/documents",
            Some(&w.acme),
            Some(doc.clone()),
        )
        .await;
    r.assert_problem(429, "budget_exceeded");
    assert!(r.headers.contains_key("retry-after"));
    let r = w
        .app
        .call("GET", "/v1/collections", Some(&w.acme), None)
        .await;
    assert_eq!(r.body["collections"], json!([]), "{}", r.body);
    assert_eq!(w.fake.request_count(), 0, "nothing reached the provider");
    // globex, without that budget, ingests.
    let r = w
        .app
        .call(
            "POST",
            "/v1/collections/faq/documents",
            Some(&w.globex),
            Some(doc),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn a_model_call_in_flight_when_its_run_is_cancelled_is_still_recorded() {
    let w = world("").await;
    let (run_id, stream) = start_streamed(&w, "slowish").await;
    // The call has reached the provider (which takes 200 ms to answer).
    let started = std::time::Instant::now();
    while w.fake.request_count() == 0 {
        assert!(
            started.elapsed().as_secs() < 30,
            "the model call never left"
        );
        tokio::task::yield_now().await;
    }
    cancel(&w, &run_id).await;
    drop(stream);
    // The call is cancelled with its run (the provider's answer is not
    // waited for) and billed to the run's agent at its estimate: the
    // provider said nothing of what it used.
    w.app.state.gateway.drain().await;
    let u = w
        .app
        .call("GET", "/v1/usage?group_by=agent", Some(&w.acme), None)
        .await
        .body;
    let row = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent"] == "support")
        .unwrap_or_else(|| panic!("no ledger row for the cancelled run's call: {u}"))
        .clone();
    assert_eq!(row["requests"], 1);
    assert_ne!(row["cost_usd"], "0.000000000", "{u}");
    let calls: Vec<Value> = w
        .app
        .audit(&w.acme)
        .await
        .into_iter()
        .filter(|e| e["action"] == "model.call")
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["details"]["status"], "cancelled");
    assert_eq!(calls[0]["details"]["usage_estimated"], true);
    assert_eq!(calls[0]["run_id"], run_id.as_str());
    let run = w
        .app
        .call("GET", &format!("/v1/runs/{run_id}"), Some(&w.acme), None)
        .await
        .body;
    assert_eq!(run["status"], "cancelled", "{run}");
}

#[tokio::test]
async fn a_tenant_created_again_with_a_deleted_ones_id_starts_with_nothing_spent() {
    // Deleting a tenant and creating one with the same id carried the old
    // in-memory budget spend: the new tenant was refused budget_exceeded.
    let w = world("[quotas.default]\nmonthly_budget_usd = \"0.012\"").await;
    loop {
        let r = chat(&w, &w.acme, 1000).await;
        w.app.state.gateway.drain().await;
        if r.status == 429 {
            assert_eq!(r.body["error"]["code"], "budget_exceeded", "{}", r.body);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
    }
    w.app.delete_tenant("acme").await;
    w.app.create_tenant("acme", "eu").await;
    let (_, fresh) = w.app.api_key("acme", &["admin"]).await;
    let r = chat(&w, &fresh, 1000).await;
    assert_eq!(
        r.status, 200,
        "the new acme inherited the old one's spend: {}",
        r.body
    );
}
