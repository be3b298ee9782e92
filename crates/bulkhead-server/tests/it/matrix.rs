//! The isolation matrix: every route of the route table
//! (`bulkhead_server::routes::table`), called with the owner's
//! credential, another tenant's, forged ones, none, and (on the tenant
//! plane) each role's.
//!
//! The rows are the table's routes; [`entries`] supplies for each the
//! concrete path, the body and the expected statuses. A route without an
//! entry fails `every_route_has_a_matrix_entry`, naming it.

use std::collections::{BTreeMap, BTreeSet};

use bulkhead_server::routes::Plane;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::*;

/// Which of the roles the default platform policies know (`viewer`,
/// `member`, `approver`, `admin`; `bulkhead_policy::DEFAULT_PLATFORM_POLICIES`)
/// may call a tenant-plane route, by the action its handler authorises
/// (`docs/configuration.md`, `[policies]`); every other role gets
/// `403 forbidden`.
#[derive(Clone, Copy, Debug)]
enum Who {
    /// Reading, models and search: every role.
    Everyone,
    /// Running agents and managing documents: `member` and `admin`.
    Members,
    /// Deciding approvals: `approver` (not `admin`: admins may do
    /// everything except approve).
    Approvers,
    /// Credentials, agent settings, collections, policies, history:
    /// `admin`.
    Admins,
}

impl Who {
    fn allows(self, role: &str) -> bool {
        match self {
            Who::Everyone => true,
            Who::Members => matches!(role, "member" | "admin"),
            Who::Approvers => role == "approver",
            Who::Admins => role == "admin",
        }
    }
}

/// How one route is called, and what each caller gets.
struct Entry {
    method: &'static str,
    /// The route template, as in the route table.
    template: &'static str,
    /// The concrete path called.
    path: String,
    body: Option<Value>,
    /// Status for the rightful caller: the owner's API-key call, then the
    /// owner's JWT call (tenant plane); public and operator rows use the
    /// first.
    ok: [u16; 2],
    /// Status for another tenant's credential (tenant plane): 404 on the
    /// owner's resources; a route that acts on the caller's own tenant
    /// (lists, creations under a name) says which code it answers.
    other: u16,
    /// The roles allowed (tenant plane).
    who: Who,
}

impl Entry {
    /// The status of the owner's second (JWT) call, when the first one
    /// changed what the second finds.
    fn then(mut self, second: u16) -> Self {
        self.ok[1] = second;
        self
    }

    /// What another tenant's credential gets, when it is not 404.
    fn other(mut self, status: u16) -> Self {
        self.other = status;
        self
    }

    fn by(mut self, who: Who) -> Self {
        self.who = who;
        self
    }
}

fn entry(
    method: &'static str,
    template: &'static str,
    path: &str,
    body: Option<Value>,
    ok: u16,
) -> Entry {
    Entry {
        method,
        template,
        path: path.to_owned(),
        body,
        ok: [ok, ok],
        other: 404,
        who: Who::Everyone,
    }
}

/// Ids the entries refer to, and the owner's planted markers.
#[derive(Default)]
struct Fixture {
    owner_key: String,
    other_key: String,
    owner_key_id: String,
    /// A finished run of the owner's, and its thread.
    run_id: String,
    thread_id: String,
    /// A document of the owner's in collection `kb`.
    document_id: String,
    /// Finished runs of the owner's to delete: one by run, one by thread.
    trash_run_id: String,
    trash_thread_id: String,
    /// Two pending approval requests of the owner's.
    approvals: [String; 2],
    /// Strings only the owner's data holds: the planted markers below,
    /// the owner's ids and its tenant id. No response to another tenant
    /// may contain one (unless the request's own path does).
    markers: Vec<String>,
}

/// The owner tenant's policies: admins may also approve (so the owner's
/// admin credentials can decide the fixture's requests).
const MATRIX_POLICY: &str = r#"permit(principal, action == Action::"approve", resource) when { principal.roles.contains("admin") };"#;

/// Planted in the owner's data, each where another tenant's list could
/// show it.
const RUN_INPUT_MARKER: &str = "marker-run-input-5c1e";
const THREAD_MARKER: &str = "marker-thread-reply-9d2a";
const DOCUMENT_MARKER: &str = "marker-document-text-3b7f";
const COLLECTION_MARKER: &str = "marker-collection-8e4c";
const CONNECTION_MARKER: &str = "marker-connection-6a0d";
const APPROVAL_MARKER: &str = "marker-approval-argument-2f9b";
const SETTINGS_MARKER: &str = "marker-agent-setting-7c3e";
const POLICY_MARKER: &str = "marker-policy-role-4d8a";

/// A policy that never applies (no principal has its role), planted for
/// its text.
fn marker_policy() -> String {
    format!(
        r#"forbid(principal, action, resource) when {{ principal.roles.contains("{POLICY_MARKER}") }};"#
    )
}

