//! `bulkhead demo`: runs with no configuration, keys or services, and its
//! report shows three tenants in two regions, each tenant's own
//! credentials and documents at work (knowledge answers citing only the
//! tenant's own runbook), the refusals, an approval, and verified audit
//! chains with each tenant's cost — without printing a secret.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

#[test]
fn the_demo_runs_its_scenario_and_reports_it() {
    let out = Command::new(BIN)
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "scripted fake",
        "with acme's own Slack token",
        "with globex's own Slack token",
        "with initech's own Slack token",
        "REFUSED     jira: missing_credential",
        "acme ingests \"Acme deploy runbook\" into its `runbooks` collection",
        "answer: Run `acmectl rollback --to previous`, then page the on-call SRE in #incidents. [1] (source: Acme deploy runbook > Rolling back a bad deploy)",
        "answer: Revert the merge commit, redeploy through the TPS pipeline, and file a TPS report with the cover sheet. [1] (source: Initech release guide > Rolling back a bad deploy)",
        "cites acme's own runbook, and nothing of the other tenant's",
        "cites initech's own runbook, and nothing of the other tenant's",
        "globex searches `runbooks`: 404 not_found",
        "with acme's own Jira credential",
        "REFUSED     globex_slack: unknown_tool",
        "REFUSED     slack: invalid_arguments",
        "REFUSED     web: host_not_allowed",
        "posted, literally: \"{{ tenant }} {% include '/etc/passwd' %}\"",
        "refused: 404 not_found",
        "answered 202 — awaiting_approval",
        "wants to call `jira` (write, jira) with connection `jira`",
        "globex's approver tries to approve it: 404 not_found",
        "acme's approver approves: approved",
        "Jira tickets the stand-in received after approval: 1",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    assert_eq!(stdout.matches("chain verified").count(), 3, "{stdout}");
    assert!(
        !stdout.contains("UNKNOWN")
            && !stdout.contains("BROKEN")
            && !stdout.contains("LEAKED")
            && !stdout.contains("NOT cite"),
        "{stdout}"
    );
    // Fingerprints only, never the planted secrets.
    assert!(!stdout.contains("xoxb-demo-"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("xoxb-demo-"));
}

#[test]
fn the_demo_can_keep_its_server_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let mut child = Command::new(BIN)
        .args(["demo", "--keep", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut base = None;
    let mut key = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("The server keeps running at ") {
            base = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(i) = line.find("Bearer bk_") {
            key.get_or_insert_with(|| line[i + 7..].split('\'').next().unwrap().to_owned());
        }
        if line.starts_with("Operator:") {
            break;
        }
    }
    let (base, key) = (base.unwrap(), key.unwrap());
    let (status, agents, _) = get(&format!("{base}/v1/agents"), Some(&key), &[]);
    assert_eq!(status, 200);
    let names: Vec<&str> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["handbook", "support"], "{agents}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    // A given --data-dir is kept; a second demo there refuses to reuse it.
    assert!(data.join("control.db").exists());
    let out = Command::new(BIN)
        .args(["demo", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data-dir"));
}
