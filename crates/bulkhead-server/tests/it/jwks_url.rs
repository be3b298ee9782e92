//! `[[auth.jwt]] jwks_url`: an issuer's keys fetched from a local JWKS
//! server, over real HTTP on sockets. Rotation needs no restart (a new
//! `kid` causes one rate-limited refetch), removed keys go at the next
//! refresh, and a failing fetch keeps the last good keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use crate::contract::{Served, serve};
use crate::support::{OPERATOR_TOKEN, TestApp, claims, key_pem, sign};

const ISSUER: &str = "https://rotating.test";

/// What the fake identity provider serves now.
struct Answer {
    status: StatusCode,
    body: String,
    cache_control: Option<String>,
}

#[derive(Clone)]
struct FakeJwks {
    answer: Arc<Mutex<Answer>>,
    fetches: Arc<AtomicUsize>,
    url: String,
}

async fn jwks(State(fake): State<FakeJwks>) -> impl IntoResponse {
    fake.fetches.fetch_add(1, Ordering::SeqCst);
    let a = fake.answer.lock().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    if let Some(cc) = &a.cache_control {
        headers.insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    (a.status, headers, a.body.clone())
}

impl FakeJwks {
    async fn start(keys: &[(&str, &str)], cache_control: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeJwks {
            answer: Arc::new(Mutex::new(Answer {
                status: StatusCode::OK,
                body: set(keys),
                cache_control: cache_control.map(str::to_owned),
            })),
            fetches: Arc::new(AtomicUsize::new(0)),
            url: format!(
                "http://{}/.well-known/jwks.json",
                listener.local_addr().unwrap()
            ),
        };
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(jwks))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn serve_keys(&self, keys: &[(&str, &str)]) {
        let mut a = self.answer.lock().unwrap();
        a.status = StatusCode::OK;
        a.body = set(keys);
    }

    fn serve_raw(&self, status: StatusCode, body: &str) {
        let mut a = self.answer.lock().unwrap();
        a.status = status;
        a.body = body.to_owned();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A JWKS document of the public halves of `(private PEM file, kid)`.
fn set(keys: &[(&str, &str)]) -> String {
    let keys: Vec<Jwk> = keys
        .iter()
        .map(|(file, kid)| {
            let key = EncodingKey::from_rsa_pem(&key_pem(file)).unwrap();
            let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
            jwk.common.key_id = Some((*kid).into());
            jwk
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn token(file: &str, kid: &str, tenant: &str) -> String {
    let key = EncodingKey::from_rsa_pem(&key_pem(file)).unwrap();
    sign(Algorithm::RS256, &key, Some(kid), &claims(ISSUER, tenant))
}

fn issuer(url: &str, extra: &str) -> String {
    format!(
        r#"
[[auth.jwt]]
issuer = "{ISSUER}"
audience = "bulkhead"
algorithms = ["RS256"]
jwks_url = "{url}"
{extra}
"#
    )
}

async fn app_with(fake: &FakeJwks, extra: &str) -> (TestApp, Served) {
    let app = TestApp::with_config("", &issuer(&fake.url, extra)).await;
    let served = serve(&app).await;
    let r = served
        .call(
            "POST",
            "/admin/v1/tenants",
            OPERATOR_TOKEN,
            Some(json!({"id": "acme", "name": "Acme Corp", "region": "eu"})),
        )
        .await;
    assert_eq!(r.0, 201, "{}", r.1);
    (app, served)
}

async fn me(served: &Served, token: &str) -> u16 {
    served.call("GET", "/v1/me", token, None).await.0
}

/// Waits for `cond`, for at most 15 s.
async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    bulkhead_testkit::wait::eventually(what, Duration::from_secs(15), cond).await;
}

#[tokio::test]
async fn a_key_rotated_in_is_accepted_without_restart_and_unknown_kids_refetch_at_most_once_per_interval()
 {
    let fake = FakeJwks::start(&[("rsa_private.pem", "k1")], None).await;
    let (_app, served) = app_with(&fake, "").await;
    assert_eq!(fake.fetches(), 1, "fetched once at boot");
    assert_eq!(
        me(&served, &token("rsa_private.pem", "k1", "acme")).await,
        200
    );

    // The identity provider rotates a new key in; no restart.
    fake.serve_keys(&[("rsa_private.pem", "k1"), ("rsa2_private.pem", "k2")]);
    assert_eq!(
        me(&served, &token("rsa2_private.pem", "k2", "acme")).await,
        200
    );
    assert_eq!(fake.fetches(), 2, "one refetch for the unknown kid");

    // Forged kids within the interval (30 s by default) cause no fetch.
    for i in 0..5 {
        let forged = token("rsa2_private.pem", &format!("forged-{i}"), "acme");
        assert_eq!(me(&served, &forged).await, 401);
    }
    assert_eq!(fake.fetches(), 2);
    // Known keys still verify, without any fetch.
    assert_eq!(
        me(&served, &token("rsa_private.pem", "k1", "acme")).await,
        200
    );
    assert_eq!(fake.fetches(), 2);
}

#[tokio::test]
async fn a_removed_key_is_refused_after_the_refresh_and_a_failing_fetch_keeps_the_last_good_keys() {
    let fake = FakeJwks::start(
        &[("rsa_private.pem", "old"), ("rsa2_private.pem", "new")],
        Some("public, max-age=1"),
    )
    .await;
    // max-age=1 inside bounds of 1 s: the document is refreshed every second.
    let (_app, served) = app_with(&fake, "jwks_min_refresh_s = 1\njwks_max_refresh_s = 1").await;
    let old = token("rsa_private.pem", "old", "acme");
    let new = token("rsa2_private.pem", "new", "acme");
    assert_eq!(me(&served, &old).await, 200);
    assert_eq!(me(&served, &new).await, 200);

    fake.serve_keys(&[("rsa2_private.pem", "new")]);
    eventually("the old key is refused after a refresh", || async {
        me(&served, &old).await == 401
    })
    .await;
    assert_eq!(me(&served, &new).await, 200);

    // The provider fails, then serves garbage and an empty set: the last
    // good keys stay in use through all of it.
    for (status, body) in [
        (StatusCode::INTERNAL_SERVER_ERROR, "oops"),
        (StatusCode::OK, "not json"),
        (StatusCode::OK, r#"{"keys": []}"#),
    ] {
        fake.serve_raw(status, body);
        let seen = fake.fetches();
        eventually("two more fetches", || async { fake.fetches() >= seen + 2 }).await;
        assert_eq!(me(&served, &new).await, 200, "after {status} {body:?}");
        assert_eq!(me(&served, &old).await, 401);
    }
}

#[tokio::test]
async fn a_first_fetch_that_fails_is_a_boot_error_naming_the_key() {
    let fake = FakeJwks::start(&[("rsa_private.pem", "k1")], None).await;
    fake.serve_raw(StatusCode::NOT_FOUND, "");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n{}",
        dir.path().join("data").display(),
        issuer(&fake.url, "")
    );
    let config = bulkhead_core::config::load(&text, &|_: &str| None).unwrap();
    let err = match bulkhead_server::boot::boot(&config, dir.path()).await {
        Ok(_) => panic!("booted without the issuer's keys"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("auth.jwt[0].jwks_url: "), "{err}");
    assert!(err.contains("404"), "{err}");
    // `check` validates offline: the configuration itself is fine.
    bulkhead_server::boot::jwt_verifier(&config, dir.path()).unwrap();
}

#[tokio::test]
async fn a_plain_http_jwks_url_off_loopback_is_refused_by_the_loader() {
    let text = issuer("http://idp.example.com/jwks", "");
    let errors = bulkhead_core::config::load(&text, &|_: &str| None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        errors.contains("auth.jwt[0].jwks_url: \"http://idp.example.com/jwks\": http:// is allowed only to a loopback host"),
        "{errors}"
    );
}