fn entries(f: &Fixture) -> Vec<Entry> {
    use Who::*;
    let secret = json!({"kind": "api_key", "secret": "matrix-secret-value"});
    vec![
        entry("GET", "/healthz", "/healthz", None, 200),
        entry("GET", "/metrics", "/metrics", None, 200),
        entry("GET", "/openapi.json", "/openapi.json", None, 200),
        entry("GET", "/v1/me", "/v1/me", None, 200).other(200),
        entry("GET", "/v1/audit", "/v1/audit", None, 200).other(200),
        // Another tenant's credential exports its own chain.
        entry("GET", "/v1/audit/export", "/v1/audit/export", None, 200).other(200),
        entry("GET", "/v1/audit/keys", "/v1/audit/keys", None, 200).other(200),
        entry(
            "GET",
            "/admin/v1/audit/export",
            "/admin/v1/audit/export",
            None,
            200,
        ),
        entry(
            "GET",
            "/admin/v1/tenants/{id}/audit/export",
            "/admin/v1/tenants/acme/audit/export",
            None,
            200,
        ),
        entry("GET", "/admin/v1/tenants", "/admin/v1/tenants", None, 200),
        entry(
            "POST",
            "/admin/v1/tenants",
            "/admin/v1/tenants",
            Some(json!({"id": "fresh", "region": "eu"})),
            201,
        ),
        entry(
            "GET",
            "/admin/v1/tenants/{id}",
            "/admin/v1/tenants/acme",
            None,
            200,
        ),
        entry(
            "PATCH",
            "/admin/v1/tenants/{id}",
            "/admin/v1/tenants/acme",
            Some(json!({"name": "Acme Renamed"})),
            200,
        ),
        entry(
            "DELETE",
            "/admin/v1/tenants/{id}",
            "/admin/v1/tenants/doomed",
            None,
            204,
        ),
        entry(
            "GET",
            "/admin/v1/tenants/{id}/api-keys",
            "/admin/v1/tenants/acme/api-keys",
            None,
            200,
        ),
        entry(
            "POST",
            "/admin/v1/tenants/{id}/api-keys",
            "/admin/v1/tenants/acme/api-keys",
            Some(json!({"roles": ["viewer"]})),
            201,
        ),
        entry(
            "DELETE",
            "/admin/v1/tenants/{id}/api-keys/{key_id}",
            &format!("/admin/v1/tenants/acme/api-keys/{}", f.owner_key_id),
            None,
            204,
        ),
        entry("GET", "/admin/v1/audit", "/admin/v1/audit", None, 200),
        // Another tenant's credential names its own tenant's connection.
        entry(
            "PUT",
            "/v1/credentials/{connection}",
            "/v1/credentials/slack",
            Some(secret.clone()),
            201,
        )
        .then(200)
        .other(201)
        .by(Admins),
        entry("GET", "/v1/credentials", "/v1/credentials", None, 200)
            .other(200)
            .by(Admins),
        // Its own `slack`, created by the row above: the owner's is still
        // there for the owner to delete.
        entry(
            "DELETE",
            "/v1/credentials/{connection}",
            "/v1/credentials/slack",
            None,
            204,
        )
        .then(404)
        .other(204)
        .by(Admins),
        entry(
            "PUT",
            "/admin/v1/tenants/{id}/credentials/{connection}",
            "/admin/v1/tenants/acme/credentials/ops",
            Some(secret.clone()),
            201,
        ),
        entry(
            "GET",
            "/admin/v1/tenants/{id}/credentials",
            "/admin/v1/tenants/acme/credentials",
            None,
            200,
        ),
        entry(
            "DELETE",
            "/admin/v1/tenants/{id}/credentials/{connection}",
            "/admin/v1/tenants/acme/credentials/ops",
            None,
            204,
        ),
        entry(
            "PUT",
            "/admin/v1/platform/credentials/{connection}",
            "/admin/v1/platform/credentials/openai",
            Some(secret),
            201,
        ),
        entry(
            "GET",
            "/admin/v1/platform/credentials",
            "/admin/v1/platform/credentials",
            None,
            200,
        ),
        entry(
            "DELETE",
            "/admin/v1/platform/credentials/{connection}",
            "/admin/v1/platform/credentials/openai",
            None,
            204,
        ),
        entry(
            "POST",
            "/admin/v1/kms/rotate",
            "/admin/v1/kms/rotate",
            None,
            200,
        ),
        entry(
            "POST",
            "/admin/v1/kms/rewrap",
            "/admin/v1/kms/rewrap",
            None,
            200,
        ),
        entry(
            "POST",
            "/admin/v1/tenants/{id}/data-key/rotate",
            "/admin/v1/tenants/acme/data-key/rotate",
            None,
            200,
        ),
        entry(
            "POST",
            "/v1/chat/completions",
            "/v1/chat/completions",
            Some(
                json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            404,
        ),
        entry("GET", "/v1/models", "/v1/models", None, 200).other(200),
        entry(
            "GET",
            "/v1/models/{id}",
            "/v1/models/no-such-model",
            None,
            404,
        ),
        entry(
            "POST",
            "/v1/embeddings",
            "/v1/embeddings",
            Some(json!({"model": "no-such-model", "input": "hi"})),
            404,
        ),
        // Responses' isolation (another tenant's id answers as a missing
        // one) is `openai_surface.rs`'s: this world has no model to make one.
        entry(
            "POST",
            "/v1/responses",
            "/v1/responses",
            Some(json!({"model": "no-such-model", "input": "hi"})),
            404,
        ),
        entry(
            "GET",
            "/v1/responses/{id}",
            "/v1/responses/resp_missing",
            None,
            404,
        ),
        entry(
            "DELETE",
            "/v1/responses/{id}",
            "/v1/responses/resp_missing",
            None,
            404,
        ),
        entry("GET", "/v1/usage", "/v1/usage", None, 200).other(200),
        entry("GET", "/v1/policies", "/v1/policies", None, 200).other(200),
        // The caller's own tenant's series only (and the owner's never:
        // its id is a marker).
        entry("GET", "/v1/metrics", "/v1/metrics", None, 200).other(200),
        entry("GET", "/v1/alerts", "/v1/alerts", None, 200)
            .other(200)
            .by(Admins),
        // Another tenant's credential sets its own tenant's rules.
        entry(
            "PUT",
            "/v1/alerts",
            "/v1/alerts",
            Some(json!({"rules": [{"name": "errors", "metric": "error_rate",
                "threshold": 0.5, "window_s": 300, "min_samples": 1000}], "webhook": null})),
            200,
        )
        .other(200)
        .by(Admins),
        entry("GET", "/v1/alerts/events", "/v1/alerts/events", None, 200)
            .other(200)
            .by(Admins),
        // Another tenant's credential sets its own tenant's policies.
        entry(
            "PUT",
            "/v1/policies",
            "/v1/policies",
            Some(json!({ "policies": MATRIX_POLICY })),
            200,
        )
        .other(200)
        .by(Admins),
        entry(
            "GET",
            "/v1/usage",
            "/v1/usage?group_by=agent,tool&format=csv",
            None,
            200,
        )
        .other(200),
        entry(
            "GET",
            "/admin/v1/usage",
            "/admin/v1/usage?group_by=day",
            None,
            200,
        ),
        entry(
            "PUT",
            "/admin/v1/tenants/{id}/models",
            "/admin/v1/tenants/acme/models",
            Some(json!({"allowed": null})),
            200,
        ),
        entry(
            "GET",
            "/admin/v1/tenants/{id}/models",
            "/admin/v1/tenants/acme/models",
            None,
            200,
        ),
        entry(
            "PUT",
            "/admin/v1/tenants/{id}/settings",
            "/admin/v1/tenants/acme/settings",
            Some(json!({"audit_prompts": false})),
            200,
        ),
        entry(
            "GET",
            "/admin/v1/tenants/{id}/settings",
            "/admin/v1/tenants/acme/settings",
            None,
            200,
        ),
        entry(
            "GET",
            "/v1/approvals",
            "/v1/approvals?status=pending",
            None,
            200,
        )
        .other(200),
        entry(
            "GET",
            "/v1/approvals/{id}",
            &format!("/v1/approvals/{}", f.approvals[0]),
            None,
            200,
        ),
        entry(
            "POST",
            "/v1/approvals/{id}/approve",
            &format!("/v1/approvals/{}/approve", f.approvals[0]),
            Some(json!({"comment": "matrix"})),
            200,
        )
        .then(409)
        .by(Approvers),
        entry(
            "POST",
            "/v1/approvals/{id}/deny",
            &format!("/v1/approvals/{}/deny", f.approvals[1]),
            Some(json!({"comment": "matrix"})),
            200,
        )
        .then(409)
        .by(Approvers),
        // Agents are the platform's: every tenant sees the same list.
        entry("GET", "/v1/agents", "/v1/agents", None, 200).other(200),
        // Each tenant has its own settings for a platform agent.
        entry(
            "GET",
            "/v1/agents/{agent}/settings",
            "/v1/agents/helper/settings",
            None,
            200,
        )
        .other(200)
        .by(Admins),
        entry(
            "PUT",
            "/v1/agents/{agent}/settings",
            "/v1/agents/helper/settings",
            Some(json!({"variables": {"team": "ops"}})),
            200,
        )
        .other(200)
        .by(Admins),
        entry(
            "PATCH",
            "/v1/agents/{agent}/settings",
            "/v1/agents/helper/settings",
            Some(json!({"variables": {"tone": "dry"}})),
            200,
        )
        .other(200)
        .by(Admins),
        // Another tenant's credential starts its own tenant's run.
        entry(
            "POST",
            "/v1/agents/{agent}/runs",
            "/v1/agents/helper/runs",
            Some(json!({"input": "hello"})),
            200,
        )
        .other(200)
        .by(Members),
        // Lists of the caller's own tenant: another tenant's shows none
        // of the owner's runs or threads (the markers include their ids).
        entry("GET", "/v1/runs", "/v1/runs", None, 200).other(200),
        entry(
            "GET",
            "/v1/runs",
            "/v1/runs?agent=helper&status=completed&limit=5",
            None,
            200,
        )
        .other(200),
        entry("GET", "/v1/threads", "/v1/threads", None, 200).other(200),
        entry(
            "GET",
            "/v1/threads",
            "/v1/threads?agent=helper&limit=5",
            None,
            200,
        )
        .other(200),
        entry(
            "GET",
            "/v1/runs/{id}",
            &format!("/v1/runs/{}", f.run_id),
            None,
            200,
        ),
        entry(
            "POST",
            "/v1/runs/{id}/cancel",
            &format!("/v1/runs/{}/cancel", f.run_id),
            None,
            409,
        )
        .by(Members),
        entry("GET", "/v1/collections", "/v1/collections", None, 200).other(200),
        // Another tenant's credential adds to its own tenant's `kb`.
        entry(
            "POST",
            "/v1/collections/{collection}/documents",
            "/v1/collections/kb/documents",
            Some(json!({"content": "hello matrix", "external_id": "m1"})),
            201,
        )
        .then(200)
        .other(201)
        .by(Members),
        // ...and searches it.
        entry(
            "POST",
            "/v1/collections/{collection}/search",
            "/v1/collections/kb/search",
            Some(json!({"query": "hello"})),
            200,
        )
        .other(200),
        entry(
            "DELETE",
            "/v1/collections/{collection}/documents/{id}",
            &format!("/v1/collections/kb/documents/{}", f.document_id),
            None,
            204,
        )
        .then(404)
        .by(Members),
        entry(
            "DELETE",
            "/v1/collections/{collection}",
            "/v1/collections/trash",
            None,
            204,
        )
        .then(404)
        .by(Admins),
        entry(
            "POST",
            "/admin/v1/tenants/{id}/collections/{collection}/documents",
            "/admin/v1/tenants/acme/collections/kb/documents",
            Some(json!({"content": "hello operator", "external_id": "op1"})),
            201,
        ),
        entry(
            "POST",
            "/admin/v1/tenants/{id}/collections/{collection}/search",
            "/admin/v1/tenants/acme/collections/kb/search",
            Some(json!({"query": "hello"})),
            200,
        ),
        entry(
            "GET",
            "/v1/threads/{id}/messages",
            &format!("/v1/threads/{}/messages", f.thread_id),
            None,
            200,
        ),
        entry(
            "DELETE",
            "/v1/runs/{id}",
            &format!("/v1/runs/{}", f.trash_run_id),
            None,
            204,
        )
        .then(404)
        .by(Admins),
        entry(
            "DELETE",
            "/v1/threads/{id}",
            &format!("/v1/threads/{}", f.trash_thread_id),
            None,
            204,
        )
        .then(404)
        .by(Admins),
    ]
}

/// Each route's plane, from the route table.
fn planes() -> BTreeMap<(&'static str, String), Plane> {
    bulkhead_server::routes::table()
        .routes()
        .iter()
        .map(|r| ((r.method, r.path.clone()), r.plane))
        .collect()
}

fn plane_of(planes: &BTreeMap<(&'static str, String), Plane>, e: &Entry) -> Plane {
    *planes
        .get(&(e.method, e.template.to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "matrix entry {} {} names no route of the table",
                e.method, e.template
            )
        })
}

/// The matrix's app: one model (the fake provider) and one agent.
async fn matrix_app(fake: &bulkhead_testkit::FakeProvider) -> TestApp {
    let tables = format!(
        r#"
[[providers]]
name = "fake"
kind = "openai"
base_url = "{}/v1"
region = "eu"
credential = "env:FAKE_KEY"
[[models]]
name = "small"
provider = "fake"
upstream = "gpt-4o-mini"
[[tools]]
name = "risky"
kind = "http"
region = "eu"
approval = "always"
url = "{}/risky"
allowed_hosts = ["{}"]
[tools.parameters]
type = "object"
[[agents]]
name = "helper"
model = "small"
prompt = "You help."
tools = ["risky"]
"#,
        fake.base_url(),
        fake.base_url(),
        fake.base_url().trim_start_matches("http://")
    );
    // "needs approval" asks for the risky tool (with a marker in its
    // arguments, so in the approval's summary); the owner's marked input
    // gets a marked answer; anything after a tool result is answered; the
    // rest gets the fake's default answer.
    fake.set_responder(|req| {
        let last = req["messages"].as_array()?.last()?.clone();
        if last["role"] == "tool" {
            return Some(bulkhead_testkit::Reply::text("ok"));
        }
        if last["content"] == RUN_INPUT_MARKER {
            return Some(bulkhead_testkit::Reply::text(THREAD_MARKER));
        }
        (last["content"] == "needs approval").then(|| {
            bulkhead_testkit::Reply::tool_calls([bulkhead_testkit::ToolCall::new(
                "risky",
                json!({ "note": APPROVAL_MARKER }),
            )])
        })
    });
    TestApp::with_config("", &tables).await
}

/// Credentials that must never authenticate anything.
fn forged(f: &Fixture) -> Vec<(&'static str, String)> {
    let valid_hs = hs_token(&claims(HS_ISSUER, "acme"));
    let stripped = format!("{}.", valid_hs.rsplit_once('.').unwrap().0);
    let mut tampered = claims(HS_ISSUER, "acme");
    tampered["roles"] = json!(["admin"]);
    let (h, _, s) = {
        let mut parts = valid_hs.split('.');
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        )
    };
    let swapped_payload = format!("{h}.{}.{s}", b64(&serde_json::to_vec(&tampered).unwrap()));
    let mut owner_key_flipped = f.owner_key.clone();
    let last = owner_key_flipped.pop().unwrap();
    owner_key_flipped.push(if last == 'A' { 'B' } else { 'A' });
    vec![
        ("unknown api key", format!("bk_{}", "A".repeat(43))),
        ("truncated api key", f.owner_key[..20].to_owned()),
        ("api key with one character changed", owner_key_flipped),
        ("garbage", "not-a-token".to_owned()),
        (
            "alg none",
            raw_token(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims(HS_ISSUER, "acme"),
                "",
            ),
        ),
        (
            "hmac signed with the RSA public key",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&key_pem("rsa_public.pem")),
                None,
                &claims(RS_ISSUER, "acme"),
            ),
        ),
        (
            "wrong hmac secret",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"not-the-secret-not-the-secret-00"),
                None,
                &claims(HS_ISSUER, "acme"),
            ),
        ),
        ("signature stripped", stripped),
        ("payload swapped", swapped_payload),
        (
            "operator token on the tenant plane",
            OPERATOR_TOKEN.to_owned(),
        ),
    ]
}

