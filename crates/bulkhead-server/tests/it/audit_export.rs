//! Signed checkpoints and the audit export: `GET /v1/audit/export`,
//! `GET /v1/audit/keys` and the operator's exports.

use axum::body::Body;
use axum::http::Request;
use bulkhead_core::audit::{AuditAction, AuditEvent, GENESIS_HASH, NewAuditEvent, Outcome};
use bulkhead_core::checkpoint::{AuditPublicKey, Checkpoint};
use bulkhead_core::{RequestId, jcs};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{OPERATOR_TOKEN, TestApp};

/// The raw body of a GET.
async fn get_text(app: &TestApp, path: &str, token: &str) -> (u16, String) {
    let req = Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn append(app: &TestApp, key: &str, n: usize) {
    let scope = app.scope(key).await;
    for i in 0..n {
        let e = NewAuditEvent::new(
            AuditAction::PoliciesUpdate,
            format!("t:{i}"),
            Outcome::Success,
            RequestId::generate(),
        )
        .with_details(serde_json::json!({"i": i, "ratio": 0.000001, "big": 1e21}));
        app.state.tenants.append_audit(&scope, e).await.unwrap();
    }
}

/// Splits an export into its events and checkpoints, checking that every
/// line is in its canonical form.
fn parse(text: &str) -> (Vec<AuditEvent>, Vec<Checkpoint>) {
    let mut events = Vec::new();
    let mut checkpoints = Vec::new();
    assert!(text.ends_with('\n'), "{text}");
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(jcs::canonicalize(&v), line, "not canonical");
        if v["type"] == "checkpoint" {
            checkpoints.push(serde_json::from_value(v).unwrap());
        } else {
            events.push(serde_json::from_value(v).unwrap());
        }
    }
    (events, checkpoints)
}

#[tokio::test]
async fn the_export_streams_events_and_verifiable_checkpoints() {
    let app = TestApp::with_config("", "[audit]\ncheckpoint_events = 5\n").await;
    app.create_tenant("acme", "eu").await;
    let (_, key) = app.api_key("acme", &["admin"]).await;
    let op = app.operator_scope();
    append(&app, &key, 7).await;
    for i in 0..5 {
        let e = NewAuditEvent::new(
            AuditAction::UsageReport,
            format!("usage:{i}"),
            Outcome::Success,
            RequestId::generate(),
        );
        app.state
            .control
            .append_operator_audit(&op, None, e)
            .await
            .unwrap();
    }
    // The sweep signs the operator's chain and acme's: each has at least
    // 5 events and no checkpoint yet.
    assert_eq!(
        bulkhead_server::audit_keys::checkpoint_once(&app.state, &op).await,
        2
    );
    // Nothing new: nothing is due.
    append(&app, &key, 2).await;
    let before = bulkhead_server::audit_keys::checkpoint_once(&app.state, &op).await;
    append(&app, &key, 5).await;
    let after = bulkhead_server::audit_keys::checkpoint_once(&app.state, &op).await;
    assert_eq!((before, after), (0, 1));

    let (status, keys) = get_text(&app, "/v1/audit/keys", &key).await;
    assert_eq!(status, 200, "{keys}");
    let keys: Value = serde_json::from_str(&keys).unwrap();
    let keys: Vec<AuditPublicKey> = serde_json::from_value(keys["keys"].clone()).unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].current);

    let (status, text) = get_text(&app, "/v1/audit/export", &key).await;
    assert_eq!(status, 200, "{text}");
    let (events, checkpoints) = parse(&text);
    assert_eq!(
        bulkhead_core::audit::verify_chain(&events, GENESIS_HASH),
        Ok(events.len() as u64)
    );
    assert_eq!(checkpoints.len(), 2, "{text}");
    for c in &checkpoints {
        assert_eq!(c.verify(&keys), Ok(()));
        let e = events.iter().find(|e| e.seq == c.seq).unwrap();
        assert_eq!(c.head, e.hash);
        assert_eq!(c.tenant.as_ref().map(|t| t.as_str()), Some("acme"));
        // The checkpoint line follows the event it covers.
        let pos_e = text.find(&e.line()).unwrap();
        let pos_c = text.find(&c.line()).unwrap();
        assert_eq!(pos_c, pos_e + e.line().len() + 1);
    }

    // A range: only its events, and the checkpoints among them.
    let cp = checkpoints[0].seq;
    let (status, part) = get_text(&app, &format!("/v1/audit/export?from=2&to={cp}"), &key).await;
    assert_eq!(status, 200, "{part}");
    let (pe, pc) = parse(&part);
    assert_eq!(pe.first().unwrap().seq, 2);
    assert_eq!(pe.last().unwrap().seq, cp);
    assert_eq!(pc, vec![checkpoints[0].clone()]);
    let (status, _) = get_text(&app, "/v1/audit/export?from=3&to=2", &key).await;
    assert_eq!(status, 400);

    // The operator exports the same trail, and its own chain.
    let (status, admin) =
        get_text(&app, "/admin/v1/tenants/acme/audit/export", OPERATOR_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(admin, text);
    let (status, own) = get_text(&app, "/admin/v1/audit/export", OPERATOR_TOKEN).await;
    assert_eq!(status, 200);
    let (oe, oc) = parse(&own);
    // The operator's chain names many tenants: check the links only.
    let mut prev = GENESIS_HASH.to_owned();
    for (i, e) in oe.iter().enumerate() {
        assert_eq!((e.seq, &e.prev_hash), (i as u64 + 1, &prev));
        assert_eq!(e.compute_hash(), e.hash);
        prev = e.hash.clone();
    }
    assert_eq!(oc.len(), 1);
    assert_eq!(oc[0].tenant, None);
    assert_eq!(oc[0].verify(&keys), Ok(()));
    let (status, _) = get_text(&app, "/admin/v1/tenants/nope/audit/export", OPERATOR_TOKEN).await;
    assert_eq!(status, 404);
}

