//! Server-sent event answers, one way for every route that streams (agent
//! runs, chat completions): the content type, no caching, and the event
//! framing, so two streams never differ in how they are sent.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::{Stream, StreamExt};

/// One server-sent event, as the OpenAPI document describes a
/// `text/event-stream` answer: each event has a name (`event:`) and one
/// line of JSON (`data:`).
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "only its schema is used: events are written as text"
)]
pub struct SseEvent {
    /// The event's name (`run`, `response.created`, …); chat completion
    /// chunks have none.
    pub event: Option<String>,
    /// The event's JSON, as text.
    pub data: String,
}

/// A `text/event-stream` answer sending `events` (each already framed) as
/// they come.
pub fn response(events: impl Stream<Item = Bytes> + Send + 'static) -> Response {
    let mut res = Response::new(Body::from_stream(events.map(Ok::<_, Infallible>)));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// One named event: `event: NAME`, then `data: DATA` (one line of JSON).
pub fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}
