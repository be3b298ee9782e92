//! The SaaS stand-in: each API's wire format, its refusals, the plain
//! endpoints, and that everything is recorded.

use std::time::Duration;

use bulkhead_testkit::SaasStandIn;
use serde_json::{Value, json};

use crate::support::client;

async fn post(saas: &SaasStandIn, path: &str, auth: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", saas.base_url()))
        .header("user-agent", "test")
        .json(body);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn slack_chat_post_message() {
    let saas = SaasStandIn::start().await;
    let path = "/api/chat.postMessage";
    let msg = json!({"channel": "C1", "text": "hello"});
    let (status, body) = post(&saas, path, Some("Bearer xoxb-1"), &msg).await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true);
    assert_eq!(body["channel"], "C1");
    assert_eq!(body["message"]["text"], "hello");
    let (_, second) = post(&saas, path, Some("Bearer xoxb-1"), &msg).await;
    assert_ne!(second["ts"], body["ts"]);

    for (auth, body, error) in [
        (None, msg.clone(), "not_authed"),
        (Some("Basic dTpw"), msg.clone(), "not_authed"),
        (Some("Bearer  "), msg.clone(), "not_authed"),
        (Some("Bearer x"), json!({"text": "t"}), "channel_not_found"),
        (
            Some("Bearer x"),
            json!({"channel": "C_NOT_FOUND", "text": "t"}),
            "channel_not_found",
        ),
        (Some("Bearer x"), json!({"channel": "C1"}), "no_text"),
    ] {
        let (status, answer) = post(&saas, path, auth, &body).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({"ok": false, "error": error}),
            "{auth:?} {body}"
        );
    }
    let recorded = saas.requests();
    assert_eq!(recorded.len(), 8);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, path);
    assert_eq!(recorded[0].header("Authorization"), Some("Bearer xoxb-1"));
    assert_eq!(recorded[0].json(), Some(msg));
    assert!(
        recorded[0]
            .headers
            .iter()
            .all(|(n, _)| *n == n.to_lowercase())
    );
    saas.clear();
    assert!(saas.requests().is_empty());
}

#[tokio::test]
async fn jira_issue_keys_count_per_project() {
    let saas = SaasStandIn::start().await;
    let path = "/rest/api/2/issue";
    let issue = |project: &str| json!({"fields": {"project": {"key": project}, "summary": "s", "issuetype": {"name": "Task"}}});
    let mut keys = vec![];
    for project in ["PROJ", "PROJ", "OPS"] {
        let (status, body) = post(&saas, path, Some("Basic dTpw"), &issue(project)).await;
        assert_eq!(status, 201);
        keys.push((body["key"].clone(), body["id"].clone()));
        assert!(body["self"].as_str().unwrap().starts_with(&saas.base_url()));
    }
    assert_eq!(
        keys,
        [
            (json!("PROJ-1"), json!("10001")),
            (json!("PROJ-2"), json!("10002")),
            (json!("OPS-1"), json!("10003")),
        ]
    );
    let (status, body) = post(&saas, path, None, &issue("PROJ")).await;
    assert_eq!(status, 401);
    assert!(
        body["errorMessages"][0]
            .as_str()
            .unwrap()
            .contains("not authenticated")
    );
    let (status, body) = post(&saas, path, Some("Bearer t"), &json!({"fields": {}})).await;
    assert_eq!(status, 400);
    assert!(body["errors"]["summary"].is_string());
}

#[tokio::test]
async fn github_issues_count_per_repository() {
    let saas = SaasStandIn::start().await;
    let issue = json!({"title": "Bug", "body": "details"});
    let (status, body) = post(&saas, "/repos/acme/web/issues", Some("Bearer g"), &issue).await;
    assert_eq!(status, 201);
    assert_eq!(body["number"], 1);
    assert_eq!(body["html_url"], "https://github.com/acme/web/issues/1");
    let (_, body) = post(&saas, "/repos/acme/web/issues", Some("token g"), &issue).await;
    assert_eq!(body["number"], 2);
    let (_, body) = post(&saas, "/repos/acme/api/issues", Some("Bearer g"), &issue).await;
    assert_eq!(body["number"], 1);

    let (status, _) = post(&saas, "/repos/acme/web/issues", None, &issue).await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &saas,
        "/repos/acme/web/issues",
        Some("Bearer g"),
        &json!({}),
    )
    .await;
    assert_eq!(status, 422);
    let res = client()
        .post(format!("{}/repos/acme/web/issues", saas.base_url()))
        .bearer_auth("g")
        .json(&issue)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403, "no User-Agent");
}

#[tokio::test]
async fn echo_big_and_status() {
    let saas = SaasStandIn::start().await;
    let base = saas.base_url();
    let echo: Value = client()
        .get(format!("{base}/echo/a%2Fb/c?x=1&y=%20"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        echo,
        json!({"method": "GET", "path": "/echo/a%2Fb/c", "query": "x=1&y=%20", "body": null})
    );
    let echo: Value = client()
        .post(format!("{base}/echo"))
        .json(&json!({"k": [1]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["body"], json!({"k": [1]}));
    assert_eq!(echo["query"], Value::Null);

    for (query, length) in [("bytes=5000", Some(5000)), ("bytes=5000&chunked=1", None)] {
        let res = client()
            .get(format!("{base}/big?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.content_length(), length, "{query}");
        let body = res.bytes().await.unwrap();
        assert_eq!(body.len(), 5000);
        assert!(body.iter().all(|b| *b == b'x'));
    }
    let res = client()
        .get(format!("{base}/big?bytes=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);

    let res = client()
        .get(format!("{base}/status/503"))
        .bearer_auth("canary")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["authorization"], "Bearer canary");
    let res = client()
        .get(format!("{base}/status/100"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let res = client()
        .get(format!("{base}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(saas.requests().len(), 8);
}

#[tokio::test]
async fn hang_never_answers_and_drop_closes_the_port() {
    let saas = SaasStandIn::start().await;
    let url = format!("{}/hang", saas.base_url());
    // The client's own deadline, not a sleep: the stand-in never answers.
    let err = client()
        .get(&url)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(saas.requests()[0].path, "/hang");
    drop(saas);
    let err = client().get(&url).send().await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err}");
}
