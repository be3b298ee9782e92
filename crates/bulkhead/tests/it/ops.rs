//! The operator's and tenant admin's commands on the real binary: `init`
//! and the shipped examples pass `check`; `usage`, `audit`, `quotas`,
//! `settings`, `models`, `policies`, `agents`, `runs`, `threads` and
//! `whoami` act through the API; errors are told in plain words; `tenant
//! delete` asks first; logs written to a pipe carry no colour codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bulkhead_testkit::{FakeProvider, Reply};
use serde_json::Value;

use crate::support::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        stderr(out),
        stdout(out)
    );
}

/// Text that only a JSON parser's message would hold.
fn assert_no_parser_text(text: &str) {
    for bad in ["line 1 column", "expected value", "Failed to deserialize"] {
        assert!(!text.contains(bad), "parser text in {text:?}");
    }
}

#[test]
fn init_writes_a_starter_configuration_that_check_accepts_and_serve_runs() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new");
    let out = cli(&["init".as_ref(), target.as_os_str()], &[]);
    assert_ok(&out, "init");
    let file = target.join("bulkhead.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 10);
    let out = cli(
        &["check".as_ref(), "--config".as_ref(), file.as_os_str()],
        &[],
    );
    assert_ok(&out, "check of the starter");
    // Uncommented, its examples are valid too.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" =").is_some_and(|(k, _)| {
                        k.trim().chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let full = dir.path().join("uncommented.toml");
    std::fs::write(&full, uncommented).unwrap();
    let out = cli(
        &["check".as_ref(), "--config".as_ref(), full.as_os_str()],
        &[
            ("OPENAI_API_KEY", "sk-test"),
            ("BULKHEAD_OPERATOR_TOKEN", "starter-operator-token-0123"),
        ],
    );
    assert_ok(&out, "check of the uncommented starter");
    // A second init refuses to overwrite, naming the file.
    std::fs::write(&file, "# mine\n").unwrap();
    let out = cli(&["init".as_ref(), target.as_os_str()], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&file.display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--force"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    let out = cli(
        &["init".as_ref(), target.as_os_str(), "--force".as_ref()],
        &[],
    );
    assert_ok(&out, "init --force");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // And `serve` runs on it.
    let data = dir.path().join("data");
    let server = Server::start(&data, Some(&file), &[]);
    let (status, _, _) = get(&format!("{}/healthz", server.url), None, &[]);
    assert_eq!(status, 200);
    server.stop();
}

#[test]
fn every_example_configuration_passes_check() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"minimal.toml".to_owned()) && names.contains(&"full.toml".to_owned()),
        "{names:?}"
    );
    let env = [
        ("OPENAI_API_KEY", "sk-test"),
        ("BULKHEAD_OPERATOR_TOKEN", "example-operator-token-0123"),
        (
            "APPROVALS_SIGNING_KEY",
            "example-approvals-signing-key-0123456789",
        ),
        (
            "ALERTS_SIGNING_KEY",
            "example-alerts-signing-key-0123456789ab",
        ),
    ];
    for f in &files {
        let out = cli(
            &["check".as_ref(), "--config".as_ref(), f.as_os_str()],
            &env,
        );
        assert_ok(&out, &f.display().to_string());
    }
    // The full one has what it says: two regions, BYOK, Slack and Jira,
    // knowledge and approvals.
    let full = std::fs::read_to_string(examples.join("full.toml")).unwrap();
    for needle in [
        "[[regions]]\nname = \"eu\"",
        "[[regions]]\nname = \"us\"",
        "credential = \"tenant:",
        "kind       = \"slack\"",
        "kind       = \"jira\"",
        "[knowledge]",
        "approval   = \"always\"",
        "[approvals]",
    ] {
        assert!(full.contains(needle), "examples/full.toml lacks {needle:?}");
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "text",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("BULKHEAD_OPERATOR_TOKEN")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let done = line.contains("listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("listening")),
        "the server did not start: {lines:?}"
    );
    for l in &lines {
        assert!(!l.contains("\x1b["), "colour codes in a piped log: {l:?}");
    }
}

