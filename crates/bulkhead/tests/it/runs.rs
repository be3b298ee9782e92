//! Agent runs on the real binary: a server killed in the middle of a run
//! and started again reports the run as failed, keeps its steps, and never
//! repeats the tool call it had made.

use std::time::Duration;

use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn};
use serde_json::{Value, json};

use crate::support::*;

const SLACK_TOKEN: &str = "xoxb-e2e-acme-canary-9d41c7a2";

fn send(method: &str, url: &str, token: &str, body: Value) -> (u16, Value) {
    let req = if method == "PUT" {
        agent().put(url)
    } else {
        agent().post(url)
    };
    let mut res = req
        .header("authorization", format!("Bearer {token}"))
        .send_json(body)
        .unwrap();
    let text = res.body_mut().read_to_string().unwrap();
    (
        res.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A configuration with the fake model, a Slack tool and one agent.
fn write_config(
    dir: &std::path::Path,
    fake: &FakeProvider,
    saas: &SaasStandIn,
) -> std::path::PathBuf {
    let config = dir.join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:RUNS_TEST_PROVIDER_KEY"
timeout_s = 120
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[egress]
allow_http = true
allow_hosts = ["127.0.0.1/32"]
[[tools]]
name = "slack"
kind = "slack"
base_url = "{saas}"
region = "eu"
connection = "slack"
[[agents]]
name = "support"
model = "small"
prompt = "You are support for {{{{ tenant.id }}}}."
tools = ["slack"]
timeout_s = 600
"#,
            base = fake.base_url(),
            saas = saas.base_url()
        ),
    )
    .unwrap();
    config
}

/// Waits for `cond` (checked every few milliseconds) or fails after a
/// bound that only keeps a broken build from hanging.
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    bulkhead_testkit::wait::wait_until(what, Duration::from_secs(30), cond);
}

#[test]
fn a_run_interrupted_by_a_crash_is_failed_after_restart_and_not_repeated() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    let saas = rt.block_on(SaasStandIn::start());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake, &saas);
    let data = dir.path().join("data");
    let env = [("RUNS_TEST_PROVIDER_KEY", "sk-runs-test-provider-key")];
    let server = Server::start(&data, Some(&config), &env);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let (status, body) = send(
        "PUT",
        &format!("{}/v1/credentials/slack", server.url),
        &key,
        json!({"kind": "bearer", "secret": SLACK_TOKEN}),
    );
    assert_eq!(status, 201, "{body}");

    // Step 1 calls the tool; the model's second answer never comes in time.
    fake.push_all([
        Reply::tool_call("slack", json!({"channel": "#ops", "text": "disk full"})),
        Reply::delay(Duration::from_secs(3600), Reply::text("too late")),
    ]);
    let url = format!("{}/v1/agents/support/runs", server.url);
    let key2 = key.clone();
    let client = std::thread::spawn(move || {
        // Its connection dies with the server.
        let _ = agent()
            .post(&url)
            .header("authorization", format!("Bearer {key2}"))
            .send_json(json!({"input": "the disk is full"}));
    });
    // The tool has run and the second model call is under way.
    wait_for("the second model call", || fake.request_count() >= 2);
    assert_eq!(saas.requests().len(), 1);
    drop(server); // SIGKILL: no graceful anything.
    client.join().unwrap();

    let server = Server::start(&data, Some(&config), &env);
    let (status, audit, _) = get(&format!("{}/v1/audit", server.url), Some(&key), &[]);
    assert_eq!(status, 200);
    let events = audit["events"].as_array().unwrap();
    let start = events.iter().find(|e| e["action"] == "run.start").unwrap();
    let run_id = start["target"]
        .as_str()
        .unwrap()
        .strip_prefix("run:")
        .unwrap()
        .to_owned();
    let (status, run, _) = get(&format!("{}/v1/runs/{run_id}", server.url), Some(&key), &[]);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "interrupted");
    let kinds: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["model_call", "tool_call", "tool_result", "error"]);
    let (_, audit, _) = get(&format!("{}/v1/audit", server.url), Some(&key), &[]);
    let interrupted: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "run.interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0]["principal"], "system");
    // Cancelling it now: it has ended.
    let (status, body) = send(
        "POST",
        &format!("{}/v1/runs/{run_id}/cancel", server.url),
        &key,
        json!({}),
    );
    assert_eq!(status, 409, "{body}");
    // Nothing resumed: the tool ran once, and the model was not called again.
    assert_eq!(saas.requests().len(), 1);
    assert_eq!(fake.request_count(), 2);
    assert_eq!(
        saas.requests()[0].header("authorization"),
        Some(format!("Bearer {SLACK_TOKEN}").as_str())
    );
    let logs = server.stop();
    assert!(!logs.iter().any(|l| l.contains(SLACK_TOKEN)));
}

