//! The egress guard through the server: an OAuth2 token URL aimed at
//! loopback is refused when stored (400 naming `token_url`) and when used
//! (a credential stored by other means), a redirect to loopback is not
//! followed, the endpoint's answer never reaches the tenant, and an agent's
//! http tool aimed inside is refused to the model as a tool error. With
//! the operator allowing the address, the same calls go through.

use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, ToolCall};
use bulkhead_vault::VaultError;
use bulkhead_vault::credential::{ConnectionName, CredentialWire};
use bulkhead_vault::store::CredScope;
use serde_json::{Value, json};

use crate::fakes::{Answer, FakeTokenEndpoint, logs};
use crate::support::*;

/// Plain http allowed (the fakes speak it), no address exception: the
/// guard's address rules alone decide.
const NO_EXCEPTIONS: &str = "[egress]\nallow_http = true\n";

fn oauth(token_url: &str, tag: &str) -> Value {
    json!({"kind": "oauth2", "access_token": format!("old-access-{tag}"),
           "refresh_token": format!("refresh-{tag}"), "expires_at": "2020-01-01T00:00:00Z",
           "token_url": token_url, "client_id": format!("client-{tag}"),
           "client_secret": format!("client-secret-{tag}")})
}

fn conn(s: &str) -> ConnectionName {
    ConnectionName::parse(s).unwrap()
}

fn grant(tag: &str) -> Answer {
    Answer::Grant {
        access_token: format!("new-access-{tag}"),
        refresh_token: None,
        expires_in: 3600,
    }
}

/// Uses the connection as an agent's tool call would.
async fn use_crm(app: &TestApp, key: &str) -> Result<String, VaultError> {
    let scope = app.scope(key).await;
    app.state
        .vault
        .use_credential(CredScope::Tenant(&scope), &conn("crm"), "test")
        .await
        .map(|c| c.secret_values()[0].to_owned())
}

#[tokio::test]
async fn a_loopback_token_url_is_refused_at_put_and_the_endpoint_never_hears_of_it() {
    let endpoint = FakeTokenEndpoint::start().await;
    endpoint.push(grant("put"));
    let app = TestApp::with_config("", NO_EXCEPTIONS).await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let port = endpoint.addr.port();
    for url in [
        endpoint.url(),
        format!("http://localhost:{port}/token"),
        format!("http://[::ffff:127.0.0.1]:{port}/token"),
        format!("http://2130706433:{port}/token"),
        "https://169.254.169.254/latest/meta-data/iam".to_owned(),
        "https://10.0.0.1:6379/".to_owned(),
    ] {
        let r = app
            .call(
                "PUT",
                "/v1/credentials/crm",
                Some(&admin),
                Some(oauth(&url, "put")),
            )
            .await;
        r.assert_problem(400, "validation_failed");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.starts_with("token_url: "), "{url}: {detail}");
        assert!(
            detail.contains("outbound requests may not reach"),
            "{detail}"
        );
    }
    // https only: plain http is refused when the operator did not allow it.
    let strict = TestApp::with_config("", "[egress]\n").await;
    strict.create_tenant("acme", "eu").await;
    let (_, admin2) = strict.api_key("acme", &["admin"]).await;
    let r = strict
        .call(
            "PUT",
            "/v1/credentials/crm",
            Some(&admin2),
            Some(oauth("http://idp.example.com/token", "put")),
        )
        .await;
    r.assert_problem(400, "validation_failed");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("http:// URLs are not allowed")
    );
    assert_eq!(
        app.call("GET", "/v1/credentials", Some(&admin), None)
            .await
            .body["credentials"],
        json!([])
    );
    assert!(endpoint.recorded().is_empty());
}

