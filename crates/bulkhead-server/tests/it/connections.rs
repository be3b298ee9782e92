//! Slow clients and connection floods, over real sockets: the request-head
//! deadline, the keep-alive idle deadline, the global and per-peer caps,
//! the header size cap, and draining on shutdown.
//!
//! Every wait is a read with a bounded deadline: reading EOF (or the
//! answer) is the synchronisation.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use crate::support::TestApp;

/// Longest any test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    app: TestApp,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The real `serve` on a loopback port, with extra `[server]` lines.
    async fn start(extra: &str) -> Self {
        let app = TestApp::with_server_settings(extra).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(bulkhead_server::serve(
            listener,
            app.state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            app,
            stop: Some(stop),
            done,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(DEADLINE, self.done)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a 127.0.0.0/8 address (Linux routes all of it to lo)");
    socket.connect(addr).await.unwrap()
}

/// Reads until the server closes the connection; returns what it sent.
/// Fails if it does not close within `DEADLINE`.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "the server kept the connection open past {DEADLINE:?}"
    );
    got
}

/// Reads one response (headers and a `content-length` body).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a whole response: {got:?}");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return;
                }
            }
        }
    })
    .await
    .expect("no whole response in time");
    String::from_utf8(got).unwrap()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

/// `GET /healthz` on a new connection from `from`: the status line.
async fn healthz_from(from: [u8; 4], addr: SocketAddr) -> String {
    let mut s = connect_from(from, addr).await;
    s.write_all(HEALTHZ).await.unwrap();
    let r = read_response(&mut s).await;
    r.lines().next().unwrap_or_default().to_owned()
}

/// (a) Slowloris: a partial request head and nothing more is closed
/// within `header_read_timeout_s`, both as a connection's first request
/// and as a later one on a kept-alive connection.
#[tokio::test]
async fn a_partial_request_head_is_closed_after_the_header_timeout() {
    let server = Server::start("header_read_timeout_s = 1\nkeepalive_idle_s = 60").await;

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_until_closed(&mut s).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "closed after {took:?}, the header timeout is 1 s"
    );

    // A connection that sends nothing at all is closed the same way.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut silent).await;

    // After one answered request, a started head has the header timeout,
    // not the (long) keep-alive one.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    s.write_all(b"GET /healthz HTT").await.unwrap();
    let started = Instant::now();
    read_until_closed(&mut s).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        server
            .app
            .state
            .metrics
            .encode()
            .contains("bulkhead_connections_timed_out_total 3")
    );
    server.stop().await;
}

/// (d) An idle keep-alive connection is closed after `keepalive_idle_s`,
/// and not before the (shorter) header timeout would have.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_keepalive_idle() {
    let server = Server::start("header_read_timeout_s = 1\nkeepalive_idle_s = 2").await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
    let idle = Instant::now();
    let got = read_until_closed(&mut s).await;
    assert!(got.is_empty());
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "closed after {took:?} idle, keepalive_idle_s is 2"
    );
    server.stop().await;
}