/// The owner `acme` (its data marked), the other tenant `globex`, and
/// `doomed` for the operator to delete. `policies` are acme's own.
async fn fixture(app: &TestApp, policies: &str) -> Fixture {
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    app.create_tenant("doomed", "eu").await;
    let (owner_key_id, owner_key) = app.api_key("acme", &["admin"]).await;
    let (_, other_key) = app.api_key("globex", &["admin"]).await;
    let ok = |r: &Resp, status: u16| assert_eq!(r.status, status, "{}", r.body);
    let run = app
        .call(
            "POST",
            "/v1/agents/helper/runs",
            Some(&owner_key),
            Some(json!({ "input": RUN_INPUT_MARKER })),
        )
        .await;
    ok(&run, 200);
    assert!(run.body.to_string().contains(THREAD_MARKER), "{}", run.body);
    let mut trash = Vec::new();
    for _ in 0..2 {
        let r = app
            .call(
                "POST",
                "/v1/agents/helper/runs",
                Some(&owner_key),
                Some(json!({"input": "to delete"})),
            )
            .await;
        ok(&r, 200);
        trash.push(r.body);
    }
    let mut document_id = String::new();
    for collection in ["kb", "trash", COLLECTION_MARKER] {
        let doc = app
            .call(
                "POST",
                &format!("/v1/collections/{collection}/documents"),
                Some(&owner_key),
                Some(json!({ "content": format!("hello fixture {DOCUMENT_MARKER}") })),
            )
            .await;
        ok(&doc, 201);
        if collection == "kb" {
            document_id = doc.body["id"].as_str().unwrap().to_owned();
        }
    }
    let r = app
        .call(
            "PUT",
            &format!("/v1/credentials/{CONNECTION_MARKER}"),
            Some(&owner_key),
            Some(json!({"kind": "api_key", "secret": "marker-secret-value"})),
        )
        .await;
    ok(&r, 201);
    let r = app
        .call(
            "PUT",
            "/v1/agents/helper/settings",
            Some(&owner_key),
            Some(json!({ "variables": { "team": SETTINGS_MARKER } })),
        )
        .await;
    ok(&r, 200);
    let r = app
        .call(
            "PUT",
            "/v1/policies",
            Some(&owner_key),
            Some(json!({ "policies": format!("{policies}\n{}", marker_policy()) })),
        )
        .await;
    ok(&r, 200);
    let mut approvals = Vec::new();
    for _ in 0..2 {
        let r = app
            .call(
                "POST",
                "/v1/agents/helper/runs",
                Some(&owner_key),
                Some(json!({"input": "needs approval"})),
            )
            .await;
        ok(&r, 202);
        let step = r.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "approval_requested")
            .unwrap()
            .clone();
        approvals.push(step["data"]["approval_id"].as_str().unwrap().to_owned());
    }
    // Each marker is really in the owner's data, where the other tenant's
    // lists would show it.
    let shown = |path: &'static str| {
        let owner_key = owner_key.clone();
        async move {
            let r = app.call("GET", path, Some(&owner_key), None).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            r.body.to_string()
        }
    };
    let pending = shown("/v1/approvals?status=pending").await;
    assert!(pending.contains(APPROVAL_MARKER), "{pending}");
    assert!(shown("/v1/collections").await.contains(COLLECTION_MARKER));
    assert!(shown("/v1/credentials").await.contains(CONNECTION_MARKER));
    assert!(
        shown("/v1/agents/helper/settings")
            .await
            .contains(SETTINGS_MARKER)
    );
    assert!(shown("/v1/policies").await.contains(POLICY_MARKER));
    let thread_id = run.body["thread_id"].as_str().unwrap().to_owned();
    let run_id = run.body["id"].as_str().unwrap().to_owned();
    let trash_run_id = trash[0]["id"].as_str().unwrap().to_owned();
    let trash_thread_id = trash[1]["thread_id"].as_str().unwrap().to_owned();
    let mut markers: Vec<String> = [
        RUN_INPUT_MARKER,
        THREAD_MARKER,
        DOCUMENT_MARKER,
        COLLECTION_MARKER,
        CONNECTION_MARKER,
        APPROVAL_MARKER,
        SETTINGS_MARKER,
        POLICY_MARKER,
        "acme",
    ]
    .map(str::to_owned)
    .into();
    markers.extend([
        owner_key_id.clone(),
        run_id.clone(),
        thread_id.clone(),
        document_id.clone(),
        trash_run_id.clone(),
        trash_thread_id.clone(),
        approvals[0].clone(),
        approvals[1].clone(),
    ]);
    Fixture {
        approvals: [approvals[0].clone(), approvals[1].clone()],
        owner_key,
        other_key,
        owner_key_id,
        run_id,
        thread_id,
        document_id,
        trash_run_id,
        trash_thread_id,
        markers,
    }
}