#[test]
fn two_tenants_run_the_same_agent_at_once_each_with_its_own_credential() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    let saas = rt.block_on(SaasStandIn::start());
    // Posts the user's text, then answers: each conversation on its own.
    fake.set_responder(|req| {
        let last = req["messages"].as_array()?.last()?.clone();
        match last["role"].as_str()? {
            "user" => Some(Reply::tool_call(
                "slack",
                json!({"channel": "#ops", "text": last["content"]}),
            )),
            _ => Some(Reply::text("posted")),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake, &saas);
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        Some(&config),
        &[("RUNS_TEST_PROVIDER_KEY", "sk-runs")],
    );
    let tokens = [
        ("acme", "xoxb-e2e-acme-1f2e3d4c"),
        ("globex", "xoxb-e2e-globex-9a8b7c6d"),
    ];
    let mut keys = Vec::new();
    for (tenant, token) in tokens {
        let key = tenant_with_admin_key(&server.url, &data, tenant, "eu");
        let (status, body) = send(
            "PUT",
            &format!("{}/v1/credentials/slack", server.url),
            &key,
            json!({"kind": "bearer", "secret": token}),
        );
        assert_eq!(status, 201, "{body}");
        keys.push((tenant, key));
    }
    std::thread::scope(|s| {
        for (tenant, key) in &keys {
            for i in 0..4 {
                let url = format!("{}/v1/agents/support/runs", server.url);
                s.spawn(move || {
                    let (status, run) =
                        send("POST", &url, key, json!({"input": format!("{tenant}-{i}")}));
                    assert_eq!(status, 200, "{run}");
                    assert_eq!(run["status"], "completed", "{run}");
                });
            }
        }
    });
    let posts = saas.requests();
    assert_eq!(posts.len(), 8);
    for p in posts {
        let text = p.json().unwrap()["text"].as_str().unwrap().to_owned();
        let (tenant, token) = tokens.iter().find(|(t, _)| text.starts_with(t)).unwrap();
        assert_eq!(
            p.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "{tenant}'s post carried another credential"
        );
    }
    let logs = server.stop();
    assert!(
        !logs
            .iter()
            .any(|l| tokens.iter().any(|(_, t)| l.contains(t)))
    );
}

#[test]
fn a_crash_during_ingestion_leaves_no_partial_document() {
    // An embeddings provider that accepts the connection and never answers:
    // the ingestion is stuck between chunking and writing when the server dies.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hang.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[providers]]
name = "slow"
kind = "openai"
base_url = "http://{addr}/v1"
region = "eu"
credential = "env:RUNS_TEST_PROVIDER_KEY"
timeout_s = 300
max_retries = 0
[[embedding_models]]
name = "embed"
provider = "slow"
upstream = "e"
dimensions = 8
[knowledge]
embedding_model = "embed"
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let env = [("RUNS_TEST_PROVIDER_KEY", "sk-runs")];
    let server = Server::start(&data, Some(&config), &env);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let url = format!("{}/v1/collections/kb/documents", server.url);
    let key2 = key.clone();
    let client = std::thread::spawn(move || {
        let _ = agent()
            .post(&url)
            .header("authorization", format!("Bearer {key2}"))
            .send_json(json!({"content": "# Big\n\n".to_owned() + &"words ".repeat(5000), "external_id": "two"}));
    });
    // The server is now waiting on the embeddings call for document two.
    let (conn, _) = hang.accept().unwrap();
    drop(server); // SIGKILL mid-ingestion.
    drop(conn);
    client.join().unwrap();

    let server = Server::start(&data, Some(&config), &env);
    let (status, list, _) = get(&format!("{}/v1/collections", server.url), Some(&key), &[]);
    assert_eq!(status, 200);
    let docs: u64 = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["documents"].as_u64().unwrap())
        .sum();
    let (_, found) = send(
        "POST",
        &format!("{}/v1/collections/kb/search", server.url),
        &key,
        json!({"query": "words", "mode": "fulltext"}),
    );
    // Document two is not there at all: no document row, no chunk.
    assert!(
        found
            .get("results")
            .is_none_or(|r| r.as_array().unwrap().is_empty()),
        "{found}"
    );
    assert!(docs <= 1, "{list}");
    server.stop();
}
