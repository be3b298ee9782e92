//! The egress guard in the tools: an http tool or connector whose request
//! would reach a loopback, private or metadata address is refused with
//! `egress_refused` (nothing arrives), at build time when the
//! configuration already says so, and goes through once the operator
//! allows the address.

use bulkhead_testkit::SaasStandIn;
use bulkhead_tools::{ToolBox, ToolError};
use serde_json::json;

use crate::support::{bearer, call, config, connector, egress, http, loopback};

/// The stand-in's port, reached by name: `localhost` resolves to loopback,
/// which only the resolver can tell.
fn by_name(saas: &SaasStandIn) -> String {
    format!("localhost:{}", saas.addr().port())
}

#[tokio::test]
async fn an_http_tool_aimed_at_loopback_through_a_name_is_refused_before_sending() {
    let saas = SaasStandIn::start().await;
    let host = by_name(&saas);
    let mut c = http(&saas, "/echo", json!({"allowed_hosts": [host]}));
    c.url = Some(format!("http://{host}/echo?q={{{{ q }}}}"));
    // The operator allowed plain http, and the stand-in's literal address
    // only — not what a name resolves to.
    let strict = egress(&format!(
        "allow_http = true\nallow_hosts = [\"{}\"]",
        saas.addr()
    ));
    let tools = ToolBox::new(std::slice::from_ref(&c), &strict).unwrap();
    let err = call(&tools, json!({"q": "x"}), None).await.unwrap_err();
    assert_eq!(err.code(), "egress_refused", "{err:?}");
    assert!(err.to_string().contains("loopback"), "{err}");
    assert!(saas.requests().is_empty(), "{:?}", saas.requests());

    // With the name allowed on that port, the same call goes through.
    let allowed = egress(&format!("allow_http = true\nallow_hosts = [\"{host}\"]"));
    let tools = ToolBox::new(&[c], &allowed).unwrap();
    let out = call(&tools, json!({"q": "x"}), None).await.unwrap();
    assert_eq!(out.status, 200);
    assert_eq!(saas.requests().len(), 1);
}

#[tokio::test]
async fn a_connector_whose_base_name_resolves_inside_is_refused_with_its_credential_unsent() {
    let saas = SaasStandIn::start().await;
    let mut c = connector(&saas, "slack");
    c.base_url = Some(format!("http://{}", by_name(&saas)));
    let tools = ToolBox::new(std::slice::from_ref(&c), &egress("allow_http = true")).unwrap();
    let args = json!({"channel": "C1", "text": "hi"});
    let err = tools
        .call(
            tools.get("slack").unwrap(),
            &args,
            Some(&bearer("xoxb-never-sent-1")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "egress_refused", "{err:?}");
    assert!(saas.requests().is_empty());
    // The operator allows loopback: the same call is made.
    let tools = ToolBox::new(
        &[c],
        &egress("allow_http = true\nallow_hosts = [\"127.0.0.0/8\", \"::1/128\"]"),
    )
    .unwrap();
    let out = tools
        .call(
            tools.get("slack").unwrap(),
            &args,
            Some(&bearer("xoxb-sent-1")),
        )
        .await
        .unwrap();
    assert_eq!(out.status, 200);
    assert_eq!(saas.requests().len(), 1);
}

#[tokio::test]
async fn a_tool_the_guard_would_refuse_is_refused_at_build_by_key_path() {
    // The operator's allowed_hosts names a private address the guard does
    // not allow: boot (and `bulkhead check`) refuse the tool by key path.
    let cases = [
        (
            json!({"name": "meta", "kind": "http", "region": "eu", "parameters": {"type": "object"},
                   "url": "https://169.254.169.254/latest/meta-data/", "allowed_hosts": ["169.254.169.254:443"]}),
            "tools[0].allowed_hosts[0]: 169.254.169.254 is a cloud metadata address",
        ),
        (
            json!({"name": "intra", "kind": "http", "region": "eu", "parameters": {"type": "object"},
                   "url": "https://{{ host }}/x", "allowed_hosts": ["10.0.0.5:443", "[::1]:443"]}),
            "tools[0].allowed_hosts[0]: 10.0.0.5 is a private address",
        ),
        (
            json!({"name": "plain", "kind": "http", "region": "eu", "parameters": {"type": "object"},
                   "url": "http://api.example.com/x", "allowed_hosts": ["api.example.com:80"]}),
            "tools[0].url: http:// URLs are not allowed",
        ),
        (
            json!({"name": "slack", "kind": "slack", "region": "eu", "connection": "slack",
                   "base_url": "http://127.0.0.1:6379"}),
            "tools[0].base_url: http:// URLs are not allowed",
        ),
        (
            json!({"name": "slack", "kind": "slack", "region": "eu", "connection": "slack",
                   "base_url": "https://[fd00:ec2::254]"}),
            "tools[0].base_url: fd00:ec2::254 is a cloud metadata address",
        ),
    ];
    for (c, expected) in cases {
        match ToolBox::new(&[config(c)], &egress("")) {
            Err(ToolError::Config(m)) => assert!(m.starts_with(expected), "{m}"),
            other => panic!("{expected}: {other:?}"),
        }
    }
    // Allowed by the operator, the same tool builds.
    let c = config(
        json!({"name": "intra", "kind": "http", "region": "eu", "parameters": {"type": "object"},
        "url": "https://{{ host }}/x", "allowed_hosts": ["10.0.0.5:443"]}),
    );
    assert!(ToolBox::new(&[c], &egress("allow_hosts = [\"10.0.0.0/8\"]")).is_ok());
    // And the test default (loopback allowed) is what the rest of the
    // tests run behind.
    let saas = SaasStandIn::start().await;
    assert!(ToolBox::new(&[http(&saas, "/echo", json!({}))], &loopback()).is_ok());
}
