//! The public contract (shared/design/product.md), checked against the
//! code so a drift fails CI: its configuration examples, copied verbatim
//! into `tests/it/contract/`, pass the loader and everything `bulkhead
//! check` runs; its request bodies — tenant create and patch, documents
//! with `content_type`, the example prompt with `{{ tenant.name }}`, a JWT
//! of its example issuer — are sent end to end over a real socket, against
//! a fake model provider; and the served audit events hash exactly as
//! docs/audit.md tells an outside verifier to recompute them.
//!
//! What the contract's example cannot satisfy as written, and how this
//! test bridges it:
//! - `[[embedding_models]]` is written with `;` between keys on one line,
//!   which is not TOML; the test puts each key on its own line (see
//!   `contract_text`). docs/ARCHITECTURE.md lists this difference.
//! - The secrets are `env:` references: the environment is a fake map.
//! - `[policies] file = "policies.cedar"` names a file the contract does
//!   not give: the test writes the default platform policies there.
//! - End to end, the provider's `base_url` (api.openai.com) is replaced
//!   by the fake provider's, and `server.data_dir` by a temporary
//!   directory; nothing else changes.

use std::collections::HashMap;

use bulkhead_server::AppState;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{OPERATOR_TOKEN, TestApp, now, sign};

/// The router of a booted state, served on a loopback socket.
pub struct Served {
    pub base: String,
    client: reqwest::Client,
}

impl Served {
    /// One request; returns the status and the body (JSON, or a string).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, token, body).await;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// One request; returns the status and the body's text as served.
    pub async fn call_text(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.text().await.unwrap())
    }
}

/// Serves `app` on a free loopback port for the rest of the test.
pub async fn serve(app: &TestApp) -> Served {
    serve_state(app.state.clone()).await
}

async fn serve_state(state: AppState) -> Served {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(bulkhead_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    Served {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().build().unwrap(),
    }
}

const CONTRACT_OPERATOR_TOKEN: &str = "contract-operator-token-0123456789";
const CONTRACT_JWT_SECRET: &str = "contract-jwt-secret-0123456789abcdef";

/// The environment the contract's `env:` references read.
fn env(name: &str) -> Option<String> {
    let vars: HashMap<&str, &str> = [
        ("BULKHEAD_OPERATOR_TOKEN", CONTRACT_OPERATOR_TOKEN),
        ("JWT_SECRET", CONTRACT_JWT_SECRET),
        ("OPENAI_API_KEY", "sk-contract-platform-key-0123"),
    ]
    .into_iter()
    .collect();
    vars.get(name).map(|v| (*v).to_owned())
}

/// The contract's three TOML blocks as one file. The only change: the
/// contract's `a = 1; b = 2` lines (not TOML) get one key per line.
fn contract_text() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/contract");
    let mut out = String::new();
    for file in ["server.toml", "tables.toml", "more_tables.toml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for line in text.lines() {
            let (code, comment) = match line.find('#') {
                Some(i) => line.split_at(i),
                None => (line, ""),
            };
            if code.contains("; ") {
                for part in code.split("; ") {
                    out.push_str(part.trim());
                    out.push('\n');
                }
                out.push_str(comment);
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
    }
    out
}

/// A directory holding what the contract's relative paths name.
fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policies.cedar"),
        bulkhead_policy::DEFAULT_PLATFORM_POLICIES,
    )
    .unwrap();
    dir
}

