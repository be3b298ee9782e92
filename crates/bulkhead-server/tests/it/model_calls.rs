//! Model calls against a hostile provider: a tenant's stalled or endless
//! streams do not starve another tenant of the provider's slots, idle
//! streams are cut and billed, estimates cover `n` so concurrent calls
//! cannot overshoot a budget, answers without `usage` are billed by a
//! local count, and oversized answers are refused without being held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_testkit::hostile::{Hostile, HostileProvider};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::support::*;

/// One hostile provider (`max_concurrency` slots, `provider` extra keys)
/// behind the model `m` ($1 and $10 per million tokens), and `quotas`.
async fn app(fake: &HostileProvider, provider: &str, quotas: &str) -> Arc<TestApp> {
    let tables = format!(
        r#"
[[providers]]
name = "hostile"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:FAKE_KEY"
max_retries = 0
{provider}
[[models]]
name = "m"
provider = "hostile"
upstream = "gpt-hostile"
price_input_per_mtok = "1"
price_output_per_mtok = "10"
{quotas}
"#,
        base = fake.base_url()
    );
    Arc::new(TestApp::with_config("", &tables).await)
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "max_tokens": 10,
           "messages": [{"role": "user", "content": "hi"}]})
}

/// Serves the app on a loopback socket (the attacks here are a client's
/// behaviour on a real connection).
/// The plain calls of the starvation tests: answered at once, counted.
fn quick_answer() -> Hostile {
    Hostile::Counted {
        text: "ok".into(),
        n: 1,
        input: 5,
        output: 1,
    }
}

/// Tenants `a` and `b` with a member key each, and the app on a socket.
async fn two_members(app: &TestApp) -> (String, String, std::net::SocketAddr) {
    app.create_tenant("a", "eu").await;
    app.create_tenant("b", "eu").await;
    let (_, a) = app.api_key("a", &["member"]).await;
    let (_, b) = app.api_key("b", &["member"]).await;
    (a, b, listen(app).await)
}

async fn listen(app: &TestApp) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = app.state.clone();
    tokio::spawn(bulkhead_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}

/// Sends a chat request on a raw connection and reads only the response
/// head: the client then stops reading (the connection stays open).
async fn open_and_stop_reading(addr: std::net::SocketAddr, key: &str, body: &Value) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: bulkhead\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    s
}

async fn read_status(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// `"0.048000000"` (dollars, nine decimals) in nano-dollars.
fn nanos(usd: &str) -> u64 {
    let (whole, frac) = usd.split_once('.').unwrap();
    whole.parse::<u64>().unwrap() * 1_000_000_000 + frac.parse::<u64>().unwrap()
}

async fn model_events(app: &TestApp, key: &str) -> Vec<Value> {
    app.audit(key)
        .await
        .into_iter()
        .filter(|e| e["action"] == "model.call")
        .collect()
}

/// Polls `cond` every few milliseconds; fails past a bound that only keeps
/// a broken build from hanging.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, cond: impl FnMut() -> F) {
    bulkhead_testkit::wait::eventually(what, Duration::from_secs(60), cond).await;
}

#[tokio::test]
async fn streams_a_tenant_stopped_reading_hold_no_slot_and_are_cut_and_billed_when_idle() {
    // Streams send one chunk and go silent; plain calls answer at once.
    let fake = HostileProvider::start(|req| {
        if req["stream"] == true {
            Hostile::Stall { chunks: 1 }
        } else {
            quick_answer()
        }
    })
    .await;
    let app = app(
        &fake,
        "timeout_s = 600\nmax_concurrency = 2\nstream_idle_timeout_s = 6",
        "",
    )
    .await;
    let (a, b, addr) = two_members(&app).await;

    // Twice the provider's slots, none read past the response head.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut s = open_and_stop_reading(addr, &a, &chat(true)).await;
        assert_eq!(read_status(&mut s).await, "HTTP/1.1 200");
        streams.push(s);
    }
    // All four reached the provider: a silent stream gives its slot up.
    tokio::time::timeout(Duration::from_secs(30), fake.wait_chunks(4))
        .await
        .expect("a's streams beyond max_concurrency never got a slot");

    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        app.call("POST", "/v1/chat/completions", Some(&b), Some(chat(false))),
    )
    .await
    .expect("b's call waited behind a's stalled streams");
    assert_eq!(r.status, 200, "{}", r.body);
    // Before the idle limit cut any of a's streams.
    assert_eq!(
        fake.abandoned(),
        0,
        "b got through only because a's streams were cut"
    );
    assert!(model_events(&app, &a).await.is_empty());
    eprintln!(
        "b's call behind a's stalled streams: {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    // Past the idle limit each is cut, with its usage row and audit event.
    tokio::time::timeout(Duration::from_secs(60), fake.wait_abandoned(4))
        .await
        .expect("a's idle streams were never cut");
    eventually("a's four usage rows", || async {
        app.call("GET", "/v1/usage", Some(&a), None).await.body["total"]["requests"] == 4
    })
    .await;
    let events = model_events(&app, &a).await;
    assert_eq!(events.len(), 4);
    for e in &events {
        assert_eq!(e["details"]["status"], "upstream_timeout", "{e}");
        assert_eq!(e["details"]["stream"], true);
        assert_ne!(
            e["details"]["output_tokens"], 0,
            "the chunk it sent is billed: {e}"
        );
    }
    drop(streams);
}

