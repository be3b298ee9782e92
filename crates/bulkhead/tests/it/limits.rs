//! Budgets and rate limits on the real binary: a reservation held by a
//! process that is killed does not outlive it (embedded counters live and
//! die with the process; the ledger is what a restart counts), and, with
//! the `redis` feature, two processes sharing Redis enforce one limit
//! together and a dead process's reservation expires for the other.

use std::time::Duration;

use bulkhead_testkit::{FakeProvider, Reply, Usage};
use serde_json::{Value, json};

use crate::support::*;

const PROVIDER_KEY: &str = "sk-limits-test-provider-key";

/// The fake answers 1,000 input and 100 output tokens ($0.0012 at these
/// prices), except "hang", which gets no answer for an hour.
fn provider(fake: &FakeProvider) {
    fake.set_responder(|req| {
        let last = req["messages"].as_array()?.last()?.clone();
        Some(if last["content"] == "hang" {
            Reply::delay(Duration::from_secs(3600), Reply::text("late"))
        } else {
            Reply::text("ok").with_usage(Usage::new(1000, 100))
        })
    });
}

/// A configuration with the metered model and `extra` tables.
fn write_config(dir: &std::path::Path, fake: &FakeProvider, extra: &str) -> std::path::PathBuf {
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
credential = "env:LIMITS_TEST_PROVIDER_KEY"
timeout_s = 3600
max_retries = 0
[[models]]
name = "metered"
provider = "fake-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok = "1"
price_output_per_mtok = "2"
{extra}
"#,
            base = fake.base_url()
        ),
    )
    .unwrap();
    path
}

fn chat(url: &str, key: &str, text: &str) -> (u16, Value, Option<String>) {
    let mut res = agent()
        .post(format!("{url}/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .send_json(json!({"model": "metered", "max_tokens": 1000,
                          "messages": [{"role": "user", "content": text}]}))
        .unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.body_mut().read_to_string().unwrap();
    (
        res.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        retry,
    )
}

/// Waits for `cond` (checked every few milliseconds) or fails after a
/// bound that only keeps a broken build from hanging.
fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    bulkhead_testkit::wait::wait_until(what, Duration::from_secs(30), cond);
}

/// Starts a call that hangs at the provider, holding its reservation.
fn hang(url: &str, key: &str) -> std::thread::JoinHandle<()> {
    let (url, key) = (url.to_owned(), key.to_owned());
    // Its connection dies with the server.
    std::thread::spawn(move || {
        let _ = agent()
            .post(format!("{url}/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .send_json(json!({"model": "metered", "max_tokens": 1000,
                              "messages": [{"role": "user", "content": "hang"}]}));
    })
}

#[test]
fn a_killed_process_does_not_keep_its_reservations_after_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    provider(&fake);
    let dir = tempfile::tempdir().unwrap();
    // One call's estimate ($0.002) fits, two do not.
    let config = write_config(
        dir.path(),
        &fake,
        "[quotas.default]\nmonthly_budget_usd = \"0.003\"",
    );
    let data = dir.path().join("data");
    let env = [("LIMITS_TEST_PROVIDER_KEY", PROVIDER_KEY)];
    let server = Server::start(&data, Some(&config), &env);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let client = hang(&server.url, &key);
    wait_for("the hanging call to reach the provider", || {
        fake.request_count() >= 1
    });
    // The hanging call's reservation holds the budget.
    let (status, body, retry) = chat(&server.url, &key, "hello");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(retry.as_deref(), Some("1"), "held by a call in flight");
    drop(server); // SIGKILL with the reservation outstanding.
    client.join().unwrap();

    let server = Server::start(&data, Some(&config), &env);
    // The dead process's reservation is gone, but the call it had sent is
    // not forgotten: billed at its estimate ($0.002 and a little input),
    // it leaves no room for another estimate.
    let (status, body, retry) = chat(&server.url, &key, "hello");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_ne!(
        retry.as_deref(),
        Some("1"),
        "the budget itself is spent, not held by a reservation"
    );
    let (_, usage, _) = get(&format!("{}/v1/usage", server.url), Some(&key), &[]);
    assert_eq!(usage["total"]["requests"], 1, "{usage}");
    let cost = usage["total"]["cost_usd"].as_str().unwrap();
    assert!(
        cost.starts_with("0.0020") && cost != "0.002000000",
        "the estimate: {usage}"
    );
    server.stop();
}

