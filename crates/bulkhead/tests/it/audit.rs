//! `bulkhead audit export | keys | verify` on the real binary: a chain of
//! thousands of events exports and verifies offline, every kind of
//! tampering is refused naming its line and why, and a verifier written
//! from docs/audit.md alone in Python (`audit/verify.py`) agrees.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bulkhead_core::audit::AuditEvent;
use bulkhead_core::checkpoint::{AuditSigner, Checkpoint};
use serde_json::Value;

use bulkhead_testkit::wait::wait_until;

use crate::support::*;

fn out_text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `bulkhead audit verify` and the Python verifier on `file`; both
/// must agree on success or on the failing line. Returns bulkhead's
/// (exit code, stdout, stderr).
fn both(file: &Path, keys: &Path, python: bool, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "audit".to_owned(),
        "verify".to_owned(),
        file.to_string_lossy().into_owned(),
        "--keys".to_owned(),
        keys.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let o = cli(&args, &[]);
    let (stdout, stderr) = out_text(&o);
    if python {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/audit/verify.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(file).arg(keys).args(extra);
        let p = cmd.output().unwrap();
        let (pout, perr) = out_text(&p);
        assert_eq!(
            p.status.success(),
            o.status.success(),
            "python and bulkhead disagree:\n{stdout}{stderr}\n--\n{pout}{perr}"
        );
        if p.status.success() {
            let s: Value = serde_json::from_str(&pout).unwrap();
            for field in ["events", "first", "last", "head"] {
                let v = match &s[field] {
                    Value::String(x) => x.clone(),
                    other => other.to_string(),
                };
                assert!(stdout.contains(&v), "{field} {v} not in {stdout}");
            }
            let cp = s["checkpoint"].as_u64().unwrap();
            assert!(
                stdout.contains(&format!("checkpoint: seq {cp} ")),
                "{stdout}"
            );
        } else {
            let line = perr.split(':').next().unwrap().to_owned();
            assert!(stderr.contains(&format!("{line}:")), "{perr} vs {stderr}");
        }
    }
    (o.status.success(), stdout, stderr)
}

fn python_has_cryptography() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        // .ci/run installs moto, which depends on cryptography.
        let ci = std::env::var_os("CI").is_some_and(|v| v == "true");
        assert!(!ci, "CI=true but python3 cannot import cryptography");
        eprintln!("skipping the Python verifier: python3 cannot import cryptography");
    }
    ok
}