#[test]
fn tenant_delete_asks_and_refuses_without_a_terminal_unless_yes() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), None, &[]);
    let op = |args: &[&str]| op_args(&server.url, data.path(), args);
    cli_json(&op(&["tenant", "create", "acme"]), &[]);
    // Standard input is not a terminal here: refused, nothing deleted.
    let out = cli_stdin(&op(&["tenant", "delete", "acme"]), "acme\n");
    assert!(!out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("--yes") && text.contains("acme"), "{text}");
    let t = cli_json(&op(&["tenant", "get", "acme"]), &[]);
    assert_eq!(t["id"], "acme");
    // With --yes it goes.
    let out = cli(&op(&["tenant", "delete", "acme", "--yes"]), &[]);
    assert_ok(&out, "tenant delete --yes");
    let out = cli(&op(&["tenant", "get", "acme"]), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    server.stop();
}

/// A one-shot HTTP server answering every request with `status` and an
/// HTML body, as a proxy in front of a stopped server would.
fn html_answering(status: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body>upstream down</body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn errors_are_plain_words_naming_the_field_never_parser_text() {
    // A non-JSON answer.
    let url = html_answering("502 Bad Gateway");
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("operator_token"),
        "some-operator-token-0123",
    )
    .unwrap();
    let out = cli(&op_args(&url, data.path(), &["tenant", "list"]), &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("the server answered 502 Bad Gateway with a non-JSON body"),
        "{text}"
    );
    assert!(!text.contains("<html>"), "{text}");
    assert_no_parser_text(&text);
    for args in [
        vec!["runs", "list", "--api-key", "k"],
        vec!["usage", "--api-key", "k"],
    ] {
        let mut a: Vec<&str> = args.clone();
        a.extend(["--url", &url]);
        let out = cli(&a, &[]);
        let text = stderr(&out);
        assert!(
            text.contains("502 Bad Gateway with a non-JSON body"),
            "{args:?}: {text}"
        );
    }
    // The server's problem detail names the field.
    let server = Server::start(data.path(), None, &[]);
    let op = |args: &[&str]| op_args(&server.url, data.path(), args);
    cli_json(&op(&["tenant", "create", "acme"]), &[]);
    let out = cli(
        &op(&[
            "settings",
            "set",
            "--tenant",
            "acme",
            "--message-retention-days",
            "0",
        ]),
        &[],
    );
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("message_retention_days: must be between 1 and 3650"),
        "{text}"
    );
    assert!(text.contains("400") || text.contains("422"), "{text}");
    assert_no_parser_text(&text);
    // A value of the wrong type, refused by the server's deserialiser.
    let out = cli(
        &op(&["quotas", "set", "--tenant", "acme", "daily_budget_usd=lots"]),
        &[],
    );
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("quotas.daily_budget_usd"), "{text}");
    assert_no_parser_text(&text);
    // Local argument errors name the argument.
    let out = cli(
        &op(&[
            "quotas",
            "set",
            "--tenant",
            "acme",
            "requests_per_minute=many",
        ]),
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("requests_per_minute: \"many\" is not a whole number"),
        "{}",
        stderr(&out)
    );
    let out = cli(&op(&["quotas", "set", "--tenant", "acme", "oops"]), &[]);
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));
    let out = cli(
        &[
            "runs",
            "list",
            "--api-key",
            "k",
            "--limit",
            "0",
            "--url",
            &server.url,
        ],
        &[],
    );
    assert!(stderr(&out).contains("--limit"), "{}", stderr(&out));
    let out = cli(
        &[
            "runs",
            "list",
            "--api-key",
            "k",
            "--status",
            "done",
            "--url",
            &server.url,
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--status"), "{}", stderr(&out));
    server.stop();
}

fn write_config(dir: &Path, fake: &FakeProvider) -> PathBuf {
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
credential = "env:OPS_TEST_PROVIDER_KEY"
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
price_input_per_mtok = "1"
price_output_per_mtok = "2"
[[agents]]
name = "support"
model = "small"
prompt = "You are support."
[[agents]]
name = "triage"
model = "small"
prompt = "You triage."
"#,
            base = fake.base_url(),
        ),
    )
    .unwrap();
    config
}

