//! [`SaasStandIn`]: one loopback HTTP server standing in for the SaaS APIs
//! agent tools call — Slack, Jira and GitHub in their real wire formats —
//! plus a few plain endpoints for exercising a generic HTTP tool (echo,
//! large bodies, chosen statuses, a request that never gets an answer).
//!
//! Every request is recorded in full (method, path, raw query, headers,
//! raw body) before it is checked, so a test — or the demo, showing what
//! each tenant's agent posted with which credential — sees exactly what
//! arrived, rejected requests included.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Request bodies above this are refused (413): a stand-in has no reason
/// to hold more, and a runaway test should fail, not swap.
const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// `/big` serves at most this many bytes: enough to overflow any tool's
/// response cap (16 MiB at most), small enough not to exhaust memory.
const MAX_BIG_BYTES: u64 = 64 * 1024 * 1024;

/// `/big` writes its body in chunks of this size.
const BIG_CHUNK: usize = 16 * 1024;

/// After a failed `accept` (typically out of file descriptors), wait this
/// long before the next: retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// One request the stand-in received, recorded before it was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaasRequest {
    /// `GET`, `POST`…
    pub method: String,
    /// The path as received (still percent-encoded), without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Headers in arrival order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl SaasRequest {
    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    recorded: Mutex<Vec<SaasRequest>>,
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    /// Jira's issue ids are global; keys count per project.
    jira_ids: u64,
    jira_keys: BTreeMap<String, u64>,
    /// GitHub issue numbers count per repository.
    github_numbers: BTreeMap<String, u64>,
    /// Slack message timestamps must be unique per channel; one sequence
    /// for all is simpler and still unique.
    slack_messages: u64,
}

/// A poisoned lock only means a test panicked while holding it; the data
/// (a list, counters) is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A stand-in for Slack, Jira and GitHub on `127.0.0.1`, serving until
/// dropped. See the [crate documentation](crate) for the endpoints.
pub struct SaasStandIn {
    addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for SaasStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaasStandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl SaasStandIn {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound; use [`SaasStandIn::try_start`]
    /// to handle that.
    pub async fn start() -> SaasStandIn {
        match Self::try_start().await {
            Ok(s) => s,
            Err(e) => panic!("bulkhead-testkit: cannot bind a loopback port: {e}"),
        }
    }

    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn try_start() -> std::io::Result<SaasStandIn> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let server = tokio::spawn(accept_loop(listener, state.clone(), addr));
        Ok(SaasStandIn {
            addr,
            state,
            server,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the root of every stand-in API (Slack's
    /// `{base}/api/...`, so a Slack tool's `base_url` is `{base}/api` as
    /// Slack's is `https://slack.com/api`; Jira's `{base}/rest/api/2/...`;
    /// GitHub's `{base}/repos/...`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests recorded so far, oldest first.
    pub fn requests(&self) -> Vec<SaasRequest> {
        lock(&self.state.recorded).clone()
    }

    /// Forgets the recorded requests (not the issue counters).
    pub fn clear(&self) {
        lock(&self.state.recorded).clear();
    }
}

impl Drop for SaasStandIn {
    /// Stops accepting and closes every open connection, `/hang` ones
    /// included (the accept task owns the connection tasks).
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, addr: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, state.clone(), addr));
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>, addr: SocketAddr) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(&state, addr, req).await) }
    });
    // An error here is a client that went away; nobody to tell.
    let _ = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A response body: ready bytes, or `n` generated bytes (with or without
/// a length, so a client's streaming cap can be tested).
enum Body {
    Full(Option<Bytes>),
    Repeat { remaining: u64, sized: bool },
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Repeat { remaining, .. } if *remaining == 0 => Poll::Ready(None),
            Body::Repeat { remaining, .. } => {
                let n = (*remaining).min(BIG_CHUNK as u64);
                *remaining -= n;
                let chunk = Bytes::from(vec![b'x'; n as usize]);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Repeat { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Repeat {
                remaining,
                sized: true,
            } => SizeHint::with_exact(*remaining),
            Body::Repeat { .. } => SizeHint::default(),
        }
    }
}

type Res = Response<Body>;

fn json_response(status: StatusCode, body: &Value) -> Res {
    let mut res = Response::new(Body::Full(Some(Bytes::from(body.to_string()))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

async fn route(state: &State, addr: SocketAddr, req: Request<Incoming>) -> Res {
    let (parts, body) = req.into_parts();
    let (body, too_large) = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(collected) => (collected.to_bytes().to_vec(), false),
        Err(_) => (Vec::new(), true),
    };
    let request = SaasRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
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
        body,
    };
    lock(&state.recorded).push(request.clone());
    if too_large {
        return json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "request body too large"}),
        );
    }
    let base = format!("http://{addr}");
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::POST, ["api", "chat.postMessage"]) => slack_post(state, &request),
        (&Method::POST, ["rest", "api", "2", "issue"]) => jira_create(state, &request, &base),
        (&Method::POST, ["repos", owner, repo, "issues"]) => {
            github_create(state, &request, owner, repo)
        }
        (&Method::GET | &Method::POST, ["echo", ..]) => echo(&request),
        (&Method::GET, ["big"]) => big(&request),
        // Any method and any tail, so that a connector's base URL can
        // point here and meet the status on its own API path.
        (_, ["status", code, encoding, ..]) if encoding.starts_with("as-") => {
            leak(&request, code, &encoding[3..])
        }
        (_, ["status", code, ..]) => status(&request, code),
        (&Method::GET, ["hang"]) => std::future::pending().await,
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not found", "path": request.path}),
        ),
    }
}