#[tokio::test]
async fn every_endpoint_refuses_wrong_and_missing_credentials() {
    let fake = bulkhead_testkit::FakeProvider::start().await;
    let app = matrix_app(&fake).await;
    let f = fixture(&app, MATRIX_POLICY).await;
    let planes = planes();
    let ops_before = app
        .call("GET", "/admin/v1/audit", Some(OPERATOR_TOKEN), None)
        .await
        .body["events"]
        .as_array()
        .unwrap()
        .len();
    let forged = forged(&f);
    let mut admin_claims = claims(HS_ISSUER, "acme");
    admin_claims["roles"] = json!(["admin"]);
    let owner_jwt = hs_token(&admin_claims);
    for row in entries(&f) {
        let call = |token: Option<String>| {
            let app = &app;
            let row = &row;
            async move {
                app.call(row.method, &row.path, token.as_deref(), row.body.clone())
                    .await
            }
        };
        match plane_of(&planes, &row) {
            Plane::Public => {
                assert_eq!(
                    call(None).await.status,
                    row.ok[0],
                    "{} {}",
                    row.method,
                    row.path
                );
                for (name, token) in &forged {
                    assert_eq!(
                        call(Some(token.clone())).await.status,
                        row.ok[0],
                        "{name} on {}",
                        row.path
                    );
                }
            }
            Plane::Tenant => {
                call(None).await.assert_refusal(401, "unauthenticated");
                for (name, token) in &forged {
                    let r = call(Some(token.clone())).await;
                    assert_eq!(
                        r.status, 401,
                        "{name} on {} {}: {}",
                        row.method, row.path, r.body
                    );
                    r.assert_refusal(401, "unauthenticated");
                    let detail = r.body.get("detail").unwrap_or(&r.body["error"]["message"]);
                    assert_eq!(detail, "the request could not be authenticated", "{name}");
                }
                // Another tenant's credential: the owner's resources are
                // not found, and nothing it gets shows the owner's data.
                let r = call(Some(f.other_key.clone())).await;
                assert_eq!(
                    r.status, row.other,
                    "{} {} with another tenant's key: {}",
                    row.method, row.path, r.body
                );
                let text = r.body.to_string();
                for marker in f.markers.iter().filter(|m| !row.path.contains(m.as_str())) {
                    assert!(
                        !text.contains(marker.as_str()),
                        "{} {} with another tenant's key shows the owner's {marker:?}: {text}",
                        row.method,
                        row.path
                    );
                }
                // The owner, by API key and by JWT.
                for (token, ok) in [&f.owner_key, &owner_jwt].into_iter().zip(row.ok) {
                    let r = call(Some(token.clone())).await;
                    assert_eq!(r.status, ok, "{} {}: {}", row.method, row.path, r.body);
                    assert!(!r.body.to_string().contains("globex"), "{}", r.body);
                }
                // Owner credential with another tenant's header.
                let r = app
                    .call_with(
                        row.method,
                        &row.path,
                        Some(&f.owner_key),
                        row.body.clone(),
                        &[("x-tenant-id", "globex")],
                    )
                    .await;
                r.assert_refusal(403, "tenant_mismatch");
            }
            Plane::Operator => {
                call(None).await.assert_refusal(401, "unauthenticated");
                for (name, token) in &forged {
                    if token == OPERATOR_TOKEN {
                        continue;
                    }
                    let r = call(Some(token.clone())).await;
                    assert_eq!(
                        r.status, 401,
                        "{name} on {} {}: {}",
                        row.method, row.path, r.body
                    );
                }
                for token in [&f.owner_key, &f.other_key, &owner_jwt] {
                    call(Some(token.clone()))
                        .await
                        .assert_refusal(401, "unauthenticated");
                }
            }
        }
    }
    // No refused call changed anything: the operator chain holds only the
    // fixture's own events.
    let ops_after = app
        .call("GET", "/admin/v1/audit", Some(OPERATOR_TOKEN), None)
        .await
        .body["events"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        ops_before, ops_after,
        "a refused request was recorded as an operator action"
    );

    // Finally the operator succeeds on every operator row (mutations last).
    for row in entries(&f)
        .into_iter()
        .filter(|r| plane_of(&planes, r) == Plane::Operator)
    {
        let r = app
            .call(
                row.method,
                &row.path,
                Some(OPERATOR_TOKEN),
                row.body.clone(),
            )
            .await;
        assert_eq!(
            r.status, row.ok[0],
            "operator {} {}: {}",
            row.method, row.path, r.body
        );
    }
}

