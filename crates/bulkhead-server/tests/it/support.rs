//! The in-process test application: a router over a fresh data directory,
//! with one issuer per key type, and helpers to mint credentials.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use bulkhead_server::boot;
use bulkhead_store::sqlite::SqliteStore;
use http_body_util::BodyExt;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789";
pub const PLATFORM_KEY: &str = "sk-platform-key-0123456789";
pub const METRICS_TOKEN: &str = "test-metrics-token-0123456789";
pub const ALERT_KEY: &str = "test-alert-signing-key-0123456789";
pub const HS_SECRET: &str = "hs-secret-for-tests-0123456789abcdef";
pub const HS_ISSUER: &str = "https://hs.test";
pub const RS_ISSUER: &str = "https://rs.test";
pub const JWKS_ISSUER: &str = "https://jwks.test";
pub const AUDIENCE: &str = "bulkhead";
/// Small on purpose, so the oversized-body test stays small.
pub const BODY_LIMIT: usize = 4096;

pub fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/keys")
        .join(name)
}

pub fn key_pem(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

pub struct TestApp {
    pub router: Router,
    pub state: bulkhead_server::AppState,
    pub store: SqliteStore,
    pub dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Asserts a refusal in either error format: a problem body with this
    /// code, or (on the OpenAI-compatible paths) an OpenAI error whose code
    /// is the OpenAI equivalent.
    pub fn assert_refusal(&self, status: u16, code: &str) {
        if self.body.get("error").is_some() {
            assert_eq!(self.status, status, "body: {}", self.body);
            let expected = if code == "unauthenticated" {
                "invalid_api_key"
            } else {
                code
            };
            assert_eq!(self.body["error"]["code"], expected, "body: {}", self.body);
            assert!(
                self.body["error"]["message"].is_string() && self.body["error"]["type"].is_string()
            );
        } else {
            self.assert_problem(status, code);
        }
    }

    /// Asserts a problem response with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.headers.get("content-type").unwrap(),
            "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.code(), code, "body: {}", self.body);
        for field in ["type", "title", "status", "detail", "code", "request_id"] {
            assert!(
                self.body.get(field).is_some(),
                "problem lacks {field}: {}",
                self.body
            );
        }
        assert_eq!(
            self.body["request_id"].as_str().unwrap(),
            self.headers.get("x-request-id").unwrap().to_str().unwrap()
        );
    }
}

fn jwks(dir: &std::path::Path) -> PathBuf {
    let mut keys = Vec::new();
    for (file, alg, kid) in [
        ("ec_private.pem", Algorithm::ES256, "ec-1"),
        ("rsa2_private.pem", Algorithm::RS256, "rs2-1"),
    ] {
        let pem = key_pem(file);
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        keys.push(jwk);
    }
    // jsonwebtoken cannot derive an Ed25519 JWK; the public key is the last
    // 32 bytes of the SubjectPublicKeyInfo in the PEM file.
    let pem = String::from_utf8(key_pem("ed_public.pem")).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap()
    };
    let x = b64(&der[der.len() - 32..]);
    keys.push(
        serde_json::from_value(
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "ed-1", "alg": "EdDSA"}),
        )
        .unwrap(),
    );
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
    path
}

/// The `[egress]` table of every test app that does not bring its own.
pub const LOOPBACK_EGRESS: &str = "[egress]\nallow_http = true\nallow_hosts = [\"127.0.0.1/32\"]\n";

impl TestApp {
    pub async fn new() -> Self {
        Self::with_server_settings("").await
    }

    /// A test app with extra `[server]` lines.
    pub async fn with_server_settings(extra: &str) -> Self {
        Self::with_config(extra, "").await
    }

    /// A test app with extra `[server]` lines and extra top-level tables
    /// (providers, models…). `env:FAKE_KEY` resolves to [`PLATFORM_KEY`].
    pub async fn with_config(extra: &str, tables: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let jwks = jwks(dir.path());
        let text = format!(
            r#"
[server]
data_dir = "{data}"
{limit}
{extra}
[operator]
token = "env:OP_TOKEN"
[[auth.jwt]]
issuer = "{HS_ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["HS256"]
secret = "env:HS_SECRET"
[[auth.jwt]]
issuer = "{RS_ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["RS256"]
public_key_file = "{rsa}"
tenant_claim = "org"
roles_claim = "groups"
[[auth.jwt]]
issuer = "{JWKS_ISSUER}"
audience = "{AUDIENCE}"
algorithms = ["ES256", "EdDSA", "RS256"]
jwks_file = "{jwks}"
{auth_limits}
{egress}
{tables}
"#,
            data = dir.path().join("data").display(),
            limit = if extra.contains("max_body_bytes") {
                String::new()
            } else {
                format!("max_body_bytes = {BODY_LIMIT}")
            },
            rsa = key_path("rsa_public.pem").display(),
            jwks = jwks.display(),
            // The isolation matrix presents one forged token to every
            // endpoint: its failures must not turn into 429s there.
            auth_limits = if tables.contains("failures_per_minute") {
                ""
            } else {
                "[auth]\nfailures_per_minute_per_credential = 1000000\nfailures_per_minute_per_peer = 1000000"
            },
            // The fakes (tools, token endpoints) listen on loopback over
            // plain http, which the egress guard refuses unless allowed.
            egress = if tables.contains("[egress]") {
                ""
            } else {
                LOOPBACK_EGRESS
            },
        );
        let env = |name: &str| match name {
            "OP_TOKEN" => Some(OPERATOR_TOKEN.to_owned()),
            "HS_SECRET" => Some(HS_SECRET.to_owned()),
            "METRICS_TOKEN" => Some(METRICS_TOKEN.to_owned()),
            "FAKE_KEY" => Some(PLATFORM_KEY.to_owned()),
            "ALERT_KEY" => Some(ALERT_KEY.to_owned()),
            _ => None,
        };
        let config = bulkhead_core::config::load(&text, &env).unwrap();
        let boot = boot::boot(&config, dir.path()).await.unwrap();
        Self {
            router: bulkhead_server::router(boot.state.clone()),
            state: boot.state,
            store: boot.store,
            dir,
        }
    }

