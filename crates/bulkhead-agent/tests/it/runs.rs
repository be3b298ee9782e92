//! The run loop below HTTP: tool calls with the tenant's own credential,
//! the step and fan-out limits, refused calls, approvals, a foreign
//! fragment, cancel, and recovery of a run a dead process left running.

use std::time::Duration;

use bulkhead_agent::approval::{ApprovalStatus, Verdict};
use bulkhead_agent::{AgentStore, RunRequest, RunStatus};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{Role, TenantUid};
use bulkhead_testkit::{Reply, ToolCall};
use serde_json::{Value, json};

use crate::support::{World, kinds};

fn last(req: &Value) -> Value {
    req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or(Value::Null)
}

/// A model that posts the user's text to Slack, then answers "posted".
fn posts_then_answers(w: &World) {
    w.fake.set_responder(|req| {
        let m = last(req);
        match m["role"].as_str() {
            Some("user") => Some(Reply::tool_call(
                "slack",
                json!({"channel": "#ops", "text": m["content"]}),
            )),
            Some("tool") => Some(Reply::text("posted")),
            _ => None,
        }
    });
}

fn slack_posts(w: &World) -> Vec<bulkhead_testkit::SaasRequest> {
    w.saas
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/chat.postMessage")
        .collect()
}

fn refusal_codes(r: &bulkhead_agent::RunRecord) -> Vec<String> {
    r.steps
        .iter()
        .filter(|s| s.kind == "tool_refused")
        .map(|s| s.data["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_run_calls_its_tool_with_the_tenants_own_credential() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    let globex = w.tenant("globex", &[Role::Member]).await;
    w.slack_token(&acme, "xoxb-acme").await;
    w.slack_token(&globex, "xoxb-globex").await;
    posts_then_answers(&w);
    let r = w.run(&acme, "support", "disk full").await;
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(r.output.as_deref(), Some("posted"));
    assert_eq!(
        kinds(&r),
        [
            "model_call",
            "tool_call",
            "tool_result",
            "model_call",
            "message"
        ]
    );
    let posts = slack_posts(&w);
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].header("authorization"), Some("Bearer xoxb-acme"));
    assert_eq!(posts[0].json().unwrap()["text"], "disk full");
    // The model never saw the credential.
    for req in w.fake.requests() {
        assert!(!req.body.to_string().contains("xoxb-"), "{}", req.body);
    }
    // The run is stored as it ended, and only in acme's partition.
    let stored = w.store.run(&acme, r.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.steps.len()),
        (RunStatus::Completed, 5)
    );
    assert!(w.store.run(&globex, r.id).await.unwrap().is_none());
    let events: Vec<_> = w
        .store
        .audit_events(&acme)
        .iter()
        .map(|e| e.action)
        .collect();
    assert!(events.contains(&AuditAction::RunStart), "{events:?}");
    assert!(events.contains(&AuditAction::ToolCall), "{events:?}");
    assert!(events.contains(&AuditAction::RunFinish), "{events:?}");
}

#[tokio::test]
async fn a_missing_credential_is_refused_to_the_model_without_a_request() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    posts_then_answers(&w);
    let r = w.run(&acme, "support", "hello").await;
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    let result = r.steps.iter().find(|s| s.kind == "tool_result").unwrap();
    assert_eq!(result.data["code"], "missing_credential", "{result:?}");
    assert!(slack_posts(&w).is_empty());
}

#[tokio::test]
async fn a_run_that_never_answers_stops_at_the_step_limit() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    w.slack_token(&acme, "xoxb-acme").await;
    w.fake.set_responder(|_| {
        Some(Reply::tool_call(
            "slack",
            json!({"channel": "#ops", "text": "again"}),
        ))
    });
    let r = w.run(&acme, "support", "loop").await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap().code, "step_limit");
    assert_eq!(w.fake.request_count(), 3, "max_steps = 3");
    assert_eq!(slack_posts(&w).len(), 3);
}

