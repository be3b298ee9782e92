//! API keys: shown once, stored as digests, revocable, expiring.

use bulkhead_auth::OperatorAuthenticator;
use bulkhead_core::{ApiKeyId, RequestId, Role, SecretString, TenantId, Timestamp};
use bulkhead_store::{ControlStore, NewApiKeyRecord};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn keys_are_shown_once_and_never_listed() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (id, key) = app.api_key("acme", &["admin", "approver"]).await;
    assert!(key.starts_with("bk_") && key.len() == 46, "{key}");
    let list = app
        .call(
            "GET",
            "/admin/v1/tenants/acme/api-keys",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["api_keys"][0]["id"], id.as_str());
    assert_eq!(
        list.body["api_keys"][0]["roles"],
        json!(["admin", "approver"])
    );
    assert!(
        !list.body.to_string().contains(&key[3..]),
        "the key leaked into a listing"
    );
    // Only the digest is on disk.
    let db = std::fs::read(app.dir.path().join("data/control.db")).unwrap();
    assert!(
        !db.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key is stored in clear"
    );
    let me = app.call("GET", "/v1/me", Some(&key), None).await;
    assert_eq!(me.body["principal"], format!("key:{id}"));
    assert_eq!(me.body["roles"], json!(["admin", "approver"]));
}

#[tokio::test]
async fn revoked_keys_stop_at_once_and_the_attempt_is_audited() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (id, key) = app.api_key("acme", &["member"]).await;
    let (_, viewer) = app.api_key("acme", &["viewer"]).await;
    assert_eq!(
        app.call("GET", "/v1/me", Some(&key), None).await.status,
        200
    );

    // Revoking through another tenant's path finds nothing and changes nothing.
    let r = app
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/globex/api-keys/{id}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    r.assert_problem(404, "not_found");
    assert_eq!(
        app.call("GET", "/v1/me", Some(&key), None).await.status,
        200
    );

    let path = format!("/admin/v1/tenants/acme/api-keys/{id}");
    assert_eq!(
        app.call("DELETE", &path, Some(OPERATOR_TOKEN), None)
            .await
            .status,
        204
    );
    app.call("GET", "/v1/me", Some(&key), None)
        .await
        .assert_problem(401, "unauthenticated");
    assert_eq!(
        app.call("DELETE", &path, Some(OPERATOR_TOKEN), None)
            .await
            .status,
        204
    );
    let list = app
        .call(
            "GET",
            "/admin/v1/tenants/acme/api-keys",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    let revoked = list.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    let events = app.audit(&viewer).await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"api_key.revoke"), "{actions:?}");
    let failure = events
        .iter()
        .find(|e| e["action"] == "auth.failure")
        .expect("failure audited");
    assert_eq!(failure["details"]["reason"], "api_key_revoked");
    assert_eq!(failure["principal"], format!("key:{id}"));
    assert_eq!(failure["outcome"], "denied");
}

#[tokio::test]
async fn expired_keys_are_refused_and_audited() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, viewer) = app.api_key("acme", &["viewer"]).await;
    let op = OperatorAuthenticator::new(&SecretString::new(OPERATOR_TOKEN.into()))
        .verify(Some(OPERATOR_TOKEN), &RequestId::generate())
        .unwrap();
    let new = bulkhead_auth::apikey::generate().unwrap();
    // The API refuses a past expiry, so the store is used directly to get a
    // key that has already expired without waiting for one to.
    app.store
        .create_api_key(
            &op,
            &TenantId::parse("acme").unwrap(),
            NewApiKeyRecord {
                id: ApiKeyId::generate(),
                digest: new.digest,
                name: None,
                roles: vec![Role::Admin],
                expires_at: Some(Timestamp::now().plus_seconds(-60)),
            },
        )
        .await
        .unwrap();
    let r = app
        .call("GET", "/v1/me", Some(new.plaintext.expose()), None)
        .await;
    r.assert_problem(401, "unauthenticated");
    let events = app.audit(&viewer).await;
    assert!(
        events
            .iter()
            .any(|e| e["details"]["reason"] == "api_key_expired"),
        "{events:?}"
    );

    // A future expiry works, a past one is refused at creation.
    let future = Timestamp::now().plus_seconds(3600).to_string();
    let r = app
        .call(
            "POST",
            "/admin/v1/tenants/acme/api-keys",
            Some(OPERATOR_TOKEN),
            Some(json!({"expires_at": future})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["roles"], json!(["member"]));
    let key = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call("GET", "/v1/me", Some(&key), None).await.status,
        200
    );
    let past = Timestamp::now().plus_seconds(-5).to_string();
    let r = app
        .call(
            "POST",
            "/admin/v1/tenants/acme/api-keys",
            Some(OPERATOR_TOKEN),
            Some(json!({"expires_at": past})),
        )
        .await;
    r.assert_problem(400, "validation_failed");
}

