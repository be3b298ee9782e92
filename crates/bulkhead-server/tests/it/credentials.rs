//! The credential API and the vault behind it: write-only secrets, roles,
//! bad input, OAuth2 refresh (single flight, failure), and a canary scan of
//! every place a secret must never reach.

use bulkhead_vault::VaultError;
use bulkhead_vault::credential::ConnectionName;
use bulkhead_vault::store::CredScope;
use serde_json::{Value, json};

use crate::fakes::{Answer, FakeTokenEndpoint, logs};
use crate::support::*;

fn conn(s: &str) -> ConnectionName {
    ConnectionName::parse(s).unwrap()
}

#[tokio::test]
async fn credentials_are_write_only_and_for_admins() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let body = json!({"kind": "api_key", "secret": "xoxb-write-only-1234"});
    let r = app
        .call(
            "PUT",
            "/v1/credentials/slack",
            Some(&admin),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["kind"], "api_key");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["status"], "active");
    let r = app
        .call("PUT", "/v1/credentials/slack", Some(&admin), Some(body))
        .await;
    assert_eq!((r.status, r.body["version"].as_u64()), (200, Some(2)));
    let list = app.call("GET", "/v1/credentials", Some(&admin), None).await;
    assert_eq!(list.body["credentials"][0]["connection"], "slack");
    assert!(!list.body.to_string().contains("xoxb"), "{}", list.body);

    for role in ["member", "viewer", "approver"] {
        let (_, key) = app.api_key("acme", &[role]).await;
        app.call("GET", "/v1/credentials", Some(&key), None)
            .await
            .assert_problem(403, "forbidden");
        app.call(
            "PUT",
            "/v1/credentials/x",
            Some(&key),
            Some(json!({"kind": "bearer", "secret": "abcdef"})),
        )
        .await
        .assert_problem(403, "forbidden");
        app.call("DELETE", "/v1/credentials/slack", Some(&key), None)
            .await
            .assert_problem(403, "forbidden");
    }
    assert_eq!(
        app.call("DELETE", "/v1/credentials/slack", Some(&admin), None)
            .await
            .status,
        204
    );
    app.call("DELETE", "/v1/credentials/slack", Some(&admin), None)
        .await
        .assert_problem(404, "not_found");
    let actions: Vec<String> = app
        .audit(&admin)
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "credential.put").count(), 2);
    assert_eq!(
        actions.iter().filter(|a| *a == "credential.delete").count(),
        1
    );
}

