//! `[audit.nats]`: tenants' audit events on NATS JetStream, against a
//! nats-server each test starts on a free port with its own users and
//! permissions (tenant `acme`'s user may subscribe only to
//! `bulkhead.audit.acme`). Events arrive in order, exactly once, on their
//! tenant's subject only, through a NATS outage and a SIGKILL of the
//! server between commit and publish. Without nats-server installed the
//! tests pass with a note, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bulkhead_testkit::wait::wait_until;
use futures_util::StreamExt;

use crate::support::{Server, cli_json, get, op_args, tenant_with_admin_key};

const STREAM: &str = "AUDIT_TEST";
const PREFIX: &str = "bulkhead.audit";
const BOUND: Duration = Duration::from_secs(60);

/// A nats-server of this test, stopped by pid when dropped.
struct Nats {
    child: Child,
    port: u16,
    config: PathBuf,
}

/// nats-server's path, or `None` (a note) outside CI.
#[expect(clippy::disallowed_methods, reason = "CI's marker, not configuration")]
fn nats_server() -> Option<PathBuf> {
    let found = Command::new("which")
        .arg("nats-server")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server is not installed (scripts/services.sh installs it)"
        );
        eprintln!("note: nats-server not installed; skipping outside CI");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nats {
    /// Writes the configuration (users, permissions, JetStream store under
    /// `dir`) and starts the server on a free port.
    fn start(bin: &Path, dir: &Path) -> Nats {
        let port = free_port();
        let store = dir.join("js");
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                r#"listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
accounts {{
  AUDIT {{
    jetstream: enabled
    users: [
      {{ user: publisher, password: publisher-secret }}
      {{ user: acme, password: acme-secret,
         permissions: {{ publish: {{ deny: ">" }}, subscribe: {{ allow: ["{PREFIX}.acme"] }} }} }}
      {{ user: beta, password: beta-secret,
         permissions: {{ publish: {{ deny: ">" }}, subscribe: {{ allow: ["{PREFIX}.beta"] }} }} }}
    ]
  }}
}}
"#,
                store = store.display()
            ),
        )
        .unwrap();
        Self::run(bin, port, config)
    }

    fn run(bin: &Path, port: u16, config: PathBuf) -> Nats {
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nats = Nats {
            child,
            port,
            config,
        };
        wait_until("nats-server to listen", BOUND, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        nats
    }

    /// Stops it (by pid) and starts it again on the same port and store.
    fn restart(mut self, bin: &Path) -> Nats {
        self.stop();
        Self::run(bin, self.port, self.config.clone())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(url: &str, user: &str, password: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(url)
        .await
        .unwrap()
}

/// Every message of the stream, as (subject, message id), in stream order.
async fn stream_messages(url: &str) -> Vec<(String, String)> {
    let js = async_nats::jetstream::new(connect(url, "publisher", "publisher-secret").await);
    let Ok(mut stream) = js.get_stream(STREAM).await else {
        return Vec::new();
    };
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if state.messages == 0 {
            break;
        }
        let m = stream.get_raw_message(seq).await.unwrap();
        let id = m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if body["type"] == "checkpoint" {
            assert_eq!(
                format!("checkpoint-{}", body["head"].as_str().unwrap()),
                id,
                "a checkpoint's message id is its chain head"
            );
        } else {
            assert_eq!(
                body["id"].as_str().unwrap(),
                id,
                "the message id is the event id"
            );
        }
        out.push((m.subject.to_string(), id));
    }
    out
}

/// The ids of a tenant's audit events, in chain order.
fn audit_ids(url: &str, key: &str) -> Vec<String> {
    let (status, body, _) = get(&format!("{url}/v1/audit?limit=1000"), Some(key), &[]);
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn config_file(dir: &Path, nats_url: &str) -> PathBuf {
    let path = dir.join("bulkhead.toml");
    std::fs::write(
        &path,
        format!(
            "[audit.nats]\nurl = \"{nats_url}\"\nstream = \"{STREAM}\"\nsubject_prefix = \"{PREFIX}\"\nuser = \"publisher\"\npassword = \"env:NATS_PASSWORD\"\n"
        ),
    )
    .unwrap();
    path
}

const ENV: &[(&str, &str)] = &[("NATS_PASSWORD", "publisher-secret")];

/// Writes `n` events to `tenant`'s chain (each an API key created).
fn write_events(url: &str, data: &Path, tenant: &str, n: usize) {
    for _ in 0..n {
        cli_json(
            &op_args(
                url,
                data,
                &["key", "create", "--tenant", tenant, "--role", "viewer"],
            ),
            &[],
        );
    }
}

/// Groups the stream's messages by subject.
fn by_subject(messages: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (subject, id) in messages {
        out.entry(subject.clone()).or_default().push(id.clone());
    }
    out
}

/// Waits until the stream holds exactly each tenant's chain, in order, on
/// its own subject: nothing missing, nothing twice, nothing elsewhere.
fn assert_stream_is_the_chains(
    rt: &tokio::runtime::Runtime,
    nats_url: &str,
    chains: &[(&str, Vec<String>)],
) {
    let total: usize = chains.iter().map(|(_, ids)| ids.len()).sum();
    let mut messages = Vec::new();
    wait_until("every event in the stream", BOUND, || {
        messages = rt.block_on(stream_messages(nats_url));
        messages.len() >= total
    });
    let expected: BTreeMap<String, Vec<String>> = chains
        .iter()
        .map(|(t, ids)| (format!("{PREFIX}.{t}"), ids.clone()))
        .collect();
    assert_eq!(by_subject(&messages), expected);
}

#[test]
fn events_arrive_in_order_once_on_their_tenants_subject_which_only_that_tenant_can_read() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&bin, dir.path());
    let data = dir.path().join("data");
    let config = config_file(dir.path(), &nats.url());
    let server = Server::start(&data, Some(&config), ENV);
    let rt = rt();
    // Subscriptions are dropped inside the runtime.
    let _runtime = rt.enter();

    // Tenant acme's user subscribes to its own subject and to beta's; the
    // server refuses the second.
    let (violations_tx, mut violations) = tokio::sync::mpsc::unbounded_channel();
    let (mut own, mut other) = rt.block_on(async {
        let client =
            async_nats::ConnectOptions::with_user_and_password("acme".into(), "acme-secret".into())
                .event_callback(move |event| {
                    let tx = violations_tx.clone();
                    async move {
                        if let async_nats::Event::ServerError(e) = event {
                            let _ = tx.send(e.to_string());
                        }
                    }
                })
                .connect(nats.url())
                .await
                .unwrap();
        let own = client.subscribe(format!("{PREFIX}.acme")).await.unwrap();
        let other = client.subscribe(format!("{PREFIX}.beta")).await.unwrap();
        client.flush().await.unwrap();
        (own, other)
    });

    let beta = tenant_with_admin_key(&server.url, &data, "beta", "eu");
    write_events(&server.url, &data, "beta", 3);
    let beta_ids = audit_ids(&server.url, &beta);
    assert_stream_is_the_chains(&rt, &nats.url(), &[("beta", beta_ids.clone())]);

    let acme = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    write_events(&server.url, &data, "acme", 5);
    let acme_ids = audit_ids(&server.url, &acme);
    assert!(acme_ids.len() >= 6, "{acme_ids:?}");
    assert_stream_is_the_chains(
        &rt,
        &nats.url(),
        &[("acme", acme_ids.clone()), ("beta", beta_ids.clone())],
    );

    // acme's subscriber got its own events, live, in order, once each...
    let received: Vec<String> = rt.block_on(async {
        let mut out = Vec::new();
        while out.len() < acme_ids.len() {
            let m = tokio::time::timeout(BOUND, own.next())
                .await
                .unwrap()
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            out.push(body["id"].as_str().unwrap().to_owned());
        }
        out
    });
    assert_eq!(received, acme_ids);
    // ...and none of beta's: the subscription was refused.
    let violation = rt.block_on(async {
        tokio::time::timeout(BOUND, violations.recv())
            .await
            .unwrap()
            .unwrap()
    });
    assert!(
        violation.to_lowercase().contains("permissions violation"),
        "{violation}"
    );
    let leaked = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(200), other.next())
            .await
            .ok()
            .flatten()
    });
    assert!(leaked.is_none(), "acme read a message of beta's subject");
    drop(server);
}

