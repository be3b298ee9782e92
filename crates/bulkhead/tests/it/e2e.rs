//! The whole foundation over a socket: operator CLI, API keys, JWTs,
//! isolation, graceful shutdown, restart with all data kept, and a scan of
//! the logs for planted secrets.

use bulkhead_core::audit::{AuditEvent, GENESIS_HASH, verify_chain};
use serde_json::json;

use crate::support::*;

const JWT_SECRET: &str = "canary-jwt-secret-5f0c2d9a-0123456789abcdef";

fn jwt(tenant: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": "https://idp.test", "aud": "bulkhead", "sub": "alice", "exp": now + 600,
                        "tenant_id": tenant, "roles": ["admin"]});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn operator_cli_api_keys_and_jwts_over_a_socket_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        r#"
[[auth.jwt]]
issuer = "https://idp.test"
audience = "bulkhead"
algorithms = ["HS256"]
secret = "env:TEST_JWT_SECRET"
"#,
    )
    .unwrap();
    let env = [("TEST_JWT_SECRET", JWT_SECRET)];
    let server = Server::start(&data, Some(&config), &env);

    // The operator token was generated into the data directory, private.
    let token_file = data.join("operator_token");
    let operator_token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let d = data.to_str().unwrap();
    let conn = ["--url", server.url.as_str(), "--data-dir", d];
    let with = |args: &[&'static str]| -> Vec<String> {
        args.iter()
            .chain(conn.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let acme = cli_json(
        &with(&[
            "tenant",
            "create",
            "acme",
            "--name",
            "Acme Corp",
            "--region",
            "eu",
        ]),
        &[],
    );
    assert_eq!(acme["status"], "active");
    cli_json(
        &with(&["tenant", "create", "globex", "--region", "us"]),
        &[],
    );
    let key = cli_json(
        &with(&[
            "key", "create", "--tenant", "acme", "--role", "admin", "--role", "approver",
        ]),
        &[],
    );
    let acme_key = key["key"].as_str().unwrap().to_owned();
    let globex_key = cli_json(&with(&["key", "create", "--tenant", "globex"]), &[])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = cli_json(&with(&["tenant", "list"]), &[]);
    assert_eq!(listed["tenants"].as_array().unwrap().len(), 2);

    // The tenant plane over HTTP, with an API key and with a JWT.
    let me = format!("{}/v1/me", server.url);
    let (status, body, rid) = get(&me, Some(&acme_key), &[("x-request-id", "e2e-1")]);
    assert_eq!((status, rid.as_deref()), (200, Some("e2e-1")));
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["roles"], json!(["admin", "approver"]));
    let (status, body, _) = get(&me, Some(&jwt("acme")), &[]);
    assert_eq!(
        (status, body["principal"].as_str()),
        (200, Some("jwt:https://idp.test:alice"))
    );
    let (status, body, _) = get(&me, Some(&globex_key), &[]);
    assert_eq!((status, body["tenant"].as_str()), (200, Some("globex")));
    let (status, body, _) = get(&me, Some(&globex_key), &[("x-tenant-id", "acme")]);
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("tenant_mismatch"))
    );
    let (status, _, _) = get(&me, None, &[]);
    assert_eq!(status, 401);
    let (status, _, _) = get(&me, Some(&operator_token), &[]);
    assert_eq!(
        status, 401,
        "the operator token must not open the tenant plane"
    );

    // Suspend and resume through the CLI.
    cli_json(&with(&["tenant", "suspend", "globex"]), &[]);
    assert_eq!(get(&me, Some(&globex_key), &[]).0, 403);
    cli_json(&with(&["tenant", "resume", "globex"]), &[]);
    assert_eq!(get(&me, Some(&globex_key), &[]).0, 200);

    // CLI errors carry the server's problem.
    let out = cli(&with(&["tenant", "get", "nobody"]), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404 not_found"),
        "{out:?}"
    );
    let out = cli(
        &[
            "tenant",
            "list",
            "--url",
            &server.url,
            "--data-dir",
            "/nonexistent",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BULKHEAD_OPERATOR_TOKEN"),
        "{out:?}"
    );
    let out = cli(
        &["tenant", "list", "--url", &server.url],
        &[("BULKHEAD_OPERATOR_TOKEN", "wrong-token-0123456789")],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401 unauthenticated"),
        "{out:?}"
    );

    let logs_first = server.stop();
    assert!(
        logs_first.iter().any(|l| l.contains("\"stopped\"")),
        "no clean shutdown logged"
    );

    // Restart on the same data directory: everything is still there.
    let server = Server::start(&data, Some(&config), &env);
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        operator_token
    );
    let me = format!("{}/v1/me", server.url);
    assert_eq!(get(&me, Some(&acme_key), &[]).1["tenant"], "acme");
    assert_eq!(get(&me, Some(&jwt("globex")), &[]).1["tenant"], "globex");
    let (status, body, _) = get(&format!("{}/v1/audit", server.url), Some(&acme_key), &[]);
    assert_eq!(status, 200);
    let events: Vec<AuditEvent> = serde_json::from_value(body["events"].clone()).unwrap();
    assert_eq!(verify_chain(&events, GENESIS_HASH), Ok(events.len() as u64));
    assert!(events.iter().any(|e| e.action == "api_key.create"));

    // Revocation through the CLI takes effect at once.
    let key_id = key["id"].as_str().unwrap();
    let conn2 = ["--url", server.url.as_str(), "--data-dir", d];
    let out = cli(
        &[
            &["key", "revoke", "--tenant", "acme", key_id][..],
            &conn2[..],
        ]
        .concat(),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get(&me, Some(&acme_key), &[]).0, 401);
    let logs_second = server.stop();

    // Planted secrets never reach the logs.
    for line in logs_first.iter().chain(&logs_second) {
        for (name, secret) in [
            ("api key", acme_key.as_str()),
            ("api key", globex_key.as_str()),
            ("operator token", operator_token.as_str()),
            ("jwt secret", JWT_SECRET),
        ] {
            assert!(!line.contains(secret), "{name} leaked into the log: {line}");
        }
    }
    // Every request line carries its request id, and tenant requests their tenant.
    assert!(logs_first.iter().any(|l| l.contains("\"request finished\"")
        && l.contains("\"tenant.id\":\"acme\"")
        && l.contains("e2e-1")));
}

#[test]
fn embedded_default_serves_without_any_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None, &[]);
    let (status, body, _) = get(&format!("{}/healthz", server.url), None, &[]);
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, _, _) = get(&format!("{}/v1/me", server.url), Some(&jwt("acme")), &[]);
    assert_eq!(status, 401, "no issuer is configured, so no JWT can pass");
    let (status, body, _) = get(&format!("{}/openapi.json", server.url), None, &[]);
    assert_eq!(status, 200);
    assert!(body["paths"]["/admin/v1/tenants"].is_object());
    server.stop();
}
