//! Policies through the router: a tenant's Cedar policies are validated
//! (an invalid text is refused and the old one stays), apply from the
//! next request, decide tool calls by their arguments, and the platform's
//! policies come from `[policies] file`.

use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, ToolCall};
use serde_json::{Value, json};

use crate::support::*;

fn tables(fake: &FakeProvider, saas: &SaasStandIn, extra: &str) -> String {
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
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
{notify}
[[agents]]
name = "support"
model = "small"
prompt = "You are support."
tools = ["notify"]
max_steps = 3
{extra}
"#
    )
}

async fn put(app: &TestApp, key: &str, text: &str) -> Resp {
    app.call(
        "PUT",
        "/v1/policies",
        Some(key),
        Some(json!({ "policies": text })),
    )
    .await
}

#[tokio::test]
async fn an_invalid_policy_is_refused_with_the_validators_message_and_the_old_one_stays() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas, "")).await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let (_, viewer) = app.api_key("acme", &["viewer"]).await;
    let good = r#"forbid(principal, action == Action::"search", resource) unless { principal.roles.contains("admin") };"#;
    let r = put(&app, &admin, good).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (bad, needle) in [
        (
            "permit(principal, action, resource",
            "unexpected end of input",
        ),
        (
            r#"permit(principal, action == Action::"fly", resource);"#,
            "fly",
        ),
        (
            r#"permit(principal, action == Action::"search", resource) when { resource.colour == "red" };"#,
            "colour",
        ),
    ] {
        let r = put(&app, &admin, bad).await;
        r.assert_problem(400, "invalid_policy");
        assert!(
            r.body["detail"].as_str().unwrap().contains(needle),
            "{bad}: {}",
            r.body
        );
    }
    let r = app.call("GET", "/v1/policies", Some(&admin), None).await;
    assert_eq!(r.body["policies"], good, "the old policies stay");
    // Viewers may read them, not change them.
    let r = app.call("GET", "/v1/policies", Some(&viewer), None).await;
    assert_eq!(r.status, 200);
    put(&app, &viewer, "")
        .await
        .assert_problem(403, "forbidden");
    let events = app.audit(&admin).await;
    let updates: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "policies.update")
        .collect();
    assert_eq!(updates.len(), 1, "only the accepted change is recorded");
    assert_eq!(updates[0]["details"]["bytes"], good.len());
}

#[tokio::test]
async fn a_policy_change_applies_from_the_next_request() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas, "")).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let (_, member) = app.api_key("acme", &["member"]).await;
    let (_, other) = app.api_key("globex", &["member"]).await;
    let search = json!({"query": "anything"});
    let path = "/v1/collections/faq/search";
    let r = app
        .call("POST", path, Some(&member), Some(search.clone()))
        .await;
    assert_ne!(r.status, 403, "{}", r.body);
    let r = put(
        &app,
        &admin,
        r#"forbid(principal, action == Action::"search", resource) unless { principal.roles.contains("admin") };"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = app
        .call("POST", path, Some(&member), Some(search.clone()))
        .await;
    r.assert_problem(403, "forbidden");
    // Another tenant's policies are its own.
    let r = app
        .call("POST", path, Some(&other), Some(search.clone()))
        .await;
    assert_ne!(r.status, 403, "{}", r.body);
    // Cleared: back to the platform's defaults.
    assert_eq!(put(&app, &admin, "").await.status, 200);
    let r = app.call("POST", path, Some(&member), Some(search)).await;
    assert_ne!(r.status, 403, "{}", r.body);
}

