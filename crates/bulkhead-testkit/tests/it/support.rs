//! Shared test helpers: an HTTP client, request builders with each
//! format's credentials, and an SSE reader that reports how a stream ended.

use bulkhead_testkit::FakeProvider;
use serde_json::Value;

/// A reqwest client (built without a default TLS provider: install ring,
/// as the workspace does; plain http:// never uses it).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A POST to an OpenAI endpoint (`path` under `/v1`) with a bearer key.
pub fn openai(fake: &FakeProvider, path: &str, body: &Value) -> reqwest::RequestBuilder {
    client()
        .post(format!("{}/v1{path}", fake.base_url()))
        .bearer_auth("sk-test")
        .json(body)
}

/// A POST to `/v1/messages` with the Anthropic headers.
pub fn anthropic(fake: &FakeProvider, body: &Value) -> reqwest::RequestBuilder {
    client()
        .post(format!("{}/v1/messages", fake.base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    /// The data as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// Splits an event stream on blank lines; the text must end with one (no
/// half event).
pub fn parse_sse(text: &str) -> Vec<Event> {
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(blocks.last(), Some(&""), "stream ends mid-event: {text:?}");
    blocks[..blocks.len() - 1]
        .iter()
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v);
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            Event {
                event,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// How a response body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The body was complete.
    Complete,
    /// The connection broke off mid-body.
    Broken,
}

/// Reads a streaming response chunk by chunk: its events and how it ended.
pub async fn read_events(mut res: reqwest::Response) -> (Vec<Event>, End) {
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut bytes = Vec::new();
    let end = loop {
        match res.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break End::Complete,
            Err(_) => break End::Broken,
        }
    };
    (parse_sse(std::str::from_utf8(&bytes).unwrap()), end)
}

/// A JSON response's status and body.
pub async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    (status, res.json().await.unwrap())
}