/// The bearer token of `Authorization: Bearer <token>`, when non-blank.
fn bearer(request: &SaasRequest) -> Option<&str> {
    let value = request.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then_some(token)
}

/// Bearer or Basic with non-blank credentials.
fn any_auth(request: &SaasRequest) -> bool {
    request
        .header("authorization")
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, value)| {
            ["bearer", "basic", "token"]
                .iter()
                .any(|s| scheme.eq_ignore_ascii_case(s))
                && !value.trim().is_empty()
        })
}

fn text_field<'a>(json: &'a Value, pointer: &str) -> Option<&'a str> {
    json.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Slack `chat.postMessage`: HTTP 200 either way, `ok` tells.
fn slack_post(state: &State, request: &SaasRequest) -> Res {
    let fail = |error: &str| json_response(StatusCode::OK, &json!({"ok": false, "error": error}));
    if bearer(request).is_none() {
        return fail("not_authed");
    }
    let Some(body) = request.json() else {
        return fail("invalid_json");
    };
    let Some(channel) = text_field(&body, "/channel") else {
        return fail("channel_not_found");
    };
    // A way for tests to see Slack's own refusal of a valid request.
    if channel == "C_NOT_FOUND" {
        return fail("channel_not_found");
    }
    let Some(text) = text_field(&body, "/text") else {
        return fail("no_text");
    };
    let n = {
        let mut c = lock(&state.counters);
        c.slack_messages += 1;
        c.slack_messages
    };
    let ts = format!("1700000000.{n:06}");
    json_response(
        StatusCode::OK,
        &json!({
            "ok": true,
            "channel": channel,
            "ts": ts,
            "message": {"type": "message", "text": text, "ts": ts},
        }),
    )
}

/// Jira `POST /rest/api/2/issue`.
fn jira_create(state: &State, request: &SaasRequest, base: &str) -> Res {
    if !any_auth(request) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}}),
        );
    }
    let body = request.json().unwrap_or(Value::Null);
    let mut errors = serde_json::Map::new();
    let project = text_field(&body, "/fields/project/key");
    if project.is_none() {
        errors.insert("project".into(), json!("project is required"));
    }
    if text_field(&body, "/fields/summary").is_none() {
        errors.insert(
            "summary".into(),
            json!("You must specify a summary of the issue."),
        );
    }
    if text_field(&body, "/fields/issuetype/name").is_none() {
        errors.insert("issuetype".into(), json!("issue type is required"));
    }
    let Some(project) = project.filter(|_| errors.is_empty()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"errorMessages": [], "errors": errors}),
        );
    };
    let (id, n) = {
        let mut c = lock(&state.counters);
        c.jira_ids += 1;
        let id = 10_000 + c.jira_ids;
        let n = c.jira_keys.entry(project.to_owned()).or_insert(0);
        *n += 1;
        (id, *n)
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "id": id.to_string(),
            "key": format!("{project}-{n}"),
            "self": format!("{base}/rest/api/2/issue/{id}"),
        }),
    )
}