#[tokio::test]
async fn a_stored_loopback_token_url_is_refused_at_use_time() {
    let endpoint = FakeTokenEndpoint::start().await;
    endpoint.push(grant("use"));
    let app = TestApp::with_config("", NO_EXCEPTIONS).await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let scope = app.scope(&admin).await;
    // Stored by other means than PUT (an older server, a restore, a rule
    // the operator since removed): the vault takes it as it is.
    for (name, url) in [
        ("crm", endpoint.url()),
        (
            "crm2",
            format!("http://localhost:{}/token", endpoint.addr.port()),
        ),
    ] {
        let secret = serde_json::from_value::<CredentialWire>(oauth(&url, "use"))
            .unwrap()
            .into_secret()
            .unwrap();
        app.state
            .vault
            .put(CredScope::Tenant(&scope), &conn(name), &secret)
            .await
            .unwrap();
        let err = app
            .state
            .vault
            .use_credential(CredScope::Tenant(&scope), &conn(name), "test")
            .await
            .unwrap_err();
        assert!(matches!(err, VaultError::NeedsReauth), "{err:?}");
    }
    assert!(endpoint.recorded().is_empty(), "{:?}", endpoint.recorded());
    let failures: Vec<Value> = app
        .audit(&admin)
        .await
        .into_iter()
        .filter(|e| e["action"] == "credential.refresh")
        .collect();
    assert_eq!(failures.len(), 2);
    for f in &failures {
        assert_eq!(f["outcome"], "failure");
        assert_eq!(f["details"]["code"], "egress_refused", "{f}");
        assert_eq!(f["details"]["status"], "needs_reauth");
    }
    let list = app.call("GET", "/v1/credentials", Some(&admin), None).await;
    assert!(
        list.body["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "needs_reauth")
    );
}

#[tokio::test]
async fn a_credential_stored_while_allowed_is_refused_once_the_operator_removes_the_rule() {
    let endpoint = FakeTokenEndpoint::start().await;
    endpoint.push(grant("later"));
    let app = TestApp::with_config(
        "",
        &format!(
            "[egress]\nallow_http = true\nallow_hosts = [\"{}\"]\n",
            endpoint.addr
        ),
    )
    .await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let r = app
        .call(
            "PUT",
            "/v1/credentials/crm",
            Some(&admin),
            Some(oauth(&endpoint.url(), "later")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The same data under a server restarted without the rule: the vault
    // over the same store and keys, its refresher behind the new guard.
    let kms = bulkhead_vault::kms::LocalKeyProvider::open(&app.dir.path().join("data")).unwrap();
    let strict = bulkhead_egress::Egress::new(
        &bulkhead_core::config::load(NO_EXCEPTIONS, &|_| None)
            .unwrap()
            .egress,
    );
    let restarted = bulkhead_vault::Vault::new(
        std::sync::Arc::new(kms),
        std::sync::Arc::new(app.store.clone()),
        std::sync::Arc::new(bulkhead_vault::oauth::HttpRefresher::new(&strict).unwrap()),
    );
    let scope = app.scope(&admin).await;
    let err = restarted
        .use_credential(CredScope::Tenant(&scope), &conn("crm"), "test")
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NeedsReauth), "{err:?}");
    assert!(endpoint.recorded().is_empty(), "{:?}", endpoint.recorded());
}

#[tokio::test]
async fn with_the_operator_allowing_the_address_the_same_refresh_goes_through() {
    let endpoint = FakeTokenEndpoint::start().await;
    endpoint.push(grant("ok"));
    let app = TestApp::with_config(
        "",
        &format!(
            "[egress]\nallow_http = true\nallow_hosts = [\"{}\"]\n",
            endpoint.addr
        ),
    )
    .await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let r = app
        .call(
            "PUT",
            "/v1/credentials/crm",
            Some(&admin),
            Some(oauth(&endpoint.url(), "ok")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(use_crm(&app, &admin).await.unwrap(), "new-access-ok");
    assert_eq!(endpoint.recorded().len(), 1);
}

#[tokio::test]
async fn a_redirect_from_an_allowed_token_endpoint_to_loopback_is_not_followed() {
    let outer = FakeTokenEndpoint::start().await;
    let inner = FakeTokenEndpoint::start().await;
    inner.push(grant("inner"));
    outer.push(Answer::Raw {
        status: 307,
        body: json!({}),
        location: Some(inner.url()),
    });
    // Only the first hop is allowed.
    let app = TestApp::with_config(
        "",
        &format!(
            "[egress]\nallow_http = true\nallow_hosts = [\"{}\"]\n",
            outer.addr
        ),
    )
    .await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    let r = app
        .call(
            "PUT",
            "/v1/credentials/crm",
            Some(&admin),
            Some(oauth(&outer.url(), "r")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(matches!(
        use_crm(&app, &admin).await,
        Err(VaultError::NeedsReauth)
    ));
    assert_eq!(outer.recorded().len(), 1);
    assert!(inner.recorded().is_empty(), "the redirect was followed");
    // The 307 itself was the answer: a failure with its status.
    let failure = app
        .audit(&admin)
        .await
        .into_iter()
        .find(|e| e["action"] == "credential.refresh")
        .unwrap();
    assert_eq!(failure["details"]["http_status"], 307, "{failure}");
    assert_eq!(failure["details"]["code"], "refresh_failed");
}

#[tokio::test]
async fn the_token_endpoints_answer_never_reaches_the_tenant() {
    let _ = logs();
    const PLANTED: &str = "internal-redis-dump-6f1c9a";
    let endpoint = FakeTokenEndpoint::start().await;
    let app = TestApp::with_config(
        "",
        &format!(
            "[egress]\nallow_http = true\nallow_hosts = [\"{}\"]\n",
            endpoint.addr
        ),
    )
    .await;
    app.create_tenant("acme", "eu").await;
    let (_, admin) = app.api_key("acme", &["admin"]).await;
    // An internal service's answers: an "error" code that is its own
    // text, a 5xx page, a 200 that is not a token.
    let answers = [
        (400, json!({"error": PLANTED, "error_description": PLANTED})),
        (
            401,
            json!({"error": "invalid_client", "error_description": PLANTED}),
        ),
        (500, json!({"error": PLANTED})),
        (200, json!({"keys": [PLANTED]})),
    ];
    for (i, (status, body)) in answers.into_iter().enumerate() {
        endpoint.push(Answer::Raw {
            status,
            body,
            location: None,
        });
        let r = app
            .call(
                "PUT",
                "/v1/credentials/crm",
                Some(&admin),
                Some(oauth(&endpoint.url(), &format!("b{i}"))),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.body);
        let err = use_crm(&app, &admin).await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains(PLANTED));
    }
    assert_eq!(endpoint.recorded().len(), 4);
    let events = Value::Array(app.audit(&admin).await).to_string();
    assert!(!events.contains(PLANTED), "{events}");
    // What the tenant does learn: a stable code and the status.
    let failures: Vec<Value> = app
        .audit(&admin)
        .await
        .into_iter()
        .filter(|e| e["action"] == "credential.refresh")
        .map(|e| e["details"].clone())
        .collect();
    let seen: Vec<(String, Value)> = failures
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_owned(),
                d["http_status"].clone(),
            )
        })
        .collect();
    assert!(
        seen.contains(&("refresh_rejected".into(), json!(400))),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("refresh_rejected".into(), json!(401))),
        "{seen:?}"
    );
    // The 500 keeps its status; the 200 that was not a token, none.
    assert!(
        seen.contains(&("refresh_failed".into(), json!(500))),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("refresh_failed".into(), Value::Null)),
        "{seen:?}"
    );
    assert!(
        failures
            .iter()
            .any(|d| d["reason"].as_str().unwrap().contains("invalid_client"))
    );
    let list = app.call("GET", "/v1/credentials", Some(&admin), None).await;
    assert!(!list.body.to_string().contains(PLANTED));
    assert!(
        !logs().contains(PLANTED),
        "the log carries the endpoint's answer"
    );
}

