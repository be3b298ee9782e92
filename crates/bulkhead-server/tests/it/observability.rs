//! Per-tenant metrics and alert rules: each tenant's `GET /v1/metrics`
//! shows only its own series; an alert rule fires for the tenant whose
//! error rate crossed it (not for another, not for the platform as a
//! whole), once, with a signed webhook and an audit event, and resolves
//! once the rate is back below; bad rules are refused naming the field.

use std::time::Duration;

use bulkhead_testkit::wait::eventually;
use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, Usage};
use serde_json::{Value, json};

use crate::support::*;

fn tables(fake: &FakeProvider, saas: &SaasStandIn) -> String {
    format!(
        r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok = "1"
price_output_per_mtok = "2"
[[alerts]]
name = "errors"
metric = "error_rate"
threshold = 0.02
window_s = 300
min_samples = 50
[alerting]
operator_webhook = "{hooks}/echo/operator"
signing_key = "env:ALERT_KEY"
"#,
        base = fake.base_url(),
        hooks = saas.base_url(),
    )
}

async fn text(app: &TestApp, path: &str, token: Option<&str>) -> String {
    let r = app.call("GET", path, token, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.as_str().unwrap().to_owned()
}

fn chat() -> Value {
    json!({"model": "small", "messages": [{"role": "user", "content": "hi"}]})
}

/// The value of one exposition line, `name{labels} value`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn each_tenant_scrapes_only_its_own_series() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas)).await;
    fake.set_responder(|_| Some(Reply::text("hello").with_usage(Usage::new(7, 3))));
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["member"]).await;
    let (_, globex) = app.api_key("globex", &["viewer"]).await;
    // Both at once: acme calls the model, globex reads its profile.
    let calls = (0..5).map(|_| app.call("POST", "/v1/chat/completions", Some(&acme), Some(chat())));
    let reads = (0..4).map(|_| app.call("GET", "/v1/me", Some(&globex), None));
    let (calls, reads) = tokio::join!(
        futures_util::future::join_all(calls),
        futures_util::future::join_all(reads)
    );
    assert!(calls.iter().all(|r| r.status == 200));
    assert!(reads.iter().all(|r| r.status == 200));
    app.state.gateway.drain().await;

    let mine = text(&app, "/v1/metrics", Some(&acme)).await;
    assert_eq!(
        sample(
            &mine,
            r#"bulkhead_tenant_model_calls_total{tenant="acme",model="small",kind="model",status="ok"}"#
        ),
        Some(5.0),
        "{mine}"
    );
    assert_eq!(
        sample(
            &mine,
            r#"bulkhead_tenant_model_tokens_total{tenant="acme",model="small",direction="input"}"#
        ),
        Some(35.0)
    );
    assert_eq!(
        sample(
            &mine,
            r#"bulkhead_tenant_http_requests_total{tenant="acme",status="200",code="ok"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &mine,
            r#"bulkhead_tenant_model_call_duration_seconds_count{tenant="acme",model="small"}"#
        ),
        Some(5.0)
    );
    assert!(mine.contains("bulkhead_tenant_model_cost_usd_total{tenant=\"acme\""));
    assert!(!mine.contains("globex"), "{mine}");

    let theirs = text(&app, "/v1/metrics", Some(&globex)).await;
    // Its four reads (the scrape itself is counted once it is answered).
    assert_eq!(
        sample(
            &theirs,
            r#"bulkhead_tenant_http_requests_total{tenant="globex",status="200",code="ok"}"#
        ),
        Some(4.0),
        "{theirs}"
    );
    assert!(!theirs.contains("acme"), "{theirs}");
    assert!(!theirs.contains("tenant_model_calls"), "{theirs}");

    // The platform sees both, under the same names.
    let all = text(&app, "/metrics", None).await;
    assert!(all.contains(r#"bulkhead_tenant_model_calls_total{tenant="acme",model="small",kind="model",status="ok"} 5"#));
    assert!(all.contains(r#"tenant="globex",status="200",code="ok""#));
    assert!(all.contains("# HELP bulkhead_tenant_http_requests "));
    dashboard_queries_only_exposed_metrics(&all);
}

/// Every metric the Grafana dashboard (deploy/grafana/bulkhead-tenants.json)
/// queries is one the server exposes: a per-tenant family (with its
/// histogram suffixes) or a name in `exposition`.
fn dashboard_queries_only_exposed_metrics(exposition: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/bulkhead-tenants.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut known: Vec<String> = Vec::new();
    for name in bulkhead_server::tenant_metrics::exposed_names() {
        for suffix in ["", "_bucket", "_sum", "_count"] {
            known.push(format!("{name}{suffix}"));
        }
    }
    known.extend(
        exposition
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned),
    );
    let mut exprs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{} queries", exprs.len());
    let mut queried = 0;
    for e in &exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("bulkhead_") {
            let start = i + at;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            let name = &e[start..end];
            assert!(
                known.iter().any(|k| k == name),
                "the dashboard queries {name}, which is not exposed"
            );
            queried += 1;
            i = end;
        }
    }
    assert!(queried >= exprs.len());
}

/// Only alert webhooks that went to `path`, as (type, body text).
fn posted(saas: &SaasStandIn, path: &str) -> Vec<(String, bulkhead_testkit::SaasRequest)> {
    saas.requests()
        .into_iter()
        .filter(|q| q.path == path)
        .map(|q| (q.json().unwrap()["type"].as_str().unwrap().to_owned(), q))
        .collect()
}

async fn put_alerts(app: &TestApp, key: &str, body: Value) -> Resp {
    app.call("PUT", "/v1/alerts", Some(key), Some(body)).await
}

#[tokio::test]
async fn one_tenants_error_rate_fires_and_resolves_its_alert_alone() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas)).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (_, globex) = app.api_key("globex", &["admin"]).await;
    for (key, name) in [(&acme, "acme"), (&globex, "globex")] {
        let hook = format!("{}/echo/{name}", saas.base_url());
        let r = put_alerts(&app, key, json!({"rules": [], "webhook": hook})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["platform_rules"][0]["name"], "errors");
    }
    // globex: 300 answered requests, no errors.
    for _ in 0..300 {
        assert_eq!(
            app.call("GET", "/v1/me", Some(&globex), None).await.status,
            200
        );
    }
    // acme: two provider failures (502), then fine requests. The rule
    // needs 50 samples: it fires at the 50th (2/50 = 4 % > 2 %).
    fake.push_all([Reply::error(500, "boom"), Reply::error(500, "boom")]);
    for _ in 0..2 {
        let r = app
            .call("POST", "/v1/chat/completions", Some(&acme), Some(chat()))
            .await;
        assert_eq!(r.status, 502, "{}", r.body);
    }
    for _ in 0..60 {
        assert_eq!(
            app.call("GET", "/v1/me", Some(&acme), None).await.status,
            200
        );
    }
    eventually(
        "acme's alert.fired webhook",
        Duration::from_secs(10),
        || async { !posted(&saas, "/echo/acme").is_empty() },
    )
    .await;
    // The platform as a whole stays well below 2 %.
    let all = text(&app, "/metrics", None).await;
    let (mut total, mut errors) = (0.0, 0.0);
    for l in all
        .lines()
        .filter(|l| l.starts_with("bulkhead_tenant_http_requests_total{"))
    {
        let v: f64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        total += v;
        if l.contains("status=\"5") {
            errors += v;
        }
    }
    assert_eq!(errors, 2.0, "{all}");
    assert!(errors / total < 0.02, "{errors}/{total}");

    // Back below: 2 errors in 100 or more samples is at most 2 %.
    for _ in 0..50 {
        assert_eq!(
            app.call("GET", "/v1/me", Some(&acme), None).await.status,
            200
        );
    }
    eventually(
        "acme's alert.resolved webhook",
        Duration::from_secs(10),
        || async { posted(&saas, "/echo/acme").len() == 2 },
    )
    .await;
    let hooks = posted(&saas, "/echo/acme");
    let types: Vec<&str> = hooks.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["alert.fired", "alert.resolved"]);
    for (_, req) in &hooks {
        let body = String::from_utf8(req.body.clone()).unwrap();
        assert_signed(req, &body);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["tenant"].as_str(), v["rule"].as_str()),
            (Some("acme"), Some("errors"))
        );
        assert_eq!(v["metric"], "error_rate");
        assert_eq!(v["window_s"], 300);
    }
    let fired: Value = hooks[0].1.json().unwrap();
    assert_eq!(fired["samples"], 50);
    assert_eq!(fired["value"], 0.04);
    // The operator heard the same two; globex's webhook heard nothing.
    let op: Vec<String> = posted(&saas, "/echo/operator")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(op, ["alert.fired", "alert.resolved"]);
    assert!(posted(&saas, "/echo/globex").is_empty());

    // Audit: exactly one alert.fired and one alert.resolved for acme, none for globex.
    let actions =
        |events: Vec<Value>, action: &str| events.iter().filter(|e| e["action"] == action).count();
    let events = app.audit(&acme).await;
    assert_eq!(actions(events.clone(), "alert.fired"), 1);
    assert_eq!(actions(events, "alert.resolved"), 1);
    let events = app.audit(&globex).await;
    assert_eq!(actions(events.clone(), "alert.fired"), 0);
    assert_eq!(actions(events, "alert.resolved"), 0);

    // The events list and the metric say the same.
    let r = app
        .call("GET", "/v1/alerts/events", Some(&acme), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed: Vec<&str> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["alert.fired", "alert.resolved"]);
    let r = app
        .call("GET", "/v1/alerts/events", Some(&globex), None)
        .await;
    assert_eq!(r.body["events"], json!([]));
    let mine = text(&app, "/v1/metrics", Some(&acme)).await;
    assert_eq!(
        sample(
            &mine,
            r#"bulkhead_tenant_alerts_total{tenant="acme",rule="errors",state="fired"}"#
        ),
        Some(1.0),
        "{mine}"
    );
    assert_eq!(
        sample(
            &mine,
            r#"bulkhead_tenant_alert_firing{tenant="acme",rule="errors"}"#
        ),
        Some(0.0)
    );
    let r = app.call("GET", "/v1/alerts", Some(&acme), None).await;
    assert_eq!(r.body["firing"], json!([]));
}

