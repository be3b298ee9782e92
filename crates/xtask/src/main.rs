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
//!
//! `cargo xtask bench-gateway` measures the model gateway's overhead: chat
//! completions (plain and streamed) sent straight to the fake model
//! provider of `bulkhead-testkit` and through the release binary in front
//! of it, closed-loop and at a fixed request rate.
//!
//! `cargo xtask bench-knowledge` measures knowledge search, ingestion,
//! idle-tenant memory and the canary scan in-process.
//!
//! `cargo xtask bench-agent` measures the agent runtime's overhead: a
//! three-step scripted run through the release binary against the same
//! calls made directly.
//!
//! `cargo xtask bench-limits` measures a limit decision in-process: a
//! per-minute window and a model call's reserve then settle, on the
//! in-process backend (the baseline) and on Redis at 127.0.0.1:6379, from
//! one caller and from many at once.
//!
//! `cargo xtask bench-policy` measures an authorisation decision (Cedar)
//! with 1,000 tenants' policy sets loaded, against the role check it
//! replaced, and the approval round trip (pause, approve, resume) against
//! the same run without approval.
//!
//! `cargo xtask bench-outbox` measures what `[audit.nats]` (the outbox row
//! and its publisher) adds to a model call's ledger write, against the
//! same write with streams off, in one run.
//! `cargo xtask bench-audit` measures `GET /v1/audit/export` and
//! `bulkhead audit verify` over one tenant's chain of N events, with peak
//! memory at N/10 and N, against a raw read of the same file.

mod agent_bench;
mod approval_bench;
mod audit_bench;
mod gateway_bench;
mod knowledge_bench;
mod limits_bench;
mod load;
mod outbox_bench;
mod policy_bench;
mod vault_bench;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::load::{Load, Target};

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
        "bench-gateway" => gateway_bench::run(std::env::args().skip(2).collect()),
        "bench-agent" => agent_bench::run(std::env::args().skip(2).collect()),
        "bench-knowledge" => knowledge_bench::run(std::env::args().skip(2).collect()),
        "bench-limits" => limits_bench::run(std::env::args().skip(2).collect()),
        "bench-policy" => policy_bench::run(std::env::args().skip(2).collect()),
        "bench-outbox" => outbox_bench::run(std::env::args().skip(2).collect()),
        "bench-audit" => audit_bench::run(std::env::args().skip(2).collect()),
        _ => bail!(
            "usage: cargo xtask bench [--connections N] [--duration SECS] [--warmup SECS]\n       cargo xtask bench-vault [--tenants N] [--iterations N]\n       cargo xtask bench-gateway [--duration SECS] [--warmup SECS]\n       cargo xtask bench-agent [--duration SECS] [--warmup SECS] [--concurrency N]\n       cargo xtask bench-knowledge [--tenants N] [--chunks N] [--idle-tenants N] [--queries N] [--dims N]\n       cargo xtask bench-limits [--decisions N] [--concurrency N] [--redis-url URL]\n       cargo xtask bench-policy [--tenants N] [--decisions N] [--approval-rounds N]\n       cargo xtask bench-outbox [--calls N] [--concurrency N] [--nats-url URL]\n       cargo xtask bench-audit [--events N]"
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

/// The configuration of the auth bench.
const AUTH_CONFIG: &str = r#"[operator]
token = "env:BENCH_OPERATOR_TOKEN"
[[auth.jwt]]
issuer = "https://bench.test"
audience = "bulkhead"
algorithms = ["HS256"]
secret = "env:BENCH_JWT_SECRET"
"#;

/// Builds the release binary and starts it on a free loopback port with
/// `config` (written to `dir`) and a data directory in `dir`. The operator
/// token is in `BENCH_OPERATOR_TOKEN`; `env` adds variables.
fn start_server(dir: &Path, config: &str, env: &[(&str, &str)]) -> anyhow::Result<Server> {
    start_server_on(dir, config, env, None)
}

/// [`start_server`], the server pinned to the CPUs `cpus` (a `taskset`
/// list such as `"0"`) when given.
fn start_server_on(
    dir: &Path,
    config: &str,
    env: &[(&str, &str)],
    cpus: Option<&str>,
) -> anyhow::Result<Server> {
    let root = workspace_root();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--release", "--quiet", "-p", "bulkhead"])
        .current_dir(&root);
    // `cargo run` gives xtask its package's variables; passed on, they
    // differ from a plain `cargo build` (ring's build script watches
    // CARGO_MANIFEST_DIR), and each switch between the two rebuilt ring,
    // rustls, reqwest and the crates above them.
    for (name, _) in std::env::vars_os() {
        if let Some(n) = name.to_str()
            && (n.starts_with("CARGO_PKG_")
                || n.starts_with("CARGO_MANIFEST_")
                || matches!(
                    n,
                    "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
                ))
        {
            build.env_remove(n);
        }
    }
    let status = build.status()?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let config_path = dir.join("bench.toml");
    std::fs::write(&config_path, config)?;
    let binary = root.join("target/release/bulkhead");
    // `taskset` execs the binary: the child's pid is the server's.
    let mut command = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    let mut child = command
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("BENCH_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .envs(env.iter().copied())
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

/// Creates tenant "bench" in region "eu" through the operator API and
/// returns a new API key of it (role `member`).
fn create_tenant_key(addr: SocketAddr) -> anyhow::Result<String> {
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
    Ok(key["key"].as_str().context("no key")?.to_owned())
}

fn setup(addr: SocketAddr) -> anyhow::Result<(String, String)> {
    let key = create_tenant_key(addr)?;
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

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
fn bench(args: &Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("bulkhead-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = start_server(&dir, AUTH_CONFIG, &[("BENCH_JWT_SECRET", JWT_SECRET)])?;
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
        let level = Load {
            connections,
            duration: args.duration,
            warmup: args.warmup,
            paced_rps: None,
        };
        let me = Target::get(server.addr, "/v1/me");
        let base = load::run(&Target::get(server.addr, "/healthz"), &level)?;
        let with_key = load::run(&me.clone().bearer(&key)?, &level)?;
        let with_jwt = load::run(&me.bearer(&jwt)?, &level)?;
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
