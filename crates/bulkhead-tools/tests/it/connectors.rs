//! Slack, Jira and GitHub against the stand-in: method, path, headers,
//! credential, body, output; refusals before anything is sent.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bulkhead_testkit::SaasStandIn;
use bulkhead_tools::ToolError;
use serde_json::{Value, json};

use crate::support::{api_key, basic, bearer, call, config, connector, oauth2, one};

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[tokio::test]
async fn slack_posts_a_message_with_the_bearer_token() {
    let saas = SaasStandIn::start().await;
    let tools = one(connector(&saas, "slack"));
    let args = json!({"channel": "C1", "text": "Build {{ 7*7 }} failed"});
    let out = call(&tools, args.clone(), Some(&bearer("xoxb-tenant-a")))
        .await
        .unwrap();
    assert_eq!(out.status, 200);
    let content = json_of(&out.content);
    assert_eq!(content["ok"], true);
    assert_eq!(content["channel"], "C1");
    assert!(content["ts"].is_string());
    assert_eq!(content.as_object().unwrap().len(), 3, "a compact summary");

    let r = &saas.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/chat.postMessage")
    );
    assert_eq!(r.header("authorization"), Some("Bearer xoxb-tenant-a"));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.json(), Some(args));

    // OAuth2: the access token, never the refresh token.
    call(
        &tools,
        json!({"channel": "C1", "text": "t"}),
        Some(&oauth2("xoxp-access", "xoxe-refresh")),
    )
    .await
    .unwrap();
    assert_eq!(
        saas.requests()[1].header("authorization"),
        Some("Bearer xoxp-access")
    );
}

/// Each connector's `base_url` is the service's documented API root (Slack
/// `https://slack.com/api`, Jira the site root, GitHub
/// `https://api.github.com`), with or without a trailing `/`; Slack's site
/// root, which earlier configurations used, still works.
#[tokio::test]
async fn connector_base_urls_are_each_services_api_root() {
    let saas = SaasStandIn::start().await;
    let root = saas.base_url();
    let cases = [
        (
            "slack",
            format!("{root}/api"),
            json!({"channel": "C1", "text": "t"}),
            "/api/chat.postMessage",
        ),
        (
            "slack",
            format!("{root}/api/"),
            json!({"channel": "C1", "text": "t"}),
            "/api/chat.postMessage",
        ),
        (
            "slack",
            root.clone(),
            json!({"channel": "C1", "text": "t"}),
            "/api/chat.postMessage",
        ),
        (
            "slack",
            format!("{root}/"),
            json!({"channel": "C1", "text": "t"}),
            "/api/chat.postMessage",
        ),
        (
            "jira",
            root.clone(),
            json!({"project": "PROJ", "summary": "S"}),
            "/rest/api/2/issue",
        ),
        (
            "jira",
            format!("{root}/"),
            json!({"project": "PROJ", "summary": "S"}),
            "/rest/api/2/issue",
        ),
        (
            "github",
            root.clone(),
            json!({"repo": "acme/web", "title": "T"}),
            "/repos/acme/web/issues",
        ),
        (
            "github",
            format!("{root}/"),
            json!({"repo": "acme/web", "title": "T"}),
            "/repos/acme/web/issues",
        ),
    ];
    for (i, (kind, base, args, path)) in cases.into_iter().enumerate() {
        let tools = one(config(json!({
            "name": kind, "kind": kind, "region": "eu", "base_url": base, "connection": kind,
        })));
        let cred = match kind {
            "jira" => basic("bot@example.com", "jira-token"),
            _ => bearer("tok-0123456789"),
        };
        let out = call(&tools, args, Some(&cred)).await;
        assert!(out.is_ok(), "{kind} at {base}: {out:?}");
        let recorded = saas.requests();
        assert_eq!(recorded.len(), i + 1);
        assert_eq!(
            (recorded[i].method.as_str(), recorded[i].path.as_str()),
            ("POST", path),
            "{kind} at {base}"
        );
    }
}

#[tokio::test]
async fn slack_ok_false_is_an_upstream_error() {
    let saas = SaasStandIn::start().await;
    let tools = one(connector(&saas, "slack"));
    let err = call(
        &tools,
        json!({"channel": "C_NOT_FOUND", "text": "t"}),
        Some(&bearer("tok-0123456789")),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        ToolError::Upstream {
            status: 200,
            message: "channel_not_found".into()
        }
    );
    assert_eq!(err.code(), "upstream");
}

#[tokio::test]
async fn jira_creates_an_issue_with_basic_auth() {
    let saas = SaasStandIn::start().await;
    let tools = one(connector(&saas, "jira"));
    let cred = basic("bot@example.com", "jira-token");
    let out = call(
        &tools,
        json!({"project": "PROJ", "summary": "Disk full"}),
        Some(&cred),
    )
    .await
    .unwrap();
    assert_eq!(out.status, 201);
    assert_eq!(
        json_of(&out.content),
        json!({"key": "PROJ-1", "id": "10001"})
    );
    let out = call(
        &tools,
        json!({"project": "PROJ", "summary": "S", "description": "D", "issue_type": "Bug"}),
        Some(&cred),
    )
    .await
    .unwrap();
    assert_eq!(json_of(&out.content)["key"], "PROJ-2");

    let recorded = saas.requests();
    let r = &recorded[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/rest/api/2/issue")
    );
    let expected = format!("Basic {}", STANDARD.encode("bot@example.com:jira-token"));
    assert_eq!(r.header("authorization"), Some(expected.as_str()));
    assert_eq!(
        r.json(),
        Some(
            json!({"fields": {"project": {"key": "PROJ"}, "summary": "Disk full", "issuetype": {"name": "Task"}}})
        )
    );
    assert_eq!(
        recorded[1].json(),
        Some(
            json!({"fields": {"project": {"key": "PROJ"}, "summary": "S", "description": "D", "issuetype": {"name": "Bug"}}})
        )
    );
}