/// GitHub `POST /repos/{owner}/{repo}/issues`.
fn github_create(state: &State, request: &SaasRequest, owner: &str, repo: &str) -> Res {
    if !any_auth(request) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    // GitHub refuses API requests without a User-Agent.
    if request.header("user-agent").is_none() {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header."}),
        );
    }
    let body = request.json().unwrap_or(Value::Null);
    let Some(title) = text_field(&body, "/title") else {
        return json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"message": "Validation Failed", "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}], "status": "422"}),
        );
    };
    let number = {
        let mut c = lock(&state.counters);
        let n = c
            .github_numbers
            .entry(format!("{owner}/{repo}"))
            .or_insert(0);
        *n += 1;
        *n
    };
    json_response(
        StatusCode::CREATED,
        &json!({
            "number": number,
            "html_url": format!("https://github.com/{owner}/{repo}/issues/{number}"),
            "title": title,
            "body": body.get("body").cloned().unwrap_or(Value::Null),
            "state": "open",
        }),
    )
}

/// `/echo/...`: what arrived, as JSON (body parsed when it is JSON).
fn echo(request: &SaasRequest) -> Res {
    let body = match request.json() {
        Some(json) => json,
        None if request.body.is_empty() => Value::Null,
        None => Value::String(String::from_utf8_lossy(&request.body).into_owned()),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "body": body,
        }),
    )
}

/// The value of query parameter `name`.
fn query_param<'a>(request: &'a SaasRequest, name: &str) -> Option<&'a str> {
    request
        .query
        .as_deref()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `/big?bytes=N[&chunked=1]`: N bytes of `x`, with a `Content-Length`
/// unless `chunked=1`.
fn big(request: &SaasRequest) -> Res {
    let Some(bytes) = query_param(request, "bytes")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n <= MAX_BIG_BYTES)
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("bytes must be an integer up to {MAX_BIG_BYTES}")}),
        );
    };
    let sized = query_param(request, "chunked") != Some("1");
    let mut res = Response::new(Body::Repeat {
        remaining: bytes,
        sized,
    });
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res
}

/// `/status/{code}/as-{encoding}[/...]`: that status; the body echoes the
/// credential of the `Authorization` header (what follows its scheme) in
/// `encoding`, as a careless or hostile API might: `plain`, `upper`,
/// `reversed`, `base64`, `base64url`, `base64-mid` (base64 of the
/// credential after a prefix, so it starts mid-group), `url` (`%XX`),
/// `form` (`%XX` with `+` for spaces), `json-slash` (`\/`), `json-unicode`
/// (every character `\uXXXX`), `hex`, `HEX`, `split` (the two halves in
/// two fields). The encoded text is written into the JSON body verbatim.
fn leak(request: &SaasRequest, code: &str, encoding: &str) -> Res {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let header = request.header("authorization").unwrap_or_default();
    let secret = header.split_once(' ').map_or(header, |(_, s)| s);
    let percent = |form: bool| {
        secret
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' if form => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let field = match encoding {
        "plain" => secret.to_owned(),
        "upper" => secret.to_uppercase(),
        "reversed" => secret.chars().rev().collect(),
        "base64" => STANDARD.encode(secret),
        "base64url" => URL_SAFE_NO_PAD.encode(secret),
        "base64-mid" => STANDARD.encode(format!("user-id=42;{secret};end")),
        "url" => percent(false),
        "form" => percent(true),
        "json-slash" => secret.replace('/', "\\/"),
        "json-unicode" => secret
            .encode_utf16()
            .map(|u| format!("\\u{u:04x}"))
            .collect(),
        "hex" => hex,
        "HEX" => hex.to_uppercase(),
        "split" => {
            let (a, b) = secret.split_at(secret.len() / 2);
            let body = format!(r#"{{"status":{},"a":"{a}","b":"{b}"}}"#, status.as_u16());
            return raw_json(status, body);
        }
        _ => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "unknown encoding"}),
            );
        }
    };
    raw_json(
        status,
        format!(r#"{{"status":{},"leak":"{field}"}}"#, status.as_u16()),
    )
}

/// A JSON body written as given (so escapes in it stay as they are).
fn raw_json(status: StatusCode, body: String) -> Res {
    let mut res = Response::new(Body::Full(Some(Bytes::from(body))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// `/status/{code}[/...]`: that status; the body echoes the `Authorization`
/// header, as careless APIs do in their errors.
fn status(request: &SaasRequest, code: &str) -> Res {
    // 1xx are not final answers; a stand-in cannot meaningfully send one.
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    match status {
        Some(status) => json_response(
            status,
            &json!({"status": status.as_u16(), "authorization": request.header("authorization")}),
        ),
        None => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "not a status code"}),
        ),
    }
}