#[tokio::test]
async fn bad_rules_are_refused_naming_the_field() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas)).await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let (_, member) = app.api_key("acme", &["member"]).await;
    let rule = |extra: Value| {
        let mut r = json!({"name": "e", "metric": "error_rate", "threshold": 0.1, "window_s": 300});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"rules": [r], "webhook": null})
    };
    for (body, field) in [
        (rule(json!({"threshold": 1.5})), "rules[0].threshold"),
        (rule(json!({"window_s": 5})), "rules[0].window_s"),
        (rule(json!({"name": "Not OK"})), "rules[0].name"),
        (rule(json!({"of": "model"})), "rules[0].of"),
        (
            rule(json!({"metric": "spend_usd", "threshold": 25})),
            "rules[0].threshold",
        ),
        (
            rule(json!({"metric": "cross_tenant_block", "threshold": 0})),
            "rules[0].metric",
        ),
        (rule(json!({"min_samples": 0})), "rules[0].min_samples"),
        (json!({"rules": [], "webhook": "ftp://x"}), "webhook"),
    ] {
        let r = put_alerts(&app, &admin, body.clone()).await;
        r.assert_problem(400, "validation_failed");
        assert!(
            r.body["detail"].as_str().unwrap().starts_with(field),
            "{body}: {}",
            r.body
        );
    }
    let r = put_alerts(&app, &admin, rule(json!({"colour": "red"}))).await;
    r.assert_problem(400, "invalid_body");
    assert!(
        r.body["detail"].as_str().unwrap().contains("colour"),
        "{}",
        r.body
    );
    // Nothing was stored by the refusals; members may not change rules.
    let r = app.call("GET", "/v1/alerts", Some(&admin), None).await;
    assert_eq!(r.body["rules"], json!([]));
    let r = put_alerts(&app, &member, rule(json!({}))).await;
    r.assert_problem(403, "forbidden");
    // A good set is kept and audited without the webhook's URL.
    let good = json!({"rules": [
        {"name": "slow", "metric": "p99_latency_ms", "of": "model", "threshold": 2000, "window_s": 300, "min_samples": 20},
        {"name": "spend", "metric": "spend_usd", "threshold": "25.00", "window_s": 3600}
    ], "webhook": format!("{}/echo/acme?token=secret-token", saas.base_url())});
    let r = put_alerts(&app, &admin, good.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app.call("GET", "/v1/alerts", Some(&admin), None).await;
    assert_eq!(r.body["rules"][1]["threshold"], "25.00");
    assert_eq!(r.body["rules"][1]["min_samples"], 1);
    let events = app.audit(&admin).await;
    let update = events
        .iter()
        .find(|e| e["action"] == "alert.rules_update")
        .unwrap();
    assert_eq!(update["details"]["rules"], json!(["slow", "spend"]));
    assert_eq!(update["details"]["webhook_set"], true);
    assert!(!update.to_string().contains("secret-token"));
}

