//! The connection layer under the router: the accept loop, connection
//! caps (global and per peer address), the request-head and keep-alive
//! deadlines, and graceful shutdown.
//!
//! `axum::serve` has none of these, so one client holding thousands of
//! idle or half-sent connections could use up the process's file
//! descriptors and stop every tenant (and `/healthz`) being answered.
//! Here every connection holds a slot of the global cap and of its peer's
//! cap for as long as it is open; one over either cap is accepted and
//! closed at once, so the accept loop never stalls. Each connection has a
//! watchdog that closes it when no request is in flight and
//!
//! - it has not sent a complete first request head within
//!   `header_read_timeout_s` of being accepted, or
//! - it has started a later request head and not finished it within
//!   `header_read_timeout_s`, or
//! - it has sent nothing for `keepalive_idle_s` since its last response.
//!
//! A request is in flight from its parsed head until its response body
//! has been handed to the socket, so a long answer (a streamed run) is
//! never cut by these deadlines; handlers have `request_timeout_s`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bulkhead_core::config::ServerConfig;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// hyper's default; setting it explicitly moves header parsing to the heap.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Pause after an accept error that is not about one connection (out of
/// file descriptors): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits `serve` enforces on connections (`[server]`).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// `header_read_timeout_s`.
    pub header_read_timeout: Duration,
    /// `keepalive_idle_s`.
    pub keepalive_idle: Duration,
    /// `max_connections`.
    pub max_connections: usize,
    /// `max_connections_per_peer`.
    pub max_connections_per_peer: usize,
    /// `max_header_bytes`.
    pub max_header_bytes: usize,
    /// `max_headers`.
    pub max_headers: usize,
    /// `shutdown_grace_s`: how long a stopping server lets requests in
    /// flight finish before it closes their connections.
    pub shutdown_grace: Duration,
}

impl ConnLimits {
    /// The limits of a (validated) `[server]` table.
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_s),
            keepalive_idle: Duration::from_secs(server.keepalive_idle_s),
            max_connections: server.max_connections.max(1),
            max_connections_per_peer: server.max_connections_per_peer.max(1),
            // hyper panics below 8 KiB of buffer; validation refuses it too.
            max_header_bytes: server.max_header_bytes.max(8192),
            max_headers: server.max_headers.max(1),
            shutdown_grace: Duration::from_secs(server.shutdown_grace_s.max(1)),
        }
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self::from_config(&ServerConfig::default())
    }
}

/// What a peer's connections are counted under: its IPv4 address, or the
/// /64 of its IPv6 address (one host usually holds a whole /64).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum PeerKey {
    V4(Ipv4Addr),
    V6(u64),
}

impl PeerKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(a) => PeerKey::V4(a),
            IpAddr::V6(a) => PeerKey::V6((u128::from(a) >> 64) as u64),
        }
    }
}

/// Open connections per peer.
struct Peers {
    max: usize,
    open: Mutex<HashMap<PeerKey, usize>>,
}

impl Peers {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let key = PeerKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            key,
        })
    }
}

/// One connection's place in its peer's count, given back when it closes.
struct PeerSlot {
    peers: Arc<Peers>,
    key: PeerKey,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .peers
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // A peer that has gone costs nothing.
                open.remove(&self.key);
            }
        }
    }
}

/// Where a connection is between requests.
struct ConnState {
    /// Requests whose response has not been fully handed to the socket.
    in_flight: usize,
    /// Whether a response has been completed on this connection.
    served: bool,
    /// Accepted, or the last response completed.
    idle_since: Instant,
    /// The first byte read while idle (a new request head has started).
    head_started: Option<Instant>,
}

/// A connection's activity, shared by its reader, its requests and its
/// watchdog.
struct Activity {
    state: Mutex<ConnState>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ConnState {
                in_flight: 0,
                served: false,
                idle_since: Instant::now(),
                head_started: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed if nothing changes; `None`
    /// while a request is in flight.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let s = self.lock();
        if s.in_flight > 0 {
            None
        } else if !s.served {
            Some(s.idle_since + limits.header_read_timeout)
        } else if let Some(started) = s.head_started {
            Some(started + limits.header_read_timeout)
        } else {
            Some(s.idle_since + limits.keepalive_idle)
        }
    }