#[test]
fn the_contract_configuration_passes_the_loader_and_every_check() {
    let text = contract_text();
    let dir = config_dir();
    let config = bulkhead_core::config::load(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    // What `bulkhead check` runs after loading.
    bulkhead_server::boot::jwt_verifier(&config, dir.path()).unwrap();
    if let Err(e) = bulkhead_server::boot::agent_parts(&config, dir.path()) {
        panic!("{e}");
    }
    bulkhead_server::boot::policy_engine(&config, dir.path()).unwrap();
    assert_eq!(
        config.agents[0].prompt.as_deref(),
        Some("You are the assistant of {{ tenant.name }}.")
    );
    // The documented build has the Redis backend the contract offers.
    let redis = text.replace("backend   = \"memory\"", "backend   = \"redis\"");
    let config = bulkhead_core::config::load(&redis, &env).unwrap();
    assert_eq!(
        config.limits.backend,
        bulkhead_core::config::LimitsBackend::Redis
    );
}

/// `bulkhead check` (through `boot::agent_parts`, which it and boot run)
/// refuses a prompt that looks up what the render context never has, so
/// the mistake is not found by every run failing with `prompt_error`.
#[test]
fn check_refuses_a_prompt_variable_the_render_context_never_has() {
    let dir = config_dir();
    let text =
        contract_text().replace("{{ tenant.name }}", "{{ tenant.title }} for {{ customer }}");
    let config = bulkhead_core::config::load(&text, &env).unwrap();
    let err = match bulkhead_server::boot::agent_parts(&config, dir.path()) {
        Ok(_) => panic!("accepted a prompt that cannot render"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("agents[0].prompt: the template refers to customer, tenant.title, which the render context never has"),
        "{err}"
    );
}

/// The contract's build is `cargo build --release`: the binary's default
/// features must be everything the docs describe, and the crates below it
/// must be depended on without their defaults, or `--no-default-features`
/// would not give the slim build (CI builds with `--all-features`, so only
/// the manifests can show this).
#[test]
fn the_default_build_has_every_documented_feature() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let defaults = |manifest: &str| {
        read(manifest)
            .lines()
            .find(|l| l.starts_with("default = "))
            .unwrap_or_default()
            .to_owned()
    };
    for manifest in [
        "crates/bulkhead/Cargo.toml",
        "crates/bulkhead-server/Cargo.toml",
    ] {
        assert_eq!(
            defaults(manifest),
            r#"default = ["aws-kms", "ann", "redis", "nats"]"#,
            "{manifest}"
        );
    }
    for (manifest, features) in [
        ("crates/bulkhead-vault/Cargo.toml", r#""aws-kms""#),
        ("crates/bulkhead-agent/Cargo.toml", r#""ann""#),
        ("crates/bulkhead-store/Cargo.toml", r#""redis", "nats""#),
    ] {
        assert_eq!(
            defaults(manifest),
            format!("default = [{features}]"),
            "{manifest}"
        );
    }
    let workspace = read("Cargo.toml");
    for dep in [
        "bulkhead-store",
        "bulkhead-server",
        "bulkhead-vault",
        "bulkhead-agent",
    ] {
        let line = workspace
            .lines()
            .find(|l| l.starts_with(&format!("{dep} = ")))
            .unwrap();
        assert!(line.contains("default-features = false"), "{line}");
    }
}

#[tokio::test]
async fn the_contract_requests_run_end_to_end() {
    let fake = bulkhead_testkit::FakeProvider::start().await;
    let dir = config_dir();
    let text = contract_text()
        .replace(
            "https://api.openai.com/v1",
            &format!("{}/v1", fake.base_url()),
        )
        .replace(
            "data_dir = \".bulkhead\"",
            &format!("data_dir = \"{}\"", dir.path().join("data").display()),
        );
    let config = bulkhead_core::config::load(&text, &env).unwrap();
    let boot = bulkhead_server::boot::boot(&config, dir.path())
        .await
        .unwrap();
    let s = serve_state(boot.state.clone()).await;
    let op = CONTRACT_OPERATOR_TOKEN;

    // Tenants: the contract's create body and shape.
    let (status, t) = s
        .call(
            "POST",
            "/admin/v1/tenants",
            op,
            Some(json!({"id": "acme", "name": "Acme Corp", "region": "eu"})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    for (k, v) in [
        ("id", "acme"),
        ("name", "Acme Corp"),
        ("region", "eu"),
        ("isolation", "shared"),
        ("status", "active"),
    ] {
        assert_eq!(t[k], v, "{t}");
    }
    // Dedicated isolation does not exist in this build: refused, never
    // stored and silently run shared.
    let (status, p) = s
        .call(
            "POST",
            "/admin/v1/tenants",
            op,
            Some(json!({"id": "bank", "name": "Bank", "region": "eu", "isolation": "dedicated"})),
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (409, Some("isolation_unavailable")),
        "{p}"
    );
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not available in this build"),
        "{p}"
    );
    assert_eq!(
        s.call("GET", "/admin/v1/tenants/bank", op, None).await.0,
        404
    );
    let (status, p) = s
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            op,
            Some(json!({"isolation": "dedicated"})),
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (409, Some("isolation_unavailable")),
        "{p}"
    );
    let (_, t) = s.call("GET", "/admin/v1/tenants/acme", op, None).await;
    assert_eq!(t["isolation"], "shared");
    let (status, t) = s
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            op,
            Some(json!({"isolation": "shared", "name": "Acme Corp"})),
        )
        .await;
    assert_eq!(status, 200, "{t}");

    let (status, k) = s
        .call(
            "POST",
            "/admin/v1/tenants/acme/api-keys",
            op,
            Some(json!({"roles": ["admin"]})),
        )
        .await;
    assert_eq!(status, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("bk_"));

    // A JWT of the contract's example issuer.
    let jwt = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(CONTRACT_JWT_SECRET.as_bytes()),
        None,
        &json!({"iss": "https://idp.example.com", "aud": "bulkhead", "sub": "u1",
                "exp": now() + 600, "tenant_id": "acme", "roles": ["member"]}),
    );
    let (status, me) = s.call("GET", "/v1/me", &jwt, None).await;
    assert_eq!((status, &me["tenant"]), (200, &json!("acme")), "{me}");

    // Documents with the contract's content types.
    for (ct, content) in [
        (
            "text/markdown",
            "# Guide\n\n## Install\n\nRun the installer.",
        ),
        ("text/plain", "Plain words about refunds."),
        (
            "text/html",
            "<h1>Pricing</h1><p>Plans <b>start</b> at ten.</p><script>x()</script>",
        ),
    ] {
        let (status, d) = s
            .call(
                "POST",
                "/v1/collections/docs/documents",
                &key,
                Some(json!({"content": content, "content_type": ct,
                            "external_id": ct, "metadata": {"kind": ct}})),
            )
            .await;
        assert_eq!(status, 201, "{ct}: {d}");
        assert!(
            d["id"].is_string() && d["chunks"].as_u64().unwrap() >= 1,
            "{d}"
        );
    }
    let (_, found) = s
        .call(
            "POST",
            "/v1/collections/docs/search",
            &key,
            Some(
                json!({"query": "plans start", "top_k": 3, "mode": "fulltext",
                        "filter": {"kind": "text/html"}}),
            ),
        )
        .await;
    let text = found["results"][0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Plans start at ten") && !text.contains('<'),
        "{found}"
    );
    let (_, found) = s
        .call(
            "POST",
            "/v1/collections/docs/search",
            &key,
            Some(json!({"query": "installer", "mode": "fulltext"})),
        )
        .await;
    assert_eq!(
        found["results"][0]["metadata"]["kind"], "text/markdown",
        "{found}"
    );
    // An unknown type is a 400 naming the field; nothing is written.
    let (status, p) = s
        .call(
            "POST",
            "/v1/collections/docs/documents",
            &key,
            Some(
                json!({"content": "%PDF", "content_type": "application/pdf", "external_id": "pdf"}),
            ),
        )
        .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (400, Some("validation_failed")),
        "{p}"
    );
    assert!(
        p["detail"].as_str().unwrap().starts_with("content_type: "),
        "{p}"
    );
    let (status, p) = s
        .call(
            "POST",
            "/v1/collections/docs/documents",
            &key,
            Some(json!({"content": "x", "content_type": "text/html", "format": "markdown"})),
        )
        .await;
    assert_eq!(status, 400, "{p}");
    // The older `format` field keeps working.
    let (status, d) = s
        .call(
            "POST",
            "/v1/collections/docs/documents",
            &key,
            Some(json!({"content": "# Old\n\nclient", "format": "markdown", "external_id": "old"})),
        )
        .await;
    assert_eq!(status, 201, "{d}");
    let (_, spec) = s.call("GET", "/openapi.json", "", None).await;
    assert_eq!(
        spec["components"]["schemas"]["PutDocument"]["properties"]["content_type"]["type"],
        json!(["string", "null"]),
        "{}",
        spec["components"]["schemas"]["PutDocument"]
    );

    // The contract's agent and prompt: tenant.name is the display name.
    let (status, run) = s
        .call(
            "POST",
            "/v1/agents/support/runs",
            &key,
            Some(json!({"input": "Who are you?", "thread_id": null})),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "completed", "{run}");
    let chat = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/chat/completions"))
        .unwrap();
    assert_eq!(
        chat.body["messages"][0],
        json!({"role": "system", "content": "You are the assistant of Acme Corp."}),
        "{}",
        chat.body
    );
}

/// Recomputes an event's hash from the served JSON exactly as
/// docs/audit.md says. Version 2: the RFC 8785 form of the event without
/// `hash`. Version 1: the compact JSON of every field but `hash`, in the
/// documented order, `details` as served.
fn documented_hash(event: &Value) -> String {
    if event["v"] != json!(1) {
        let mut without = event.clone();
        without.as_object_mut().unwrap().remove("hash");
        let canonical = bulkhead_core::jcs::canonicalize(&without);
        return bulkhead_core::audit::hex(&Sha256::digest(canonical.as_bytes()));
    }
    const FIELDS: [&str; 14] = [
        "v",
        "seq",
        "id",
        "time",
        "tenant",
        "principal",
        "action",
        "target",
        "outcome",
        "request_id",
        "agent",
        "run_id",
        "details",
        "prev_hash",
    ];
    let mut canonical = String::from("{");
    for (i, field) in FIELDS.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        canonical.push_str(&format!(
            "\"{field}\":{}",
            serde_json::to_string(&event[field]).unwrap()
        ));
    }
    canonical.push('}');
    bulkhead_core::audit::hex(&Sha256::digest(canonical.as_bytes()))
}

