//! The generic http tool: templates, encoding, the allow-list, the
//! response cap, the timeout and upstream statuses.

use bulkhead_testkit::SaasStandIn;
use bulkhead_tools::ToolError;
use serde_json::{Value, json};

use crate::support::{basic, bearer, call, http, one};

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[tokio::test]
async fn hostile_values_are_percent_encoded_and_template_syntax_arrives_literally() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(
        &saas,
        "/echo/items/{{ id }}?q={{ q }}&n={{ n }}",
        json!({}),
    ));
    let args = json!({"id": "x/../../admin?y=1#", "q": "evil.com@ & {{ 7*7 }}", "n": 7});
    let out = call(&tools, args, None).await.unwrap();
    assert_eq!(out.status, 200);
    let echo = json_of(&out.content);
    assert_eq!(echo["path"], "/echo/items/x%2F..%2F..%2Fadmin%3Fy%3D1%23");
    assert_eq!(
        echo["query"],
        "q=evil.com%40%20%26%20%7B%7B%207%2A7%20%7D%7D&n=7"
    );
    let r = &saas.requests()[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.header("authorization"), None, "no credential, no header");
}

#[tokio::test]
async fn body_template_values_are_json_escaped() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(
        &saas,
        "/echo/notes",
        json!({"method": "POST", "body": r#"{"text": {{ text }}, "n": {{ n }}, "fixed": true}"#}),
    ));
    let text = r#"{{ 7*7 }}", "fixed": false, "x": ""#;
    let out = call(&tools, json!({"text": text, "n": 3}), Some(&bearer("tok")))
        .await
        .unwrap();
    let echo = json_of(&out.content);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], json!({"text": text, "n": 3, "fixed": true}));
    let r = &saas.requests()[0];
    assert_eq!(r.header("authorization"), Some("Bearer tok"));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn basic_credentials_travel_as_http_basic() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(&saas, "/echo", json!({})));
    call(&tools, json!({}), Some(&basic("u", "p")))
        .await
        .unwrap();
    assert_eq!(
        saas.requests()[0].header("authorization"),
        Some("Basic dTpw")
    );
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_before_sending() {
    let saas = SaasStandIn::start().await;
    let port = saas.addr().port();

    // The configured URL's own host is not allowed.
    let tools = one(http(
        &saas,
        "/echo",
        json!({"allowed_hosts": ["127.0.0.1:1"]}),
    ));
    let err = call(&tools, json!({}), None).await.unwrap_err();
    assert_eq!(
        err,
        ToolError::HostNotAllowed {
            host: format!("127.0.0.1:{port}")
        }
    );
    assert_eq!(err.code(), "host_not_allowed");

    // A value in the host position: another host is refused; a value
    // trying to smuggle a port or user info is encoded and breaks the URL.
    let mut config = http(&saas, "/echo", json!({}));
    config.url = Some("http://{{ host }}/echo".into());
    let tools = one(config);
    let err = call(&tools, json!({"host": "evil.com"}), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ToolError::HostNotAllowed {
            host: "evil.com:80".into()
        }
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("evil.com@127.0.0.1:{port}"),
    ] {
        let err = call(&tools, json!({ "host": host }), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::InvalidArguments(_)),
            "{host}: {err:?}"
        );
    }
    let mut config = http(&saas, "/echo", json!({}));
    config.url = Some(format!("http://{{{{ user }}}}127.0.0.1:{port}/echo"));
    let tools = one(config);
    let err = call(&tools, json!({"user": "evil.com@"}), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(_)), "{err:?}");

    // Dot segments made of whole values.
    let tools = one(http(&saas, "/echo/{{ a }}/secret", json!({})));
    let err = call(&tools, json!({"a": ".."}), None).await.unwrap_err();
    assert!(
        matches!(err, ToolError::InvalidArguments(ref m) if m.contains("..")),
        "{err:?}"
    );

    assert!(saas.requests().is_empty(), "{:?}", saas.requests());
}

