//! The vault through the real binary: `secret set` reads stdin, `kms
//! rotate` works online, and a restart keeps every credential readable.

use serde_json::json;

use crate::support::*;

const CANARY: &str = "xoxb-canary-e2e-7f3a9c1d5b";

#[test]
fn secrets_from_stdin_survive_rotation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None, &[]);
    let with = |url: &str, args: &[&str]| op_args(url, &data, args);
    let key = tenant_with_admin_key(&server.url, &data, "acme", "eu");

    let out = cli_stdin(
        &with(&server.url, &["secret", "set", "--tenant", "acme", "slack"]),
        &format!("{CANARY}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (meta["connection"].as_str(), meta["kind"].as_str()),
        (Some("slack"), Some("api_key"))
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(CANARY));
    let out = cli_stdin(
        &with(&server.url, &["secret", "set", "--tenant", "acme", "empty"]),
        "",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no secret on standard input"),
        "{out:?}"
    );
    let out = cli_stdin(
        &with(&server.url, &["secret", "set", "--platform", "openai"]),
        "sk-platform-canary-0123456789",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (status, body, _) = get(&format!("{}/v1/credentials", server.url), Some(&key), &[]);
    assert_eq!(status, 200);
    assert_eq!(body["credentials"][0]["connection"], "slack");
    assert_eq!(
        body["credentials"].as_array().unwrap().len(),
        1,
        "platform credentials are not the tenant's"
    );

    let rotated = cli_json(&with(&server.url, &["kms", "rotate"]), &[]);
    assert_eq!(
        rotated,
        json!({"provider": "local", "key_version": 2, "rewrapped": 2})
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(data.join("kek.json"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let logs_first = server.stop();

    // After a restart the rotated keys still open every credential: a data
    // key rotation has to decrypt and re-encrypt each one.
    let server = Server::start(&data, None, &[]);
    let r = cli_json(&with(&server.url, &["tenant", "rotate-key", "acme"]), &[]);
    assert_eq!(
        r,
        json!({"tenant": "acme", "dek_version": 2, "reencrypted": 1, "retired": 1})
    );
    let again = cli_json(&with(&server.url, &["kms", "rewrap"]), &[]);
    assert_eq!(again["rewrapped"], 0);
    let out = cli(
        &with(
            &server.url,
            &["secret", "delete", "--tenant", "acme", "slack"],
        ),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let (_, body, _) = get(&format!("{}/v1/credentials", server.url), Some(&key), &[]);
    assert_eq!(body["credentials"], json!([]));
    let logs_second = server.stop();
    for line in logs_first.iter().chain(&logs_second) {
        assert!(
            !line.contains(CANARY) && !line.contains("sk-platform-canary"),
            "a secret reached the log: {line}"
        );
    }
}