    pub async fn request(&self, req: Request<Body>) -> Resp {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&b).unwrap())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.request(req).await
    }

    /// Deletes a tenant as the operator (asserting it answered 204).
    pub async fn delete_tenant(&self, id: &str) {
        let r = self
            .call(
                "DELETE",
                &format!("/admin/v1/tenants/{id}"),
                Some(OPERATOR_TOKEN),
                None,
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.body);
    }

    pub async fn create_tenant(&self, id: &str, region: &str) -> Value {
        let r = self
            .call(
                "POST",
                "/admin/v1/tenants",
                Some(OPERATOR_TOKEN),
                Some(json!({"id": id, "name": format!("{id} Inc"), "region": region})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    /// Creates a key; returns (key id, key).
    pub async fn api_key(&self, tenant: &str, roles: &[&str]) -> (String, String) {
        let r = self
            .call(
                "POST",
                &format!("/admin/v1/tenants/{tenant}/api-keys"),
                Some(OPERATOR_TOKEN),
                Some(json!({"roles": roles})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        (
            r.body["id"].as_str().unwrap().to_owned(),
            r.body["key"].as_str().unwrap().to_owned(),
        )
    }

    /// A tenant scope for `key`, the way the HTTP layer gets one.
    pub async fn scope(&self, key: &str) -> bulkhead_auth::TenantScope {
        self.state
            .auth
            .authenticate(Some(key), None, &bulkhead_core::RequestId::generate())
            .await
            .unwrap()
    }

    /// An operator scope, as the server's own timed tasks hold.
    pub fn operator_scope(&self) -> bulkhead_auth::OperatorScope {
        self.state
            .operator
            .verify(Some(OPERATOR_TOKEN), &bulkhead_core::RequestId::generate())
            .unwrap()
    }

    pub async fn audit(&self, token: &str) -> Vec<Value> {
        let r = self
            .call("GET", "/v1/audit?limit=1000", Some(token), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["events"].as_array().unwrap().clone()
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Standard claims for `tenant` from `issuer`, valid for an hour.
pub fn claims(issuer: &str, tenant: &str) -> Value {
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": "user-1",
        "exp": now() + 3600, "iat": now(), "tenant_id": tenant, "roles": ["member"],
    })
}

pub fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn hs_token(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
        None,
        claims,
    )
}

pub fn rs_token(claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&key_pem("rsa_private.pem")).unwrap(),
        None,
        claims,
    )
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with an arbitrary header and payload and the given signature part.
pub fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    )
}

/// A `[[tools]]` table: `notify`, an http tool that sends `text` to the
/// stand-in's `/echo/notify` (used by the limits and policies tests).
pub fn notify_tool(saas: &bulkhead_testkit::SaasStandIn) -> String {
    format!(
        r#"
[[tools]]
name = "notify"
kind = "http"
region = "eu"
url = "{}/echo/notify?text={{{{ text }}}}"
allowed_hosts = ["{}"]
[tools.parameters]
type = "object"
required = ["text"]
properties.text = {{ type = "string" }}
"#,
        saas.base_url(),
        saas.addr()
    )
}

/// Asserts that a webhook the stand-in received carries a
/// `Bulkhead-Signature` that verifies with [`ALERT_KEY`] over `"<t>.<body>"`.
pub fn assert_signed(req: &bulkhead_testkit::SaasRequest, body: &str) {
    let sig = req.header("bulkhead-signature").unwrap();
    let t: i64 = sig
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap();
    let key = bulkhead_core::SecretString::new(ALERT_KEY.into());
    assert_eq!(
        sig,
        bulkhead_server::alerts::signature(&key, t, body.as_bytes())
    );
}

/// Reads an SSE response frame by frame until `stop` says so.
pub async fn sse_events(app: &TestApp, key: &str, agent: &str, body: Value) -> axum::body::Body {
    let req = Request::post(format!("/v1/agents/{agent}/runs"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    res.into_body()
}

pub async fn next_event(body: &mut Body) -> Option<(String, Value)> {
    let frame = body.frame().await?.unwrap();
    let bytes = frame.into_data().unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut name = String::new();
    let mut data = Value::Null;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_owned();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data = serde_json::from_str(d).unwrap();
        }
    }
    Some((name, data))
}

/// The secret canary planted in a tenant's partition (read from its file).
pub fn canary_text(app: &TestApp, uid: bulkhead_core::TenantUid) -> String {
    let db = app
        .dir
        .path()
        .join("data/tenants")
        .join(uid.to_string())
        .join("tenant.db");
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT text FROM chunks WHERE collection = '_canary'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}