#[tokio::test]
async fn undefined_variables_and_schema_violations_send_nothing() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(
        &saas,
        "/echo/{{ id }}",
        json!({"parameters": {"type": "object", "properties": {"id": {"type": "integer"}}, "additionalProperties": false}}),
    ));
    let err = call(&tools, json!({}), None).await.unwrap_err();
    assert_eq!(
        err,
        ToolError::InvalidArguments(
            "`id`: not given, and the URL template of this tool needs it".into()
        )
    );
    let err = call(&tools, json!({"id": "7"}), None).await.unwrap_err();
    assert_eq!(
        err,
        ToolError::InvalidArguments("`id`: expected an integer, got a string".into())
    );
    let err = call(&tools, json!({"id": 7, "x": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ToolError::InvalidArguments("`x`: unknown argument".into())
    );
    let err = call(&tools, json!("7"), None).await.unwrap_err();
    assert!(matches!(err, ToolError::InvalidArguments(_)));
    assert!(saas.requests().is_empty());
    call(&tools, json!({"id": 7}), None).await.unwrap();
    assert_eq!(saas.requests()[0].path, "/echo/7");
}

#[tokio::test]
async fn responses_over_the_cap_are_refused() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(
        &saas,
        "/big?bytes={{ n }}",
        json!({"max_response_bytes": 1000}),
    ));
    let out = call(&tools, json!({"n": 1000}), None).await.unwrap();
    assert_eq!(out.content, "x".repeat(1000));
    // Refused on the announced Content-Length.
    let err = call(&tools, json!({"n": 1001}), None).await.unwrap_err();
    assert_eq!(err, ToolError::ResponseTooLarge { limit: 1000 });
    assert_eq!(err.code(), "response_too_large");

    // Without a Content-Length: read chunk by chunk, stopped at the cap.
    let tools = one(http(
        &saas,
        "/big?chunked=1&bytes={{ n }}",
        json!({"max_response_bytes": 1000}),
    ));
    call(&tools, json!({"n": 1000}), None).await.unwrap();
    let err = call(&tools, json!({"n": 10_000_000}), None)
        .await
        .unwrap_err();
    assert_eq!(err, ToolError::ResponseTooLarge { limit: 1000 });
}

#[tokio::test]
async fn a_hanging_upstream_times_out() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(&saas, "/hang", json!({"timeout_s": 1})));
    let err = call(&tools, json!({}), None).await.unwrap_err();
    assert_eq!(err, ToolError::Timeout { seconds: 1 });
    assert_eq!(err.code(), "timeout");
    assert_eq!(saas.requests()[0].path, "/hang");
}

#[tokio::test]
async fn error_statuses_and_redirects_are_upstream_errors() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(&saas, "/status/{{ code }}", json!({})));
    for code in [302, 400, 404, 429, 500, 503] {
        let err = call(&tools, json!({ "code": code }), None)
            .await
            .unwrap_err();
        match err {
            ToolError::Upstream {
                status,
                ref message,
            } => {
                assert_eq!(status, code);
                assert!(message.contains(&format!("\"status\":{code}")), "{message}");
            }
            other => panic!("{code}: {other:?}"),
        }
    }
    // The redirect was not followed: one request per call.
    assert_eq!(saas.requests().len(), 6);

    // Nobody listening: a request error.
    let port = saas.addr().port();
    drop(saas);
    let mut config = crate::support::config(json!({
        "name": "gone", "kind": "http", "region": "eu",
        "url": format!("http://127.0.0.1:{port}/x"),
        "allowed_hosts": [format!("127.0.0.1:{port}")],
        "parameters": {"type": "object"},
    }));
    config.timeout_s = 5;
    let tools = one(config);
    let err = call(&tools, json!({}), None).await.unwrap_err();
    assert!(matches!(err, ToolError::Request(_)), "{err:?}");
    assert_eq!(err.code(), "request");
}

