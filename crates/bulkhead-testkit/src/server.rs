//! HTTP/1.1 serving: the accept loop, routing, the generation flow shared
//! by both wire formats, and the means to drop a connection on purpose.
//!
//! hyper is used directly rather than through axum: a scripted cut must
//! close the socket after exactly the bytes already sent (possibly none),
//! which needs a hand on the connection. The connection's I/O is wrapped in
//! [`CuttableIo`]; once a handler or a response body raises the cut flag,
//! the next flush that has written everything fails, hyper abandons the
//! connection and the socket is closed — after the bytes, before any more.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::conversation::Conversation;
use crate::provider::{RecordedRequest, State};
use crate::script::{Answer, Reply};
use crate::{anthropic, openai};

/// Request bodies above this are refused (413) before parsing: a fake has
/// no reason to hold more, and a runaway test should fail, not swap.
const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// After a failed `accept` (typically out of file descriptors), wait this
/// long before the next: retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

pub(crate) type Res = Response<ResBody>;

/// Accepts connections until the task is aborted; aborting it drops the
/// `JoinSet`, which aborts every connection task.
pub(crate) async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Small SSE writes must not wait for a delayed ACK.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, state.clone()));
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    let cut = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(CuttableIo {
        inner: stream,
        cut: cut.clone(),
    });
    let service = service_fn(move |req| {
        let ctx = Ctx {
            state: state.clone(),
            cut: cut.clone(),
        };
        async move { Ok::<_, Infallible>(route(ctx, req).await) }
    });
    // An error here is a client that went away or a scripted cut; either
    // way the connection is over and there is nobody to tell.
    let _ = http1::Builder::new()
        // No timer is wired in, and an idle connection costs nothing until
        // the provider is dropped; say so rather than rely on the default.
        .header_read_timeout(None)
        .serve_connection(io, service)
        .await;
}

/// A TCP stream whose flush fails, once everything is written, after the
/// cut flag is raised.
struct CuttableIo {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl AsyncRead for CuttableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper flushes the stream only after writing out its own buffer,
        // so at this point every byte of the response so far is sent.
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if this.cut.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "scripted connection cut",
            )));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body: a few ready chunks, and optionally a cut after them.
pub(crate) struct ResBody {
    chunks: std::collections::VecDeque<Bytes>,
    /// Sent with chunked encoding (event streams) rather than a length.
    streaming: bool,
    /// Raised once the chunks are out; the body then never ends.
    cut: Option<Arc<AtomicBool>>,
}

impl ResBody {
    fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            chunks: [bytes.into()].into(),
            streaming: false,
            cut: None,
        }
    }
}

impl hyper::body::Body for ResBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match &this.cut {
            Some(cut) => {
                // No wake-up needed: hyper flushes after a pending body, and
                // that flush fails (CuttableIo), ending the connection.
                cut.store(true, Ordering::Release);
                Poll::Pending
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.cut.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.streaming || self.cut.is_some() {
            return SizeHint::default();
        }
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

/// What a handler has at hand.
pub(crate) struct Ctx {
    pub state: Arc<State>,
    /// The connection's cut flag.
    cut: Arc<AtomicBool>,
}

impl Ctx {
    /// Drops the connection before any byte of the response.
    async fn drop_connection(&self) -> Res {
        let never: Infallible = std::future::poll_fn(|cx| {
            self.cut.store(true, Ordering::Release);
            // hyper flushes right after a pending service; the wake-up only
            // guards against a flush that did not happen in the same pass.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
        match never {}
    }
}

/// The request body, read and parsed once.
pub(crate) enum RequestBody {
    Json(Value),
    /// Empty, not JSON, or unreadable.
    Invalid,
    /// Above [`MAX_REQUEST_BODY`].
    TooLarge,
}

async fn route(ctx: Ctx, req: Request<Incoming>) -> Res {
    ctx.state.count_request();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => match serde_json::from_slice(&collected.to_bytes()) {
            Ok(json) => RequestBody::Json(json),
            Err(_) => RequestBody::Invalid,
        },
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => RequestBody::TooLarge,
        Err(_) => RequestBody::Invalid,
    };
    if ctx.state.recording() {
        ctx.state.record(RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: match &body {
                RequestBody::Json(json) => json.clone(),
                _ => Value::Null,
            },
        });
    }
    let headers = &parts.headers;
    match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/chat/completions") => openai::chat(&ctx, headers, body).await,
        (&Method::POST, path)
            if let Some(deployment) = path
                .strip_prefix("/openai/deployments/")
                .and_then(|p| p.strip_suffix("/chat/completions"))
                .filter(|d| !d.is_empty() && !d.contains('/')) =>
        {
            openai::azure_chat(&ctx, headers, body, deployment, parts.uri.query()).await
        }
        (&Method::POST, "/v1/messages") => anthropic::messages(&ctx, headers, body).await,
        (&Method::GET, "/v1/models") => openai::models(headers),
        (&Method::POST, "/v1/embeddings") => openai::embeddings(headers, body),
        (_, "/v1/messages") => {
            anthropic::Anthropic::error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", None)
        }
        (method, path @ ("/v1/chat/completions" | "/v1/models" | "/v1/embeddings")) => {
            openai::OpenAi::error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("Invalid method for URL ({method} {path})"),
                None,
            )
        }
        (method, path) => openai::OpenAi::error(
            StatusCode::NOT_FOUND,
            &format!("Unknown request URL: {method} {path}."),
            None,
        ),
    }
}

