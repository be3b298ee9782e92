//! Request recording and counting, concurrent serving, and shutdown on
//! drop.

use bulkhead_testkit::FakeProvider;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::{anthropic, client, json_of, openai};

#[tokio::test]
async fn every_request_is_recorded_with_lower_case_headers() {
    let fake = FakeProvider::start().await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    openai(&fake, "/chat/completions", &body)
        .header("X-Trace-Id", "abc")
        .send()
        .await
        .unwrap();
    // Rejected requests are recorded too (no key, body not JSON).
    client()
        .post(format!("{}/v1/messages", fake.base_url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    client()
        .get(format!("{}/v1/models?limit=5", fake.base_url()))
        .send()
        .await
        .unwrap();

    let recorded = fake.requests();
    assert_eq!(recorded.len(), 3);
    let first = &recorded[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.body, body);
    assert_eq!(first.header("x-trace-id"), Some("abc"));
    assert_eq!(first.header("Authorization"), Some("Bearer sk-test"));
    assert!(
        first.headers.iter().all(|(n, _)| *n == n.to_lowercase()),
        "{:?}",
        first.headers
    );
    assert!(
        first
            .headers
            .contains(&("x-trace-id".to_owned(), "abc".to_owned()))
    );
    assert_eq!(recorded[1].path, "/v1/messages");
    assert_eq!(recorded[1].body, Value::Null);
    assert_eq!(recorded[1].header("x-api-key"), None);
    assert_eq!(recorded[2].method, "GET");
    assert_eq!(recorded[2].path, "/v1/models");

    fake.clear();
    assert!(fake.requests().is_empty());
    assert_eq!(fake.request_count(), 3);

    fake.set_recording(false);
    anthropic(
        &fake,
        &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .send()
    .await
    .unwrap();
    assert!(fake.requests().is_empty());
    assert_eq!(fake.request_count(), 4);
    fake.set_recording(true);
    openai(&fake, "/chat/completions", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_answer() {
    let fake = FakeProvider::start().await;
    fake.set_recording(false);
    let client = client();
    let base = fake.base_url();
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let client = client.clone();
        let url = format!("{base}/v1/chat/completions");
        tasks.spawn(async move {
            let body =
                json!({"model": "m", "messages": [{"role": "user", "content": format!("n{i}")}]});
            let res = client
                .post(url)
                .bearer_auth("k")
                .json(&body)
                .send()
                .await
                .unwrap();
            let (status, body) = json_of(res).await;
            assert_eq!(status, 200);
            assert_eq!(
                body["choices"][0]["message"]["content"],
                format!("echo: n{i}")
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(fake.request_count(), 200);
}

#[tokio::test]
async fn dropping_the_provider_closes_its_port() {
    let fake = FakeProvider::start().await;
    let addr = fake.addr();
    assert_eq!(fake.base_url(), format!("http://127.0.0.1:{}", addr.port()));
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let (status, _) = json_of(
        openai(&fake, "/chat/completions", &body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    drop(fake);
    // The accept task is aborted on drop and goes away at its next poll: a
    // bounded wait for the refusal, no sleep.
    let mut refused = false;
    for _ in 0..1000 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "{addr} still accepts connections");
}