fn run(url: &str, key: &str, agent: &str, input: &str) -> Value {
    let mut res = agent_http()
        .post(&format!("{url}/v1/agents/{agent}/runs"))
        .header("authorization", format!("Bearer {key}"))
        .send_json(serde_json::json!({"input": input}))
        .unwrap();
    let text = res.body_mut().read_to_string().unwrap();
    assert_eq!(res.status().as_u16(), 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn agent_http() -> ureq::Agent {
    agent()
}

#[test]
fn operator_and_tenant_admin_commands_act_through_the_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    fake.push_all([Reply::text("one"), Reply::text("two"), Reply::text("three")]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        Some(&config),
        &[("OPS_TEST_PROVIDER_KEY", "sk-ops-test")],
    );
    let url = server.url.clone();
    let op = |args: &[&str]| op_args(&url, &data, args);
    let key = tenant_with_admin_key(&url, &data, "acme", "eu");
    let other = tenant_with_admin_key(&url, &data, "globex", "eu");
    let tenant = |args: &[&str], key: &str| {
        let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        a.extend([
            "--url".to_owned(),
            url.clone(),
            "--api-key".to_owned(),
            key.to_owned(),
        ]);
        a
    };
    let first = run(&url, &key, "support", "hello");
    let second = run(&url, &key, "triage", "sort this");
    run(&url, &other, "support", "globex's own");

    // whoami, agents
    let out = cli(&tenant(&["whoami"], &key), &[]);
    assert_ok(&out, "whoami");
    assert!(
        stdout(&out).contains("acme") && stdout(&out).contains("admin"),
        "{}",
        stdout(&out)
    );
    let out = cli(&tenant(&["agents", "list"], &key), &[]);
    assert_ok(&out, "agents list");
    assert!(stdout(&out).contains("support") && stdout(&out).contains("triage"));

    // runs: a table by default, JSON with --json, filters, paging.
    let out = cli(&tenant(&["runs", "list"], &key), &[]);
    assert_ok(&out, "runs list");
    let table = stdout(&out);
    assert!(table.starts_with("run "), "{table}");
    assert!(table.contains(first["id"].as_str().unwrap()), "{table}");
    assert!(table.contains(second["id"].as_str().unwrap()), "{table}");
    assert!(!table.contains("globex"), "{table}");
    let runs = cli_json(&tenant(&["runs", "list", "--json"], &key), &[]);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "{runs}");
    assert_eq!(runs["runs"][0]["id"], second["id"]);
    let only = cli_json(
        &tenant(
            &[
                "runs",
                "list",
                "--json",
                "--agent",
                "support",
                "--status",
                "completed",
            ],
            &key,
        ),
        &[],
    );
    assert_eq!(only["runs"].as_array().unwrap().len(), 1);
    assert_eq!(only["runs"][0]["id"], first["id"]);
    let page = cli(&tenant(&["runs", "list", "--limit", "1"], &key), &[]);
    assert_ok(&page, "runs list --limit 1");
    assert!(stderr(&page).contains("--after"), "{}", stderr(&page));
    let one = cli_json(
        &tenant(&["runs", "get", first["id"].as_str().unwrap()], &key),
        &[],
    );
    assert_eq!(one["output"], "one");
    let theirs = cli_json(&tenant(&["runs", "list", "--json"], &other), &[]);
    assert_eq!(theirs["runs"].as_array().unwrap().len(), 1);
    // Another tenant's run is not found.
    let out = cli(
        &tenant(&["runs", "get", first["id"].as_str().unwrap()], &other),
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));

    // threads
    let out = cli(
        &tenant(&["threads", "list", "--agent", "triage"], &key),
        &[],
    );
    assert_ok(&out, "threads list");
    assert!(stdout(&out).contains(second["thread_id"].as_str().unwrap()));
    assert!(!stdout(&out).contains(first["thread_id"].as_str().unwrap()));
    let out = cli(
        &tenant(
            &["threads", "messages", first["thread_id"].as_str().unwrap()],
            &key,
        ),
        &[],
    );
    assert_ok(&out, "threads messages");
    assert!(
        stdout(&out).contains("user: hello") && stdout(&out).contains("assistant: one"),
        "{}",
        stdout(&out)
    );
    let out = cli(
        &tenant(
            &["threads", "delete", second["thread_id"].as_str().unwrap()],
            &key,
        ),
        &[],
    );
    assert_ok(&out, "threads delete");
    let runs = cli_json(&tenant(&["runs", "list", "--json"], &key), &[]);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);

    // usage: the tenant's own, and the operator's for one tenant.
    let out = cli(&tenant(&["usage", "--group-by", "agent"], &key), &[]);
    assert_ok(&out, "usage");
    let text = stdout(&out);
    assert!(
        text.contains("agent") && text.contains("support") && text.contains("total"),
        "{text}"
    );
    let report = cli_json(&op(&["usage", "--tenant", "globex", "--json"]), &[]);
    let rows = report["rows"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["tenant"] == "globex"),
        "{report}"
    );
    assert_eq!(report["total"]["requests"], 1, "{report}");
    let csv = cli(&tenant(&["usage", "--csv"], &key), &[]);
    assert_ok(&csv, "usage --csv");
    assert!(stdout(&csv).starts_with("tenant,day,agent,model,tool,"));

    // quotas
    let out = cli(
        &op(&[
            "quotas",
            "set",
            "--tenant",
            "acme",
            "requests_per_minute=600",
            "monthly_budget_usd=50",
        ]),
        &[],
    );
    assert_ok(&out, "quotas set");
    let q = cli_json(&op(&["quotas", "get", "--tenant", "acme", "--json"]), &[]);
    assert_eq!(q["quotas"]["requests_per_minute"], 600);
    assert_eq!(q["quotas"]["monthly_budget_usd"], "50");
    cli_json(
        &op(&[
            "quotas",
            "set",
            "--tenant",
            "acme",
            "monthly_budget_usd=default",
            "--json",
        ]),
        &[],
    );
    let out = cli(&op(&["quotas", "get", "--tenant", "acme"]), &[]);
    assert!(
        stdout(&out).contains("requests_per_minute") && !stdout(&out).contains("monthly"),
        "{}",
        stdout(&out)
    );

    // settings and models
    let s = cli_json(
        &op(&[
            "settings",
            "set",
            "--tenant",
            "acme",
            "--message-retention-days",
            "30",
            "--audit-prompts",
            "true",
            "--json",
        ]),
        &[],
    );
    assert_eq!(s["message_retention_days"], 30);
    assert_eq!(s["audit_prompts"], true);
    let out = cli(&op(&["settings", "get", "--tenant", "acme"]), &[]);
    assert!(
        stdout(&out).contains("message_retention_days  30"),
        "{}",
        stdout(&out)
    );
    let m = cli_json(
        &op(&[
            "models", "set", "--tenant", "acme", "--allow", "small", "--json",
        ]),
        &[],
    );
    assert_eq!(m["allowed"], serde_json::json!(["small"]));
    let out = cli(&tenant(&["models", "list"], &key), &[]);
    assert!(stdout(&out).contains("small"), "{}", stdout(&out));
    cli_json(
        &op(&["models", "set", "--tenant", "acme", "--all", "--json"]),
        &[],
    );

    // policies
    let policy = dir.path().join("p.cedar");
    std::fs::write(
        &policy,
        r#"forbid(principal, action == Action::"read_runs", resource == Agent::"triage");"#,
    )
    .unwrap();
    let out = cli(
        &["policies".as_ref(), "validate".as_ref(), policy.as_os_str()],
        &[],
    );
    assert_ok(&out, "policies validate");
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        r#"permit(principal, action == Action::"fly", resource);"#,
    )
    .unwrap();
    let out = cli(
        &["policies".as_ref(), "validate".as_ref(), bad.as_os_str()],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.cedar"), "{}", stderr(&out));
    let p = policy.to_string_lossy().into_owned();
    let out = cli(&tenant(&["policies", "put", &p], &key), &[]);
    assert_ok(&out, "policies put");
    let out = cli(&tenant(&["policies", "get"], &key), &[]);
    assert!(stdout(&out).contains("triage"), "{}", stdout(&out));
    let b = bad.to_string_lossy().into_owned();
    let out = cli(&tenant(&["policies", "put", &b], &key), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid_policy"), "{}", stderr(&out));
    assert_no_parser_text(&stderr(&out));

    // audit: list, export, verify, and a tampered export fails naming its line.
    let out = cli(&tenant(&["audit", "list", "--limit", "5"], &key), &[]);
    assert_ok(&out, "audit list");
    assert!(stdout(&out).starts_with("seq "), "{}", stdout(&out));
    let out = cli(&op(&["audit", "list"]), &[]);
    assert_ok(&out, "operator audit list");
    assert!(stdout(&out).contains("tenant.create"), "{}", stdout(&out));
    let file = dir.path().join("audit.jsonl");
    let f = file.to_string_lossy().into_owned();
    let out = cli(&tenant(&["audit", "export", "-o", &f], &key), &[]);
    assert_ok(&out, "audit export");
    let out = cli(&["audit", "verify", &f], &[]);
    assert_ok(&out, "audit verify");
    assert!(stdout(&out).contains("chain intact"), "{}", stdout(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(lines.len() >= 3);
    let mut ev: Value = serde_json::from_str(&lines[1]).unwrap();
    ev["target"] = Value::String("tampered".into());
    lines[1] = serde_json::to_string(&ev).unwrap();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = cli(&["audit", "verify", &f], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));

    // A tenant admin's own credentials, on the tenant plane.
    let out = cli_stdin(
        &tenant(&["secret", "set", "slack", "--kind", "bearer"], &key),
        "xoxb-ops-test-token\n",
    );
    assert_ok(&out, "secret set --api-key");
    assert!(!stdout(&out).contains("xoxb-ops-test-token"));
    let listed = cli_json(&tenant(&["secret", "list"], &key), &[]);
    assert!(listed.to_string().contains("slack"), "{listed}");
    let theirs = cli_json(&tenant(&["secret", "list"], &other), &[]);
    assert!(!theirs.to_string().contains("slack"), "{theirs}");
    let out = cli(&tenant(&["secret", "delete", "slack"], &key), &[]);
    assert_ok(&out, "secret delete --api-key");
    let out = cli(&tenant(&["secret", "list", "--tenant", "acme"], &key), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tenant"), "{}", stderr(&out));

    // collections: a document ingested by the operator, listed and deleted
    // by the tenant admin.
    let doc = dir.path().join("guide.md");
    std::fs::write(&doc, "# Guide\n\nRestart the router.\n").unwrap();
    let d = doc.to_string_lossy().into_owned();
    let out = cli(
        &op(&[
            "kb",
            "ingest",
            "--tenant",
            "acme",
            "--collection",
            "handbook",
            &d,
        ]),
        &[],
    );
    assert_ok(&out, "kb ingest");
    let out = cli(&tenant(&["collections", "list"], &key), &[]);
    assert_ok(&out, "collections list");
    assert!(stdout(&out).contains("handbook"), "{}", stdout(&out));
    let out = cli(&tenant(&["collections", "list"], &other), &[]);
    assert!(!stdout(&out).contains("handbook"), "{}", stdout(&out));
    let out = cli(&tenant(&["collections", "delete", "handbook"], &key), &[]);
    assert_ok(&out, "collections delete");
    let out = cli(&tenant(&["collections", "delete", "handbook"], &key), &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    server.stop();
}