/// A credential presented with another tenant's `X-Tenant-ID` is refused,
/// counted for the credential's tenant, and raises the operator's
/// `cross_tenant_block` alert (not the tenant's webhook).
#[tokio::test]
async fn a_tenant_header_mismatch_raises_an_operator_alert() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas)).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let hook = format!("{}/echo/acme", saas.base_url());
    let r = put_alerts(&app, &acme, json!({"rules": [], "webhook": hook})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A tenant cannot replace the operator's rule.
    let r = put_alerts(
        &app,
        &acme,
        json!({"rules": [{"name": "cross_tenant_block", "metric": "error_rate",
            "threshold": 0.5, "window_s": 300}], "webhook": null}),
    )
    .await;
    r.assert_problem(400, "validation_failed");
    let r = app
        .call_with(
            "GET",
            "/v1/me",
            Some(&acme),
            None,
            &[("x-tenant-id", "globex")],
        )
        .await;
    r.assert_problem(403, "tenant_mismatch");
    eventually("the operator's alert", Duration::from_secs(10), || async {
        !posted(&saas, "/echo/operator").is_empty()
    })
    .await;
    let (kind, req) = &posted(&saas, "/echo/operator")[0];
    assert_eq!(kind, "alert.fired");
    let body = String::from_utf8(req.body.clone()).unwrap();
    assert_signed(req, &body);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["tenant"].as_str(),
            v["rule"].as_str(),
            v["metric"].as_str()
        ),
        (
            Some("acme"),
            Some("cross_tenant_block"),
            Some("cross_tenant_block")
        )
    );
    assert!(posted(&saas, "/echo/acme").is_empty());
    let mine = text(&app, "/v1/metrics", Some(&acme)).await;
    assert_eq!(
        sample(
            &mine,
            r#"bulkhead_tenant_cross_tenant_blocks_total{tenant="acme",kind="tenant_header_mismatch"}"#
        ),
        Some(1.0),
        "{mine}"
    );
    let r = app
        .call("GET", "/v1/alerts/events", Some(&acme), None)
        .await;
    assert_eq!(r.body["events"][0]["rule"], "cross_tenant_block");
    let r = app.call("GET", "/v1/alerts", Some(&acme), None).await;
    assert_eq!(r.body["firing"], json!(["cross_tenant_block"]));
}