#[tokio::test]
async fn a_tenant_over_its_share_of_a_saturated_provider_yields_slots_while_its_streams_flow() {
    // Streams never end (a chunk every 20 ms); plain calls answer at once.
    let fake = HostileProvider::start(|req| {
        if req["stream"] == true {
            Hostile::Trickle {
                every: Duration::from_millis(20),
            }
        } else {
            quick_answer()
        }
    })
    .await;
    let app = app(
        &fake,
        "timeout_s = 600\nmax_concurrency = 2\nstream_idle_timeout_s = 3",
        "",
    )
    .await;
    let (a, b, addr) = two_members(&app).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut s = open_and_stop_reading(addr, &a, &chat(true)).await;
        assert_eq!(read_status(&mut s).await, "HTTP/1.1 200");
        streams.push(s);
    }
    // Both slots are a's, and its streams move bytes all the time.
    tokio::time::timeout(Duration::from_secs(30), fake.wait_chunks(10))
        .await
        .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        app.call("POST", "/v1/chat/completions", Some(&b), Some(chat(false))),
    )
    .await
    .expect("b's call waited behind a's endless streams");
    eprintln!(
        "b's call behind a's endless streams: {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // a's streams were never cut: they only queued again behind b.
    assert_eq!(fake.abandoned(), 0);
    drop(streams);
    tokio::time::timeout(Duration::from_secs(60), fake.wait_abandoned(2))
        .await
        .unwrap();
    eventually("a's two usage rows", || async {
        model_events(&app, &a).await.len() == 2
    })
    .await;
    for e in model_events(&app, &a).await {
        assert_eq!(e["details"]["status"], "client_disconnected", "{e}");
        // The trickle carries no usage: billed by the local count.
        assert_eq!(e["details"]["usage_estimated"], true, "{e}");
    }
}

#[tokio::test]
async fn concurrent_calls_with_n_at_max_length_spend_no_more_than_the_budget() {
    // Each call asks for 4 choices of at most 100 tokens and gets all 400:
    // $0.004 of output. The budget has room for twelve.
    let fake = HostileProvider::start(|_| Hostile::Counted {
        text: "x".into(),
        n: 4,
        input: 10,
        output: 400,
    })
    .await;
    let app = app(
        &fake,
        "timeout_s = 600",
        "[quotas.default]\ndaily_budget_usd = \"0.05\"",
    )
    .await;
    app.create_tenant("a", "eu").await;
    let (_, a) = app.api_key("a", &["member"]).await;
    fake.hold_answers();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut calls = Vec::new();
    for _ in 0..30 {
        let (app, a, refused) = (app.clone(), a.clone(), refused.clone());
        calls.push(tokio::spawn(async move {
            let body = json!({"model": "m", "n": 4, "max_tokens": 100,
                              "messages": [{"role": "user", "content": "hi"}]});
            let r = app
                .call("POST", "/v1/chat/completions", Some(&a), Some(body))
                .await;
            if r.status == 429 {
                assert_eq!(r.body["error"]["code"], "budget_exceeded", "{}", r.body);
                refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            } else {
                assert_eq!(r.status, 200, "{}", r.body);
            }
        }));
    }
    // Every call is in flight at the provider or refused: all at once.
    eventually("every call admitted or refused", || async {
        fake.requests() + refused.load(std::sync::atomic::Ordering::SeqCst) == 30
    })
    .await;
    fake.release();
    for c in calls {
        c.await.unwrap();
    }
    let usage = app.call("GET", "/v1/usage", Some(&a), None).await.body;
    let spent = nanos(usage["total"]["cost_usd"].as_str().unwrap());
    // The provider answered exactly the estimate's output (and less input
    // than estimated): one call's estimate error is nothing here.
    assert!(
        spent <= 50_000_000,
        "spent {spent} nano-dollars of a $0.05 budget: {usage}"
    );
    assert!(
        fake.requests() >= 10,
        "the budget's room was used: {}",
        fake.requests()
    );
}