/// An http tool in the contract's form: `base_url` and `allowed_hosts`
/// (no URL template, no parameters), the model naming the request.
fn base_form(saas: &SaasStandIn, extra: Value) -> bulkhead_core::config::ToolConfig {
    let mut v = json!({
        "name": "web", "kind": "http", "region": "eu",
        "base_url": format!("{}/echo", saas.base_url()),
        "allowed_hosts": [saas.addr().to_string()],
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    crate::support::config(v)
}

#[tokio::test]
async fn the_contract_form_takes_method_path_query_and_body_under_base_url() {
    let saas = SaasStandIn::start().await;
    let tools = one(base_form(&saas, json!({})));
    let tool = tools.tools().next().unwrap();
    // The model is offered the fixed schema.
    let def = tool.definition();
    assert_eq!(def["function"]["parameters"]["required"], json!(["path"]));
    let args = json!({"method": "POST", "path": "/items/42", "query": {"q": "a b&c", "n": 3},
                      "body": {"x": 1}});
    tool.validate(&args).unwrap();
    let out = call(&tools, args, Some(&bearer("tok"))).await.unwrap();
    let echo = json_of(&out.content);
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/items/42");
    assert_eq!(echo["query"], "n=3&q=a+b%26c");
    assert_eq!(echo["body"], json!({"x": 1}));
    assert_eq!(
        saas.requests()[0].header("authorization"),
        Some("Bearer tok")
    );
    // GET is the default method.
    let out = call(&tools, json!({"path": "/"}), None).await.unwrap();
    assert_eq!(json_of(&out.content)["method"], "GET");
}

#[tokio::test]
async fn a_path_from_the_model_cannot_leave_the_base_url() {
    let saas = SaasStandIn::start().await;
    let tools = one(base_form(&saas, json!({})));
    for path in [
        "/../admin",
        "/a/../../admin",
        "/a/%2e%2e/b",
        "/a/%2E./b",
        "//evil.example/x",
        "/a//b",
        "/a\\b",
        "relative",
        "http://evil.example/",
    ] {
        let r = call(&tools, json!({"path": path}), None).await;
        assert!(
            matches!(r, Err(ToolError::InvalidArguments(_))),
            "{path}: {r:?}"
        );
    }
    assert!(saas.requests().is_empty(), "nothing was sent");
    // Characters that would end the path stay inside its segment.
    let out = call(&tools, json!({"path": "/a?admin=1#x"}), None)
        .await
        .unwrap();
    let echo = json_of(&out.content);
    assert_eq!(echo["path"], "/echo/a%3Fadmin=1%23x");
    assert!(echo["query"].is_null(), "{echo}");
    // A body on GET, a method outside the list, and a tool fixed to one
    // method are refused before sending.
    for args in [
        json!({"path": "/x", "body": {"a": 1}}),
        json!({"path": "/x", "method": "TRACE"}),
    ] {
        let r = call(&tools, args.clone(), None).await;
        assert!(
            matches!(r, Err(ToolError::InvalidArguments(_))),
            "{args}: {r:?}"
        );
    }
    let fixed = one(base_form(&saas, json!({"method": "POST"})));
    let r = call(&fixed, json!({"path": "/x", "method": "DELETE"}), None).await;
    assert!(matches!(r, Err(ToolError::InvalidArguments(_))), "{r:?}");
    assert_eq!(saas.requests().len(), 1);
}

#[test]
fn a_base_url_outside_allowed_hosts_is_refused_at_build() {
    let cfg = crate::support::config(json!({
        "name": "web", "kind": "http", "region": "eu",
        "base_url": "http://127.0.0.1:9/api",
        "allowed_hosts": ["127.0.0.1:10"],
    }));
    let errors = match bulkhead_tools::ToolBox::new(&[cfg], &crate::support::loopback()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("built"),
    };
    assert!(
        errors.contains("tools[0].base_url: its host:port must be one of allowed_hosts"),
        "{errors}"
    );
}
