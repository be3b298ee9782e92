//! The OpenAPI document's own consistency: what `openapi-spec-validator`
//! and schemathesis (`scripts/fuzz_api.py`) rely on, checked without them.
//! Unique operation ids, path parameters that match their templates,
//! every error documented as `application/problem+json`, references that
//! resolve; plus regressions the fuzzer found.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;

use crate::support::*;

/// The OpenAI-compatible endpoints answer errors in OpenAI's shape, not
/// as problems (see `routes/openai.rs`).
const OPENAI_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{id}",
    "/v1/responses",
    "/v1/responses/{id}",
];

async fn document() -> Value {
    let app = TestApp::new().await;
    let r = app.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    r.body
}

/// Every `(METHOD path, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, &str, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((
                format!("{} {path}", method.to_uppercase()),
                path.as_str(),
                op,
            ));
        }
    }
    assert!(
        out.len() > 50,
        "the document lists {} operations",
        out.len()
    );
    out
}

/// A response object, following a `$ref` into `components/responses`.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("a response refers outside components/responses: {r}"));
            let target = &doc["components"]["responses"][name];
            assert!(target.is_object(), "{r} does not resolve");
            target
        }
        None => response,
    }
}

#[tokio::test]
async fn operation_ids_are_unique() {
    let doc = document().await;
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (name, _, op) in operations(&doc) {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no operationId"));
        if let Some(first) = seen.insert(id, name.clone()) {
            panic!("operationId {id:?} names both {first} and {name}");
        }
    }
}

#[tokio::test]
async fn path_parameters_match_the_path_templates() {
    let doc = document().await;
    for (name, path, op) in operations(&doc) {
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let declared: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(
                    p["required"], true,
                    "{name}: path parameter {p} is optional"
                );
                p["name"].as_str().unwrap().to_owned()
            })
            .collect();
        let in_template: BTreeSet<String> = in_template.into_iter().map(str::to_owned).collect();
        assert_eq!(
            declared, in_template,
            "{name}: the path parameters declared and those in the template differ"
        );
        for p in &params {
            assert!(
                ["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap_or("")),
                "{name}: parameter {p} has no valid location"
            );
        }
    }
}

#[tokio::test]
async fn every_operation_documents_its_errors_as_problems() {
    let doc = document().await;
    for (name, path, op) in operations(&doc) {
        let responses = op["responses"].as_object().unwrap();
        let errors: Vec<(&String, &Value)> = responses
            .iter()
            .filter(|(status, _)| status.starts_with('4') || status.starts_with('5'))
            .map(|(status, r)| (status, resolve(&doc, r)))
            .collect();
        assert!(!errors.is_empty(), "{name} documents no error response");
        if OPENAI_PATHS.contains(&path) {
            // Their errors are OpenAI's shape; only the request timeout
            // of the request middleware (not on chat) is a problem.
            for (status, r) in &errors {
                let json = &r["content"]["application/json"]["schema"]["$ref"];
                let problem = &r["content"]["application/problem+json"]["schema"]["$ref"];
                assert!(
                    json == "#/components/schemas/OpenAiErrorBody"
                        || (status.as_str() == "504" && problem == "#/components/schemas/Problem"),
                    "{name} {status}: {r}"
                );
            }
            continue;
        }
        let problems = errors
            .iter()
            .filter(|(_, r)| {
                r["content"]["application/problem+json"]["schema"]["$ref"]
                    == "#/components/schemas/Problem"
            })
            .count();
        assert!(
            problems > 0,
            "{name} documents no application/problem+json error"
        );
        // Errors are problems everywhere else: none is documented with
        // another body.
        for (status, r) in &errors {
            let types: Vec<&String> = r["content"]
                .as_object()
                .map(|c| c.keys().collect())
                .unwrap_or_default();
            assert_eq!(
                types,
                vec!["application/problem+json"],
                "{name} {status}: {r}"
            );
        }
        // A tenant-plane or operator-plane operation documents the
        // refusals of its authentication.
        if op.get("security").is_some() {
            assert!(responses.contains_key("401"), "{name}: no 401");
            assert!(responses.contains_key("429"), "{name}: no 429");
        }
    }
}

/// Every `$ref` string anywhere in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(s)) => out.push(s),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_resolves() {
    let doc = document().await;
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 100, "{} references", all.len());
    for r in all {
        let mut at = &doc;
        for part in r.strip_prefix("#/").unwrap().split('/') {
            at = &at[part];
        }
        assert!(at.is_object(), "{r} does not resolve");
    }
}

/// Two response types were both called `SettingsBody`: the document kept
/// one schema for both, so the agent settings were described as the
/// tenant's gateway settings.
#[tokio::test]
async fn the_agent_and_the_tenant_settings_have_their_own_schemas() {
    let doc = document().await;
    let agent = &doc["paths"]["/v1/agents/{agent}/settings"]["get"]["responses"]["200"];
    assert_eq!(
        agent["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/AgentSettingsBody"
    );
    let tenant = &doc["paths"]["/admin/v1/tenants/{id}/settings"]["get"]["responses"]["200"];
    assert_eq!(
        tenant["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/TenantSettingsBody"
    );
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["AgentSettingsBody"]["properties"]["variables"].is_object());
    assert!(schemas["TenantSettingsBody"]["properties"]["audit_prompts"].is_object());
    assert!(schemas.get("SettingsBody").is_none());
}

/// A chat body over the chat limit was answered by axum in plain text,
/// which neither the document nor an OpenAI SDK knows, not with the
/// `request_too_large` error `docs/errors.md` lists.
#[tokio::test]
async fn an_oversized_chat_body_answers_an_openai_error() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["admin"]).await;
    let body = vec![b' '; 16 * 1024 * 1024 + 1];
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let r = app.request(req).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(
        r.headers["content-type"], "application/json",
        "{:?}",
        r.headers
    );
    assert_eq!(r.body["error"]["code"], "request_too_large", "{}", r.body);
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
}