#[tokio::test]
async fn answers_without_usage_are_billed_by_a_local_count_flagged_and_trip_the_token_limit() {
    let text = "word ".repeat(400); // 2,000 bytes: about 500 tokens
    let fake = HostileProvider::start(move |_| Hostile::NoUsage { text: text.clone() }).await;
    let app = app(
        &fake,
        "timeout_s = 600",
        "[quotas.default]\ntokens_per_minute = 300",
    )
    .await;
    for (tenant, stream) in [("plain", false), ("streamer", true)] {
        app.create_tenant(tenant, "eu").await;
        let (_, key) = app.api_key(tenant, &["member"]).await;
        // The estimate (a short prompt, 10 output tokens) fits the limit.
        let r = if stream {
            let req = axum::http::Request::post("/v1/chat/completions")
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(chat(true).to_string()))
                .unwrap();
            let res = app.router.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("[DONE]"));
            200
        } else {
            app.call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(chat(false)),
            )
            .await
            .status
        };
        assert_eq!(r, 200);
        let events = model_events(&app, &key).await;
        let d = &events[0]["details"];
        assert_eq!(d["usage_estimated"], true, "{d}");
        assert!(d["output_tokens"].as_u64().unwrap() >= 400, "{d}");
        assert_ne!(d["cost_usd"], "0.000000000", "{d}");
        // What it was billed counts: the next call does not fit the minute.
        let r = app
            .call(
                "POST",
                "/v1/chat/completions",
                Some(&key),
                Some(chat(false)),
            )
            .await;
        assert_eq!(r.status, 429, "{tenant}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "rate_limited");
    }
}

#[tokio::test]
async fn answers_past_max_response_bytes_are_refused_unread_and_billed() {
    // 100 MB answers, generated as they are sent.
    let fake = HostileProvider::start(|_| Hostile::Huge {
        bytes: 100 * 1024 * 1024,
    })
    .await;
    let app = app(&fake, "timeout_s = 600\nmax_response_bytes = 1048576", "").await;
    app.create_tenant("a", "eu").await;
    let (_, a) = app.api_key("a", &["member"]).await;

    let r = app
        .call("POST", "/v1/chat/completions", Some(&a), Some(chat(false)))
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "upstream_too_large");
    assert_eq!(r.body["error"]["type"], "upstream_error");
    tokio::time::timeout(Duration::from_secs(30), fake.wait_abandoned(1))
        .await
        .expect("the oversized answer was read to its end");

    let req = axum::http::Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {a}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(chat(true).to_string()))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("\"code\":\"upstream_too_large\""),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        body.len() < 2 * 1024 * 1024,
        "the client got {} bytes",
        body.len()
    );
    tokio::time::timeout(Duration::from_secs(30), fake.wait_abandoned(2))
        .await
        .expect("the oversized stream was read to its end");
    // Both stopped near the cap, not at 100 MB (socket buffers aside).
    assert!(
        fake.bytes_sent() < 40 * 1024 * 1024,
        "the fake sent {} bytes",
        fake.bytes_sent()
    );
    let events = model_events(&app, &a).await;
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e["details"]["status"], "upstream_too_large", "{e}");
        assert_eq!(e["details"]["usage_estimated"], true, "{e}");
        assert_ne!(
            e["details"]["output_tokens"], 0,
            "what was sent is billed: {e}"
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_a_flooding_stream_is_cut_when_idle_and_billed() {
    let fake = HostileProvider::start(|_| Hostile::Huge {
        bytes: 100 * 1024 * 1024,
    })
    .await;
    let app = app(
        &fake,
        "timeout_s = 600\nstream_idle_timeout_s = 2\nmax_response_bytes = 67108864",
        "",
    )
    .await;
    app.create_tenant("a", "eu").await;
    let (_, a) = app.api_key("a", &["member"]).await;
    let req = axum::http::Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {a}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(chat(true).to_string()))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    // The body is held, never read: the gateway's buffer fills.
    let held = res.into_body();
    eventually("the stalled stream's usage row", || async {
        model_events(&app, &a).await.len() == 1
    })
    .await;
    let e = &model_events(&app, &a).await[0];
    assert_eq!(e["details"]["status"], "client_stalled", "{e}");
    assert_ne!(e["details"]["output_tokens"], 0, "{e}");
    drop(held);
}