#[tokio::test]
async fn tool_calls_are_decided_by_their_arguments_and_an_approval_annotation_pauses() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    fake.set_responder(|req| {
        let last = req["messages"].as_array()?.last()?.clone();
        if last["role"] == "tool" {
            return Some(Reply::text("done"));
        }
        Some(Reply::tool_calls([
            ToolCall::new("notify", json!({"text": "public"})),
            ToolCall::new("notify", json!({"text": "secret"})),
        ]))
    });
    let app = TestApp::with_config("", &tables(&fake, &saas, "")).await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let (_, member) = app.api_key("acme", &["member"]).await;
    let r = put(
        &app,
        &admin,
        r#"
        // No "secret" leaves through notify.
        forbid(principal, action == Action::"call_tool", resource)
          when { resource.hasTag("text") && resource.getTag("text") == "secret" };
        "#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let run = |input: &'static str| {
        let app = &app;
        let member = member.clone();
        async move {
            app.call(
                "POST",
                "/v1/agents/support/runs",
                Some(&member),
                Some(json!({ "input": input })),
            )
            .await
        }
    };
    let r = run("notify").await;
    assert_eq!(r.body["status"], "completed", "{}", r.body);
    let codes = |body: &Value| -> Vec<Value> {
        body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == "tool_refused" || s["kind"] == "tool_result")
            .map(|s| s["data"]["code"].clone())
            .collect()
    };
    let got = codes(&r.body);
    assert!(got.contains(&json!("policy_denied")), "{got:?}");
    assert!(got.contains(&Value::Null), "the other call ran: {got:?}");
    let sent: Vec<String> = saas
        .requests()
        .iter()
        .map(|q| q.query.clone().unwrap_or_default())
        .collect();
    assert_eq!(sent, ["text=public"], "only the permitted call was sent");
    // A permit that requires approval: the run pauses, nothing is sent.
    let r = put(
        &app,
        &admin,
        r#"@approval("required")
        permit(principal, action == Action::"call_tool", resource) when { resource.kind == "http" };"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    saas.clear();
    let r = run("notify").await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "awaiting_approval");
    let asked: Vec<&Value> = r.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "approval_requested")
        .map(|s| &s["data"]["arguments"]["text"])
        .collect();
    assert_eq!(asked, [&json!("public"), &json!("secret")], "{}", r.body);
    assert!(saas.requests().is_empty());
    let refused = app
        .audit(&admin)
        .await
        .into_iter()
        .filter(|e| e["action"] == "tool.refused")
        .count();
    assert_eq!(
        refused, 1,
        "the refusal is audited; paused calls are not refusals"
    );
}

#[tokio::test]
async fn the_platform_policies_come_from_the_configured_file() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("platform.cedar");
    // Like the defaults, but viewers do not read the audit chain.
    let text = format!(
        "{}\nforbid(principal, action == Action::\"read_audit\", resource) when {{ principal.roles.contains(\"viewer\") }};",
        bulkhead_policy::DEFAULT_PLATFORM_POLICIES
    );
    std::fs::write(&file, text).unwrap();
    let extra = format!("[policies]\nfile = \"{}\"", file.display());
    let app = TestApp::with_config("", &tables(&fake, &saas, &extra)).await;
    app.create_tenant("acme", "eu").await;
    let (_, viewer) = app.api_key("acme", &["viewer"]).await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    app.call("GET", "/v1/audit", Some(&viewer), None)
        .await
        .assert_problem(403, "forbidden");
    assert_eq!(
        app.call("GET", "/v1/audit", Some(&admin), None)
            .await
            .status,
        200
    );
    // A platform file that does not validate stops the boot, naming it.
    std::fs::write(
        &file,
        "permit(principal, action == Action::\"fly\", resource);",
    )
    .unwrap();
    let config = bulkhead_core::config::load(
        &format!("[policies]\nfile = \"{}\"", file.display()),
        &|_| None,
    )
    .unwrap();
    let err = bulkhead_server::boot::policy_engine(&config, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("platform.cedar") && err.contains("fly"),
        "{err}"
    );
}

#[tokio::test]
async fn deeply_nested_policy_text_is_refused_and_the_server_stays_up() {
    // 150 parentheses (350 bytes), nested `if`s or sets aborted the whole
    // process by overflowing the stack (the test app's bodies are small).
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    let app = TestApp::with_config("", &tables(&fake, &saas, "")).await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let cases = [
        format!("{}true{}", "(".repeat(150), ")".repeat(150)),
        format!(
            "{}true{}",
            "if true then ".repeat(100),
            " else false".repeat(100)
        ),
        format!("[{}1{}].contains(1)", "[".repeat(1500), "]".repeat(1500)),
    ];
    for cond in cases {
        let text = format!("permit(principal, action, resource) when {{ {cond} }};");
        let r = put(&app, &admin, &text).await;
        r.assert_problem(400, "invalid_policy");
        assert!(
            r.body["detail"].as_str().unwrap().contains("levels deep"),
            "{}",
            r.body
        );
    }
    let r = app.call("GET", "/v1/policies", Some(&admin), None).await;
    assert_eq!(r.status, 200, "the server still answers");
    assert_eq!(r.body["policies"], "");
}
