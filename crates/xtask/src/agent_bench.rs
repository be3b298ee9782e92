//! `cargo xtask bench-agent`: the agent runtime's own overhead per run.
//!
//! The fake model provider and the Slack stand-in of `bulkhead-testkit`
//! run in this process on their own multi-thread runtime and answer at
//! once; the release binary runs in front of them with one agent whose
//! scripted run has three steps (model → tool → model → answer). The same
//! three calls are also made directly, from the same load generator, in
//! the same run: the difference is what bulkhead adds (authentication,
//! prompt rendering and provenance checks, the gateway, argument
//! validation, the vault, redaction, and persisting every step and audit
//! event).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

const PROVIDER_KEY: &str = "sk-bench-provider-key-0123456789";
const SLACK_TOKEN: &str = "xoxb-bench-slack-token-0123456789";
const STEPS: f64 = 3.0;

struct Opts {
    duration: Duration,
    warmup: Duration,
    concurrency: usize,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        concurrency: 16,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut v = |n: &str| it.next().with_context(|| format!("{n} needs a value"));
        match a.as_str() {
            "--duration" => {
                o.duration = Duration::from_secs(v("--duration")?.parse().context("--duration")?)
            }
            "--warmup" => {
                o.warmup = Duration::from_secs(v("--warmup")?.parse().context("--warmup")?)
            }
            "--concurrency" => {
                o.concurrency = v("--concurrency")?.parse().context("--concurrency")?
            }
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench-agent [--duration SECS] [--warmup SECS] [--concurrency N]"
            ),
        }
    }
    Ok(o)
}

/// The scripted model: a tool call for a new question, an answer once the
/// tool has answered.
fn model(request: &Value) -> Option<Reply> {
    let last = request["messages"].as_array()?.last()?;
    match last["role"].as_str()? {
        "user" => Some(Reply::tool_call(
            "slack",
            json!({"channel": "#bench", "text": "hello from the bench"}),
        )),
        _ => Some(Reply::text("done")),
    }
}

/// The outside services and their runtime (dropped last).
pub(crate) struct Outside {
    pub(crate) fake: FakeProvider,
    pub(crate) saas: SaasStandIn,
    _rt: tokio::runtime::Runtime,
}

/// The fake model (answering with `responder`, not recording) and the
/// Slack stand-in, on a runtime of their own.
pub(crate) fn start_outside(responder: fn(&Value) -> Option<Reply>) -> anyhow::Result<Outside> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("outside")
        .enable_all()
        .build()?;
    let (fake, saas) = rt.block_on(async {
        anyhow::Ok((
            FakeProvider::try_start().await?,
            SaasStandIn::try_start().await?,
        ))
    })?;
    fake.set_recording(false);
    fake.set_responder(responder);
    Ok(Outside {
        fake,
        saas,
        _rt: rt,
    })
}

fn config(o: &Outside) -> String {
    format!(
        r#"[operator]
token = "env:BENCH_OPERATOR_TOKEN"

[[providers]]
name = "fake"
kind = "openai"
base_url = "{}/v1"
region = "eu"
credential = "env:BENCH_PROVIDER_KEY"
max_concurrency = 1024
max_retries = 0
[[models]]
name = "small"
provider = "fake"
upstream = "gpt-4o-mini"
# The stand-in listens on loopback over plain http.
[egress]
allow_http = true
allow_hosts = ["127.0.0.1/32"]
[[tools]]
name = "slack"
kind = "slack"
base_url = "{}"
region = "eu"
connection = "slack"
[[agents]]
name = "bench"
model = "small"
prompt = "You are the bench agent of {{{{ tenant.id }}}}."
tools = ["slack"]
"#,
        o.fake.base_url(),
        o.saas.base_url()
    )
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { addr, sender })
    }

    async fn post(&mut self, path: &str, auth: &str, body: &Value) -> anyhow::Result<Value> {
        let req = hyper::Request::post(path)
            .header("host", self.addr.to_string())
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let res = self.sender.send_request(req).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "POST {path} answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// The same three calls a run makes, made directly.
async fn direct_run(fake: &mut Conn, saas: &mut Conn, tools: &Value) -> anyhow::Result<()> {
    let auth = format!("Bearer {PROVIDER_KEY}");
    let mut messages = vec![
        json!({"role": "system", "content": "You are the bench agent of bench."}),
        json!({"role": "user", "content": "bench run"}),
    ];
    let first = fake
        .post(
            "/v1/chat/completions",
            &auth,
            &json!({"model": "gpt-4o-mini", "messages": messages, "tools": tools}),
        )
        .await?;
    let msg = first["choices"][0]["message"].clone();
    let call = msg["tool_calls"][0].clone();
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("{}"))?;
    let posted = saas
        .post(
            "/api/chat.postMessage",
            &format!("Bearer {SLACK_TOKEN}"),
            &args,
        )
        .await?;
    messages.push(msg);
    messages
        .push(json!({"role": "tool", "tool_call_id": call["id"], "content": posted.to_string()}));
    let last = fake
        .post(
            "/v1/chat/completions",
            &auth,
            &json!({"model": "gpt-4o-mini", "messages": messages, "tools": tools}),
        )
        .await?;
    if last["choices"][0]["message"]["content"] != "done" {
        bail!("the direct run did not end with the answer: {last}");
    }
    Ok(())
}