/// The ledger row of a streamed call is written before the request goes
/// out: a server killed mid-stream leaves it, and the next start bills it
/// at its estimate (flagged), counted by `GET /v1/usage` and budgets.
#[test]
fn a_streamed_call_killed_mid_stream_is_in_the_ledger_after_a_restart() {
    use bulkhead_testkit::hostile::{Hostile, HostileProvider};

    let rt = tokio::runtime::Runtime::new().unwrap();
    // One chunk, then silence: the call is in flight when the server dies.
    let fake = rt.block_on(HostileProvider::start(|_| Hostile::Stall { chunks: 1 }));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[providers]]
name = "slow"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:LIMITS_TEST_PROVIDER_KEY"
timeout_s = 3600
stream_idle_timeout_s = 3600
max_retries = 0
[[models]]
name = "metered"
provider = "slow"
upstream = "gpt-4o-mini"
price_input_per_mtok = "1"
price_output_per_mtok = "2"
"#,
            base = fake.base_url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let env = [("LIMITS_TEST_PROVIDER_KEY", PROVIDER_KEY)];
    let server = Server::start(&data, Some(&config), &env);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let (url, k) = (server.url.clone(), key.clone());
    let client = std::thread::spawn(move || {
        // Its connection dies with the server.
        let _ = agent()
            .post(format!("{url}/v1/chat/completions"))
            .header("authorization", format!("Bearer {k}"))
            .send_json(
                json!({"model": "metered", "stream": true, "max_tokens": 1000,
                              "messages": [{"role": "user", "content": "tell me"}]}),
            )
            .map(|mut r| r.body_mut().read_to_string());
    });
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), fake.wait_chunks(1))
            .await
            .expect("the stream never started")
    });
    // The in-flight row commits within the ledger's deferral window; the
    // kill comes once it is on disk (read from the tenant's database file
    // by another connection, as a restart would), as a kill more than that
    // window after the call was sent does.
    bulkhead_testkit::wait::wait_until(
        "the in-flight row on disk",
        Duration::from_secs(30),
        || {
            tenant_dbs(&data).iter().any(|db| {
                rusqlite::Connection::open_with_flags(
                    db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM usage WHERE status = 'in_flight'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .is_ok_and(|n| n == 1)
            })
        },
    );
    drop(server); // SIGKILL mid-stream.
    client.join().unwrap();

    let server = Server::start(&data, Some(&config), &env);
    let (status, usage, _) = get(&format!("{}/v1/usage", server.url), Some(&key), &[]);
    assert_eq!(status, 200, "{usage}");
    assert_eq!(
        usage["total"]["requests"], 1,
        "the call is in the ledger: {usage}"
    );
    assert_eq!(
        usage["total"]["output_tokens"], 1000,
        "billed at its estimate: {usage}"
    );
    assert_ne!(usage["total"]["cost_usd"], "0.000000000");
    let (_, audit, _) = get(
        &format!("{}/v1/audit?limit=1000", server.url),
        Some(&key),
        &[],
    );
    let calls: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "model.call")
        .collect();
    assert_eq!(calls.len(), 1, "{audit}");
    assert_eq!(calls[0]["details"]["status"], "interrupted");
    assert_eq!(calls[0]["details"]["usage_estimated"], true);
    assert_eq!(calls[0]["details"]["stream"], true);
    server.stop();
}

#[cfg(feature = "redis")]
mod shared {
    use super::*;

    /// Redis for these tests, or `None` (a note) outside CI; in CI a
    /// missing Redis is a failure.
    #[expect(clippy::disallowed_methods, reason = "CI's marker, not configuration")]
    fn redis_url() -> Option<String> {
        let url = "redis://127.0.0.1:6379".to_owned();
        if std::net::TcpStream::connect("127.0.0.1:6379").is_ok() {
            return Some(url);
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is not reachable on 127.0.0.1:6379 (scripts/services.sh starts it)"
        );
        eprintln!("note: Redis not reachable on 127.0.0.1:6379; skipping outside CI");
        None
    }