/// Whether every object in `v` has its keys in sorted order as served.
fn sorted_everywhere(v: &Value) -> bool {
    match v {
        Value::Object(m) => {
            let keys: Vec<&String> = m.keys().collect();
            keys.windows(2).all(|w| w[0] < w[1]) && m.values().all(sorted_everywhere)
        }
        Value::Array(items) => items.iter().all(sorted_everywhere),
        _ => true,
    }
}

#[tokio::test]
async fn served_audit_events_hash_as_docs_audit_md_says() {
    // This binary's serde_json keeps keys in the order it reads them (the
    // workspace turns on `preserve_order`), so parsing shows served order.
    assert_eq!(
        serde_json::from_str::<Value>(r#"{"b":1,"a":2}"#)
            .unwrap()
            .to_string(),
        r#"{"b":1,"a":2}"#
    );
    let app = TestApp::new().await;
    let s = serve(&app).await;
    app.create_tenant("acme", "eu").await;
    // api_key.create records {roles, name, expires_at}: not sorted as built.
    let (_, key) = app.api_key("acme", &["admin"]).await;
    let (status, _) = s
        .call(
            "PATCH",
            "/admin/v1/tenants/acme",
            OPERATOR_TOKEN,
            Some(json!({"name": "Acme 2", "quotas": {"requests_per_minute": 100}})),
        )
        .await;
    assert_eq!(status, 200);

    for (token, path) in [
        (key.as_str(), "/v1/audit"),
        (OPERATOR_TOKEN, "/admin/v1/audit"),
    ] {
        let (status, text) = s.call_text("GET", path, token, None).await;
        assert_eq!(status, 200, "{text}");
        let page: Value = serde_json::from_str(&text).unwrap();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() >= 3, "{text}");
        let mut prev = bulkhead_core::audit::GENESIS_HASH.to_owned();
        for e in events {
            assert_eq!(e["v"], json!(2), "{e}");
            // Served exactly in its RFC 8785 form, hash included.
            assert!(
                text.contains(&bulkhead_core::jcs::canonicalize(e)),
                "not served in canonical form: {e}"
            );
            assert!(sorted_everywhere(e), "not sorted: {e}");
            assert_eq!(e["prev_hash"], json!(prev), "{e}");
            assert_eq!(
                documented_hash(e),
                e["hash"].as_str().unwrap(),
                "{path}: {e}"
            );
            prev = e["hash"].as_str().unwrap().to_owned();
        }
    }
}
