//! Approvals through the router: a tool call that needs approval pauses
//! its run; an approver (not the requester, by default) approves or
//! denies; the run resumes exactly once; concurrent decisions have one
//! outcome; another tenant's approver finds nothing; the tenant's webhook
//! hears of new requests; every step is a linked audit event.

use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, ToolCall};
use serde_json::{Value, json};

use crate::support::*;

/// `deploy`: a write tool that always needs approval, sending `text` to
/// the stand-in's `/echo/deploy`.
fn tables(fake: &FakeProvider, saas: &SaasStandIn, extra: &str) -> String {
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
[[tools]]
name = "deploy"
kind = "http"
region = "eu"
risk = "write"
approval = "always"
url = "{saas}/echo/deploy?text={{{{ text }}}}"
allowed_hosts = ["{addr}"]
[tools.parameters]
type = "object"
required = ["text"]
properties.text = {{ type = "string" }}
[[agents]]
name = "support"
model = "small"
prompt = "You are support."
tools = ["deploy"]
max_steps = 4
{extra}
"#,
        base = fake.base_url(),
        saas = saas.base_url(),
        addr = saas.addr(),
    )
}

/// The model asks to deploy what the user wrote, then answers "deployed"
/// once it has the tool's result.
fn script(fake: &FakeProvider) {
    fake.set_responder(|req| {
        let messages = req["messages"].as_array()?;
        let last = messages.last()?;
        if last["role"] == "tool" {
            let content = last["content"].as_str().unwrap_or_default();
            return Some(Reply::text(format!("deployed: {content}")));
        }
        let input = last["content"].as_str().unwrap_or_default().to_owned();
        Some(Reply::tool_calls([ToolCall::new(
            "deploy",
            json!({ "text": input }),
        )]))
    });
}

struct World {
    fake: FakeProvider,
    saas: SaasStandIn,
    app: TestApp,
    member: String,
    approver: String,
    admin: String,
    other_approver: String,
}

async fn world(extra: &str) -> World {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    script(&fake);
    let app = TestApp::with_config("", &tables(&fake, &saas, extra)).await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, member) = app.api_key("acme", &["member"]).await;
    let (_, approver) = app.api_key("acme", &["approver"]).await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let (_, other_approver) = app.api_key("globex", &["approver"]).await;
    World {
        fake,
        saas,
        app,
        member,
        approver,
        admin,
        other_approver,
    }
}

async fn start(w: &World, key: &str, input: &str) -> Resp {
    start_body(w, key, json!({ "input": input })).await
}

async fn start_body(w: &World, key: &str, body: Value) -> Resp {
    w.app
        .call("POST", "/v1/agents/support/runs", Some(key), Some(body))
        .await
}

/// Starts a run that pauses; returns (run id, approval id).
async fn paused(w: &World, key: &str, input: &str) -> (String, String) {
    let r = start(w, key, input).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "awaiting_approval");
    let step = r.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "approval_requested")
        .expect("an approval_requested step")
        .clone();
    (
        r.body["id"].as_str().unwrap().to_owned(),
        step["data"]["approval_id"].as_str().unwrap().to_owned(),
    )
}

async fn decide(w: &World, key: &str, id: &str, verdict: &str, comment: &str) -> Resp {
    decide_body(w, key, id, verdict, json!({ "comment": comment })).await
}

async fn decide_body(w: &World, key: &str, id: &str, verdict: &str, body: Value) -> Resp {
    w.app
        .call(
            "POST",
            &format!("/v1/approvals/{id}/{verdict}"),
            Some(key),
            Some(body),
        )
        .await
}