#[test]
fn a_nats_outage_during_a_run_loses_and_duplicates_nothing() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&bin, dir.path());
    let data = dir.path().join("data");
    let config = config_file(dir.path(), &nats.url());
    let server = Server::start(&data, Some(&config), ENV);
    let rt = rt();

    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    write_events(&server.url, &data, "acme", 3);
    assert_stream_is_the_chains(&rt, &nats.url(), &[("acme", audit_ids(&server.url, &key))]);

    // NATS goes away; the server keeps serving and its events wait.
    nats.stop();
    write_events(&server.url, &data, "acme", 5);
    nats = nats.restart(&bin);
    write_events(&server.url, &data, "acme", 2);
    let ids = audit_ids(&server.url, &key);
    assert_stream_is_the_chains(&rt, &nats.url(), &[("acme", ids)]);
    drop(server);
}

#[test]
fn a_sigkill_between_commit_and_publish_loses_and_duplicates_nothing() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(&bin, dir.path());
    let data = dir.path().join("data");
    let config = config_file(dir.path(), &nats.url());
    let rt = rt();

    // Events committed while NATS is down, then the server killed (drop:
    // SIGKILL) with all of them still in the outbox.
    nats.stop();
    let server = Server::start(&data, Some(&config), ENV);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    write_events(&server.url, &data, "acme", 4);
    drop(server);

    // NATS back, the server again: the backlog drains, then new events
    // follow; and a second SIGKILL right after writing, mid-publish.
    nats = nats.restart(&bin);
    let server = Server::start(&data, Some(&config), ENV);
    write_events(&server.url, &data, "acme", 6);
    drop(server);
    let server = Server::start(&data, Some(&config), ENV);
    write_events(&server.url, &data, "acme", 1);
    let ids = audit_ids(&server.url, &key);
    assert!(ids.len() >= 12, "{ids:?}");
    assert_stream_is_the_chains(&rt, &nats.url(), &[("acme", ids)]);
    drop(server);
}

