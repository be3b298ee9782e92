//! The metrics cannot be grown by clients and name only live tenants,
//! at most `server.metrics_max_tenants` of them; boot refuses to serve
//! them publicly on a non-loopback address.

use axum::body::Body;
use axum::http::Request;

use crate::support::{METRICS_TOKEN, OPERATOR_TOKEN, TestApp};

async fn metrics_text(app: &TestApp) -> String {
    app.call("GET", "/metrics", None, None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned()
}

/// Series lines (not `# HELP`/`# TYPE`/`# EOF`).
fn series(text: &str) -> usize {
    text.lines().filter(|l| !l.starts_with('#')).count()
}

/// A random method name of `len` upper-case letters (a valid HTTP token).
fn random_method(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| char::from(b'A' + b % 26)).collect()
}

/// The probe's attack: thousands of distinct long method names. Each was
/// a permanent label; now they all count as `other`.
#[tokio::test]
async fn distinct_method_names_do_not_grow_the_metrics() {
    let app = TestApp::new().await;
    let send = |method: String| {
        let req = Request::builder()
            .method(method.as_str())
            .uri("/healthz")
            .body(Body::empty())
            .unwrap();
        app.request(req)
    };
    send(random_method(4000)).await;
    // The first scrape adds the /metrics series themselves.
    metrics_text(&app).await;
    let before = metrics_text(&app).await;
    let mut sent = Vec::new();
    for _ in 0..2000 {
        let m = random_method(4000);
        send(m.clone()).await;
        sent.push(m);
    }
    let after = metrics_text(&app).await;
    assert!(
        after.len() < 16 * 1024,
        "{} bytes of metrics after 2,000 methods",
        after.len()
    );
    assert!(series(&after) == series(&before), "{before}\n---\n{after}");
    assert!(
        after.contains(
            r#"bulkhead_http_requests_total{method="other",route="unmatched",status="405"} 2001"#
        ),
        "{after}"
    );
    assert!(sent.iter().all(|m| !after.contains(&m[..32])));
}

/// A deleted tenant's series goes with it.
#[tokio::test]
async fn a_deleted_tenant_is_not_in_the_metrics() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    for t in ["acme", "globex"] {
        let (_, key) = app.api_key(t, &["viewer"]).await;
        assert_eq!(
            app.call("GET", "/v1/me", Some(&key), None).await.status,
            200
        );
    }
    let text = metrics_text(&app).await;
    assert!(text.contains(r#"bulkhead_tenant_requests_total{tenant="acme"} 1"#));
    let r = app
        .call(
            "DELETE",
            "/admin/v1/tenants/acme",
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let text = metrics_text(&app).await;
    assert!(!text.contains("acme"), "{text}");
    assert!(text.contains(r#"bulkhead_tenant_requests_total{tenant="globex"} 1"#));
}

/// Beyond `metrics_max_tenants`, tenants count together under `_other`;
/// a deleted tenant's place goes to the next one.
#[tokio::test]
async fn tenant_series_are_capped() {
    let app = TestApp::with_server_settings("metrics_max_tenants = 2").await;
    let mut keys = Vec::new();
    for t in ["t-a", "t-b", "t-c", "t-d"] {
        app.create_tenant(t, "eu").await;
        let (_, key) = app.api_key(t, &["viewer"]).await;
        assert_eq!(
            app.call("GET", "/v1/me", Some(&key), None).await.status,
            200
        );
        keys.push(key);
    }
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"tenant_requests_total{tenant="t-a"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tenant_requests_total{tenant="t-b"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tenant_requests_total{tenant="_other"} 2"#),
        "{text}"
    );
    assert!(!text.contains("t-c") && !text.contains("t-d"), "{text}");

    app.call(
        "DELETE",
        "/admin/v1/tenants/t-a",
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    app.call("GET", "/v1/me", Some(&keys[2]), None).await;
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"tenant_requests_total{tenant="t-c"} 1"#),
        "{text}"
    );
    assert!(!text.contains("t-a"), "{text}");
}

/// Public metrics say which class of check refused a credential, not
/// which check; behind the token the reason is given.
#[tokio::test]
async fn public_metrics_do_not_break_out_auth_failure_reasons() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (id, key) = app.api_key("acme", &["viewer"]).await;
    app.call(
        "DELETE",
        &format!("/admin/v1/tenants/acme/api-keys/{id}"),
        Some(OPERATOR_TOKEN),
        None,
    )
    .await;
    assert_eq!(
        app.call("GET", "/v1/me", Some(&key), None).await.status,
        401
    );
    assert_eq!(
        app.call("GET", "/v1/me", Some("bk_nope"), None)
            .await
            .status,
        401
    );
    let text = metrics_text(&app).await;
    assert!(
        text.contains(r#"bulkhead_auth_failures_total{reason="invalid_credential"} 2"#),
        "{text}"
    );
    assert!(
        !text.contains("revoked") && !text.contains("malformed"),
        "{text}"
    );

    let app = TestApp::with_server_settings("metrics_token = \"env:METRICS_TOKEN\"").await;
    app.call("GET", "/v1/me", Some("bk_nope"), None).await;
    let r = app.call("GET", "/metrics", Some(METRICS_TOKEN), None).await;
    assert!(
        r.body
            .as_str()
            .unwrap()
            .contains(r#"bulkhead_auth_failures_total{reason="api_key_malformed"} 1"#),
        "{}",
        r.body
    );
}

/// `serve --listen` replaces the address after the file was checked:
/// boot refuses a non-loopback address without a metrics token, naming
/// the key, and accepts it with one or with `metrics_public = true`.
#[tokio::test]
async fn boot_refuses_public_metrics_on_a_non_loopback_listen() {
    let dir = tempfile::tempdir().unwrap();
    let env = |name: &str| (name == "M").then(|| METRICS_TOKEN.to_owned());
    let text = format!("[server]\ndata_dir = \"{}\"\n", dir.path().display());
    let mut config = bulkhead_core::config::load(&text, &env).unwrap();
    config.server.listen = "0.0.0.0:8080".parse().unwrap();
    let err = bulkhead_server::boot::boot(&config, dir.path())
        .await
        .err()
        .expect("boot accepted public metrics on 0.0.0.0");
    assert!(
        err.to_string()
            .starts_with("server.metrics_token: is required"),
        "{err}"
    );

    for extra in ["metrics_public = true", "metrics_token = \"env:M\""] {
        let mut config = bulkhead_core::config::load(&format!("{text}{extra}\n"), &env).unwrap();
        config.server.listen = "0.0.0.0:8080".parse().unwrap();
        bulkhead_server::boot::boot(&config, dir.path())
            .await
            .unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}
