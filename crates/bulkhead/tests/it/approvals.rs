//! Approvals on the real binary: a run paused for approval survives the
//! server being killed; after a restart the request is still pending and
//! approvable through `bulkhead approvals`, and the run completes with
//! the tool called once.

use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, ToolCall};
use serde_json::{Value, json};

use crate::support::*;

const PROVIDER_KEY: &str = "sk-approvals-test-provider-key";

fn write_config(
    dir: &std::path::Path,
    fake: &FakeProvider,
    saas: &SaasStandIn,
) -> std::path::PathBuf {
    let path = dir.join("bulkhead.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:APPROVALS_TEST_PROVIDER_KEY"
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[egress]
allow_http = true
allow_hosts = ["{addr}"]
[[tools]]
name = "deploy"
kind = "http"
region = "eu"
risk = "write"
approval = "always"
url = "{saas}/echo/deploy?text={{{{ text }}}}"
allowed_hosts = ["{addr}"]
[tools.parameters]
type = "object"
required = ["text"]
properties.text = {{ type = "string" }}
[[agents]]
name = "release"
model = "small"
prompt = "You release."
tools = ["deploy"]
"#,
            base = fake.base_url(),
            saas = saas.base_url(),
            addr = saas.addr(),
        ),
    )
    .unwrap();
    path
}

fn key(url: &str, data: &std::path::Path, role: &str) -> String {
    cli_json(
        &op_args(
            url,
            data,
            &["key", "create", "--tenant", "acme", "--role", role],
        ),
        &[],
    )["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn approvals(url: &str, key: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["approvals"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--url", url]);
    cli(&all, &[("BULKHEAD_API_KEY", key)])
}

#[test]
fn a_pending_approval_survives_a_killed_server_and_the_run_completes_after_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    let saas = rt.block_on(SaasStandIn::start());
    fake.set_responder(|req| {
        let last = req["messages"].as_array()?.last()?.clone();
        if last["role"] == "tool" {
            return Some(Reply::text("released"));
        }
        Some(Reply::tool_calls([ToolCall::new(
            "deploy",
            json!({"text": "v7"}),
        )]))
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake, &saas);
    let data = dir.path().join("data");
    let env = [("APPROVALS_TEST_PROVIDER_KEY", PROVIDER_KEY)];
    let server = Server::start(&data, Some(&config), &env);
    cli_json(
        &op_args(
            &server.url,
            &data,
            &["tenant", "create", "acme", "--region", "eu"],
        ),
        &[],
    );
    let member = key(&server.url, &data, "member");
    let approver = key(&server.url, &data, "approver");
    let mut res = agent()
        .post(format!("{}/v1/agents/release/runs", server.url))
        .header("authorization", format!("Bearer {member}"))
        .send_json(json!({"input": "ship v7"}))
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let run: Value = serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();

    drop(server); // SIGKILL with the approval pending.

    let server = Server::start(&data, Some(&config), &env);
    let (status, stored, _) = get(
        &format!("{}/v1/runs/{run_id}", server.url),
        Some(&member),
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(
        stored["status"], "awaiting_approval",
        "a paused run is not interrupted by a restart: {stored}"
    );
    let out = approvals(&server.url, &approver, &["list", "--status", "pending"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pending = listed["approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{listed}");
    assert_eq!(pending[0]["run_id"], run_id.as_str());
    assert_eq!(pending[0]["arguments"], json!({"text": "v7"}));
    let id = pending[0]["id"].as_str().unwrap().to_owned();
    let hash = pending[0]["arguments_hash"].as_str().unwrap().to_owned();

    // The member who started the run may not approve it.
    let out = approvals(&server.url, &member, &["approve", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403 forbidden"), "{err}");

    let out = approvals(
        &server.url,
        &approver,
        &["approve", &id, "--comment", "go", "--arguments-hash", &hash],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decided: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decided["status"], "approved");
    let (_, done, _) = get(
        &format!("{}/v1/runs/{run_id}?wait=20", server.url),
        Some(&member),
        &[],
    );
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], "released");
    let deploys: Vec<_> = saas
        .requests()
        .into_iter()
        .filter(|q| q.path == "/echo/deploy")
        .collect();
    assert_eq!(deploys.len(), 1, "the tool ran once");

    // Deciding again fails with the server's reason, named.
    let out = approvals(&server.url, &approver, &["deny", &id, "--comment", "late"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("409 approval_decided"), "{err}");
    // Without a key the command says which argument is missing.
    let out = cli(&["approvals", "list", "--url", &server.url], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--api-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
}