#[tokio::test]
async fn another_tenants_credentials_are_invisible_and_untouchable() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (_, globex) = app.api_key("globex", &["admin"]).await;
    let r = app
        .call(
            "PUT",
            "/v1/credentials/slack",
            Some(&acme),
            Some(json!({"kind": "api_key", "secret": "acme-only-secret"})),
        )
        .await;
    assert_eq!(r.status, 201);
    app.call("DELETE", "/v1/credentials/slack", Some(&globex), None)
        .await
        .assert_problem(404, "not_found");
    let theirs = app
        .call("GET", "/v1/credentials", Some(&globex), None)
        .await;
    assert_eq!(theirs.body["credentials"], json!([]));
    let mine = app.call("GET", "/v1/credentials", Some(&acme), None).await;
    assert_eq!(mine.body["credentials"].as_array().unwrap().len(), 1);
    // The operator can set a tenant's credential; the tenant sees it, the other does not.
    let r = app
        .call(
            "PUT",
            "/admin/v1/tenants/acme/credentials/jira",
            Some(OPERATOR_TOKEN),
            Some(json!({"kind": "basic", "username": "bot", "password": "jira-pass-123"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mine = app.call("GET", "/v1/credentials", Some(&acme), None).await;
    assert_eq!(mine.body["credentials"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.call("GET", "/v1/credentials", Some(&globex), None)
            .await
            .body["credentials"],
        json!([])
    );
    let r = app
        .call(
            "GET",
            "/admin/v1/tenants/nobody/credentials",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    r.assert_problem(404, "not_found");
}

#[tokio::test]
async fn bad_credentials_are_refused_and_nothing_is_stored() {
    let app = TestApp::with_server_settings("max_body_bytes = 1048576").await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let big = "x".repeat(64 * 1024 + 1);
    let long_name = "a".repeat(65);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "slack",
            json!({"kind": "ssh_key", "secret": "abc"}),
            "invalid_body",
        ),
        ("slack", json!({"kind": "api_key"}), "invalid_body"),
        ("slack", json!({"secret": "abc"}), "invalid_body"),
        (
            "slack",
            json!({"kind": "api_key", "secret": "abc", "note": "x"}),
            "invalid_body",
        ),
        (
            "slack",
            json!({"kind": "api_key", "secret": 42}),
            "invalid_body",
        ),
        (
            "slack",
            json!({"kind": "api_key", "secret": ""}),
            "validation_failed",
        ),
        (
            "slack",
            json!({"kind": "api_key", "secret": big}),
            "validation_failed",
        ),
        (
            "slack",
            json!({"kind": "oauth2", "access_token": "a", "token_url": "file:///etc/passwd", "client_id": "c"}),
            "validation_failed",
        ),
        (
            "Slack",
            json!({"kind": "api_key", "secret": "abc"}),
            "invalid_parameter",
        ),
        (
            "sl%20ack",
            json!({"kind": "api_key", "secret": "abc"}),
            "invalid_parameter",
        ),
        (
            &long_name,
            json!({"kind": "api_key", "secret": "abc"}),
            "invalid_parameter",
        ),
    ];
    for (name, body, code) in &cases {
        let r = app
            .call(
                "PUT",
                &format!("/v1/credentials/{name}"),
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        r.assert_problem(400, code);
    }
    assert_eq!(
        app.call("GET", "/v1/credentials", Some(&admin), None)
            .await
            .body["credentials"],
        json!([])
    );
    assert!(
        app.audit(&admin)
            .await
            .iter()
            .all(|e| e["action"] != "credential.put")
    );
}

fn oauth_body(endpoint: &FakeTokenEndpoint, tag: &str, expires_at: &str) -> Value {
    json!({"kind": "oauth2", "access_token": format!("old-access-{tag}"), "refresh_token": format!("refresh-{tag}"),
           "expires_at": expires_at, "token_url": endpoint.url(), "client_id": format!("client-{tag}"),
           "client_secret": format!("client-secret-{tag}")})
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_however_many_callers_need_it() {
    let app = TestApp::new().await;
    let endpoint = FakeTokenEndpoint::start().await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let r = app
        .call(
            "PUT",
            "/v1/credentials/crm",
            Some(&admin),
            Some(oauth_body(&endpoint, "sf1", "2020-01-01T00:00:00Z")),
        )
        .await;
    assert_eq!(r.status, 201);
    endpoint.push(Answer::Grant {
        access_token: "new-access-sf1".into(),
        refresh_token: Some("rotated-refresh-sf1".into()),
        expires_in: 3600,
    });
    let scope = app.scope(&admin).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let vault = app.state.vault.clone();
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let c = vault
                .use_credential(CredScope::Tenant(&scope), &conn("crm"), "test")
                .await
                .unwrap();
            c.secret_values()[0].to_owned()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "new-access-sf1");
    }
    let recorded = endpoint.recorded();
    assert_eq!(
        recorded.len(),
        1,
        "the token endpoint was called {} times",
        recorded.len()
    );
    let req = &recorded[0];
    assert!(
        req.body.contains("grant_type=refresh_token"),
        "{}",
        req.body
    );
    assert!(
        req.body.contains("refresh_token=refresh-sf1"),
        "{}",
        req.body
    );
    let basic = format!("Basic {}", b64_std(b"client-sf1:client-secret-sf1"));
    assert_eq!(req.authorization.as_deref(), Some(basic.as_str()));

    // The rotated refresh token was stored: the next refresh sends it.
    let meta = &app
        .call("GET", "/v1/credentials", Some(&admin), None)
        .await
        .body["credentials"][0];
    assert_eq!(meta["status"], "active");
    assert_eq!(meta["version"], 2);
    let c = app
        .state
        .vault
        .use_credential(CredScope::Tenant(&scope), &conn("crm"), "test")
        .await
        .unwrap();
    assert_eq!(
        c.secret_values(),
        ["new-access-sf1", "rotated-refresh-sf1", "client-secret-sf1"]
    );
    assert_eq!(
        endpoint.recorded().len(),
        1,
        "a fresh token is not refreshed again"
    );
    let actions: Vec<String> = app
        .audit(&admin)
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "credential.refresh")
            .count(),
        1
    );
    assert!(actions.iter().filter(|a| *a == "credential.use").count() >= 9);
}

fn b64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_failed_refresh_marks_the_connection_and_never_deletes_it() {
    let app = TestApp::new().await;
    let endpoint = FakeTokenEndpoint::start().await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let put = app
        .call(
            "PUT",
            "/v1/credentials/crm",
            Some(&admin),
            Some(oauth_body(&endpoint, "x", "2020-01-01T00:00:00Z")),
        )
        .await;
    assert_eq!(put.status, 201);
    endpoint.push(Answer::InvalidGrant);
    let scope = app.scope(&admin).await;
    let err = app
        .state
        .vault
        .use_credential(CredScope::Tenant(&scope), &conn("crm"), "test")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NeedsReauth), "{err:?}");
    let meta = &app
        .call("GET", "/v1/credentials", Some(&admin), None)
        .await
        .body["credentials"][0];
    assert_eq!(
        (meta["connection"].as_str(), meta["status"].as_str()),
        (Some("crm"), Some("needs_reauth"))
    );
    // Further uses fail fast, without hammering the token endpoint.
    let err = app
        .state
        .vault
        .use_credential(CredScope::Tenant(&scope), &conn("crm"), "test")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NeedsReauth));
    assert_eq!(endpoint.recorded().len(), 1);
    let failure = app
        .audit(&admin)
        .await
        .into_iter()
        .find(|e| e["action"] == "credential.refresh")
        .unwrap();
    assert_eq!(failure["outcome"], "failure");
    assert_eq!(failure["details"]["status"], "needs_reauth");
    // A tenant admin stores new tokens: active again.
    let r = app
        .call(
            "PUT",
            "/v1/credentials/crm",
            Some(&admin),
            Some(oauth_body(&endpoint, "y", "2099-01-01T00:00:00Z")),
        )
        .await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("active")));
    let c = app
        .state
        .vault
        .use_credential(CredScope::Tenant(&scope), &conn("crm"), "test")
        .await
        .unwrap();
    assert_eq!(c.secret_values()[0], "old-access-y");
}