#[tokio::test]
async fn an_unknown_tool_and_invalid_arguments_are_refused_and_nothing_is_sent() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    w.slack_token(&acme, "xoxb-acme").await;
    w.fake.push_all([
        Reply::tool_calls([
            ToolCall::new("rm_rf", json!({})),
            ToolCall::raw("slack", "{not json"),
            ToolCall::new("slack", json!({"channel": 5, "text": "x"})),
        ]),
        Reply::text("sorry"),
    ]);
    let r = w.run(&acme, "support", "do things").await;
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(
        refusal_codes(&r),
        ["unknown_tool", "invalid_arguments", "invalid_arguments"]
    );
    assert!(slack_posts(&w).is_empty());
    // The model hears of each refusal as the tool's answer.
    let second = &w.fake.requests()[1].body;
    let tool_messages: Vec<&Value> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_messages.len(), 3, "{second}");
    let events = w.store.audit_events(&acme);
    let refused: Vec<&NewAuditEvent> = events
        .iter()
        .filter(|e| e.action == AuditAction::ToolRefused)
        .collect();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|e| e.outcome == Outcome::Denied));
}

#[tokio::test]
async fn calls_past_the_fan_out_limits_are_refused_as_one_error() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    w.slack_token(&acme, "xoxb-acme").await;
    let call = |i: u32| ToolCall::new("slack", json!({"channel": "#ops", "text": format!("m{i}")}));
    w.fake.push_all([
        // Four asked, two per answer allowed.
        Reply::tool_calls((0..4).map(call)),
        // Two asked, one left of the run's three.
        Reply::tool_calls((4..6).map(call)),
        Reply::text("done"),
    ]);
    let r = w.run(&acme, "fanout", "spam").await;
    assert_eq!(r.status, RunStatus::Completed, "{r:?}");
    assert_eq!(refusal_codes(&r), ["tool_call_limit", "tool_call_limit"]);
    let texts: Vec<String> = slack_posts(&w)
        .iter()
        .map(|p| p.json().unwrap()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts.len(), 3);
    for t in ["m0", "m1", "m4"] {
        assert!(texts.contains(&t.to_owned()), "{texts:?}");
    }
    // The next request carries the calls made and the first refused one,
    // not every call the model asked for.
    let second = &w.fake.requests()[1].body;
    let assistant = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(
        assistant["tool_calls"].as_array().unwrap().len(),
        3,
        "{assistant}"
    );
}

/// Makes every Slack call of the tenant need a person's approval.
async fn slack_needs_approval(w: &World, scope: &bulkhead_auth::TenantScope) {
    w.policies
        .replace(
            scope,
            r#"@approval("required")
permit(principal, action == Action::"call_tool", resource) when { resource.kind == "slack" };"#,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_policy_requiring_approval_pauses_the_run_and_an_approval_resumes_it() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    let approver = w.tenant("acme", &[Role::Approver]).await;
    w.slack_token(&acme, "xoxb-acme").await;
    slack_needs_approval(&w, &acme).await;
    posts_then_answers(&w);
    let r = w.run(&acme, "support", "restart prod").await;
    assert_eq!(r.status, RunStatus::AwaitingApproval, "{r:?}");
    assert!(
        slack_posts(&w).is_empty(),
        "nothing is sent before approval"
    );
    let pending = w
        .runtime
        .approvals(&acme, Some(ApprovalStatus::Pending))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].tool, "slack");
    let decided = w
        .runtime
        .decide(&approver, &pending[0], Verdict::Approve, None, None)
        .await
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    let done = w
        .runtime
        .wait(&acme, r.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Completed, "{done:?}");
    assert_eq!(done.output.as_deref(), Some("posted"));
    let posts = slack_posts(&w);
    assert_eq!(posts.len(), 1, "made exactly once");
    assert_eq!(posts[0].header("authorization"), Some("Bearer xoxb-acme"));
    // A second decision finds it decided.
    assert!(
        w.runtime
            .decide(&approver, &decided, Verdict::Approve, None, None)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_denial_ends_the_run_without_calling_the_tool() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    let approver = w.tenant("acme", &[Role::Approver]).await;
    w.slack_token(&acme, "xoxb-acme").await;
    slack_needs_approval(&w, &acme).await;
    posts_then_answers(&w);
    let r = w.run(&acme, "support", "drop tables").await;
    assert_eq!(r.status, RunStatus::AwaitingApproval, "{r:?}");
    let pending = w.runtime.approvals(&acme, None).await.unwrap();
    w.runtime
        .decide(
            &approver,
            &pending[0],
            Verdict::Deny,
            Some("no".into()),
            None,
        )
        .await
        .unwrap();
    let done = w
        .runtime
        .wait(&acme, r.id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Failed, "{done:?}");
    assert_eq!(done.error.as_ref().unwrap().code, "approval_denied");
    assert!(slack_posts(&w).is_empty());
    assert_eq!(w.fake.request_count(), 1, "no model call after the denial");
}