async fn wait_run(w: &World, key: &str, run: &str) -> Value {
    let r = w
        .app
        .call("GET", &format!("/v1/runs/{run}?wait=20"), Some(key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn deploys(saas: &SaasStandIn) -> Vec<String> {
    saas.requests()
        .iter()
        .filter(|q| q.path == "/echo/deploy")
        .map(|q| q.query.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_paused_run_resumes_once_when_an_approver_approves() {
    let w = world("").await;
    let (run, id) = paused(&w, &w.member, "v2").await;
    assert!(
        deploys(&w.saas).is_empty(),
        "nothing is sent before approval"
    );
    // The request, in the list and alone, with everything a person needs.
    let r = w
        .app
        .call(
            "GET",
            "/v1/approvals?status=pending",
            Some(&w.approver),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = r.body["approvals"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    let a = &listed[0];
    assert_eq!(a["id"], id.as_str());
    assert_eq!(a["status"], "pending");
    assert_eq!(a["run_id"], run.as_str());
    assert_eq!(a["agent"], "support");
    assert_eq!(a["tool"], "deploy");
    assert_eq!(a["arguments"], json!({"text": "v2"}));
    assert_eq!(
        a["arguments_hash"],
        bulkhead_agent::approval::arguments_hash(&json!({"text": "v2"}))
    );
    let summary = a["summary"].as_str().unwrap();
    assert!(
        summary.contains("`support`") && summary.contains("`acme`") && summary.contains("`deploy`"),
        "{summary}"
    );
    assert!(a["requested_by"].as_str().unwrap().starts_with("key:"));
    for field in ["created_at", "expires_at"] {
        assert!(a[field].is_string(), "{field}");
    }
    // The run is stored as paused.
    let r = w
        .app
        .call("GET", &format!("/v1/runs/{run}"), Some(&w.member), None)
        .await;
    assert_eq!(r.body["status"], "awaiting_approval");
    // Members and admins may not approve; a wrong hash is refused.
    decide(&w, &w.member, &id, "approve", "")
        .await
        .assert_problem(403, "forbidden");
    decide(&w, &w.admin, &id, "approve", "")
        .await
        .assert_problem(403, "forbidden");
    let r = decide_body(
        &w,
        &w.approver,
        &id,
        "approve",
        json!({"arguments_hash": "00".repeat(32)}),
    )
    .await;
    r.assert_problem(409, "approval_mismatch");
    // The approver approves, bound to the hash it saw.
    let r = decide_body(
        &w,
        &w.approver,
        &id,
        "approve",
        json!({"comment": "ship it", "arguments_hash": a["arguments_hash"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "approved");
    assert_eq!(r.body["comment"], "ship it");
    assert!(r.body["decided_by"].as_str().unwrap().starts_with("key:"));
    let done = wait_run(&w, &w.member, &run).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        done["output"].as_str().unwrap().starts_with("deployed:"),
        "{done}"
    );
    assert_eq!(deploys(&w.saas), ["text=v2"], "the tool ran exactly once");
    // A second decision changes nothing.
    decide(&w, &w.approver, &id, "approve", "again")
        .await
        .assert_problem(409, "approval_decided");
    decide(&w, &w.approver, &id, "deny", "too late")
        .await
        .assert_problem(409, "approval_decided");
    assert_eq!(deploys(&w.saas).len(), 1);
    // Request, decision and execution are linked events of the chain.
    let events = w.app.audit(&w.admin).await;
    let linked: Vec<&Value> = events
        .iter()
        .filter(|e| e["details"]["approval_id"] == id.as_str())
        .collect();
    let actions: Vec<&str> = linked
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["approval.request", "approval.approve", "tool.call"],
        "{linked:#?}"
    );
    assert_eq!(linked[1]["details"]["comment"], "ship it");
    for e in &linked {
        assert_eq!(e["run_id"], run.as_str(), "{e}");
    }
    assert_eq!(linked[2]["outcome"], "success");
    // The decision and the call it caused share a request id.
    assert_eq!(linked[1]["request_id"], linked[2]["request_id"]);
}

#[tokio::test]
async fn a_denied_call_is_never_made_and_the_run_ends_saying_why() {
    let w = world("").await;
    let (run, id) = paused(&w, &w.member, "v3").await;
    let r = decide(&w, &w.approver, &id, "deny", "not on a Friday").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "denied");
    let done = wait_run(&w, &w.member, &run).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "approval_denied");
    assert!(
        done["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not on a Friday"),
        "{done}"
    );
    assert!(deploys(&w.saas).is_empty(), "the tool was never called");
    // The model is told in the thread: the call's answer is the denial.
    let thread = done["thread_id"].as_str().unwrap();
    let r = w
        .app
        .call(
            "GET",
            &format!("/v1/threads/{thread}/messages"),
            Some(&w.member),
            None,
        )
        .await;
    let last = r.body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["message"]["role"], "tool");
    let content: Value =
        serde_json::from_str(last["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["error"], "approval_denied");
    // The thread is free again: the next run on it works.
    let r = start_body(&w, &w.member, json!({"input": "v4", "thread_id": thread})).await;
    assert_eq!(r.status, 202, "{}", r.body);
}

#[tokio::test]
async fn the_requester_may_not_approve_unless_the_tenant_allows_it() {
    let w = world("").await;
    let (_, both) = w.app.api_key("acme", &["member", "approver"]).await;
    let (run, id) = paused(&w, &both, "self").await;
    decide(&w, &both, &id, "approve", "it's me")
        .await
        .assert_problem(403, "forbidden");
    // The tenant permits self-approval for approvers.
    let r = w
        .app
        .call(
            "PUT",
            "/v1/policies",
            Some(&w.admin),
            Some(json!({"policies": r#"@id("self-approval")
                permit(principal, action == Action::"approve", resource)
                  when { principal.roles.contains("approver") && context.own_request };"#})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = decide(&w, &both, &id, "approve", "it's me").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_run(&w, &both, &run).await["status"], "completed");
}

#[tokio::test]
async fn another_tenants_approver_finds_nothing() {
    let w = world("").await;
    let (run, id) = paused(&w, &w.member, "secret plan").await;
    for verdict in ["approve", "deny"] {
        decide(&w, &w.other_approver, &id, verdict, "")
            .await
            .assert_problem(404, "not_found");
    }
    w.app
        .call(
            "GET",
            &format!("/v1/approvals/{id}"),
            Some(&w.other_approver),
            None,
        )
        .await
        .assert_problem(404, "not_found");
    let r = w
        .app
        .call("GET", "/v1/approvals", Some(&w.other_approver), None)
        .await;
    assert_eq!(r.body["approvals"], json!([]));
    assert!(!r.body.to_string().contains("secret plan"));
    // Still pending, and still approvable by its own tenant.
    let r = w
        .app
        .call(
            "GET",
            &format!("/v1/approvals/{id}"),
            Some(&w.approver),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "pending");
    assert_eq!(
        decide(&w, &w.approver, &id, "approve", "").await.status,
        200
    );
    assert_eq!(wait_run(&w, &w.member, &run).await["status"], "completed");
}

#[tokio::test]
async fn concurrent_decisions_have_exactly_one_outcome() {
    let w = world("").await;
    let (_, second) = w.app.api_key("acme", &["approver"]).await;
    let mut runs = Vec::new();
    for i in 0..8 {
        runs.push(paused(&w, &w.member, &format!("race{i}")).await);
    }
    let mut approved = 0;
    for (i, (run, id)) in runs.iter().enumerate() {
        // Even runs: approve + approve; odd: approve + deny.
        let other = if i % 2 == 0 { "approve" } else { "deny" };
        let (a, b) = tokio::join!(
            decide(&w, &w.approver, id, "approve", "first"),
            decide(&w, &second, id, other, "second"),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{} / {}", a.body, b.body);
        let winner = if a.status == 200 { &a } else { &b };
        let loser = if a.status == 200 { &b } else { &a };
        loser.assert_problem(409, "approval_decided");
        let done = wait_run(&w, &w.member, run).await;
        if winner.body["status"] == "approved" {
            approved += 1;
            assert_eq!(done["status"], "completed", "{done}");
        } else {
            assert_eq!(done["status"], "failed", "{done}");
        }
    }
    let mut sent = deploys(&w.saas);
    sent.sort();
    assert_eq!(
        sent.len(),
        approved,
        "each approved call ran once: {sent:?}"
    );
    let mut unique = sent.clone();
    unique.dedup();
    assert_eq!(unique, sent, "no call ran twice");
    assert!(approved >= 4, "approve + approve always approves");
}

#[tokio::test]
async fn cancelling_a_paused_run_ends_it_and_its_requests() {
    let w = world("").await;
    let (run, id) = paused(&w, &w.member, "never").await;
    // A paused thread takes no new run: its calls are still unanswered.
    let thread = w
        .app
        .call("GET", &format!("/v1/runs/{run}"), Some(&w.member), None)
        .await
        .body["thread_id"]
        .clone();
    let r = start_body(
        &w,
        &w.member,
        json!({"input": "again", "thread_id": thread}),
    )
    .await;
    r.assert_problem(409, "thread_paused");
    let r = w
        .app
        .call(
            "POST",
            &format!("/v1/runs/{run}/cancel"),
            Some(&w.member),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "cancelled");
    let r = w
        .app
        .call(
            "GET",
            &format!("/v1/approvals/{id}"),
            Some(&w.approver),
            None,
        )
        .await;
    assert_eq!(r.body["status"], "expired");
    decide(&w, &w.approver, &id, "approve", "")
        .await
        .assert_problem(409, "approval_decided");
    assert!(deploys(&w.saas).is_empty());
}

#[tokio::test]
async fn bad_parameters_and_decisions_are_refused_clearly() {
    let w = world("").await;
    let r = w
        .app
        .call("GET", "/v1/approvals?status=maybe", Some(&w.member), None)
        .await;
    r.assert_problem(400, "invalid_parameter");
    let r = w
        .app
        .call("GET", "/v1/approvals/not-an-id", Some(&w.member), None)
        .await;
    r.assert_problem(404, "not_found");
    let (_, id) = paused(&w, &w.member, "x").await;
    let r = decide_body(
        &w,
        &w.approver,
        &id,
        "approve",
        json!({"comment": "x".repeat(2001)}),
    )
    .await;
    r.assert_problem(400, "validation_failed");
    let r = decide_body(&w, &w.approver, &id, "approve", json!({"verdict": "yes"})).await;
    assert_eq!(r.status, 400, "unknown fields are refused: {}", r.body);
}

#[tokio::test]
async fn the_tenants_webhook_hears_of_each_new_request_signed() {
    let w = world("[approvals]\nsigning_key = \"env:ALERT_KEY\"").await;
    let hook = format!("{}/echo/hook", w.saas.base_url());
    let r = w
        .app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            Some(OPERATOR_TOKEN),
            Some(json!({"approval_webhook": hook})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["approval_webhook"], hook.as_str());
    let (run, id) = paused(&w, &w.member, "hooked").await;
    w.app.state.runtime.drain_notices().await;
    let hooks: Vec<_> = w
        .saas
        .requests()
        .into_iter()
        .filter(|q| q.path == "/echo/hook")
        .collect();
    assert_eq!(hooks.len(), 1);
    let body = String::from_utf8(hooks[0].body.clone()).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "approval.requested");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["approval"]["id"], id.as_str());
    assert_eq!(v["approval"]["run_id"], run.as_str());
    assert_eq!(v["approval"]["arguments"], json!({"text": "hooked"}));
    assert_signed(&hooks[0], &body);
    let events = w.app.audit(&w.admin).await;
    let notified: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "approval.notify")
        .collect();
    assert_eq!(notified.len(), 1);
    assert_eq!(notified[0]["details"]["approval_id"], id.as_str());
    assert_eq!(notified[0]["outcome"], "success");
    // A bad URL is refused by name; globex has no webhook.
    let r = w
        .app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            Some(OPERATOR_TOKEN),
            Some(json!({"approval_webhook": "ftp://x"})),
        )
        .await;
    r.assert_problem(400, "validation_failed");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("approval_webhook")
    );
    let _ = &w.fake;
}

#[tokio::test]
async fn without_a_signing_key_no_webhook_can_be_set() {
    let w = world("").await;
    let r = w
        .app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/settings",
            Some(OPERATOR_TOKEN),
            Some(json!({"approval_webhook": "https://hooks.example/a"})),
        )
        .await;
    r.assert_problem(400, "validation_failed");
    assert!(
        r.body["detail"].as_str().unwrap().contains("signing_key"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_undecided_request_expires_and_its_run_ends_without_the_call() {
    let w = world("[approvals]\nttl_s = 1").await;
    let (run, id) = paused(&w, &w.member, "slow").await;
    let (other_run, other_id) = paused(&w, &w.member, "slower").await;
    let op = w.app.operator_scope();
    // Expiry is wall-clock time passing: the sweep finds nothing until the
    // second is up, then settles both requests without anyone reading them.
    let expired = std::sync::atomic::AtomicUsize::new(0);
    let (counted, state, operator) = (&expired, &w.app.state, &op);
    bulkhead_testkit::wait::eventually(
        "both requests to expire",
        std::time::Duration::from_secs(20),
        || async move {
            let n = bulkhead_server::retention::expire_approvals_once(state, operator).await;
            counted.fetch_add(n as usize, std::sync::atomic::Ordering::SeqCst) + n as usize >= 2
        },
    )
    .await;
    assert_eq!(expired.into_inner(), 2);
    for (run, id) in [(&run, &id), (&other_run, &other_id)] {
        let done = wait_run(&w, &w.member, run).await;
        assert_eq!(done["status"], "failed", "{done}");
        assert_eq!(done["error"]["code"], "approval_expired");
        let r = w
            .app
            .call(
                "GET",
                &format!("/v1/approvals/{id}"),
                Some(&w.approver),
                None,
            )
            .await;
        assert_eq!(r.body["status"], "expired");
        assert!(r.body["decided_by"].is_null());
        decide(&w, &w.approver, id, "approve", "too late")
            .await
            .assert_problem(409, "approval_decided");
    }
    assert_eq!(
        bulkhead_server::retention::expire_approvals_once(&w.app.state, &op).await,
        0,
        "a settled request is not settled again"
    );
    assert!(deploys(&w.saas).is_empty());
    let events = w.app.audit(&w.admin).await;
    let expiries: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "approval.expire")
        .collect();
    assert_eq!(expiries.len(), 2);
    assert_eq!(
        expiries[0]["principal"], "operator",
        "the sweep is the actor"
    );
}

#[tokio::test]
async fn a_streamed_run_ends_its_stream_when_it_pauses() {
    let w = world("").await;
    let mut body = sse_events(
        &w.app,
        &w.member,
        "support",
        json!({"input": "streamed", "stream": true}),
    )
    .await;
    let mut names = Vec::new();
    let mut last = Value::Null;
    while let Some((name, data)) = next_event(&mut body).await {
        names.push(name);
        last = data;
    }
    assert!(
        names.contains(&"approval_requested".to_owned()),
        "{names:?}"
    );
    assert_eq!(names.last().map(String::as_str), Some("awaiting_approval"));
    assert_eq!(last["status"], "awaiting_approval");
    let id = last["approvals"][0]["id"].as_str().unwrap().to_owned();
    let run = last["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        decide(&w, &w.approver, &id, "approve", "").await.status,
        200
    );
    assert_eq!(wait_run(&w, &w.member, &run).await["status"], "completed");
}

#[tokio::test]
async fn a_request_carrying_another_tenants_canary_is_never_asked_for() {
    let w = world("").await;
    let globex = w.app.scope(&w.other_approver).await.partition();
    let leaked = canary_text(&w.app, globex);
    // A manipulated model puts the other tenant's canary in the call's
    // arguments (the prompt itself is clean).
    w.fake.set_responder(move |req| {
        let last = req["messages"].as_array()?.last()?.clone();
        if last["role"] == "tool" {
            return Some(Reply::text("gave up"));
        }
        Some(Reply::tool_calls([ToolCall::new(
            "deploy",
            json!({ "text": leaked.clone() }),
        )]))
    });
    let r = start(&w, &w.member, "exfiltrate").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let refused: Vec<&Value> = r.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "tool_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{}", r.body);
    assert_eq!(refused[0]["data"]["code"], "cross_tenant_leak");
    let r = w
        .app
        .call("GET", "/v1/approvals", Some(&w.approver), None)
        .await;
    assert_eq!(
        r.body["approvals"],
        json!([]),
        "nothing for a person to see"
    );
    assert!(deploys(&w.saas).is_empty());
}

#[tokio::test]
async fn a_cancel_racing_an_approval_leaves_one_consistent_outcome() {
    let w = world("").await;
    for i in 0..6 {
        let (run, id) = paused(&w, &w.member, &format!("cancel-race{i}")).await;
        let before = deploys(&w.saas).len();
        let path = format!("/v1/runs/{run}/cancel");
        let (cancel, approve) = tokio::join!(
            w.app.call("POST", &path, Some(&w.member), None),
            decide(&w, &w.approver, &id, "approve", "race"),
        );
        let done = wait_run(&w, &w.member, &run).await;
        let sent = deploys(&w.saas).len() - before;
        match (cancel.status, approve.status) {
            // Cancelled while paused: the request expired, nothing was sent.
            (202, 409) => {
                approve.assert_problem(409, "approval_decided");
                assert_eq!(done["status"], "cancelled", "{done}");
                assert_eq!(sent, 0);
            }
            // Approved first: the resumed run was cancelled or finished.
            (202 | 409, 200) => {
                assert!(sent <= 1, "{sent}");
                assert!(
                    ["cancelled", "completed"].contains(&done["status"].as_str().unwrap()),
                    "{done}"
                );
            }
            other => panic!("{other:?}: {} / {}", cancel.body, approve.body),
        }
    }
}

#[tokio::test]
async fn a_caller_who_may_not_decide_settles_nothing_not_even_an_expiry() {
    let w = world("[approvals]\nttl_s = 1").await;
    let (_run, id) = paused(&w, &w.member, "slow").await;
    let r = w
        .app
        .call("GET", &format!("/v1/approvals/{id}"), Some(&w.member), None)
        .await;
    let expires = bulkhead_core::Timestamp::parse(r.body["expires_at"].as_str().unwrap()).unwrap();
    bulkhead_testkit::wait::eventually(
        "the request's time to run out",
        std::time::Duration::from_secs(20),
        || async move { bulkhead_core::Timestamp::now() > expires },
    )
    .await;
    // A member may not approve: refused before anything is written.
    decide(&w, &w.member, &id, "approve", "")
        .await
        .assert_problem(403, "forbidden");
    let expiries = |events: Vec<Value>| {
        events
            .iter()
            .filter(|e| e["action"] == "approval.expire")
            .count()
    };
    assert_eq!(expiries(w.app.audit(&w.admin).await), 0);
    // An approver is answered that the request is settled, and it is.
    decide(&w, &w.approver, &id, "approve", "")
        .await
        .assert_problem(409, "approval_decided");
    assert_eq!(expiries(w.app.audit(&w.admin).await), 1);
    assert!(deploys(&w.saas).is_empty());
}
