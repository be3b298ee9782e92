//! A hostile model provider: OpenAI Chat Completions
//! (`POST /v1/chat/completions`, JSON or SSE) answering in ways a real
//! provider should not but a compromised or broken one may — streams that
//! go silent, answers that never end, answers without `usage` — and
//! counting what it sent, so a test can tell whether the client stopped
//! reading.
//!
//! Bodies are produced as they are sent (a producer task per response,
//! one frame ahead of the socket): a 100 MB answer never exists in memory,
//! and a client that stops reading stops the producer.
//!
//! ```no_run
//! # async fn demo() {
//! use bulkhead_testkit::hostile::{Hostile, HostileProvider};
//!
//! let fake = HostileProvider::start(|_req| Hostile::Stall { chunks: 1 }).await;
//! // Point an `openai` provider at `{base_url}/v1`, start a stream, then:
//! fake.wait_chunks(1).await;
//! # }
//! ```

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How the provider answers one chat request (streamed when the request
/// says `"stream": true`, JSON otherwise).
#[derive(Debug, Clone, PartialEq)]
pub enum Hostile {
    /// `chunks` content chunks, then silence with the connection held
    /// open (never `[DONE]`). A JSON request gets the headers, then silence.
    Stall {
        /// Content chunks sent before the silence.
        chunks: usize,
    },
    /// A content chunk every `every`, without end, until the client goes.
    Trickle {
        /// Time between chunks.
        every: Duration,
    },
    /// An answer of about `bytes` bytes without `Content-Length`: one
    /// JSON object whose content grows that long, or content chunks of
    /// 8 KiB (single events) adding up to it.
    Huge {
        /// Bytes to send.
        bytes: u64,
    },
    /// `text` as the answer, without any `usage` member (stream: one
    /// chunk per word, then `[DONE]`).
    NoUsage {
        /// The answer.
        text: String,
    },
    /// `text` as the answer with exactly these counts, in `choices` of
    /// `n` copies (stream: the usage chunk before `[DONE]`).
    Counted {
        /// The answer of each choice.
        text: String,
        /// Choices.
        n: u64,
        /// Prompt tokens.
        input: u64,
        /// Completion tokens.
        output: u64,
    },
}

type Decide = Arc<dyn Fn(&Value) -> Hostile + Send + Sync>;

struct State {
    decide: Decide,
    requests: AtomicU64,
    /// Content chunks handed to the socket, over all responses.
    chunks: watch::Sender<u64>,
    /// Body bytes handed to the socket, over all responses.
    bytes: AtomicU64,
    /// Responses whose client went away before the body's end.
    abandoned: watch::Sender<u64>,
    /// Whether answers go out (see [`HostileProvider::hold_answers`]).
    open: watch::Sender<bool>,
}

/// The hostile provider on `127.0.0.1`, serving until dropped.
pub struct HostileProvider {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for HostileProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HostileProvider {
    /// Binds `127.0.0.1:0` and answers every chat request as `decide`
    /// says (it sees the request body).
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(decide: impl Fn(&Value) -> Hostile + Send + Sync + 'static) -> Self {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(l) => l,
            Err(e) => panic!("bulkhead-testkit: cannot bind a loopback port: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("bulkhead-testkit: no local address: {e}"),
        };
        let state = Arc::new(State {
            decide: Arc::new(decide),
            requests: AtomicU64::new(0),
            chunks: watch::channel(0).0,
            bytes: AtomicU64::new(0),
            abandoned: watch::channel(0).0,
            open: watch::channel(true).0,
        });
        let server = tokio::spawn(accept(listener, state.clone()));
        Self {
            addr,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT` (OpenAI clients use `{base_url}/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Chat requests received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Body bytes handed to the socket so far, over all responses.
    pub fn bytes_sent(&self) -> u64 {
        self.state.bytes.load(Ordering::Relaxed)
    }

    /// Content chunks handed to the socket so far, over all responses.
    pub fn chunks_sent(&self) -> u64 {
        *self.state.chunks.borrow()
    }

    /// Waits until at least `n` content chunks were handed to the socket.
    pub async fn wait_chunks(&self, n: u64) {
        let mut rx = self.state.chunks.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Holds every answer (after its request is read and counted) until
    /// [`HostileProvider::release`]: lets a test have many calls in
    /// flight at once.
    pub fn hold_answers(&self) {
        self.state.open.send_replace(false);
    }

    /// Lets held and later answers go.
    pub fn release(&self) {
        self.state.open.send_replace(true);
    }

    /// Responses whose client went away before their end.
    pub fn abandoned(&self) -> u64 {
        *self.state.abandoned.borrow()
    }

    /// Waits until at least `n` responses were abandoned by their client.
    pub async fn wait_abandoned(&self, n: u64) {
        let mut rx = self.state.abandoned.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }
}

impl Drop for HostileProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(answer(state, req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A body fed by a producer task, one frame ahead: the producer waits
/// while the socket does not take bytes.
struct Fed {
    rx: mpsc::Receiver<Bytes>,
    state: Arc<State>,
}

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                this.state
                    .bytes
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What the producer feeds: `Some(bytes)` frames, each counted as a
/// content chunk when `chunk` is set.
struct Feeder {
    tx: mpsc::Sender<Bytes>,
    state: Arc<State>,
}

impl Feeder {
    /// Hands `bytes` over; `false` once the client is gone.
    async fn send(&self, bytes: impl Into<Bytes>, chunk: bool) -> bool {
        if self.tx.send(bytes.into()).await.is_err() {
            self.state.abandoned.send_modify(|n| *n += 1);
            return false;
        }
        if chunk {
            self.state.chunks.send_modify(|n| *n += 1);
        }
        true
    }

    /// Holds the response open until the client goes.
    async fn hold(&self) {
        self.tx.closed().await;
        self.state.abandoned.send_modify(|n| *n += 1);
    }
}

fn chunk(content: &str) -> String {
    let c = json!({"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0,
        "model": "hostile", "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {c}\n\n")
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Response<Fed> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.requests.fetch_add(1, Ordering::Relaxed);
    let stream = request["stream"] == true;
    let how = (state.decide)(&request);
    // One frame ahead of the socket.
    let (tx, rx) = mpsc::channel(1);
    let feeder = Feeder {
        tx,
        state: state.clone(),
    };
    tokio::spawn(produce(feeder, how, stream));
    let mut res = Response::new(Fed { rx, state });
    let kind = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    res
}

async fn produce(f: Feeder, how: Hostile, stream: bool) {
    let mut open = f.state.open.subscribe();
    let _ = open.wait_for(|o| *o).await;
    match how {
        Hostile::Stall { chunks } => {
            if stream {
                for i in 0..chunks {
                    if !f.send(chunk(&format!("w{i} ")), true).await {
                        return;
                    }
                }
            }
            f.hold().await;
        }
        Hostile::Trickle { every } => {
            let mut i = 0u64;
            loop {
                let bytes = if stream {
                    chunk(&format!("w{i} "))
                } else {
                    // A JSON body that never closes.
                    if i == 0 {
                        "{\"choices\":[{\"message\":{\"content\":\"".to_owned()
                    } else {
                        format!("w{i} ")
                    }
                };
                if !f.send(bytes, true).await {
                    return;
                }
                i += 1;
                tokio::time::sleep(every).await;
            }
        }
        Hostile::Huge { bytes } => {
            let piece = "x".repeat(8 * 1024);
            let mut sent = 0u64;
            if !stream
                && !f
                    .send(
                        "{\"id\":\"h\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
                        false,
                    )
                    .await
            {
                return;
            }
            while sent < bytes {
                let b = if stream { chunk(&piece) } else { piece.clone() };
                sent += b.len() as u64;
                if !f.send(b, true).await {
                    return;
                }
            }
            let end = if stream {
                "data: [DONE]\n\n".to_owned()
            } else {
                "\"},\"finish_reason\":\"stop\"}]}".to_owned()
            };
            let _ = f.send(end, false).await;
        }
        Hostile::NoUsage { text } => {
            if stream {
                for word in text.split_inclusive(' ') {
                    if !f.send(chunk(word), true).await {
                        return;
                    }
                }
                let _ = f.send("data: [DONE]\n\n", false).await;
            } else {
                let body = json!({"id": "chatcmpl-hostile", "object": "chat.completion", "created": 0,
                    "model": "hostile", "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text}}]});
                let _ = f.send(body.to_string(), true).await;
            }
        }
        Hostile::Counted {
            text,
            n,
            input,
            output,
        } => {
            let usage = json!({"prompt_tokens": input, "completion_tokens": output,
                "total_tokens": input + output});
            if stream {
                for i in 0..n {
                    let c = json!({"id": "chatcmpl-hostile", "object": "chat.completion.chunk",
                        "created": 0, "model": "hostile",
                        "choices": [{"index": i, "delta": {"content": text}, "finish_reason": "length"}]});
                    if !f.send(format!("data: {c}\n\n"), true).await {
                        return;
                    }
                }
                let u = json!({"id": "chatcmpl-hostile", "object": "chat.completion.chunk",
                    "created": 0, "model": "hostile", "choices": [], "usage": usage});
                let _ = f
                    .send(format!("data: {u}\n\ndata: [DONE]\n\n"), false)
                    .await;
            } else {
                let choices: Vec<Value> = (0..n)
                    .map(|i| {
                        json!({"index": i, "finish_reason": "length",
                        "message": {"role": "assistant", "content": text}})
                    })
                    .collect();
                let body = json!({"id": "chatcmpl-hostile", "object": "chat.completion",
                    "created": 0, "model": "hostile", "choices": choices, "usage": usage});
                let _ = f.send(body.to_string(), true).await;
            }
        }
    }
}