#[tokio::test]
async fn another_tenants_fragment_stops_the_run_before_any_model_call() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    let thread = w
        .store
        .put_thread_with_message(
            &acme,
            TenantUid::generate(),
            &json!({"role": "user", "content": "from another tenant"}),
        )
        .unwrap();
    let started = w
        .runtime
        .start(
            &acme,
            "support",
            RunRequest {
                input: "hi".into(),
                thread_id: Some(thread),
            },
        )
        .await
        .unwrap();
    let r = started.finished.await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap().code, "foreign_fragment");
    assert_eq!(w.fake.request_count(), 0);
    assert!(
        w.store
            .audit_events(&acme)
            .iter()
            .any(|e| e.action == AuditAction::SecurityForeignFragment)
    );
}

/// Starts a run whose model answers only after a long time; returns once
/// the run has reached its first model call.
async fn start_slow(w: &World, scope: &bulkhead_auth::TenantScope) -> bulkhead_agent::RunStarted {
    w.fake
        .push(Reply::delay(Duration::from_secs(60), Reply::text("late")));
    let mut started = w
        .runtime
        .start(
            scope,
            "support",
            RunRequest {
                input: "slow".into(),
                thread_id: None,
            },
        )
        .await
        .unwrap();
    loop {
        let ev = started.events.recv().await.unwrap();
        if ev.event == "step" {
            break;
        }
    }
    started
}

#[tokio::test]
async fn a_cancelled_run_ends_cancelled() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    let started = start_slow(&w, &acme).await;
    let id = started.run.id;
    w.runtime.cancel(&acme, id).await.unwrap();
    let r = started.finished.await.unwrap();
    assert_eq!(r.status, RunStatus::Cancelled);
    assert_eq!(r.error.as_ref().unwrap().code, "cancelled");
    let stored = w.runtime.run(&acme, id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    // Another tenant cannot cancel (or see) it.
    let globex = w.tenant("globex", &[Role::Member]).await;
    assert!(w.runtime.cancel(&globex, id).await.is_err());
}

#[tokio::test]
async fn a_run_left_running_by_a_dead_process_is_recovered_as_interrupted() {
    let w = World::new().await;
    let acme = w.tenant("acme", &[Role::Member]).await;
    let started = start_slow(&w, &acme).await;
    let id = started.run.id;
    // The next process sees the same data; this one's run is still going.
    let next = w.runtime_over(w.store.restarted());
    let r = next.run(&acme, id).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.error.as_ref().unwrap().code, "interrupted");
    assert_eq!(r.steps.last().unwrap().data["code"], "interrupted");
    assert!(
        w.store
            .audit_events(&acme)
            .iter()
            .any(|e| e.action == AuditAction::RunInterrupted)
    );
    // Settled, it can be deleted; it is never resumed.
    next.delete_run(&acme, id).await.unwrap();
    assert!(next.run(&acme, id).await.is_err());
    w.runtime.shutdown().await;
}