/// The generated key is kept (0600) and reused at the next start; a
/// configured key signs instead, and the generated one stays listed.
#[tokio::test]
async fn the_signing_key_is_generated_once_and_old_keys_stay_listed() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[server]\ndata_dir = \"{}\"\n", dir.path().display());
    let config = bulkhead_core::config::load(&text, &|_| None).unwrap();
    let a = bulkhead_server::audit_keys::AuditKeys::load(&config.audit, dir.path()).unwrap();
    let b = bulkhead_server::audit_keys::AuditKeys::load(&config.audit, dir.path()).unwrap();
    assert_eq!(a.signer.id(), b.signer.id());
    let path = dir.path().join(bulkhead_server::audit_keys::AUDIT_KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let seed = "42".repeat(32);
    let text = format!("{text}[audit]\nsigning_key = \"env:AUDIT_KEY\"\n");
    let config =
        bulkhead_core::config::load(&text, &|n| (n == "AUDIT_KEY").then(|| seed.clone())).unwrap();
    let c = bulkhead_server::audit_keys::AuditKeys::load(&config.audit, dir.path()).unwrap();
    assert_ne!(c.signer.id(), a.signer.id());
    let ids: Vec<(&str, bool)> = c
        .public
        .iter()
        .map(|k| (k.id.as_str(), k.current))
        .collect();
    assert_eq!(ids, vec![(a.signer.id(), false), (c.signer.id(), true)]);
    assert!(!format!("{c:?}").contains(&seed));
}

/// The periodic sweep visits every tenant on its first pass, then only the
/// tenants written since: an idle tenant is not looked at between full
/// passes, and a written one is checkpointed once due.
#[tokio::test]
async fn the_sweep_visits_only_tenants_written_since_its_last_pass() {
    let app = TestApp::with_config("", "[audit]\ncheckpoint_events = 3\n").await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let (_, acme) = app.api_key("acme", &["admin"]).await;
    let (_, globex) = app.api_key("globex", &["admin"]).await;
    append(&app, &acme, 3).await;
    append(&app, &globex, 3).await;
    let op = app.operator_scope();
    let mut sweep = bulkhead_server::audit_keys::Sweep::default();
    // First pass: every tenant (and the operator's chain).
    let first = bulkhead_server::audit_keys::checkpoint_sweep(&app.state, &op, &mut sweep).await;
    assert_eq!(first, 3, "the operator's chain, acme's and globex's");
    // Only acme is written afterwards: only acme is reported written.
    append(&app, &acme, 3).await;
    let written = app.state.tenants.take_written();
    assert_eq!(
        written.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        ["acme"]
    );
    append(&app, &acme, 1).await;
    let next = bulkhead_server::audit_keys::checkpoint_sweep(&app.state, &op, &mut sweep).await;
    assert_eq!(next, 1, "acme, due again; globex untouched");
    // Nothing written since: nothing to visit, nothing signed.
    let idle = bulkhead_server::audit_keys::checkpoint_sweep(&app.state, &op, &mut sweep).await;
    assert_eq!(idle, 0);
    assert!(app.state.tenants.take_written().is_empty());
}