/// Every tenant-plane route called by a key with only `role`, in a
/// fresh app whose owner has no policies of its own (so the platform's
/// defaults decide): an allowed role gets what the owner's first call
/// gets, any other `403 forbidden`; every operator route answers 401.
async fn role_column(role: &str) {
    let fake = bulkhead_testkit::FakeProvider::start().await;
    let app = matrix_app(&fake).await;
    let f = fixture(&app, "").await;
    let (_, key) = app.api_key("acme", &[role]).await;
    let planes = planes();
    let (tenant_rows, operator_rows): (Vec<Entry>, Vec<Entry>) = entries(&f)
        .into_iter()
        .filter(|e| plane_of(&planes, e) != Plane::Public)
        .partition(|e| plane_of(&planes, e) == Plane::Tenant);
    // No role reaches the operator plane.
    for row in operator_rows {
        app.call(row.method, &row.path, Some(&key), row.body.clone())
            .await
            .assert_refusal(401, "unauthenticated");
    }
    let mut rows = tenant_rows;
    // An admin's `PUT /v1/policies` installs the matrix's own policy (admins
    // approve): it goes last so every other call meets the defaults.
    rows.sort_by_key(|e| e.method == "PUT" && e.template == "/v1/policies");
    for row in rows {
        let r = app
            .call(row.method, &row.path, Some(&key), row.body.clone())
            .await;
        if row.who.allows(role) {
            assert_eq!(
                r.status, row.ok[0],
                "{role} on {} {} ({:?}): {}",
                row.method, row.path, row.who, r.body
            );
        } else {
            assert_eq!(
                r.status, 403,
                "{role} on {} {} ({:?}) must be refused: {}",
                row.method, row.path, row.who, r.body
            );
            r.assert_refusal(403, "forbidden");
        }
    }
}