async fn bulkhead_run(conn: &mut Conn, key: &str) -> anyhow::Result<()> {
    let run = conn
        .post(
            "/v1/agents/bench/runs",
            &format!("Bearer {key}"),
            &json!({"input": "bench run"}),
        )
        .await?;
    if run["status"] != "completed" || run["output"] != "done" {
        bail!("the run did not complete: {run}");
    }
    Ok(())
}

struct Figures {
    runs: usize,
    rps: f64,
    p50: f64,
    p99: f64,
}

enum Mode {
    Direct { fake: SocketAddr, saas: SocketAddr },
    Bulkhead { addr: SocketAddr, key: Arc<String> },
}

async fn worker(mode: Arc<Mode>, until: Instant) -> anyhow::Result<Vec<u32>> {
    let tools = json!([{"type": "function", "function": {"name": "slack", "description": "Post a message to a Slack channel.",
        "parameters": {"type": "object", "properties": {"channel": {"type": "string"}, "text": {"type": "string"}}, "required": ["channel", "text"]}}}]);
    let mut lat = Vec::new();
    match &*mode {
        Mode::Direct { fake, saas } => {
            let (mut f, mut s) = (Conn::open(*fake).await?, Conn::open(*saas).await?);
            while Instant::now() < until {
                let t = Instant::now();
                direct_run(&mut f, &mut s, &tools).await?;
                lat.push(t.elapsed().as_micros() as u32);
            }
        }
        Mode::Bulkhead { addr, key } => {
            let mut c = Conn::open(*addr).await?;
            while Instant::now() < until {
                let t = Instant::now();
                bulkhead_run(&mut c, key).await?;
                lat.push(t.elapsed().as_micros() as u32);
            }
        }
    }
    Ok(lat)
}

fn measure(mode: Mode, o: &Opts) -> anyhow::Result<Figures> {
    // One thread for the load generator, as in the other benches.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mode = Arc::new(mode);
    rt.block_on(async {
        let phase = |d: Duration| {
            let until = Instant::now() + d;
            let tasks: Vec<_> = (0..o.concurrency)
                .map(|_| tokio::spawn(worker(mode.clone(), until)))
                .collect();
            async move {
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await??);
                }
                anyhow::Ok(all)
            }
        };
        phase(o.warmup).await?;
        let started = Instant::now();
        let mut lat = phase(o.duration).await?;
        let secs = started.elapsed().as_secs_f64();
        if lat.is_empty() {
            bail!("no run completed");
        }
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64;
        Ok(Figures {
            runs: lat.len(),
            rps: lat.len() as f64 / secs,
            p50: pct(0.5),
            p99: pct(0.99),
        })
    })
}

/// Creates tenant `bench` with an admin key and its Slack credential.
fn setup(addr: SocketAddr) -> anyhow::Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let base = format!("http://{addr}");
    let op = format!("Bearer {}", crate::OPERATOR_TOKEN);
    agent
        .post(format!("{base}/admin/v1/tenants"))
        .header("authorization", &op)
        .send_json(json!({"id": "bench", "region": "eu"}))?;
    let key: Value = agent
        .post(format!("{base}/admin/v1/tenants/bench/api-keys"))
        .header("authorization", &op)
        .send_json(json!({"roles": ["admin"]}))?
        .body_mut()
        .read_json()?;
    let key = key["key"].as_str().context("no key")?.to_owned();
    agent
        .put(format!("{base}/v1/credentials/slack"))
        .header("authorization", format!("Bearer {key}"))
        .send_json(json!({"kind": "bearer", "secret": SLACK_TOKEN}))?;
    Ok(key)
}

/// Runs the bench and prints its figures.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(args)?;
    let outside = start_outside(model)?;
    let dir = std::env::temp_dir().join(format!("bulkhead-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = crate::start_server(
        &dir,
        &config(&outside),
        &[("BENCH_PROVIDER_KEY", PROVIDER_KEY)],
    )?;
    let key = Arc::new(setup(server.addr)?);
    println!(
        "bulkhead agent bench: {} concurrent runs, {} s after {} s warm-up, release build, request logs off",
        o.concurrency,
        o.duration.as_secs(),
        o.warmup.as_secs()
    );
    println!(
        "a run = model call → Slack tool call → model call → answer (fake model and Slack stand-in answer at once)"
    );
    println!(
        "direct = the same three HTTP calls from the load generator; bulkhead = POST /v1/agents/bench/runs\n"
    );
    let direct = measure(
        Mode::Direct {
            fake: outside.fake.addr(),
            saas: outside.saas.addr(),
        },
        &o,
    )?;
    outside.saas.clear();
    let through = measure(
        Mode::Bulkhead {
            addr: server.addr,
            key: key.clone(),
        },
        &o,
    )?;
    outside.saas.clear();
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9}",
        "path", "runs", "runs/s", "p50 µs", "p99 µs"
    );
    for (name, f) in [("direct", &direct), ("bulkhead", &through)] {
        println!(
            "{:<10} {:>8} {:>9.0} {:>9.0} {:>9.0}",
            name, f.runs, f.rps, f.p50, f.p99
        );
    }
    let (add50, add99) = (through.p50 - direct.p50, through.p99 - direct.p99);
    println!(
        "\nruns/s ratio bulkhead/direct: {:.2}\nadded per run: p50 {:.0} µs, p99 {:.0} µs; per step (÷ {STEPS}): p50 {:.0} µs, p99 {:.0} µs",
        through.rps / direct.rps,
        add50,
        add99,
        add50 / STEPS,
        add99 / STEPS
    );
    println!(
        "goal: platform overhead per step under 1 ms at p99: {:.0} µs ({})",
        add99 / STEPS,
        if add99 / STEPS < 1000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
