//! The ledger's loss window on the real binary: a model call's usage row
//! and audit event are committed off the response path (within the
//! store's deferral window), so a `kill -9` under load may lose only the
//! calls answered just before it — every call answered more than the
//! documented window (one second, with a wide margin) before the kill has
//! its audit event after the restart — and a clean shutdown loses nothing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_testkit::{FakeProvider, Reply};
use serde_json::{Value, json};

use crate::support::*;

/// The documented bound (docs/benchmarks.md): a call answered longer ago
/// than this is in the ledger.
const WINDOW: Duration = Duration::from_secs(1);

fn config(dir: &std::path::Path, fake: &FakeProvider) -> std::path::PathBuf {
    let path = dir.join("bulkhead.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{}/v1"
region = "eu"
credential = "env:LEDGER_TEST_PROVIDER_KEY"
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[quotas.default]
requests_per_minute = 1000000
"#,
            fake.base_url()
        ),
    )
    .unwrap();
    path
}

/// Calls answered (request id, when) by `threads` clients until `stop`.
fn load(
    url: &str,
    key: &str,
    threads: usize,
    stop: &AtomicBool,
    answered: &Mutex<Vec<(String, Instant)>>,
) {
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let agent = agent();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let rid = format!("ledger-{t}-{i}");
                    let res = agent
                        .post(format!("{url}/v1/chat/completions"))
                        .header("authorization", format!("Bearer {key}"))
                        .header("x-request-id", &rid)
                        .send_json(json!({"model": "small", "messages": [{"role": "user", "content": "hi"}]}));
                    match res {
                        Ok(r) if r.status() == 200 => {
                            answered.lock().unwrap().push((rid, Instant::now()));
                        }
                        // The server was killed under it.
                        _ => return,
                    }
                }
            });
        }
    });
}

/// The request ids of every `model.call` event in the tenant's chain.
fn recorded(url: &str, key: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut after = 0;
    loop {
        let (status, page, _) = get(
            &format!("{url}/v1/audit?after={after}&limit=1000"),
            Some(key),
            &[],
        );
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        for e in events {
            if e["action"] == "model.call" {
                ids.insert(e["request_id"].as_str().unwrap().to_owned());
            }
        }
        match events.last() {
            Some(last) if events.len() == 1000 => after = last["seq"].as_u64().unwrap(),
            _ => return ids,
        }
    }
}

#[test]
fn a_kill_under_load_loses_only_the_last_moment_and_a_clean_stop_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    fake.set_recording(false);
    fake.set_responder(|_| Some(Reply::text("ok")));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &fake);
    let data = dir.path().join("data");
    let env = [("LEDGER_TEST_PROVIDER_KEY", "sk-ledger")];

    // kill -9 in the middle of the load.
    let server = Server::start(&data, Some(&config), &env);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let stop = AtomicBool::new(false);
    let answered = Arc::new(Mutex::new(Vec::new()));
    let url = server.url.clone();
    let killed_at = std::thread::scope(|s| {
        s.spawn(|| load(&url, &key, 8, &stop, &answered));
        bulkhead_testkit::wait::wait_until("2000 answered calls", Duration::from_secs(120), || {
            answered.lock().unwrap().len() >= 2000
        });
        let at = Instant::now();
        drop(server); // SIGKILL
        stop.store(true, Ordering::Relaxed);
        at
    });
    let server = Server::start(&data, Some(&config), &env);
    let ids = recorded(&server.url, &key);
    let answered = answered.lock().unwrap().clone();
    let old: Vec<&(String, Instant)> = answered
        .iter()
        .filter(|(_, at)| killed_at.duration_since(*at) > WINDOW)
        .collect();
    assert!(!old.is_empty(), "the load ran for less than the window");
    let lost: Vec<&str> = old
        .iter()
        .filter(|(rid, _)| !ids.contains(rid))
        .map(|(rid, _)| rid.as_str())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} calls answered more than {WINDOW:?} before the kill have no event: {:?}",
        lost.len(),
        old.len(),
        &lost[..lost.len().min(5)]
    );

    // A clean stop (SIGTERM) right after the load: nothing lost.
    let stop = AtomicBool::new(false);
    let answered = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| load(&server.url, &key, 8, &stop, &answered));
        bulkhead_testkit::wait::wait_until("1000 answered calls", Duration::from_secs(120), || {
            answered.lock().unwrap().len() >= 1000
        });
        stop.store(true, Ordering::Relaxed);
    });
    server.stop();
    let server = Server::start(&data, Some(&config), &env);
    let ids = recorded(&server.url, &key);
    let answered = answered.lock().unwrap();
    let missing = answered
        .iter()
        .filter(|(rid, _)| !ids.contains(rid))
        .count();
    assert_eq!(
        missing,
        0,
        "a clean stop lost {missing} of {}",
        answered.len()
    );
    let v: Value = get(&format!("{}/v1/usage", server.url), Some(&key), &[]).1;
    assert!(v.is_object(), "{v}");
    server.stop();
}