#[tokio::test]
async fn canary_secrets_appear_only_in_their_own_tenants_outbound_request() {
    let _ = logs();
    let app = TestApp::new().await;
    let endpoint = FakeTokenEndpoint::start().await;
    let mut responses: Vec<String> = Vec::new();
    let mut canaries: Vec<(&str, Vec<String>)> = Vec::new();
    let mut keys = Vec::new();
    for tenant in ["acme", "globex"] {
        responses.push(app.create_tenant(tenant, "eu").await.to_string());
        let (_, admin) = app.api_key(tenant, &["admin"]).await;
        let id = bulkhead_core::EventId::generate();
        let tag = format!("canary{}{tenant}", id.to_string().replace('-', ""));
        let planted = vec![
            format!("{tag}-apikey"),
            format!("{tag}-refresh"),
            format!("{tag}-client"),
        ];
        let r = app
            .call(
                "PUT",
                "/v1/credentials/slack",
                Some(&admin),
                Some(json!({"kind": "api_key", "secret": planted[0]})),
            )
            .await;
        responses.push(r.body.to_string());
        let r = app
            .call(
                "PUT",
                "/v1/credentials/crm",
                Some(&admin),
                Some(json!({"kind": "oauth2", "access_token": format!("{tag}-oldaccess"), "refresh_token": planted[1],
                    "expires_at": "2020-01-01T00:00:00Z", "token_url": endpoint.url(), "client_id": tenant,
                    "client_secret": planted[2]})),
            )
            .await;
        responses.push(r.body.to_string());
        endpoint.push(Answer::Grant {
            access_token: format!("{tag}-newaccess"),
            refresh_token: None,
            expires_in: 600,
        });
        canaries.push((tenant, planted));
        keys.push(admin);
    }
    // The scenario: uses (one refresh each), listings, rotations, redaction, a deletion.
    for (admin, (tenant, planted)) in keys.iter().zip(&canaries) {
        let scope = app.scope(admin).await;
        let c = app
            .state
            .vault
            .use_credential(CredScope::Tenant(&scope), &conn("crm"), "tool:crm")
            .await
            .unwrap();
        assert!(c.secret_values()[0].ends_with("-newaccess"));
        let c = app
            .state
            .vault
            .use_credential(CredScope::Tenant(&scope), &conn("slack"), "tool:notify")
            .await
            .unwrap();
        assert_eq!(c.secret_values(), [planted[0].as_str()]);
        let redacted = app
            .state
            .vault
            .redact(&scope, &format!("echo {} done", planted[0]))
            .await
            .unwrap();
        assert_eq!(redacted, "echo [redacted] done");
        for path in ["/v1/credentials", "/v1/audit?limit=1000", "/v1/me"] {
            responses.push(
                app.call("GET", path, Some(admin), None)
                    .await
                    .body
                    .to_string(),
            );
        }
        let r = app
            .call(
                "POST",
                &format!("/admin/v1/tenants/{tenant}/data-key/rotate"),
                Some(OPERATOR_TOKEN),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        responses.push(r.body.to_string());
    }
    responses.push(
        app.call("POST", "/admin/v1/kms/rotate", Some(OPERATOR_TOKEN), None)
            .await
            .body
            .to_string(),
    );
    responses.push(
        app.call(
            "GET",
            "/admin/v1/audit?limit=1000",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await
        .body
        .to_string(),
    );
    responses.push(
        app.call(
            "GET",
            "/admin/v1/tenants/acme/credentials",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await
        .body
        .to_string(),
    );
    responses.push(
        app.call("GET", "/metrics", None, None)
            .await
            .body
            .to_string(),
    );
    for admin in &keys {
        responses.push(
            app.call("GET", "/v1/audit?limit=1000", Some(admin), None)
                .await
                .body
                .to_string(),
        );
    }
    let recorded = endpoint.recorded();
    assert_eq!(recorded.len(), 2);
    let logs = logs();
    assert!(
        logs.contains("request finished"),
        "log capture is not working"
    );
    for (tenant, planted) in &canaries {
        for canary in planted {
            for r in &responses {
                assert!(
                    !r.contains(canary.as_str()),
                    "{tenant}'s canary in a response: {r}"
                );
            }
            assert!(
                !logs.contains(canary.as_str()),
                "{tenant}'s canary reached the logs"
            );
        }
        // Outbound: the refresh secrets go to the token endpoint in this
        // tenant's request only (the refresh token in the body, the client
        // secret in the basic-auth header).
        let own: Vec<_> = recorded
            .iter()
            .filter(|r| r.body.contains(&planted[1]))
            .collect();
        assert_eq!(
            own.len(),
            1,
            "{tenant}'s refresh token should be sent exactly once"
        );
        let other: Vec<_> = recorded
            .iter()
            .filter(|r| !r.body.contains(&planted[1]))
            .collect();
        for r in other {
            for canary in planted {
                assert!(
                    !r.body.contains(canary.as_str()),
                    "{tenant}'s canary in another tenant's request"
                );
                assert!(
                    !r.authorization
                        .as_deref()
                        .unwrap_or("")
                        .contains(&b64_std(canary.as_bytes())[..8])
                );
            }
        }
    }
}
