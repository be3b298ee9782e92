//! Test doubles for outside services, speaking their real wire formats.
//!
//! [`FakeProvider`] is a scriptable fake model provider: real HTTP/1.1 on a
//! loopback socket, answering
//!
//! - OpenAI Chat Completions: `POST /v1/chat/completions` (JSON, or SSE
//!   `chat.completion.chunk`s ending in `data: [DONE]` with `stream: true`),
//!   `GET /v1/models` and `POST /v1/embeddings`;
//! - Anthropic Messages: `POST /v1/messages` (JSON, or SSE with `event:`
//!   lines from `message_start` to `message_stop` with `stream: true`).
//!
//! Both formats share one FIFO of scripted [`Reply`]s; when it is empty the
//! answer is a deterministic echo of the last user message. Every request
//! is recorded ([`FakeProvider::requests`]).
//!
//! ```no_run
//! # async fn demo() {
//! use bulkhead_testkit::{FakeProvider, Reply};
//!
//! let fake = FakeProvider::start().await;
//! fake.push(Reply::error(429, "slow down").with_retry_after(2));
//! fake.push(Reply::text("hello").with_usage((12, 1, 0)));
//! // OpenAI clients use `{base_url}/v1`, Anthropic clients `{base_url}`.
//! let _openai_base = format!("{}/v1", fake.base_url());
//! # }
//! ```
//!
//! [`SaasStandIn`] stands in for the SaaS APIs agent tools call, on one
//! loopback server with every request recorded ([`SaasStandIn::requests`]:
//! method, raw path and query, lower-cased headers, raw body):
//!
//! - Slack `POST /api/chat.postMessage` (JSON `{channel, text}`, a non-blank
//!   `Authorization: Bearer` token): always HTTP 200, `{"ok": true,
//!   "channel", "ts", "message"}` or `{"ok": false, "error"}` with
//!   `not_authed` (no or a non-Bearer `Authorization`), `invalid_json`,
//!   `channel_not_found` (no channel, or channel `C_NOT_FOUND`), `no_text`;
//! - Jira `POST /rest/api/2/issue` (`{"fields": {"project": {"key"},
//!   "summary", "issuetype": {"name"}, ...}}`, Bearer or Basic): 201
//!   `{"id": "10001", "key": "PROJ-1", "self"}` with ids counting globally
//!   and keys per project; 401 without credentials, 400 with Jira's
//!   `{"errorMessages", "errors"}` for missing fields;
//! - GitHub `POST /repos/{owner}/{repo}/issues` (`{title, body?}`, Bearer or
//!   `token`, a `User-Agent`): 201 `{"number", "html_url", ...}` numbered
//!   per repository; 401 without credentials, 403 without a `User-Agent`,
//!   422 without a title;
//! - `GET|POST /echo/...`: 200 with `{"method", "path", "query", "body"}`
//!   (path and query as received, still percent-encoded);
//! - `GET /big?bytes=N`: N bytes of `x` (add `&chunked=1` to send them
//!   without a `Content-Length`);
//! - `GET /status/{code}` (any method, any path after it): that status,
//!   the body echoing the `Authorization` header (for testing that a
//!   caller keeps credentials out of its errors);
//! - `/status/{code}/as-{encoding}` (any method, any path after it): that
//!   status, the body echoing the credential encoded (base64, URL, JSON
//!   escapes, hex, reversed, split…), for testing redaction;
//! - `GET /hang`: never answers; the connection is closed when the
//!   stand-in is dropped.
//!
//! ```no_run
//! # async fn demo() {
//! use bulkhead_testkit::SaasStandIn;
//!
//! let saas = SaasStandIn::start().await;
//! // Point a Slack tool's base_url at saas.base_url(), call it, then:
//! for r in saas.requests() {
//!     println!("{} {} {:?} {:?}", r.method, r.path, r.header("authorization"), r.json());
//! }
//! # }
//! ```
//!
//! [`hostile::HostileProvider`] is a model provider that misbehaves on
//! purpose (silent streams, endless or oversized answers, no `usage`) and
//! counts what it sent, for the gateway's hardening tests.
//!
//! [`wait::eventually`] and [`wait::wait_until`] are how tests wait for a
//! condition (never a fixed sleep).
//!
//! The crate is for tests, the `bulkhead demo` command and benchmarks;
//! production code never depends on it. Serving is cheap (no logging, no
//! sleeps unless scripted) so that a load test measures the code under test,
//! not the fake.

mod anthropic;
mod conversation;
pub mod hostile;
mod openai;
mod provider;
mod saas;
mod script;
mod server;
pub mod wait;

pub use openai::{DEFAULT_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_DIMENSIONS, MODELS};
pub use provider::{FakeProvider, RecordedRequest, Responder};
pub use saas::{SaasRequest, SaasStandIn};
pub use script::{Reply, ToolCall, Usage};
