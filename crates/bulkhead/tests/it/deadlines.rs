//! Deadlines on the real binary, against a model provider that never
//! answers: a chat completion (and a Responses API call) ends at the
//! request's deadline and is not retried; a cancelled run's model call stops at once and is recorded
//! `cancelled`; SIGTERM exits promptly after it, and within
//! `shutdown_grace_s` while a run is still waiting on the provider, whose
//! call is then cancelled and recorded too.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use bulkhead_testkit::{FakeProvider, Reply};
use serde_json::{Value, json};

use crate::support::*;

const GRACE_S: u64 = 2;
const REQUEST_TIMEOUT_S: u64 = 3;

fn write_config(dir: &std::path::Path, fake: &FakeProvider) -> std::path::PathBuf {
    let config = dir.join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
request_timeout_s = {REQUEST_TIMEOUT_S}
shutdown_grace_s = {GRACE_S}
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:DEADLINE_TEST_PROVIDER_KEY"
timeout_s = 60
max_retries = 2
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[[agents]]
name = "slow"
model = "small"
prompt = "You are slow."
timeout_s = 600
"#,
            base = fake.base_url()
        ),
    )
    .unwrap();
    config
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    bulkhead_testkit::wait::wait_until(what, Duration::from_secs(60), cond);
}

fn post(url: &str, key: &str, body: Value) -> (u16, Value) {
    let mut res = agent()
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .send_json(body)
        .unwrap();
    let text = res.body_mut().read_to_string().unwrap();
    (
        res.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Starts a streamed run in a thread; returns its id once the server has
/// announced it, and the thread (which reads the stream to its end).
fn start_streamed_run(url: &str, key: &str) -> (String, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (url, key) = (format!("{url}/v1/agents/slow/runs"), key.to_owned());
    let reader = std::thread::spawn(move || {
        let Ok(mut res) = agent()
            .post(&url)
            .header("authorization", format!("Bearer {key}"))
            .send_json(json!({"input": "take your time", "stream": true}))
        else {
            return;
        };
        let lines = BufReader::new(res.body_mut().as_reader()).lines();
        for line in lines {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ")
                && let Ok(v) = serde_json::from_str::<Value>(data)
                && let Some(id) = v["run_id"].as_str()
            {
                let _ = tx.send(id.to_owned());
            }
        }
    });
    let id = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the run was not announced: {e}"));
    (id, reader)
}

/// The model calls of the tenant's audit chain.
fn model_calls(url: &str, key: &str) -> Vec<Value> {
    let (status, audit, _) = get(&format!("{url}/v1/audit?limit=1000"), Some(key), &[]);
    assert_eq!(status, 200, "{audit}");
    audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "model.call")
        .cloned()
        .collect()
}

/// SIGTERM; the server must exit cleanly. Returns how long it took.
fn terminate(server: Server) -> Duration {
    let started = Instant::now();
    server.stop();
    started.elapsed()
}

#[test]
fn deadlines_hold_against_a_hung_provider_and_shutdown_is_bounded() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    // The provider never answers in any useful time.
    fake.set_responder(|_| Some(Reply::delay(Duration::from_secs(3600), Reply::text("late"))));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let data = dir.path().join("data");
    let env = [("DEADLINE_TEST_PROVIDER_KEY", "sk-deadline-test-key")];

    // 1. A run cancelled while its model call hangs: the call stops with
    // it, and SIGTERM then finds nothing in flight.
    let server = Server::start(&data, Some(&config), &env);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let (run_id, reader) = start_streamed_run(&server.url, &key);
    wait_for("the run's model call", || fake.request_count() == 1);
    let (status, body) = post(
        &format!("{}/v1/runs/{run_id}/cancel", server.url),
        &key,
        json!({}),
    );
    assert_eq!(status, 202, "{body}");
    reader.join().unwrap();
    wait_for("the cancelled call's ledger row", || {
        model_calls(&server.url, &key)
            .iter()
            .any(|e| e["run_id"] == run_id.as_str() && e["details"]["status"] == "cancelled")
    });
    let after_cancel = terminate(server);
    eprintln!("SIGTERM after a cancelled run: exited in {after_cancel:?}");
    assert!(
        after_cancel < Duration::from_secs(GRACE_S),
        "nothing was in flight, so nothing was waited for: {after_cancel:?}"
    );

    // 2. A chat completion against the hung provider ends at the request's
    // deadline, in OpenAI's shape, without a retry.
    let server = Server::start(&data, Some(&config), &env);
    let started = Instant::now();
    let (status, body) = post(
        &format!("{}/v1/chat/completions", server.url),
        &key,
        json!({"model": "small", "messages": [{"role": "user", "content": "hello?"}]}),
    );
    let longest = started.elapsed();
    eprintln!("chat completion against a hung provider: answered in {longest:?}");
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout", "{body}");
    assert!(
        longest < Duration::from_secs(REQUEST_TIMEOUT_S + 2),
        "the request's deadline holds: {longest:?}"
    );
    assert_eq!(fake.request_count(), 2, "a timeout is not retried");
    // The Responses API is a chat call under the same deadline.
    let started = Instant::now();
    let (status, body) = post(
        &format!("{}/v1/responses", server.url),
        &key,
        json!({"model": "small", "input": "hello?"}),
    );
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout", "{body}");
    assert!(
        took < Duration::from_secs(REQUEST_TIMEOUT_S + 2),
        "{took:?}"
    );
    assert_eq!(fake.request_count(), 3, "a timeout is not retried");
    wait_for("the timed-out call's ledger row", || {
        model_calls(&server.url, &key)
            .iter()
            .any(|e| e["run_id"].is_null() && e["details"]["status"] == "upstream_timeout")
    });

    // 3. SIGTERM while a run waits on the provider: the run is given the
    // grace, then cancelled with its model call, and both are recorded.
    let (run_id, reader) = start_streamed_run(&server.url, &key);
    wait_for("the second run's model call", || fake.request_count() == 4);
    let in_flight = terminate(server);
    reader.join().unwrap();
    eprintln!(
        "SIGTERM with a run waiting on the provider: exited in {in_flight:?} (grace {GRACE_S} s)"
    );
    assert!(
        in_flight >= Duration::from_secs(GRACE_S) && in_flight < Duration::from_secs(GRACE_S + 5),
        "{in_flight:?}"
    );
    let server = Server::start(&data, Some(&config), &env);
    let (status, run, _) = get(&format!("{}/v1/runs/{run_id}", server.url), Some(&key), &[]);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "cancelled", "{run}");
    let calls = model_calls(&server.url, &key);
    let call = calls
        .iter()
        .find(|e| e["run_id"] == run_id.as_str())
        .unwrap_or_else(|| panic!("the run's model call was recorded: {calls:?}"));
    assert_eq!(call["details"]["status"], "cancelled", "{call}");
    // The provider said nothing of what it used: the estimate is billed.
    assert_eq!(call["details"]["usage_estimated"], true, "{call}");
    assert!(
        call["details"]["input_tokens"].as_u64().unwrap() > 0,
        "{call}"
    );
    assert_eq!(fake.request_count(), 4, "nothing was sent again");
    server.stop();
}