/// A signed checkpoint is published on the tenant's subject right after
/// the event it signs, once, like the events.
#[test]
fn checkpoints_follow_the_events_they_sign_on_the_tenants_subject() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(&bin, dir.path());
    let data = dir.path().join("data");
    let config = config_file(dir.path(), &nats.url());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("[audit]\ncheckpoint_events = 3\n{text}")).unwrap();
    let server = Server::start(&data, Some(&config), ENV);
    let rt = rt();
    let acme = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    write_events(&server.url, &data, "acme", 4);
    let ids = audit_ids(&server.url, &acme);
    // The sweep signs within seconds; the checkpoint then follows.
    let mut messages = Vec::new();
    wait_until("a checkpoint in the stream", BOUND, || {
        messages = rt.block_on(stream_messages(&nats.url()));
        messages.iter().any(|(_, id)| id.starts_with("checkpoint-"))
    });
    let on_acme: Vec<String> = by_subject(&messages)
        .remove(&format!("{PREFIX}.acme"))
        .unwrap_or_default();
    assert_eq!(
        messages.len(),
        on_acme.len(),
        "nothing elsewhere: {messages:?}"
    );
    let at = on_acme
        .iter()
        .position(|id| id.starts_with("checkpoint-"))
        .unwrap();
    // The events before it are the chain's first ones, in order, once.
    assert_eq!(on_acme[..at], ids[..at], "{on_acme:?}");
    let (status, export, _) = get(&format!("{}/v1/audit/export", server.url), Some(&acme), &[]);
    assert_eq!(status, 200);
    let text = export
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| export.to_string());
    let signed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "checkpoint")
        .collect();
    assert!(!signed.is_empty(), "{text}");
    assert_eq!(
        on_acme[at],
        format!("checkpoint-{}", signed[0]["head"].as_str().unwrap()),
        "the published checkpoint is the one the export serves"
    );
    assert_eq!(
        signed[0]["seq"].as_u64().unwrap() as usize,
        at,
        "it signs the event before it"
    );
    server.stop();
}