#[tokio::test]
async fn github_opens_an_issue_with_its_headers() {
    let saas = SaasStandIn::start().await;
    let tools = one(connector(&saas, "github"));
    let out = call(
        &tools,
        json!({"repo": "acme/web", "title": "Crash", "body": "trace"}),
        Some(&api_key("ghp_key")),
    )
    .await
    .unwrap();
    assert_eq!(out.status, 201);
    assert_eq!(
        json_of(&out.content),
        json!({"number": 1, "html_url": "https://github.com/acme/web/issues/1"})
    );
    let r = &saas.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/repos/acme/web/issues")
    );
    assert_eq!(r.header("authorization"), Some("Bearer ghp_key"));
    assert_eq!(r.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(r.header("user-agent"), Some("bulkhead"));
    assert_eq!(r.json(), Some(json!({"title": "Crash", "body": "trace"})));
}

#[tokio::test]
async fn bad_arguments_and_missing_credentials_send_nothing() {
    let saas = SaasStandIn::start().await;
    let cases = [
        ("slack", json!({"channel": "C1"}), "`text`: required"),
        (
            "slack",
            json!({"channel": 5, "text": "t"}),
            "`channel`: expected a string",
        ),
        (
            "slack",
            json!({"channel": "C1", "text": "t", "as_user": true}),
            "`as_user`: unknown argument",
        ),
        (
            "slack",
            json!({"channel": "", "text": "t"}),
            "`channel`: must not be empty",
        ),
        (
            "slack",
            json!(["C1", "t"]),
            "the arguments must be a JSON object",
        ),
        (
            "jira",
            json!({"project": "proj", "summary": "s"}),
            "`project`: must be a project key",
        ),
        (
            "jira",
            json!({"project": "PROJ", "summary": "x".repeat(256)}),
            "`summary`: must be at most 255",
        ),
        ("jira", json!({"summary": "s"}), "`project`: required"),
        (
            "github",
            json!({"repo": "../admin", "title": "t"}),
            "`repo`: must be \"owner/name\"",
        ),
        (
            "github",
            json!({"repo": "a/b/c", "title": "t"}),
            "`repo`: must be \"owner/name\"",
        ),
        (
            "github",
            json!({"repo": "a/b", "title": ""}),
            "`title`: must not be empty",
        ),
    ];
    for (kind, args, expected) in cases {
        let tools = one(connector(&saas, kind));
        let err = call(&tools, args.clone(), Some(&bearer("tok-0123456789")))
            .await
            .unwrap_err();
        match &err {
            ToolError::InvalidArguments(m) => {
                assert!(m.starts_with(expected), "{kind} {args}: {m}")
            }
            other => panic!("{kind} {args}: {other:?}"),
        }
        assert_eq!(err.code(), "invalid_arguments");
    }
    for kind in ["slack", "jira", "github"] {
        let tools = one(connector(&saas, kind));
        let args = json!({"channel": "C1", "text": "t", "project": "PROJ", "summary": "s", "repo": "a/b", "title": "t"});
        let tool = tools.get(kind).unwrap();
        let valid: Value = tool.parameters["properties"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|k| args.get(k).map(|v| (k.clone(), v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
        tool.validate(&valid).unwrap();
        let err = tools.call(tool, &valid, None).await.unwrap_err();
        assert_eq!(err, ToolError::MissingCredential, "{kind}");
        assert_eq!(err.code(), "missing_credential");
    }
    assert!(saas.requests().is_empty(), "{:?}", saas.requests());
}

#[tokio::test]
async fn connector_upstream_failures() {
    let saas = SaasStandIn::start().await;
    let mut config = connector(&saas, "github");
    config.base_url = Some(format!("{}/nowhere", saas.base_url()));
    let tools = one(config);
    let err = call(
        &tools,
        json!({"repo": "a/b", "title": "t"}),
        Some(&bearer("tok-0123456789")),
    )
    .await
    .unwrap_err();
    match err {
        ToolError::Upstream {
            status: 404,
            message,
        } => assert!(message.contains("not found"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(saas.requests()[0].path, "/nowhere/repos/a/b/issues");

    // An answer that is not the API's shape is an upstream error too.
    let mut config = connector(&saas, "jira");
    config.base_url = Some(format!("{}/echo", saas.base_url()));
    let tools = one(config);
    let err = call(
        &tools,
        json!({"project": "PROJ", "summary": "s"}),
        Some(&bearer("tok-0123456789")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ToolError::Upstream { status: 200, .. }),
        "{err:?}"
    );
}