#[tokio::test]
async fn bad_key_requests_write_nothing() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let path = "/admin/v1/tenants/acme/api-keys";
    for (body, code) in [
        (json!({"roles": ["root"]}), "invalid_body"),
        (json!({"roles": []}), "validation_failed"),
        (json!({"roles": "admin"}), "invalid_body"),
        (json!({"roles": ["admin"], "scope": "all"}), "invalid_body"),
        (json!({"expires_at": "tomorrow"}), "invalid_body"),
        (json!({"name": ""}), "validation_failed"),
    ] {
        let r = app
            .call("POST", path, Some(OPERATOR_TOKEN), Some(body.clone()))
            .await;
        r.assert_problem(400, code);
    }
    let r = app
        .call(
            "POST",
            "/admin/v1/tenants/nobody/api-keys",
            Some(OPERATOR_TOKEN),
            Some(json!({})),
        )
        .await;
    r.assert_problem(404, "not_found");
    let list = app.call("GET", path, Some(OPERATOR_TOKEN), None).await;
    assert_eq!(list.body["api_keys"], json!([]));
    for malformed in [
        "bk_",
        "bk_abc",
        "bk_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        "Bearer",
        "bk_ x",
    ] {
        let r = app.call("GET", "/v1/me", Some(malformed), None).await;
        assert_eq!(r.status, 401, "{malformed}");
    }
}

#[tokio::test]
async fn a_revoked_key_in_a_loop_is_throttled_and_audited_as_one_counted_event() {
    // A revoked key used in a loop wrote 3,000 auth.failure events into
    // its tenant's chain in 3.8 s; failures counted against no limit.
    let app = TestApp::with_config(
        "",
        "[auth]\nfailures_per_minute_per_credential = 10\nfailures_per_minute_per_peer = 1000000",
    )
    .await;
    app.create_tenant("acme", "eu").await;
    let (_, viewer) = app.api_key("acme", &["viewer"]).await;
    let (id, key) = app.api_key("acme", &["viewer"]).await;
    let r = app
        .call(
            "DELETE",
            &format!("/admin/v1/tenants/acme/api-keys/{id}"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    const TRIES: u64 = 3000;
    let (mut refused, mut throttled) = (0, 0);
    for _ in 0..TRIES {
        let r = app.call("GET", "/v1/me", Some(&key), None).await;
        match r.status {
            401 => refused += 1,
            429 => {
                r.assert_problem(429, "rate_limited");
                assert!(r.headers.contains_key("retry-after"));
                throttled += 1;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    // At most two windows pass during the loop: ten 401s in each.
    assert!((10..=20).contains(&refused), "{refused} answered 401");
    assert_eq!(refused + throttled, TRIES);
    let failures = |events: &[serde_json::Value]| -> Vec<serde_json::Value> {
        events
            .iter()
            .filter(|e| e["action"] == "auth.failure")
            .cloned()
            .collect()
    };
    let before = failures(&app.audit(&viewer).await);
    assert!(
        (1..=2).contains(&before.len()),
        "{} events before the flush",
        before.len()
    );
    // The window's aggregate (at shutdown, or when the window ends).
    let written = bulkhead_server::extract::flush_auth_failures(&app.state, true).await;
    assert!(written >= 1);
    let after = failures(&app.audit(&viewer).await);
    assert!(after.len() <= 4, "{} events", after.len());
    let counted: u64 = after
        .iter()
        .map(|e| e["details"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, TRIES, "every attempt is counted once: {after:?}");
    assert!(after.iter().any(|e| e["details"]["aggregated"] == true));
    assert!(after.iter().all(|e| e["principal"] == format!("key:{id}")));
    // A valid key of the same tenant is unaffected.
    let r = app.call("GET", "/v1/me", Some(&viewer), None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_peer_that_fails_too_often_is_throttled_but_its_valid_keys_still_work() {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    let app = TestApp::with_config(
        "",
        "[auth]\nfailures_per_minute_per_credential = 1000000\nfailures_per_minute_per_peer = 20",
    )
    .await;
    app.create_tenant("acme", "eu").await;
    let (_, good) = app.api_key("acme", &["viewer"]).await;
    let from = |token: &str, ip: [u8; 4]| {
        let mut req = Request::get("/v1/me")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
        req
    };
    let mut statuses = Vec::new();
    for i in 0..60 {
        // A different garbage token each time: the per-credential limit
        // alone would never trip.
        let r = app
            .request(from(&format!("bk_garbage{i}"), [192, 0, 2, 9]))
            .await;
        statuses.push(r.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 40,
        "{statuses:?}"
    );
    let r = app.request(from(&good, [192, 0, 2, 9])).await;
    assert_eq!(
        r.status, 200,
        "a valid key from that address is still served"
    );
    let r = app.request(from("bk_garbage_other", [192, 0, 2, 10])).await;
    assert_eq!(r.status, 401, "another address is its own");
}
