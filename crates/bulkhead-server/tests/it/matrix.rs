//! The isolation matrix: every endpoint, called with the owner's
//! credential, another tenant's, forged ones, and none.
//!
//! A new endpoint joins by adding a row to [`rows`]; the coverage test
//! fails until every route in the OpenAPI document has a row.

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Plane {
    Public,
    Tenant,
    Operator,
}

struct Row {
    method: &'static str,
    /// The route template as in the OpenAPI document.
    template: &'static str,
    /// The concrete path called.
    path: String,
    body: Option<Value>,
    plane: Plane,
    /// Status for the rightful caller: the owner's API-key call, then the
    /// owner's JWT call (tenant plane); operator rows use the first.
    ok: [u16; 2],
}

/// Ids the rows refer to.
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
}

/// The owner tenant's policies: admins may also approve (so the owner's
/// admin credentials can decide the fixture's requests).
const MATRIX_POLICY: &str = r#"permit(principal, action == Action::"approve", resource) when { principal.roles.contains("admin") };"#;

fn rows(f: &Fixture) -> Vec<Row> {
    let row = |method, template, path: &str, body: Option<Value>, plane, ok: u16| Row {
        method,
        template,
        path: path.to_owned(),
        body,
        plane,
        ok: [ok, ok],
    };
    let twice = |method, template, path: &str, body: Option<Value>, first: u16, second: u16| Row {
        method,
        template,
        path: path.to_owned(),
        body,
        plane: Plane::Tenant,
        ok: [first, second],
    };
    let secret = json!({"kind": "api_key", "secret": "matrix-secret-value"});
    vec![
        row("GET", "/healthz", "/healthz", None, Plane::Public, 200),
        row("GET", "/metrics", "/metrics", None, Plane::Public, 200),
        row(
            "GET",
            "/openapi.json",
            "/openapi.json",
            None,
            Plane::Public,
            200,
        ),
        row("GET", "/v1/me", "/v1/me", None, Plane::Tenant, 200),
        row("GET", "/v1/audit", "/v1/audit", None, Plane::Tenant, 200),
        row(
            "GET",
            "/admin/v1/tenants",
            "/admin/v1/tenants",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "POST",
            "/admin/v1/tenants",
            "/admin/v1/tenants",
            Some(json!({"id": "fresh", "region": "eu"})),
            Plane::Operator,
            201,
        ),
        row(
            "GET",
            "/admin/v1/tenants/{id}",
            "/admin/v1/tenants/acme",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "PATCH",
            "/admin/v1/tenants/{id}",
            "/admin/v1/tenants/acme",
            Some(json!({"name": "Acme Renamed"})),
            Plane::Operator,
            200,
        ),
        row(
            "DELETE",
            "/admin/v1/tenants/{id}",
            "/admin/v1/tenants/doomed",
            None,
            Plane::Operator,
            204,
        ),
        row(
            "GET",
            "/admin/v1/tenants/{id}/api-keys",
            "/admin/v1/tenants/acme/api-keys",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "POST",
            "/admin/v1/tenants/{id}/api-keys",
            "/admin/v1/tenants/acme/api-keys",
            Some(json!({"roles": ["viewer"]})),
            Plane::Operator,
            201,
        ),
        row(
            "DELETE",
            "/admin/v1/tenants/{id}/api-keys/{key_id}",
            &format!("/admin/v1/tenants/acme/api-keys/{}", f.owner_key_id),
            None,
            Plane::Operator,
            204,
        ),
        row(
            "GET",
            "/admin/v1/audit",
            "/admin/v1/audit",
            None,
            Plane::Operator,
            200,
        ),
        twice(
            "PUT",
            "/v1/credentials/{connection}",
            "/v1/credentials/slack",
            Some(secret.clone()),
            201,
            200,
        ),
        row(
            "GET",
            "/v1/credentials",
            "/v1/credentials",
            None,
            Plane::Tenant,
            200,
        ),
        twice(
            "DELETE",
            "/v1/credentials/{connection}",
            "/v1/credentials/slack",
            None,
            204,
            404,
        ),
        row(
            "PUT",
            "/admin/v1/tenants/{id}/credentials/{connection}",
            "/admin/v1/tenants/acme/credentials/ops",
            Some(secret.clone()),
            Plane::Operator,
            201,
        ),
        row(
            "GET",
            "/admin/v1/tenants/{id}/credentials",
            "/admin/v1/tenants/acme/credentials",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "DELETE",
            "/admin/v1/tenants/{id}/credentials/{connection}",
            "/admin/v1/tenants/acme/credentials/ops",
            None,
            Plane::Operator,
            204,
        ),
        row(
            "PUT",
            "/admin/v1/platform/credentials/{connection}",
            "/admin/v1/platform/credentials/openai",
            Some(secret),
            Plane::Operator,
            201,
        ),
        row(
            "GET",
            "/admin/v1/platform/credentials",
            "/admin/v1/platform/credentials",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "DELETE",
            "/admin/v1/platform/credentials/{connection}",
            "/admin/v1/platform/credentials/openai",
            None,
            Plane::Operator,
            204,
        ),
        row(
            "POST",
            "/admin/v1/kms/rotate",
            "/admin/v1/kms/rotate",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "POST",
            "/admin/v1/kms/rewrap",
            "/admin/v1/kms/rewrap",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "POST",
            "/admin/v1/tenants/{id}/data-key/rotate",
            "/admin/v1/tenants/acme/data-key/rotate",
            None,
            Plane::Operator,
            200,
        ),
        twice(
            "POST",
            "/v1/chat/completions",
            "/v1/chat/completions",
            Some(
                json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
            ),
            404,
            404,
        ),
        row("GET", "/v1/models", "/v1/models", None, Plane::Tenant, 200),
        row("GET", "/v1/usage", "/v1/usage", None, Plane::Tenant, 200),
        row(
            "GET",
            "/v1/policies",
            "/v1/policies",
            None,
            Plane::Tenant,
            200,
        ),
        row(
            "PUT",
            "/v1/policies",
            "/v1/policies",
            Some(json!({ "policies": MATRIX_POLICY })),
            Plane::Tenant,
            200,
        ),
        row(
            "GET",
            "/v1/usage",
            "/v1/usage?group_by=agent,tool&format=csv",
            None,
            Plane::Tenant,
            200,
        ),
        row(
            "GET",
            "/admin/v1/usage",
            "/admin/v1/usage?group_by=day",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "PUT",
            "/admin/v1/tenants/{id}/models",
            "/admin/v1/tenants/acme/models",
            Some(json!({"allowed": null})),
            Plane::Operator,
            200,
        ),
        row(
            "GET",
            "/admin/v1/tenants/{id}/models",
            "/admin/v1/tenants/acme/models",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "PUT",
            "/admin/v1/tenants/{id}/settings",
            "/admin/v1/tenants/acme/settings",
            Some(json!({"audit_prompts": false})),
            Plane::Operator,
            200,
        ),
        row(
            "GET",
            "/admin/v1/tenants/{id}/settings",
            "/admin/v1/tenants/acme/settings",
            None,
            Plane::Operator,
            200,
        ),
        row(
            "GET",
            "/v1/approvals",
            "/v1/approvals?status=pending",
            None,
            Plane::Tenant,
            200,
        ),
        row(
            "GET",
            "/v1/approvals/{id}",
            &format!("/v1/approvals/{}", f.approvals[0]),
            None,
            Plane::Tenant,
            200,
        ),
        twice(
            "POST",
            "/v1/approvals/{id}/approve",
            &format!("/v1/approvals/{}/approve", f.approvals[0]),
            Some(json!({"comment": "matrix"})),
            200,
            409,
        ),
        twice(
            "POST",
            "/v1/approvals/{id}/deny",
            &format!("/v1/approvals/{}/deny", f.approvals[1]),
            Some(json!({"comment": "matrix"})),
            200,
            409,
        ),
        row("GET", "/v1/agents", "/v1/agents", None, Plane::Tenant, 200),
        row(
            "GET",
            "/v1/agents/{agent}/settings",
            "/v1/agents/helper/settings",
            None,
            Plane::Tenant,
            200,
        ),
        row(
            "PUT",
            "/v1/agents/{agent}/settings",
            "/v1/agents/helper/settings",
            Some(json!({"variables": {"team": "ops"}})),
            Plane::Tenant,
            200,
        ),
        row(
            "POST",
            "/v1/agents/{agent}/runs",
            "/v1/agents/helper/runs",
            Some(json!({"input": "hello"})),
            Plane::Tenant,
            200,
        ),
        row(
            "GET",
            "/v1/runs/{id}",
            &format!("/v1/runs/{}", f.run_id),
            None,
            Plane::Tenant,
            200,
        ),
        row(
            "POST",
            "/v1/runs/{id}/cancel",
            &format!("/v1/runs/{}/cancel", f.run_id),
            None,
            Plane::Tenant,
            409,
        ),
        row(
            "GET",
            "/v1/collections",
            "/v1/collections",
            None,
            Plane::Tenant,
            200,
        ),
        twice(
            "POST",
            "/v1/collections/{collection}/documents",
            "/v1/collections/kb/documents",
            Some(json!({"content": "hello matrix", "external_id": "m1"})),
            201,
            200,
        ),
        row(
            "POST",
            "/v1/collections/{collection}/search",
            "/v1/collections/kb/search",
            Some(json!({"query": "hello"})),
            Plane::Tenant,
            200,
        ),
        twice(
            "DELETE",
            "/v1/collections/{collection}/documents/{id}",
            &format!("/v1/collections/kb/documents/{}", f.document_id),
            None,
            204,
            404,
        ),
        twice(
            "DELETE",
            "/v1/collections/{collection}",
            "/v1/collections/trash",
            None,
            204,
            404,
        ),
        row(
            "POST",
            "/admin/v1/tenants/{id}/collections/{collection}/documents",
            "/admin/v1/tenants/acme/collections/kb/documents",
            Some(json!({"content": "hello operator", "external_id": "op1"})),
            Plane::Operator,
            201,
        ),
        row(
            "POST",
            "/admin/v1/tenants/{id}/collections/{collection}/search",
            "/admin/v1/tenants/acme/collections/kb/search",
            Some(json!({"query": "hello"})),
            Plane::Operator,
            200,
        ),
        row(
            "GET",
            "/v1/threads/{id}/messages",
            &format!("/v1/threads/{}/messages", f.thread_id),
            None,
            Plane::Tenant,
            200,
        ),
        twice(
            "DELETE",
            "/v1/runs/{id}",
            &format!("/v1/runs/{}", f.trash_run_id),
            None,
            204,
            404,
        ),
        twice(
            "DELETE",
            "/v1/threads/{id}",
            &format!("/v1/threads/{}", f.trash_thread_id),
            None,
            204,
            404,
        ),
    ]
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
    // "needs approval" asks for the risky tool; anything after a tool
    // result is answered; the rest gets the fake's default answer.
    fake.set_responder(|req| {
        let last = req["messages"].as_array()?.last()?.clone();
        if last["role"] == "tool" {
            return Some(bulkhead_testkit::Reply::text("ok"));
        }
        (last["content"] == "needs approval").then(|| {
            bulkhead_testkit::Reply::tool_calls([bulkhead_testkit::ToolCall::new(
                "risky",
                json!({}),
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

async fn fixture(app: &TestApp) -> Fixture {
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    app.create_tenant("doomed", "eu").await;
    let (owner_key_id, owner_key) = app.api_key("acme", &["admin"]).await;
    let (_, other_key) = app.api_key("globex", &["admin"]).await;
    let run = app
        .call(
            "POST",
            "/v1/agents/helper/runs",
            Some(&owner_key),
            Some(json!({"input": "fixture"})),
        )
        .await;
    assert_eq!(run.status, 200, "{}", run.body);
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
        assert_eq!(r.status, 200, "{}", r.body);
        trash.push(r.body);
    }
    let mut document_id = String::new();
    for collection in ["kb", "trash"] {
        let doc = app
            .call(
                "POST",
                &format!("/v1/collections/{collection}/documents"),
                Some(&owner_key),
                Some(json!({"content": "hello fixture"})),
            )
            .await;
        assert_eq!(doc.status, 201, "{}", doc.body);
        if collection == "kb" {
            document_id = doc.body["id"].as_str().unwrap().to_owned();
        }
    }
    let r = app
        .call(
            "PUT",
            "/v1/policies",
            Some(&owner_key),
            Some(json!({ "policies": MATRIX_POLICY })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
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
        assert_eq!(r.status, 202, "{}", r.body);
        let step = r.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "approval_requested")
            .unwrap()
            .clone();
        approvals.push(step["data"]["approval_id"].as_str().unwrap().to_owned());
    }
    Fixture {
        approvals: [approvals[0].clone(), approvals[1].clone()],
        owner_key,
        other_key,
        owner_key_id,
        run_id: run.body["id"].as_str().unwrap().to_owned(),
        thread_id: run.body["thread_id"].as_str().unwrap().to_owned(),
        document_id,
        trash_run_id: trash[0]["id"].as_str().unwrap().to_owned(),
        trash_thread_id: trash[1]["thread_id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn every_endpoint_refuses_wrong_and_missing_credentials() {
    let fake = bulkhead_testkit::FakeProvider::start().await;
    let app = matrix_app(&fake).await;
    let f = fixture(&app).await;
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
    for row in rows(&f) {
        let call = |token: Option<String>| {
            let app = &app;
            let row = &row;
            async move {
                app.call(row.method, &row.path, token.as_deref(), row.body.clone())
                    .await
            }
        };
        match row.plane {
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
                // Another tenant's credential sees only its own tenant.
                let r = call(Some(f.other_key.clone())).await;
                assert!(
                    r.status == 404
                        || (row.ok.contains(&r.status) && !r.body.to_string().contains("acme")),
                    "{} {} with another tenant's key leaked: {} {}",
                    row.method,
                    row.path,
                    r.status,
                    r.body
                );
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
    for row in rows(&f).into_iter().filter(|r| r.plane == Plane::Operator) {
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

#[tokio::test]
async fn the_matrix_covers_every_route_of_the_api() {
    let app = TestApp::new().await;
    let doc = app.call("GET", "/openapi.json", None, None).await.body;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let f = Fixture {
        owner_key: String::new(),
        other_key: String::new(),
        owner_key_id: String::new(),
        run_id: String::new(),
        thread_id: String::new(),
        document_id: String::new(),
        trash_run_id: String::new(),
        trash_thread_id: String::new(),
        approvals: [String::new(), String::new()],
    };
    let tested: BTreeSet<(String, String)> = rows(&f)
        .iter()
        .map(|r| (r.method.to_owned(), r.template.to_owned()))
        .collect();
    assert_eq!(
        documented, tested,
        "every documented route needs a row in the isolation matrix"
    );

    // Every route except the named public ones requires a credential.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let public = bulkhead_server::routes::PUBLIC_ROUTES.contains(&path.as_str());
            assert_eq!(
                op.get("security").is_none(),
                public,
                "{method} {path}: security requirement does not match PUBLIC_ROUTES"
            );
        }
    }
}

#[tokio::test]
async fn another_tenants_audit_is_invisible() {
    let fake = bulkhead_testkit::FakeProvider::start().await;
    let app = matrix_app(&fake).await;
    let f = fixture(&app).await;
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
}