fn agent_tables(fake: &FakeProvider, saas: &SaasStandIn) -> String {
    let port = saas.addr().port();
    format!(
        r#"
[egress]
allow_http = true
allow_hosts = ["{addr}"]
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
timeout_s = 10
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[[tools]]
name = "fetch"
kind = "http"
region = "eu"
url = "http://{{{{ host }}}}:{port}/echo/x?d={{{{ data }}}}"
allowed_hosts = ["{addr}", "localhost:{port}"]
[tools.parameters]
type = "object"
required = ["host", "data"]
properties.host = {{ type = "string" }}
properties.data = {{ type = "string" }}
[[agents]]
name = "probe"
model = "small"
prompt = "You fetch."
tools = ["fetch"]
max_steps = 3
"#,
        addr = saas.addr(),
        base = fake.base_url(),
    )
}

#[tokio::test]
async fn an_agents_http_tool_aimed_inside_is_refused_to_the_model_as_a_tool_error() {
    let fake = FakeProvider::start().await;
    let saas = SaasStandIn::start().await;
    // The model (compromised) aims the tool at a name that resolves to
    // loopback; the operator allowed only the stand-in's literal address.
    let app = TestApp::with_config("", &agent_tables(&fake, &saas)).await;
    app.create_tenant("acme", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    fake.push_all([
        Reply::tool_calls([ToolCall::new(
            "fetch",
            json!({"host": "localhost", "data": "inside"}),
        )]),
        Reply::tool_calls([ToolCall::new(
            "fetch",
            json!({"host": "127.0.0.1", "data": "allowed"}),
        )]),
        Reply::text("done"),
    ]);
    let r = app
        .call(
            "POST",
            "/v1/agents/probe/runs",
            Some(&acme),
            Some(json!({"input": "fetch"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "completed", "{}", r.body);
    let results: Vec<&Value> = r.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 2, "{}", r.body);
    assert_eq!(results[0]["data"]["code"], "egress_refused");
    assert_eq!(results[1]["data"]["ok"], true);
    // The refused call never arrived; the allowed one did.
    let arrived: Vec<String> = saas
        .requests()
        .iter()
        .map(|q| q.query.clone().unwrap_or_default())
        .collect();
    assert_eq!(arrived, ["d=allowed"]);
    // The model was told, as a tool message.
    let second = &fake.requests()[1].body;
    let tool_msg = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    let content: Value = serde_json::from_str(tool_msg["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["error"], "egress_refused", "{content}");
    assert!(
        content["message"].as_str().unwrap().contains("loopback"),
        "{content}"
    );
    let denied = app
        .audit(&acme)
        .await
        .into_iter()
        .filter(|e| e["action"] == "tool.call" && e["details"]["code"] == "egress_refused")
        .count();
    assert_eq!(denied, 1);
}