    /// Completes when the connection has passed its deadline.
    async fn expired(&self, limits: &ConnLimits) {
        loop {
            // `notify_one` keeps a permit when nobody waits, so a change
            // between reading the deadline and waiting is not missed.
            match self.deadline(limits) {
                None => self.changed.notified().await,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {
                            if self.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                                return;
                            }
                        }
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// Marks a request in flight until dropped with its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        {
            let mut s = activity.lock();
            s.in_flight += 1;
            s.head_started = None;
        }
        activity.changed.notify_one();
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.served = true;
                s.idle_since = Instant::now();
                s.head_started = None;
            }
        }
        self.0.changed.notify_one();
    }
}

/// The socket, reporting reads to the connection's activity.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Errors of one connection that `accept` reports; the loop goes on.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes; then stops accepting, lets every open connection finish its
/// request in flight, and returns when all have closed — or, once
/// `limits.shutdown_grace` has passed, closes those still open (dropping
/// their requests) and returns.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits = Arc::new(limits);
    let global = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(Peers {
        max: limits.max_connections_per_peer,
        open: Mutex::new(HashMap::new()),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog keeps the head deadline, because hyper's own would
    // also cut idle keep-alive connections at the same (short) limit.
    builder
        .header_read_timeout(None)
        .keep_alive(true)
        .max_header_size(limits.max_header_bytes);
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    let builder = Arc::new(builder);
    let (stop, _) = watch::channel(false);
    // Cancelled when the grace is over: every connection still open ends.
    let abort = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Over a cap: closed at once (dropping the socket), counted, not
        // logged — a flood must not become a log flood.
        let Ok(permit) = global.clone().try_acquire_owned() else {
            metrics.connection_refused("max_connections");
            continue;
        };
        let Some(peer_slot) = peers.acquire(peer.ip()) else {
            metrics.connection_refused("max_connections_per_peer");
            continue;
        };
        // Small writes (SSE chunks, short JSON answers) must not wait for
        // Nagle's algorithm to coalesce them.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        tokio::spawn(connection(
            (stream, peer),
            router.clone(),
            builder.clone(),
            limits.clone(),
            (permit, peer_slot),
            metrics.clone(),
            (stop.subscribe(), abort.clone()),
        ));
    }
    drop(listener);
    // Every connection holds a receiver: it finishes its request in
    // flight and closes, and `closed` completes when the last has.
    let _ = stop.send(true);
    if tokio::time::timeout(limits.shutdown_grace, stop.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = limits.shutdown_grace.as_secs(),
            "shutdown grace is over; closing the connections still open"
        );
        abort.cancel();
        stop.closed().await;
    }
}

/// One connection, from accept to close. `slots` are its places under the
/// caps, freed when it ends.
async fn connection(
    (stream, peer): (TcpStream, std::net::SocketAddr),
    router: Router,
    builder: Arc<hyper::server::conn::http1::Builder>,
    limits: Arc<ConnLimits>,
    slots: (OwnedSemaphorePermit, PeerSlot),
    metrics: Arc<Metrics>,
    (mut stop, abort): (watch::Receiver<bool>, tokio_util::sync::CancellationToken),
) {
    let _slots = slots;
    let _open = metrics.connection_open();
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        io: stream,
        activity: activity.clone(),
    });
    let tower = TowerToHyperService::new(router);
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let in_flight = InFlight::begin(&requests);
        // The peer address feeds the per-peer limit on failed
        // authentications (`ConnectInfo`, as axum's own server sets it).
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let answer = hyper::service::Service::call(&tower, req);
        async move {
            let res = answer.await?;
            Ok::<_, Infallible>(res.map(|body| {
                // The request stays in flight until hyper drops the body,
                // that is when its last byte has been handed over.
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = &in_flight;
                    frame
                }))
            }))
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let expired = activity.expired(&limits);
    tokio::pin!(expired);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // Nothing is in flight: dropping the connection closes it
            // without cutting an answer.
            () = &mut expired => {
                metrics.connection_timed_out();
                return;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            // The grace is over: the request in flight is dropped with the
            // connection (its model calls are cancelled and recorded).
            () = abort.cancelled() => return,
        }
    }
}