    /// A tenant id no other run shares (the counters live in Redis).
    fn unique_tenant() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("rl-{}-{nanos}", std::process::id())
    }

    /// Two replicas — each its own data directory — sharing one Redis,
    /// with `quotas` (TOML) and the same fresh tenant on both.
    struct Replicas {
        fake: FakeProvider,
        a: Server,
        b: Server,
        key_a: String,
        key_b: String,
        _rt: tokio::runtime::Runtime,
        _dir: tempfile::TempDir,
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }

    fn replicas(redis: &str, quotas: &str, limits: &str) -> Replicas {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let fake = rt.block_on(FakeProvider::start());
        provider(&fake);
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &fake,
            &format!(
                "[quotas.default]\n{quotas}\n[limits]\nbackend = \"redis\"\nredis_url = \"{redis}\"\n{limits}"
            ),
        );
        let env = [("LIMITS_TEST_PROVIDER_KEY", PROVIDER_KEY)];
        let tenant = unique_tenant();
        let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
        // Replicas share one tenant record (the same incarnation uid, which
        // keys the counters): until the store itself is shared, B starts
        // from a copy of A's data directory taken after the tenant exists.
        let first = Server::start(&data_a, Some(&config), &env);
        let key = tenant_with_admin_key(&first.url, &data_a, &tenant, "eu");
        first.stop();
        copy_dir(&data_a, &data_b);
        let a = Server::start(&data_a, Some(&config), &env);
        let b = Server::start(&data_b, Some(&config), &env);
        let (key_a, key_b) = (key.clone(), key);
        Replicas {
            fake,
            a,
            b,
            key_a,
            key_b,
            _rt: rt,
            _dir: dir,
        }
    }

    #[test]
    fn two_processes_sharing_redis_enforce_one_rate_limit() {
        let Some(redis) = redis_url() else { return };
        // (The runtime and directory are bound, not dropped, until the end.)
        let Replicas {
            a,
            b,
            key_a,
            key_b,
            fake: _fake,
            _rt,
            _dir,
        } = replicas(&redis, "requests_per_minute = 10", "");
        let minute = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                / 60
        };
        let first = minute();
        let mut ok = 0;
        for i in 0..30 {
            let (url, key) = if i % 2 == 0 {
                (&a.url, &key_a)
            } else {
                (&b.url, &key_b)
            };
            let (status, body, retry) = get(&format!("{url}/v1/me"), Some(key), &[]);
            match status {
                200 => ok += 1,
                429 => {
                    assert_eq!(body["code"], "rate_limited", "{body}");
                    assert!(retry.is_some());
                }
                other => panic!("{other}: {body}"),
            }
        }
        let windows = minute() - first + 1;
        // One limit across both: 10 a window (±1 window if a minute
        // turned during the loop), not 10 each.
        if windows == 1 {
            assert_eq!(ok, 10, "both processes together");
        } else {
            assert!((10..=20).contains(&ok), "{ok} over {windows} windows");
        }
        a.stop();
        b.stop();
    }

    #[test]
    fn a_killed_replicas_reservation_expires_for_the_other() {
        let Some(redis) = redis_url() else { return };
        let Replicas {
            fake,
            a,
            b,
            key_a,
            key_b,
            _rt,
            _dir,
        } = replicas(
            &redis,
            "monthly_budget_usd = \"0.003\"",
            "reservation_ttl_s = 2",
        );
        let client = hang(&a.url, &key_a);
        wait_for("the hanging call to reach the provider", || {
            fake.request_count() >= 1
        });
        // A's reservation, in Redis, holds the budget for B too.
        let (status, body, retry) = chat(&b.url, &key_b, "hello");
        assert_eq!(status, 429, "{body}");
        assert_eq!(retry.as_deref(), Some("1"));
        drop(a); // SIGKILL: the reservation is never settled.
        client.join().unwrap();
        // Within its time to live (2 s) it expires, and B admits the call.
        let mut last = (0, Value::Null);
        wait_for("the dead replica's reservation to expire", || {
            let (status, body, _) = chat(&b.url, &key_b, "hello");
            last = (status, body);
            status != 429
        });
        assert_eq!(last.0, 200, "{}", last.1);
        b.stop();
    }
}

/// Every tenant database file under a data directory.
fn tenant_dbs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "tenant.db") {
                found.push(path);
            }
        }
    }
    found
}