/// Identity of one answer, the same in every chunk of a stream.
pub(crate) struct Meta {
    /// Numbers the answer's ids.
    pub number: u64,
    pub model: String,
    /// Unix seconds.
    pub created: u64,
}

/// A validated generation request.
pub(crate) struct Generation {
    pub conversation: Conversation,
    pub model: String,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// The whole request body, for a responder.
    pub request: Value,
}

/// A wire format's rendering of answers and errors.
pub(crate) trait Wire {
    /// The header carrying the request id.
    const REQUEST_ID_HEADER: &'static str;
    /// The id prefix of a request id (`req_…`).
    const REQUEST_ID_PREFIX: &'static str;
    /// A 200 body that breaks off in the middle of the JSON.
    const MALFORMED_BODY: &'static str;

    /// An error response in the format's shape.
    fn error(status: StatusCode, message: &str, retry_after: Option<u64>) -> Res;
    /// The non-streaming response body.
    fn body(answer: &Answer, meta: &Meta) -> Value;
    /// Every SSE event of the streamed answer, the terminator last.
    fn events(answer: &Answer, meta: &Meta, include_usage: bool) -> Vec<Bytes>;
    /// A malformed event stream: a first event whose data is not JSON,
    /// then the terminator.
    fn malformed_events() -> Vec<Bytes>;
}

/// What the script (or its absence) makes of one generation request.
enum Action {
    Answer(Answer),
    Error {
        status: u16,
        retry_after: Option<u64>,
        message: String,
    },
    Malformed,
    Cut {
        after_chunks: usize,
    },
}

/// Takes the next scripted reply (waiting out delays) and answers `g`.
pub(crate) async fn generate<W: Wire>(ctx: &Ctx, g: Generation) -> Res {
    let conv = &g.conversation;
    let mut next = ctx.state.next_reply(&g.request);
    let action = loop {
        next = match next {
            Some(Reply::Delay { duration, then }) => {
                tokio::time::sleep(duration).await;
                Some(*then)
            }
            None => break Action::Answer(conv.default_answer()),
            Some(Reply::Text { text, usage }) => {
                break Action::Answer(conv.text_answer(text, usage));
            }
            Some(Reply::ToolCalls { text, calls, usage }) => {
                break Action::Answer(conv.tool_answer(text, calls, usage));
            }
            Some(Reply::Error {
                status,
                retry_after,
                message,
            }) => {
                break Action::Error {
                    status,
                    retry_after,
                    message,
                };
            }
            Some(Reply::Malformed) => break Action::Malformed,
            Some(Reply::CutStream { after_chunks }) => break Action::Cut { after_chunks },
        };
    };
    let meta = || Meta {
        number: ctx.state.next_answer_number(),
        model: g.model.clone(),
        created: unix_now(),
    };
    match action {
        Action::Answer(answer) => {
            let meta = meta();
            let mut res = if g.stream {
                event_stream(W::events(&answer, &meta, g.include_usage), None)
            } else {
                json_response(StatusCode::OK, &W::body(&answer, &meta))
            };
            set_request_id::<W>(&mut res, meta.number);
            res
        }
        Action::Error {
            status,
            retry_after,
            message,
        } => W::error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &message,
            retry_after,
        ),
        Action::Malformed if g.stream => event_stream(W::malformed_events(), None),
        Action::Malformed => {
            let mut res = Response::new(ResBody::full(W::MALFORMED_BODY));
            set_header(&mut res, CONTENT_TYPE, "application/json");
            res
        }
        Action::Cut { after_chunks } if g.stream => {
            let mut events = W::events(&conv.default_answer(), &meta(), g.include_usage);
            // Never the terminator: the point is a stream that breaks off.
            events.truncate(after_chunks.min(events.len().saturating_sub(1)));
            event_stream(events, Some(ctx.cut.clone()))
        }
        Action::Cut { .. } => ctx.drop_connection().await,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Res {
    let mut res = Response::new(ResBody::full(body.to_string()));
    *res.status_mut() = status;
    set_header(&mut res, CONTENT_TYPE, "application/json");
    res
}

/// A JSON error response, with `Retry-After` when given.
pub(crate) fn error_response(status: StatusCode, body: &Value, retry_after: Option<u64>) -> Res {
    let mut res = json_response(status, body);
    if let Some(seconds) = retry_after {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    res
}

/// A `text/event-stream` response of `events`, cut after them when `cut`
/// is given.
fn event_stream(events: Vec<Bytes>, cut: Option<Arc<AtomicBool>>) -> Res {
    let mut res = Response::new(ResBody {
        chunks: events.into(),
        streaming: true,
        cut,
    });
    set_header(&mut res, CONTENT_TYPE, "text/event-stream");
    set_header(&mut res, CACHE_CONTROL, "no-cache");
    res
}

fn set_header(res: &mut Res, name: HeaderName, value: &'static str) {
    res.headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

fn set_request_id<W: Wire>(res: &mut Res, number: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("{}{number}", W::REQUEST_ID_PREFIX)) {
        res.headers_mut()
            .insert(HeaderName::from_static(W::REQUEST_ID_HEADER), value);
    }
}

/// Header `name` as text, when present, valid and not blank.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// An SSE event with only a `data:` line.
pub(crate) fn sse_data(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// An SSE event with an `event:` line.
pub(crate) fn sse_event(event: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}
