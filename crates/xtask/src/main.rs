//! Project automation. `cargo xtask bench` measures the cost of
//! authentication: it builds and starts the release binary, then drives
//! `GET /healthz` (the unauthenticated baseline), `GET /v1/me` with an API
//! key and `GET /v1/me` with a JWT at a fixed number of keep-alive
//! connections, and prints throughput, latency percentiles and the ratios
//! against the baseline measured in the same run.
//!
//! `cargo xtask bench-vault` measures the vault in-process on the embedded
//! store: decrypting a credential with a cached data key, the first use
//! (data key read and unwrapped through the key provider), and re-wrap
//! throughput over many tenants, each against the bare cryptography as the
//! in-run baseline.

mod vault_bench;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::{Value, json};

struct Args {
    connections: usize,
    duration: Duration,
    warmup: Duration,
}

fn parse_args() -> anyhow::Result<(String, Args)> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    if task != "bench" {
        return Ok((
            task,
            Args {
                connections: 0,
                duration: Duration::ZERO,
                warmup: Duration::ZERO,
            },
        ));
    }
    let mut out = Args {
        connections: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
    };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--connections" => {
                out.connections = value("--connections")?.parse().context("--connections")?
            }
            "--duration" => {
                out.duration =
                    Duration::from_secs(value("--duration")?.parse().context("--duration")?)
            }
            "--warmup" => {
                out.warmup = Duration::from_secs(value("--warmup")?.parse().context("--warmup")?)
            }
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench [--connections N] [--duration SECS] [--warmup SECS]"
            ),
        }
    }
    Ok((task, out))
}

fn main() -> anyhow::Result<()> {
    let (task, args) = parse_args()?;
    match task.as_str() {
        "bench" => bench(&args),
        "bench-vault" => vault_bench::run(std::env::args().skip(2).collect()),
        _ => bail!(
            "usage: cargo xtask bench [--connections N] [--duration SECS] [--warmup SECS]\n       cargo xtask bench-vault [--tenants N] [--iterations N]"
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const JWT_SECRET: &str = "bench-jwt-secret-0123456789abcdef0123456789";
const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789";

fn start_server(dir: &Path) -> anyhow::Result<Server> {
    let root = workspace_root();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "bulkhead"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        r#"[operator]
token = "env:BENCH_OPERATOR_TOKEN"
[[auth.jwt]]
issuer = "https://bench.test"
audience = "bulkhead"
algorithms = ["HS256"]
secret = "env:BENCH_JWT_SECRET"
"#,
    )?;
    let mut child = Command::new(root.join("target/release/bulkhead"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("BENCH_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("BENCH_JWT_SECRET", JWT_SECRET)
        // Per-request log lines are off so the figures measure request
        // handling, not the terminal.
        .env("RUST_LOG", "info,bulkhead_server::request=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    use std::io::BufRead;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line?;
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "listening"
        {
            let addr = v["addr"].as_str().context("no addr")?.parse()?;
            return Ok(Server { child, addr });
        }
    }
    bail!("the server exited before listening")
}

fn setup(addr: SocketAddr) -> anyhow::Result<(String, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let base = format!("http://{addr}");
    agent
        .post(format!("{base}/admin/v1/tenants"))
        .header("authorization", format!("Bearer {OPERATOR_TOKEN}"))
        .send_json(json!({"id": "bench", "region": "eu"}))?;
    let key: Value = agent
        .post(format!("{base}/admin/v1/tenants/bench/api-keys"))
        .header("authorization", format!("Bearer {OPERATOR_TOKEN}"))
        .send_json(json!({"roles": ["member"]}))?
        .body_mut()
        .read_json()?;
    let key = key["key"].as_str().context("no key")?.to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": "https://bench.test", "aud": "bulkhead", "sub": "bench", "exp": now + 3600,
                "tenant_id": "bench", "roles": ["member"]}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )?;
    Ok((key, jwt))
}

struct Figures {
    requests: usize,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

async fn connection(
    addr: SocketAddr,
    path: &'static str,
    token: Option<String>,
    until: Instant,
) -> anyhow::Result<Vec<u32>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(100_000);
    while Instant::now() < until {
        let mut req = hyper::Request::get(path).header("host", addr.to_string());
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let started = Instant::now();
        let res = sender.send_request(req).await?;
        let status = res.status();
        res.into_body().collect().await?;
        latencies.push(started.elapsed().as_micros() as u32);
        if !status.is_success() {
            bail!("{path} answered {status}");
        }
    }
    Ok(latencies)
}

fn run(
    addr: SocketAddr,
    path: &'static str,
    token: Option<&str>,
    args: &Args,
) -> anyhow::Result<Figures> {
    // One thread for the load generator, so the server keeps the other core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let phase = |d: Duration| {
            let until = Instant::now() + d;
            let tasks: Vec<_> = (0..args.connections)
                .map(|_| tokio::spawn(connection(addr, path, token.map(str::to_owned), until)))
                .collect();
            async move {
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await??);
                }
                anyhow::Ok(all)
            }
        };
        phase(args.warmup).await?;
        let started = Instant::now();
        let mut lat = phase(args.duration).await?;
        let elapsed = started.elapsed().as_secs_f64();
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

#[allow(clippy::print_stdout)]
fn bench(args: &Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("bulkhead-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = start_server(&dir)?;
    let (key, jwt) = setup(server.addr)?;
    println!(
        "bulkhead auth bench: {} s per scenario after {} s warm-up, release build, request logs off",
        args.duration.as_secs(),
        args.warmup.as_secs()
    );
    // The issue's load (many connections) shows throughput; one connection
    // shows the latency authentication adds when nothing queues.
    let mut levels = vec![args.connections];
    if args.connections != 1 {
        levels.push(1);
    }
    for connections in levels {
        let level = Args {
            connections,
            duration: args.duration,
            warmup: args.warmup,
        };
        let base = run(server.addr, "/healthz", None, &level)?;
        let with_key = run(server.addr, "/v1/me", Some(&key), &level)?;
        let with_jwt = run(server.addr, "/v1/me", Some(&jwt), &level)?;
        println!();
        println!("{connections} keep-alive connection(s):");
        println!(
            "{:<28} {:>10} {:>10} {:>8} {:>8} {:>10} {:>13}",
            "scenario", "requests", "req/s", "p50 µs", "p99 µs", "rps ratio", "p50 delta µs"
        );
        for (name, f) in [
            ("GET /healthz (baseline)", &base),
            ("GET /v1/me, API key", &with_key),
            ("GET /v1/me, JWT HS256", &with_jwt),
        ] {
            println!(
                "{:<28} {:>10} {:>10.0} {:>8.0} {:>8.0} {:>10.2} {:>13.0}",
                name,
                f.requests,
                f.rps,
                f.p50_us,
                f.p99_us,
                f.rps / base.rps,
                f.p50_us - base.p50_us
            );
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
