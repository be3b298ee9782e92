//! The official OpenAI Python SDK against the real binary, with the fake
//! provider upstream (OpenAI and Anthropic formats): plain, streaming and
//! tool-call completions, model listing, errors, and per-tenant isolation;
//! embeddings, model retrieval and the Responses API (plain, streamed,
//! tools, `previous_response_id`); and LangChain (`langchain-openai`).

use std::process::Command;

use bulkhead_testkit::{FakeProvider, Reply};
use serde_json::{Value, json};

use crate::support::*;

const PROVIDER_KEY: &str = "sk-fake-provider-key-0123456789";

/// Whether python3 with the `openai` package is available. In CI it must
/// be (the test fails otherwise); elsewhere the test explains and returns.
fn sdk_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let ci = std::env::var_os("CI").is_some_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but python3 cannot import the openai package (.ci/run installs it)"
        );
        eprintln!(
            "skipping: python3 with the openai package is not installed (pip install openai)"
        );
    }
    ok
}

#[test]
fn the_official_openai_sdk_works_against_bulkhead() {
    if !sdk_available() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bulkhead.toml");
    let base = fake.base_url();
    std::fs::write(
        &config,
        format!(
            r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:SDK_TEST_PROVIDER_KEY"
[[providers]]
name = "fake-anthropic"
kind = "anthropic"
base_url = "{base}"
region = "eu"
credential = "env:SDK_TEST_PROVIDER_KEY"
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok = "0.15"
price_output_per_mtok = "0.60"
[[models]]
name = "claude"
provider = "fake-anthropic"
upstream = "claude-fake"
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        Some(&config),
        &[("SDK_TEST_PROVIDER_KEY", PROVIDER_KEY)],
    );
    let d = data.to_str().unwrap().to_owned();
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| (*s).to_owned())
            .chain([
                "--url".to_owned(),
                server.url.clone(),
                "--data-dir".to_owned(),
                d.clone(),
            ])
            .collect()
    };
    for t in ["acme", "globex"] {
        cli_json(&with(&["tenant", "create", t, "--region", "eu"]), &[]);
    }
    let key_a = cli_json(&with(&["key", "create", "--tenant", "acme"]), &[])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_b = cli_json(&with(&["key", "create", "--tenant", "globex"]), &[])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = std::fs::read_to_string(data.join("operator_token")).unwrap();
    let mut res = agent()
        .put(format!("{}/admin/v1/tenants/globex/models", server.url))
        .header("authorization", format!("Bearer {}", token.trim()))
        .send_json(json!({"allowed": ["claude"]}))
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        200,
        "{}",
        res.body_mut().read_to_string().unwrap()
    );

    fake.push_all([
        Reply::text("plain answer from the provider"),
        Reply::text("streamed answer in pieces"),
        Reply::tool_call("notify", json!({"text": "hi"})),
    ]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/sdk/openai_sdk.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([&server.url, &key_a, &key_b])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["models_a"], json!(["claude", "small"]));
    assert_eq!(seen["models_b"], json!(["claude"]));
    assert_eq!(seen["plain"]["content"], "plain answer from the provider");
    assert_eq!(seen["plain"]["model"], "small");
    assert_eq!(seen["plain"]["finish_reason"], "stop");
    assert_eq!(seen["stream"]["content"], "streamed answer in pieces");
    assert_eq!(seen["stream"]["completion_tokens"], 4);
    assert_eq!(
        seen["tool_call"],
        json!({"name": "notify", "arguments": {"text": "hi"}, "finish_reason": "tool_calls"})
    );
    assert_eq!(
        seen["anthropic"],
        json!({"content": "echo: hello anthropic", "model": "claude"})
    );
    assert_eq!(seen["anthropic_stream"], "echo: stream anthropic");
    assert_eq!(seen["unknown_model"], "model_not_found");
    assert_eq!(seen["b_small"], "model_not_found");
    assert_eq!(seen["bad_key"], "invalid_api_key");

    // The provider saw the platform key on every call, and only these calls.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 5);
    for r in &reqs {
        let key = r
            .header("authorization")
            .map(|h| h.trim_start_matches("Bearer ").to_owned());
        let key = key.or_else(|| r.header("x-api-key").map(str::to_owned));
        assert_eq!(key.as_deref(), Some(PROVIDER_KEY));
    }
    // Usage: acme's five calls; globex none.
    let (_, u, _) = get(&format!("{}/v1/usage", server.url), Some(&key_a), &[]);
    assert_eq!(u["total"]["requests"], 5, "{u}");
    let (_, u, _) = get(&format!("{}/v1/usage", server.url), Some(&key_b), &[]);
    assert_eq!(u["total"]["requests"], 0, "{u}");
    let logs = server.stop();
    assert!(
        logs.iter()
            .all(|l| !l.contains(PROVIDER_KEY) && !l.contains(&key_a))
    );
    drop(fake);
}

/// Whether python3 can import `module`; under CI=true it must (the test
/// fails otherwise, as for the SDK).
fn python_has(module: &str, install: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let ci = std::env::var_os("CI").is_some_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true but python3 cannot import {module} (.ci/run installs {install})"
        );
        eprintln!("skipping: python3 cannot import {module} (pip install {install})");
    }
    ok
}

