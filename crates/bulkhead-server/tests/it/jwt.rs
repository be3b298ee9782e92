//! JWT verification: every accepted key type, and the attacks that must fail.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::*;

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(&key_pem("ec_private.pem")).unwrap()
}
fn ed() -> EncodingKey {
    EncodingKey::from_ed_pem(&key_pem("ed_private.pem")).unwrap()
}
fn rsa2() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key_pem("rsa2_private.pem")).unwrap()
}

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    let r = app.call("GET", "/v1/me", Some(token), None).await;
    (r.status, r.body)
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(key);
    } else {
        claims[key] = value;
    }
    claims
}

#[tokio::test]
async fn tokens_of_every_configured_issuer_and_key_type_authenticate() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;

    let (status, body) = me(&app, &hs_token(&claims(HS_ISSUER, "acme"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["principal"], format!("jwt:{HS_ISSUER}:user-1"));
    assert_eq!(body["principal_kind"], "jwt");
    assert_eq!(body["roles"], json!(["member"]));

    // Custom tenant and roles claims on the RS256 issuer; unknown role
    // names grant nothing and are dropped.
    let c = json!({"iss": RS_ISSUER, "aud": AUDIENCE, "sub": "u2", "exp": now() + 600,
                   "org": "acme", "groups": ["approver", "superuser"]});
    let (status, body) = me(&app, &rs_token(&c)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["roles"], json!(["approver"]));

    for (alg, key, kid) in [
        (Algorithm::ES256, ec(), "ec-1"),
        (Algorithm::EdDSA, ed(), "ed-1"),
        (Algorithm::RS256, rsa2(), "rs2-1"),
    ] {
        let (status, body) = me(
            &app,
            &sign(alg, &key, Some(kid), &claims(JWKS_ISSUER, "acme")),
        )
        .await;
        assert_eq!(status, 200, "{alg:?}: {body}");
    }

    // Within the 30 s leeway an expired token still passes.
    let c = with(claims(HS_ISSUER, "acme"), "exp", json!(now() - 10));
    assert_eq!(me(&app, &hs_token(&c)).await.0, 200);
}

#[tokio::test]
async fn jwt_attacks_are_refused_with_one_vague_answer() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("frozen", "eu").await;
    let r = app
        .call(
            "PATCH",
            "/admin/v1/tenants/frozen",
            Some(OPERATOR_TOKEN),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(r.status, 200);

    let good = claims(HS_ISSUER, "acme");
    let valid = hs_token(&good);
    let (h, p, _) = {
        let mut it = valid.split('.');
        (
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            raw_token(&json!({"alg": "none", "typ": "JWT"}), &good, ""),
        ),
        (
            "alg none, upper case",
            raw_token(&json!({"alg": "NONE", "typ": "JWT"}), &good, ""),
        ),
        ("signature stripped", format!("{h}.{p}.")),
        (
            "signature from another token",
            format!(
                "{h}.{p}.{}",
                hs_token(&claims(HS_ISSUER, "other"))
                    .rsplit('.')
                    .next()
                    .unwrap()
            ),
        ),
        (
            "HS256 signed with the RS256 public key",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&key_pem("rsa_public.pem")),
                None,
                &claims(RS_ISSUER, "acme"),
            ),
        ),
        (
            "expired",
            hs_token(&with(good.clone(), "exp", json!(now() - 3600))),
        ),
        (
            "not yet valid",
            hs_token(&with(good.clone(), "nbf", json!(now() + 3600))),
        ),
        ("no exp", hs_token(&with(good.clone(), "exp", Value::Null))),
        (
            "wrong issuer",
            hs_token(&with(good.clone(), "iss", json!("https://evil.test"))),
        ),
        (
            "no issuer",
            hs_token(&with(good.clone(), "iss", Value::Null)),
        ),
        (
            "wrong audience",
            hs_token(&with(good.clone(), "aud", json!("someone-else"))),
        ),
        (
            "no audience",
            hs_token(&with(good.clone(), "aud", Value::Null)),
        ),
        (
            "no subject",
            hs_token(&with(good.clone(), "sub", Value::Null)),
        ),
        (
            "missing tenant claim",
            hs_token(&with(good.clone(), "tenant_id", Value::Null)),
        ),
        (
            "non-string tenant claim",
            hs_token(&with(good.clone(), "tenant_id", json!(42))),
        ),
        (
            "list tenant claim",
            hs_token(&with(good.clone(), "tenant_id", json!(["acme"]))),
        ),
        (
            "invalid tenant id",
            hs_token(&with(good.clone(), "tenant_id", json!("../acme"))),
        ),
        (
            "unknown tenant",
            hs_token(&with(good.clone(), "tenant_id", json!("nobody"))),
        ),
        (
            "roles not a list",
            hs_token(&with(good.clone(), "roles", json!("admin"))),
        ),
        // The RS issuer uses `org` as its tenant claim; `tenant_id` means nothing there.
        (
            "wrong tenant claim for the issuer",
            rs_token(&claims(RS_ISSUER, "acme")),
        ),
        (
            "kid naming another issuer's key",
            sign(
                Algorithm::RS256,
                &rsa2(),
                Some("rs2-1"),
                &json!({"iss": RS_ISSUER, "aud": AUDIENCE, "sub": "u", "exp": now() + 600, "org": "acme"}),
            ),
        ),
        (
            "RS256 with a JWKS key, claiming the HS issuer",
            sign(
                Algorithm::RS256,
                &rsa2(),
                Some("rs2-1"),
                &claims(HS_ISSUER, "acme"),
            ),
        ),
        (
            "JWKS token without kid",
            sign(Algorithm::ES256, &ec(), None, &claims(JWKS_ISSUER, "acme")),
        ),
        (
            "JWKS kid of another key type",
            sign(
                Algorithm::ES256,
                &ec(),
                Some("ed-1"),
                &claims(JWKS_ISSUER, "acme"),
            ),
        ),
        (
            "JWKS unknown kid",
            sign(
                Algorithm::ES256,
                &ec(),
                Some("ec-9"),
                &claims(JWKS_ISSUER, "acme"),
            ),
        ),
        ("garbage", "a.b.c".to_owned()),
        ("empty parts", "..".to_owned()),
    ];
    let mut details = std::collections::BTreeSet::new();
    for (name, token) in &cases {
        let r = app.call("GET", "/v1/me", Some(token), None).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        r.assert_problem(401, "unauthenticated");
        details.insert(r.body["detail"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        details.len(),
        1,
        "401 answers must not say which check failed: {details:?}"
    );

    // A valid token of a suspended tenant is refused with 403 and audited.
    let r = app
        .call(
            "GET",
            "/v1/me",
            Some(&hs_token(&claims(HS_ISSUER, "frozen"))),
            None,
        )
        .await;
    r.assert_problem(403, "tenant_suspended");
}

#[tokio::test]
async fn tenant_header_must_match_the_token() {
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    app.create_tenant("globex", "eu").await;
    let token = hs_token(&claims(HS_ISSUER, "acme"));
    let r = app
        .call_with(
            "GET",
            "/v1/me",
            Some(&token),
            None,
            &[("x-tenant-id", "acme")],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .call_with(
            "GET",
            "/v1/me",
            Some(&token),
            None,
            &[("x-tenant-id", "globex")],
        )
        .await;
    r.assert_problem(403, "tenant_mismatch");
    // The header alone authenticates nothing.
    let r = app
        .call_with("GET", "/v1/me", None, None, &[("x-tenant-id", "acme")])
        .await;
    r.assert_problem(401, "unauthenticated");
    // The mismatch is recorded in the token tenant's chain.
    let (_, key) = app.api_key("acme", &["viewer"]).await;
    let events = app.audit(&key).await;
    assert!(
        events.iter().any(|e| e["action"] == "auth.failure"
            && e["details"]["reason"] == "tenant_header_mismatch"
            && e["principal"] == format!("jwt:{HS_ISSUER}:user-1")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_jwt_cannot_claim_the_operator_or_an_api_key_as_its_principal() {
    // `sub = "operator"` or `sub = "key:<id>"` appeared in audit as that
    // principal; ids are now namespaced by how the caller authenticated.
    let app = TestApp::new().await;
    app.create_tenant("acme", "eu").await;
    let (key_id, key) = app.api_key("acme", &["admin"]).await;
    for sub in [
        "operator".to_owned(),
        format!("key:{key_id}"),
        "system".to_owned(),
    ] {
        let mut c = claims(HS_ISSUER, "acme");
        c["sub"] = json!(sub);
        let (status, body) = me(&app, &hs_token(&c)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["principal"], format!("jwt:{HS_ISSUER}:{sub}"));
        assert_eq!(body["principal_kind"], "jwt");
        // An audited action by that token is recorded under the namespaced id.
        let r = app
            .call_with(
                "GET",
                "/v1/me",
                Some(&hs_token(&c)),
                None,
                &[("x-tenant-id", "globex")],
            )
            .await;
        r.assert_problem(403, "tenant_mismatch");
    }
    let events = app.audit(&key).await;
    let failures: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "auth.failure")
        .collect();
    assert!(!failures.is_empty(), "{events:?}");
    for e in failures {
        let p = e["principal"].as_str().unwrap();
        assert!(p.starts_with("jwt:"), "a token spoofed principal {p}");
    }
}