fn lines_of(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn is_checkpoint(line: &str) -> bool {
    line.starts_with("{\"head\":")
}

/// Index of an event line in the middle of `lines` with events on the two
/// lines after it.
fn middle_event(lines: &[String]) -> usize {
    (lines.len() / 2..lines.len() - 3)
        .find(|&i| (i..i + 3).all(|j| !is_checkpoint(&lines[j])))
        .unwrap()
}

#[test]
fn exported_chains_verify_offline_and_tampering_is_named() {
    let python = python_has_cryptography();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        "[audit]\ncheckpoint_events = 500\ncheckpoint_interval_s = 1\n",
    )
    .unwrap();
    let server = Server::start(&data, Some(&config), &[]);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let other = tenant_with_admin_key(&server.url, &data, "globex", "eu");

    // Thousands of events: policy updates from 8 clients at once.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let agent = agent();
                for i in 0..300 {
                    let body = serde_json::json!({"policies": format!("// {i}\n")});
                    let r = agent
                        .put(format!("{}/v1/policies", server.url))
                        .header("authorization", format!("Bearer {key}"))
                        .send_json(&body)
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });

    let file = dir.path().join("acme.jsonl");
    let f = file.to_string_lossy().into_owned();
    // The server's address; a restart below changes it.
    let url = std::cell::RefCell::new(server.url.clone());
    let export = |key: &str, path: &str| {
        let o = cli(
            &[
                "audit",
                "export",
                "--api-key",
                key,
                "--url",
                &url.borrow(),
                "-o",
                path,
            ],
            &[],
        );
        assert!(o.status.success(), "{:?}", out_text(&o));
        std::fs::read_to_string(path).unwrap()
    };
    // The sweep signs the head within seconds of the last event.
    wait_until(
        "a checkpoint of the chain's head",
        Duration::from_secs(60),
        || {
            let text = export(&key, &f);
            text.lines().last().is_some_and(is_checkpoint)
        },
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines = lines_of(&text);
    let events = lines.iter().filter(|l| !is_checkpoint(l)).count();
    assert!(events >= 2400, "{events}");
    assert!(
        lines.len() - events >= 2,
        "a checkpoint every 500 events or second"
    );

    let keys = dir.path().join("keys.json");
    let o = cli(
        &["audit", "keys", "--api-key", &key, "--url", &server.url],
        &[],
    );
    assert!(o.status.success(), "{:?}", out_text(&o));
    std::fs::write(&keys, &o.stdout).unwrap();

    let (ok, stdout, stderr) = both(&file, &keys, python, &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "{events} events (seq 1 to {events}), chain intact"
        )),
        "{stdout}"
    );

    let bad = dir.path().join("bad.jsonl");
    let refused = |lines: &[String], line: usize, why: &str| {
        write_lines(&bad, lines);
        let (ok, stdout, stderr) = both(&bad, &keys, python, &[]);
        assert!(!ok, "{stdout}");
        assert!(
            stderr.contains(&format!("line {line}: ")) && stderr.contains(why),
            "want line {line}: {why}; got {stderr}"
        );
    };

    // One byte changed in a detail.
    let m = middle_event(&lines);
    let mut t = lines.clone();
    let at = t[m].find("\"sha256\":\"").unwrap() + 10;
    let c = t[m].as_bytes()[at];
    t[m].replace_range(at..at + 1, if c == b'0' { "1" } else { "0" });
    refused(&t, m + 1, "hash mismatch");

    // A line removed.
    let mut t = lines.clone();
    t.remove(m);
    refused(&t, m + 1, "sequence gap");

    // Two lines swapped.
    let mut t = lines.clone();
    t.swap(m, m + 1);
    refused(&t, m + 1, "reordered");

    // A line of another tenant inserted.
    let theirs = export(&other, &dir.path().join("globex.jsonl").to_string_lossy());
    let mut t = lines.clone();
    t.insert(m, lines_of(&theirs)[1].clone());
    refused(&t, m + 1, "an event of tenant globex");

    // The file truncated (in its last line).
    std::fs::write(&bad, &text[..text.len() - 20]).unwrap();
    let (ok, _, stderr) = both(&bad, &keys, python, &[]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("line {}: truncated", lines.len())),
        "{stderr}"
    );

    // Events missing after a checkpoint: the events a checkpoint covers
    // were cut off the end.
    let last_cp = lines.iter().rposition(|l| is_checkpoint(l)).unwrap();
    let mut t = lines[..last_cp].to_vec();
    t.remove(last_cp - 1);
    t.push(lines[last_cp].clone());
    refused(&t, t.len(), "events missing");

    // The whole chain recomputed by someone without the signing key: the
    // links and hashes agree, the checkpoints' signatures do not.
    let mut prev = bulkhead_core::audit::GENESIS_HASH.to_owned();
    let mut first_cp = None;
    let t: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if is_checkpoint(l) {
                let mut c: Checkpoint = serde_json::from_str(l).unwrap();
                c.head = prev.clone();
                first_cp.get_or_insert(i);
                return c.line();
            }
            let mut e: AuditEvent = serde_json::from_str(l).unwrap();
            if e.seq == 3 {
                e.target = "policies:rewritten".into();
            }
            e.prev_hash = prev.clone();
            e.hash = e.compute_hash();
            prev = e.hash.clone();
            e.line()
        })
        .collect();
    refused(&t, first_cp.unwrap() + 1, "signature invalid");

    // Checkpoints signed by a key the tenant does not know.
    let stranger = AuditSigner::from_hex(&"07".repeat(32)).unwrap();
    let unknown = dir.path().join("unknown.json");
    std::fs::write(
        &unknown,
        serde_json::to_string(&serde_json::json!({"keys": [stranger.public(true)]})).unwrap(),
    )
    .unwrap();
    let o = cli(
        &["audit", "verify", &f, "--keys", &unknown.to_string_lossy()],
        &[],
    );
    assert!(!o.status.success());
    assert!(out_text(&o).1.contains("unknown key"), "{:?}", out_text(&o));

    // The operator's export of the tenant is the same; its own chain
    // verifies as the operator's.
    let op_file = dir.path().join("op.jsonl");
    let o = cli(
        &op_args(
            &server.url,
            &data,
            &["audit", "export", "--tenant", "acme", "--to", "10"],
        ),
        &[],
    );
    assert!(o.status.success(), "{:?}", out_text(&o));
    let part = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with(&part), "{part}");
    let o = cli(&op_args(&server.url, &data, &["audit", "export"]), &[]);
    assert!(o.status.success(), "{:?}", out_text(&o));
    std::fs::write(&op_file, &o.stdout).unwrap();
    let o = cli(
        &["audit", "verify", &op_file.to_string_lossy(), "--operator"],
        &[],
    );
    assert!(o.status.success(), "{:?}", out_text(&o));

    // Rotation: a new key signs from the next start; the old one stays
    // listed, so the chain verifies across both with the new key list.
    server.stop();
    let o = cli(
        &[
            "audit",
            "rotate-key",
            "--config",
            &config.to_string_lossy(),
            "--data-dir",
            &data.to_string_lossy(),
        ],
        &[],
    );
    assert!(o.status.success(), "{:?}", out_text(&o));
    let new_key: Value = serde_json::from_slice(&o.stdout).unwrap();
    let server = Server::start(&data, Some(&config), &[]);
    *url.borrow_mut() = server.url.clone();
    let listed: Value = serde_json::from_slice(
        &cli(
            &["audit", "keys", "--api-key", &key, "--url", &server.url],
            &[],
        )
        .stdout,
    )
    .unwrap();
    let listed = listed["keys"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[1]["id"], new_key["id"]);
    assert_eq!(listed[1]["current"], true);
    assert_eq!(listed[0]["current"], false);
    let r = agent()
        .put(format!("{}/v1/policies", server.url))
        .header("authorization", format!("Bearer {key}"))
        .send_json(serde_json::json!({"policies": "// rotated\n"}))
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_id = new_key["id"].as_str().unwrap().to_owned();
    wait_until(
        "a checkpoint signed with the new key",
        Duration::from_secs(60),
        || {
            let text = export(&key, &f);
            text.lines()
                .last()
                .is_some_and(|l| is_checkpoint(l) && l.contains(&new_id))
        },
    );
    let keys2 = dir.path().join("keys2.json");
    std::fs::write(
        &keys2,
        serde_json::to_string(&serde_json::json!({"keys": listed})).unwrap(),
    )
    .unwrap();
    let (ok, stdout, stderr) = both(&file, &keys2, python, &[]);
    assert!(ok, "{stdout}{stderr}");
    let (ok, _, stderr) = both(&file, &keys, python, &[]);
    assert!(!ok && stderr.contains("unknown key"), "{stderr}");
    drop(server);
}
