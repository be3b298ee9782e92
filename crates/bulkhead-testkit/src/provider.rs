//! The [`FakeProvider`] handle: its shared state (script, recorded
//! requests, counters), start and shutdown.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::script::Reply;

/// One request the fake received, recorded before it was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`…
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// Headers in arrival order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON; `Null` when it was empty or not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// State shared by the handle and the connections.
/// Decides the reply to a generation request from its body (the request
/// as sent: OpenAI's or Anthropic's JSON), when the script is empty.
/// `None` falls back to the default answer. Unlike the script's order, a
/// responder answers concurrent conversations (several tenants' agents at
/// once) each by its own content.
pub type Responder = Arc<dyn Fn(&Value) -> Option<Reply> + Send + Sync>;

#[derive(Default)]
pub(crate) struct State {
    script: Mutex<VecDeque<Reply>>,
    responder: Mutex<Option<Responder>>,
    recorded: Mutex<Vec<RecordedRequest>>,
    /// Off: requests are counted but not recorded (long load tests).
    not_recording: AtomicBool,
    received: AtomicU64,
    /// Numbers the generation answers (`chatcmpl-fake1`, `msg_fake1`…).
    answers: AtomicU64,
}

/// A poisoned lock only means a test panicked while holding it; the data
/// (a queue, a list) is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    pub fn next_reply(&self, request: &Value) -> Option<Reply> {
        if let Some(reply) = lock(&self.script).pop_front() {
            return Some(reply);
        }
        let responder = lock(&self.responder).clone();
        responder.and_then(|r| r(request))
    }

    pub fn next_answer_number(&self) -> u64 {
        self.answers.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn count_request(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn recording(&self) -> bool {
        !self.not_recording.load(Ordering::Relaxed)
    }

    pub fn record(&self, request: RecordedRequest) {
        lock(&self.recorded).push(request);
    }
}

/// A scriptable fake model provider on `127.0.0.1`, serving until dropped.
///
/// See the [crate documentation](crate) for the endpoints. Every OpenAI
/// endpoint needs an `Authorization: Bearer <any non-empty key>` header;
/// `/v1/messages` needs `x-api-key` (any non-empty value) and
/// `anthropic-version`, as the real services do.
pub struct FakeProvider {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeProvider {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound; use [`FakeProvider::try_start`]
    /// to handle that.
    pub async fn start() -> FakeProvider {
        match Self::try_start().await {
            Ok(fake) => fake,
            Err(e) => panic!("bulkhead-testkit: cannot bind a loopback port: {e}"),
        }
    }

    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn try_start() -> std::io::Result<FakeProvider> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let server = tokio::spawn(crate::server::accept_loop(listener, state.clone()));
        Ok(FakeProvider {
            addr,
            state,
            server,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL of Anthropic clients; OpenAI
    /// clients use `{base_url}/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends `reply` to the script (first in, first out).
    pub fn push(&self, reply: Reply) {
        lock(&self.state.script).push_back(reply);
    }

    /// Appends several replies, in order.
    pub fn push_all(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.script).extend(replies);
    }

    /// Answers generation requests by their content once the script is
    /// empty (see [`Responder`]).
    pub fn set_responder(
        &self,
        responder: impl Fn(&Value) -> Option<Reply> + Send + Sync + 'static,
    ) {
        *lock(&self.state.responder) = Some(Arc::new(responder));
    }

    /// Removes the responder.
    pub fn clear_responder(&self) {
        *lock(&self.state.responder) = None;
    }

    /// Replies scripted and not yet consumed.
    pub fn pending_replies(&self) -> usize {
        lock(&self.state.script).len()
    }

    /// Drops the replies not yet consumed.
    pub fn clear_replies(&self) {
        lock(&self.state.script).clear();
    }

    /// The requests recorded so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorded).clone()
    }

    /// Forgets the recorded requests (not the count, nor the script).
    pub fn clear(&self) {
        lock(&self.state.recorded).clear();
    }

    /// Requests received since the start, recorded or not, valid or not.
    pub fn request_count(&self) -> u64 {
        self.state.received.load(Ordering::Relaxed)
    }

    /// Turns recording on (the default) or off. Off, requests are only
    /// counted, so that a long load test does not accumulate them.
    pub fn set_recording(&self, on: bool) {
        self.state.not_recording.store(!on, Ordering::Relaxed);
    }
}

impl Drop for FakeProvider {
    /// Stops accepting and closes every open connection (the accept task
    /// owns the connection tasks; aborting it aborts them).
    fn drop(&mut self) {
        self.server.abort();
    }
}
