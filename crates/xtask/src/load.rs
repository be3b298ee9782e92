//! The HTTP/1.1 load generator shared by the server benches: keep-alive
//! connections driven by hyper's client on one current-thread tokio runtime
//! (so the load generator takes one core at most), either closed-loop (each
//! connection sends its next request as soon as the previous answer is
//! read) or paced (each connection sends on a fixed period).
//!
//! A request is complete once the whole response body has been read, so a
//! streamed (SSE) answer counts from the first byte sent to the last byte
//! received. Every answer must be 2xx, or the run fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use tokio::time::MissedTickBehavior;

/// What every request of a run looks like.
#[derive(Clone)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The request method.
    pub method: Method,
    /// The request path.
    pub path: String,
    /// Headers besides `host` (and the `content-length` hyper adds).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body (empty: none).
    pub body: Bytes,
    /// When set, every response body must end with these bytes (a stream
    /// that ends with an error event still answers 200).
    pub body_ends_with: Option<&'static [u8]>,
}

impl Target {
    /// `GET path` on `addr`, no body.
    pub fn get(addr: SocketAddr, path: &str) -> Self {
        Self {
            addr,
            method: Method::GET,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            body_ends_with: None,
        }
    }

    /// `POST path` on `addr` with a JSON body.
    pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Self {
        Self {
            method: Method::POST,
            body: Bytes::from(body.to_string()),
            headers: vec![(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            ..Self::get(addr, path)
        }
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: &str) -> anyhow::Result<Self> {
        self.headers.push((
            hyper::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        ));
        Ok(self)
    }

    /// Requires every response body to end with `suffix`.
    pub fn body_ends_with(mut self, suffix: &'static [u8]) -> Self {
        self.body_ends_with = Some(suffix);
        self
    }
}

/// How hard to drive a target.
#[derive(Clone, Copy)]
pub struct Load {
    /// Keep-alive connections, each with one request in flight at most.
    pub connections: usize,
    /// The measured phase.
    pub duration: Duration,
    /// The phase before it, same load, not measured.
    pub warmup: Duration,
    /// `None`: closed loop. `Some(rate)`: `rate` requests per second in
    /// total, spread evenly over the connections and staggered so the
    /// sends do not bunch up; a connection whose answer comes late sends
    /// its next request at once and shifts its schedule
    /// ([`MissedTickBehavior::Delay`]).
    pub paced_rps: Option<f64>,
}

/// The figures of one measured phase.
pub struct Figures {
    /// Requests completed in the measured phase.
    pub requests: usize,
    /// Completed requests per second of the measured phase.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
}

async fn connection(
    target: Arc<Target>,
    period: Option<(Duration, Duration)>,
    until: Instant,
) -> anyhow::Result<Vec<u32>> {
    let addr = target.addr;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut ticks = period.map(|(period, offset)| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut latencies = Vec::with_capacity(100_000);
    while Instant::now() < until {
        if let Some(t) = &mut ticks {
            t.tick().await;
            if Instant::now() >= until {
                break;
            }
        }
        let mut req = hyper::Request::builder()
            .method(target.method.clone())
            .uri(target.path.as_str())
            .header("host", addr.to_string());
        for (name, value) in &target.headers {
            req = req.header(name, value);
        }
        let req = req.body(Full::new(target.body.clone()))?;
        let started = Instant::now();
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        latencies.push(started.elapsed().as_micros() as u32);
        if !status.is_success() {
            bail!(
                "{} {} answered {status}: {}",
                target.method,
                target.path,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        if let Some(suffix) = target.body_ends_with
            && !body.ends_with(suffix)
        {
            bail!(
                "{} {}: the body does not end with {:?}: …{}",
                target.method,
                target.path,
                String::from_utf8_lossy(suffix),
                String::from_utf8_lossy(&body[body.len().saturating_sub(300)..])
            );
        }
    }
    Ok(latencies)
}

/// Drives `target` with `load` (warm-up, then the measured phase) and
/// returns the figures of the measured phase.
pub fn run(target: &Target, load: &Load) -> anyhow::Result<Figures> {
    // One thread for the load generator, so the server keeps the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = Arc::new(target.clone());
    let period = load
        .paced_rps
        .map(|rps| Duration::from_secs_f64(load.connections as f64 / rps));
    rt.block_on(async {
        let phase = |d: Duration| {
            let until = Instant::now() + d;
            let tasks: Vec<_> = (0..load.connections)
                .map(|i| {
                    let paced = period.map(|p| (p, p * i as u32 / load.connections as u32));
                    tokio::spawn(connection(target.clone(), paced, until))
                })
                .collect();
            async move {
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await??);
                }
                anyhow::Ok(all)
            }
        };
        phase(load.warmup).await?;
        let started = Instant::now();
        let mut lat = phase(load.duration).await?;
        let elapsed = started.elapsed().as_secs_f64();
        if lat.is_empty() {
            bail!("no request completed in {elapsed:.1} s");
        }
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64;
        Ok(Figures {
            requests: lat.len(),
            rps: lat.len() as f64 / elapsed,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        })
    })
}