#[tokio::test]
async fn a_viewer_gets_what_the_roles_allow() {
    role_column("viewer").await;
}

#[tokio::test]
async fn a_member_gets_what_the_roles_allow() {
    role_column("member").await;
}

#[tokio::test]
async fn an_approver_gets_what_the_roles_allow() {
    role_column("approver").await;
}

#[tokio::test]
async fn an_admin_gets_what_the_roles_allow() {
    role_column("admin").await;
}

/// Adding a public route is a security decision: this list is the
/// reviewed one (`docs/ARCHITECTURE.md`, `bulkhead-server` invariants).
const REVIEWED_PUBLIC: [&str; 3] = ["/healthz", "/metrics", "/openapi.json"];

#[tokio::test]
async fn every_route_has_a_matrix_entry() {
    let table: BTreeSet<(&str, String)> = planes().into_keys().collect();
    let f = Fixture::default();
    let entries = entries(&f);
    let covered: BTreeSet<(&str, String)> = entries
        .iter()
        .map(|e| (e.method, e.template.to_owned()))
        .collect();
    for (method, path) in &table {
        assert!(
            covered.contains(&(*method, path.clone())),
            "{method} {path} has no entry in the isolation matrix (tests/it/matrix.rs `entries`)"
        );
    }
    for (method, path) in &covered {
        assert!(
            table.contains(&(*method, path.clone())),
            "the matrix entry {method} {path} names no route of the table"
        );
    }
    let public: BTreeSet<String> = bulkhead_server::routes::table()
        .routes()
        .iter()
        .filter(|r| r.plane == Plane::Public)
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        public,
        REVIEWED_PUBLIC.map(str::to_owned).into(),
        "the public routes changed: review them"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let app = TestApp::new().await;
    let doc = app.call("GET", "/openapi.json", None, None).await.body;
    let planes = planes();
    let mut documented = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()), op.clone());
        }
    }
    let table: BTreeSet<(String, String)> = planes
        .keys()
        .map(|(m, p)| (m.to_string(), p.clone()))
        .collect();
    assert_eq!(
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        table,
        "the served document differs from the route table"
    );
    // Each route's security requirement names its plane's scheme.
    for ((method, path), plane) in &planes {
        let op = &documented[&(method.to_string(), path.clone())];
        let schemes: BTreeSet<&str> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|req| req.as_object())
            .flat_map(|req| req.keys().map(String::as_str))
            .collect();
        assert_eq!(
            schemes,
            plane.security_scheme().into_iter().collect(),
            "{method} {path}: its security requirement does not match its plane {plane:?}"
        );
    }
    // The router serves each documented operation (a handler answers, not
    // the fallback's 404 or the 405 of a known path), and no other method
    // on a documented path.
    // Ids that exist nowhere: a handler still answers (401 before it
    // looks anything up).
    let id = "01900000-0000-7000-8000-000000000000".to_owned();
    let f = Fixture {
        owner_key_id: id.clone(),
        run_id: id.clone(),
        thread_id: id.clone(),
        document_id: id.clone(),
        trash_run_id: id.clone(),
        trash_thread_id: id.clone(),
        approvals: [id.clone(), id],
        ..Fixture::default()
    };
    let concrete: BTreeMap<(&str, &str), String> = entries(&f)
        .into_iter()
        .map(|e| ((e.method, e.template), e.path))
        .collect();
    for ((method, template), path) in &concrete {
        let plane = planes[&(*method, template.to_string())];
        let r = app.call(method, path, None, None).await;
        let expected = if plane == Plane::Public { 200 } else { 401 };
        assert_eq!(
            r.status, expected,
            "{method} {path} is not served: {}",
            r.body
        );
    }
    let paths: BTreeMap<&str, &str> = concrete
        .iter()
        .map(|((_, template), path)| (*template, path.as_str()))
        .collect();
    for (template, path) in paths {
        for method in ["GET", "PUT", "POST", "PATCH", "DELETE"] {
            if documented.contains_key(&(method.to_owned(), template.to_owned())) {
                continue;
            }
            let r = app.call(method, path, None, None).await;
            assert_eq!(
                r.status, 405,
                "{method} {path} is served but not documented: {}",
                r.body
            );
        }
    }
}

#[tokio::test]
async fn another_tenants_audit_is_invisible() {
    let fake = bulkhead_testkit::FakeProvider::start().await;
    let app = matrix_app(&fake).await;
    let f = fixture(&app, MATRIX_POLICY).await;
    let mine = app.audit(&f.owner_key).await;
    let theirs = app.audit(&f.other_key).await;
    assert!(!mine.is_empty() && !theirs.is_empty());
    assert!(mine.iter().all(|e| e["tenant"] == "acme"), "{mine:?}");
    assert!(theirs.iter().all(|e| e["tenant"] == "globex"), "{theirs:?}");
    let my_ids: BTreeSet<&str> = mine.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        theirs
            .iter()
            .all(|e| !my_ids.contains(e["id"].as_str().unwrap()))
    );
    // The export of the other tenant's chain holds none of acme's events.
    let r = app
        .call("GET", "/v1/audit/export", Some(&f.other_key), None)
        .await;
    assert_eq!(r.status, 200);
    let text = match &r.body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert!(text.contains("\"tenant\":\"globex\""), "{text}");
    assert!(!text.contains("\"tenant\":\"acme\""), "{text}");
    assert!(my_ids.iter().all(|id| !text.contains(id)));
}