/// (b) One address holding more idle connections than its cap gets the
/// extra ones closed at once, and cannot stop `/healthz` answering
/// another address; its count is freed when its connections close.
#[tokio::test]
async fn a_peer_over_its_cap_cannot_starve_others() {
    const PER_PEER: usize = 4;
    let server = Server::start(&format!(
        "max_connections = 8\nmax_connections_per_peer = {PER_PEER}\n\
         header_read_timeout_s = 60\nkeepalive_idle_s = 60"
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..PER_PEER {
        let mut s = connect_from([127, 0, 0, 2], server.addr).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        held.push(s);
    }
    // Beyond the cap: accepted and closed without an answer. Accepts are
    // in connect order, so these are the ones over the cap.
    for _ in 0..PER_PEER + 2 {
        let mut s = connect_from([127, 0, 0, 2], server.addr).await;
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await;
        assert!(read_until_closed(&mut s).await.is_empty());
    }
    // Without a per-peer cap these would have filled the global cap.
    for _ in 0..3 {
        assert_eq!(
            healthz_from([127, 0, 0, 1], server.addr).await,
            "HTTP/1.1 200 OK"
        );
    }
    let text = server.app.state.metrics.encode();
    assert!(
        text.contains(r#"bulkhead_connections_refused_total{reason="max_connections_per_peer"} 6"#),
        "{text}"
    );

    // The held connections close; the peer's slots come back.
    drop(held);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut s = connect_from([127, 0, 0, 2], server.addr).await;
        s.write_all(HEALTHZ).await.unwrap();
        let mut first = [0u8; 12];
        let ok = tokio::time::timeout(DEADLINE, s.read_exact(&mut first))
            .await
            .is_ok_and(|r| r.is_ok());
        if ok && &first == b"HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < deadline, "the peer's slots were not freed");
    }
    server.stop().await;
}

/// (c) The global cap refuses connections beyond it, whoever opens them,
/// and frees a slot when a connection closes.
#[tokio::test]
async fn the_global_cap_refuses_beyond_it_and_frees_slots() {
    let server = Server::start(
        "max_connections = 3\nmax_connections_per_peer = 3\n\
         header_read_timeout_s = 60\nkeepalive_idle_s = 60",
    )
    .await;
    let mut held = Vec::new();
    for from in [[127, 0, 0, 3], [127, 0, 0, 4], [127, 0, 0, 5]] {
        let mut s = connect_from(from, server.addr).await;
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    let mut over = connect_from([127, 0, 0, 6], server.addr).await;
    let _ = over.write_all(HEALTHZ).await;
    assert!(read_until_closed(&mut over).await.is_empty());

    held.pop();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut s = connect_from([127, 0, 0, 6], server.addr).await;
        let _ = s.write_all(HEALTHZ).await;
        let mut first = [0u8; 12];
        let ok = tokio::time::timeout(DEADLINE, s.read_exact(&mut first))
            .await
            .is_ok_and(|r| r.is_ok());
        if ok && &first == b"HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < deadline, "no slot was freed");
    }
    let text = server.app.state.metrics.encode();
    assert!(
        text.contains(r#"bulkhead_connections_refused_total{reason="max_connections"}"#),
        "{text}"
    );
    drop(held);
    server.stop().await;
}

/// A request head over `max_header_bytes` (here a 200 KB method, the
/// probe's metrics attack) is answered 431 and closed, never routed.
#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let server = Server::start("max_header_bytes = 8192").await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let method = "A".repeat(200_000);
    let _ = s
        .write_all(format!("{method} /healthz HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    let got = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let header = "b".repeat(9000);
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {header}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes())
        .await
        .unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    assert!(!server.app.state.metrics.encode().contains("AAAA"));
    server.stop().await;
}

/// A request in flight is not cut by the idle or head deadlines, and a
/// shutdown lets it finish before `serve` returns.
#[tokio::test]
async fn a_slow_answer_is_neither_timed_out_nor_cut_by_shutdown() {
    use axum::routing::get;
    let (release, released) = tokio::sync::mpsc::channel::<()>(1);
    let released = std::sync::Arc::new(tokio::sync::Mutex::new(released));
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let router = axum::Router::new().route(
        "/slow",
        get(move || {
            let released = released.clone();
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(()).await;
                released.lock().await.recv().await;
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = bulkhead_server::conn::ConnLimits {
        header_read_timeout: Duration::from_secs(1),
        keepalive_idle: Duration::from_secs(1),
        ..Default::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(bulkhead_server::conn::serve_connections(
        listener,
        router,
        limits,
        std::sync::Arc::new(bulkhead_server::metrics::Metrics::new()),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    entered.recv().await.unwrap();
    // Twice both deadlines pass with the request in flight: nothing is
    // sent and the connection stays open.
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), s.read(&mut byte))
            .await
            .is_err(),
        "the connection was closed or answered while its request was in flight"
    );
    // Shutdown while in flight: the answer still comes, then serve ends.
    stop.send(()).unwrap();
    release.send(()).await.unwrap();
    let got = String::from_utf8_lossy(&read_until_closed(&mut s).await).into_owned();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("done"),
        "{got}"
    );
    tokio::time::timeout(DEADLINE, done).await.unwrap().unwrap();
}
