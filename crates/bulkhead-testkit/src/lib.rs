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
//! The crate is for tests, the `bulkhead demo` command and benchmarks;
//! production code never depends on it. Serving is cheap (no logging, no
//! sleeps unless scripted) so that a load test measures the code under test,
//! not the fake.

mod anthropic;
mod conversation;
mod openai;
mod provider;
mod script;
mod server;

pub use openai::{DEFAULT_EMBEDDING_DIMENSIONS, MAX_EMBEDDING_DIMENSIONS, MODELS};
pub use provider::{FakeProvider, RecordedRequest};
pub use script::{Reply, ToolCall, Usage};