/// Runs a script of `tests/it/sdk` with `args`; its stdout's JSON.
fn run_script(name: &str, args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/sdk")
        .join(name);
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        // No proxy, no telemetry: only the server under test is reached.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("LANGCHAIN_TRACING_V2", "false")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A real binary over the fake provider (an OpenAI-format chat model
/// `small` and an embedding model `embed`), tenants `acme` (every model)
/// and `globex` (allowed `claude` only, which it is not configured: no
/// model at all); the fake answers tool-bearing requests whose last
/// message is the user's with a `lookup` call, all else by echo.
struct Surface {
    server: Server,
    fake: FakeProvider,
    key_a: String,
    key_b: String,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn surface() -> Surface {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bulkhead.toml");
    let base = fake.base_url();
    std::fs::write(
        &config,
        format!(
            r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:SDK_TEST_PROVIDER_KEY"
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[[embedding_models]]
name = "embed"
provider = "fake-eu"
upstream = "text-embedding-3-small"
dimensions = 256
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        Some(&config),
        &[("SDK_TEST_PROVIDER_KEY", PROVIDER_KEY)],
    );
    let d = data.to_str().unwrap().to_owned();
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|s| (*s).to_owned())
            .chain([
                "--url".to_owned(),
                server.url.clone(),
                "--data-dir".to_owned(),
                d.clone(),
            ])
            .collect()
    };
    for t in ["acme", "globex"] {
        cli_json(&with(&["tenant", "create", t, "--region", "eu"]), &[]);
    }
    let key = |t: &str| {
        cli_json(&with(&["key", "create", "--tenant", t]), &[])["key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (key_a, key_b) = (key("acme"), key("globex"));
    let token = std::fs::read_to_string(data.join("operator_token")).unwrap();
    let res = agent()
        .put(format!("{}/admin/v1/tenants/globex/models", server.url))
        .header("authorization", format!("Bearer {}", token.trim()))
        .send_json(json!({"allowed": []}))
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    fake.set_responder(|req| {
        let last_is_user = req["messages"]
            .as_array()
            .and_then(|m| m.last())
            .is_some_and(|m| m["role"] == "user");
        (req.get("tools").is_some() && last_is_user)
            .then(|| Reply::tool_call("lookup", json!({"city": "Oslo"})))
    });
    Surface {
        server,
        fake,
        key_a,
        key_b,
        _rt: rt,
        _dir: dir,
    }
}

#[test]
fn the_official_sdk_uses_embeddings_models_and_the_responses_api() {
    if !sdk_available() {
        return;
    }
    let s = surface();
    let seen = run_script("openai_surface.py", &[&s.server.url, &s.key_a, &s.key_b]);
    assert_eq!(
        seen["embed_single"],
        json!({"count": 1, "dims": 256, "float": true, "model": "embed", "prompt_tokens": seen["embed_single"]["prompt_tokens"]})
    );
    assert!(seen["embed_single"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        seen["embed_batch"],
        json!({"indexes": [0, 1, 2], "dims": [256, 256, 256]})
    );
    assert_eq!(seen["embed_same"], true, "base64 and float agree");
    assert_eq!(seen["embed_b"], "model_not_found");
    assert_eq!(seen["retrieve"], json!({"id": "small", "object": "model"}));
    assert_eq!(seen["retrieve_b"], "model_not_found");
    let plain = &seen["responses_plain"];
    assert_eq!(plain["id_prefix"], "resp_");
    assert_eq!(plain["status"], "completed");
    assert_eq!(plain["text"], "echo: hello responses");
    assert_eq!(plain["total"], plain["sum"]);
    assert_eq!(seen["responses_continued"], "echo: and again");
    assert_eq!(seen["responses_retrieved"], "echo: hello responses");
    assert_eq!(seen["responses_b"], "response_not_found");
    assert_eq!(seen["responses_b_get"], "response_not_found");
    assert_eq!(
        seen["responses_stream"],
        json!({"first": "response.created", "last": "response.completed", "text": "echo: stream me"})
    );
    assert_eq!(seen["responses_stream_helper"], "echo: stream helper");
    assert_eq!(
        seen["responses_tool"],
        json!({"name": "lookup", "arguments": {"city": "Oslo"}})
    );
    assert_eq!(seen["responses_tool_after"], "echo: weather in Oslo?");
    assert_eq!(seen["responses_tool_stream"], json!({"city": "Oslo"}));
    assert_eq!(seen["responses_web_search"], "tools[0].type");

    // The continued conversation reached the provider whole.
    let continued = s
        .fake
        .requests()
        .into_iter()
        .find(|r| {
            r.body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m["content"] == "and again")
        })
        .unwrap();
    assert_eq!(continued.body["messages"].as_array().unwrap().len(), 3);
    // Billed to acme: 3 embeddings calls, 7 chat calls; globex nothing.
    let (_, u, _) = get(&format!("{}/v1/usage", s.server.url), Some(&s.key_a), &[]);
    assert_eq!(u["total"]["requests"], 10, "{u}");
    let (_, u, _) = get(&format!("{}/v1/usage", s.server.url), Some(&s.key_b), &[]);
    assert_eq!(u["total"]["requests"], 0, "{u}");
    let logs = s.server.stop();
    assert!(logs.iter().all(|l| !l.contains(PROVIDER_KEY)));
}

#[test]
fn langchain_openai_chats_streams_and_embeds_against_bulkhead() {
    if !sdk_available() || !python_has("langchain_openai", "langchain-openai") {
        return;
    }
    let s = surface();
    let seen = run_script("langchain_chat.py", &[&s.server.url, &s.key_a]);
    assert_eq!(seen["invoke"], "echo: hello langchain");
    assert_eq!(seen["stream"], "echo: stream langchain");
    assert_eq!(seen["responses_invoke"], "echo: hello responses api");
    assert_eq!(seen["responses_stream"], "echo: stream responses api");
    assert_eq!(seen["embed_documents"], json!([256, 256]));
    assert_eq!(seen["embed_query_matches"], true);
    let responses = s
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count();
    assert_eq!(responses, 4);
    s.server.stop();
}
