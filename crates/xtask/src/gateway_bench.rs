//! `cargo xtask bench-gateway`: the model gateway's overhead.
//!
//! The fake model provider of `bulkhead-testkit` runs in this process on
//! its own multi-thread runtime (recording off); the release binary runs in
//! front of it with one `openai` provider and one model. Each scenario is
//! measured twice with the same chat completion request: straight to the
//! fake (the baseline) and through bulkhead with a tenant API key. The load
//! generator ([`crate::load`]) has one thread of its own.

use std::time::Duration;

use anyhow::{Context, bail};
use bulkhead_testkit::FakeProvider;
use serde_json::{Value, json};

use crate::load::{self, Figures, Load, Target};

/// The platform key bulkhead sends to the fake (any non-empty value).
const PROVIDER_KEY: &str = "bench-provider-key";
/// The paced rate of the latency goal.
const PACED_RPS: f64 = 1000.0;
/// Connections sharing the paced rate.
const PACED_CONNECTIONS: usize = 16;
/// Closed-loop levels.
const CLOSED_LEVELS: [usize; 2] = [16, 64];
/// The name of the fake provider's runtime threads (at most 15 bytes: the
/// kernel's thread name length).
const FAKE_THREAD: &str = "fake-provider";
/// The end of every streamed answer.
const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

struct Opts {
    duration: Duration,
    warmup: Duration,
    /// The one-core mode: bulkhead alone on CPU 0, the fake and the load
    /// generator on CPU 1.
    pinned: bool,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        pinned: false,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |n: &str| it.next().with_context(|| format!("{n} needs a value"));
        match a.as_str() {
            "--duration" => {
                o.duration =
                    Duration::from_secs(value("--duration")?.parse().context("--duration")?)
            }
            "--warmup" => {
                o.warmup = Duration::from_secs(value("--warmup")?.parse().context("--warmup")?)
            }
            "--pinned" => o.pinned = true,
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench-gateway [--pinned] [--duration SECS] [--warmup SECS]"
            ),
        }
    }
    if o.duration.is_zero() {
        bail!("--duration must be at least 1");
    }
    Ok(o)
}

/// The fake provider and the runtime serving it, off the load generator's
/// thread. Field order matters: the provider stops before its runtime.
struct Fake {
    provider: FakeProvider,
    _rt: tokio::runtime::Runtime,
}

fn start_fake() -> anyhow::Result<Fake> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name(FAKE_THREAD)
        .enable_all()
        .build()?;
    let provider = rt.block_on(FakeProvider::try_start())?;
    // Counted, not recorded: a long run must not accumulate requests.
    provider.set_recording(false);
    Ok(Fake { provider, _rt: rt })
}

fn config(fake: &FakeProvider) -> String {
    format!(
        r#"[operator]
token = "env:BENCH_OPERATOR_TOKEN"

[[providers]]
name = "fake"
kind = "openai"
base_url = "{}/v1"
region = "eu"
credential = "env:BENCH_PROVIDER_KEY"
# A failed call must fail the bench, not be retried out of sight.
max_retries = 0
# Above the bench's 64 connections: calls never wait for a permit.
max_concurrency = 1024

[[models]]
name = "small"
provider = "fake"
upstream = "gpt-4o-mini"
price_input_per_mtok = "0.15"
price_output_per_mtok = "0.60"

# Every tenant control on, set high enough never to refuse the bench:
# each call is counted against the request and token limits and reserves
# and settles its cost against the budgets.
[quotas.default]
requests_per_minute = 100000000
tokens_per_minute = 100000000000
daily_budget_usd = "1000000"
monthly_budget_usd = "10000000"
"#,
        fake.base_url()
    )
}

fn chat_body(model: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    });
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// One answer of each kind through bulkhead, checked, before any load: a
/// misconfiguration fails here with the server's message.
fn smoke(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for stream in [false, true] {
        let mut res = agent
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .send_json(chat_body("small", stream))?;
        let status = res.status();
        let text = res.body_mut().read_to_string()?;
        let ok = status.is_success()
            && if stream {
                text.contains("benchmark.") && text.ends_with("data: [DONE]\n\n")
            } else {
                serde_json::from_str::<Value>(&text)?["choices"][0]["message"]["content"]
                    == "echo: Say hello to the benchmark."
            };
        if !ok {
            bail!("chat completion (stream: {stream}) through bulkhead answered {status}: {text}");
        }
    }
    Ok(())
}

/// CPU time used so far, in clock ticks (1/100 s): the bulkhead process,
/// the fake provider's threads, and the rest of this process (the load
/// generator's thread). `None` where `/proc` cannot be read.
#[derive(Clone, Copy)]
struct Cpu {
    bulkhead: Option<u64>,
    fake: Option<u64>,
    loadgen: Option<u64>,
}

/// utime + stime of a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14, 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

impl Cpu {
    fn now(bulkhead_pid: u32) -> Self {
        let bulkhead = std::fs::read_to_string(format!("/proc/{bulkhead_pid}/stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
            .map(|(_, t)| t);
        let (mut fake, mut loadgen) = (None, None);
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            let (mut f, mut l) = (0, 0);
            for task in tasks.flatten() {
                let Some((comm, ticks)) = std::fs::read_to_string(task.path().join("stat"))
                    .ok()
                    .and_then(|s| stat_ticks(&s))
                else {
                    continue;
                };
                if comm == FAKE_THREAD {
                    f += ticks;
                } else {
                    l += ticks;
                }
            }
            (fake, loadgen) = (Some(f), Some(l));
        }
        Self {
            bulkhead,
            fake,
            loadgen,
        }
    }
}

/// A measured run with the CPU its parts used per request.
struct Measured {
    figures: Figures,
    /// µs of CPU per request: bulkhead, the fake, the load generator.
    cpu_us: [Option<f64>; 3],
}

/// Warm-up, then the measured phase with CPU accounting around it (the
/// warm-up's connections are closed before the measured phase opens its
/// own, as in [`load::run`]).
fn measure(target: &Target, level: &Load, bulkhead_pid: u32) -> anyhow::Result<Measured> {
    load::run(
        target,
        &Load {
            duration: level.warmup,
            warmup: Duration::ZERO,
            ..*level
        },
    )?;
    let before = Cpu::now(bulkhead_pid);
    let figures = load::run(
        target,
        &Load {
            warmup: Duration::ZERO,
            ..*level
        },
    )?;
    let after = Cpu::now(bulkhead_pid);
    // Clock ticks are 10 ms on Linux (USER_HZ = 100).
    let per_request = |a: Option<u64>, b: Option<u64>| {
        Some(b?.saturating_sub(a?) as f64 * 10_000.0 / figures.requests as f64)
    };
    Ok(Measured {
        cpu_us: [
            per_request(before.bulkhead, after.bulkhead),
            per_request(before.fake, after.fake),
            per_request(before.loadgen, after.loadgen),
        ],
        figures,
    })
}

struct Row {
    scenario: String,
    direct: Measured,
    through: Measured,
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
fn print_table(rows: &[Row]) {
    println!(
        "{:<34} {:<8} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11} {:>11}",
        "scenario",
        "path",
        "requests",
        "req/s",
        "p50 µs",
        "p99 µs",
        "rps ratio",
        "added p50",
        "added p99"
    );
    for r in rows {
        let (d, t) = (&r.direct.figures, &r.through.figures);
        println!(
            "{:<34} {:<8} {:>9} {:>8.0} {:>8.0} {:>8.0} {:>9}",
            r.scenario, "direct", d.requests, d.rps, d.p50_us, d.p99_us, "1.00"
        );
        println!(
            "{:<34} {:<8} {:>9} {:>8.0} {:>8.0} {:>8.0} {:>9.2} {:>11.0} {:>11.0}",
            "",
            "bulkhead",
            t.requests,
            t.rps,
            t.p50_us,
            t.p99_us,
            t.rps / d.rps,
            t.p50_us - d.p50_us,
            t.p99_us - d.p99_us
        );
    }
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
fn print_cpu(rows: &[(&str, &str, &Measured)]) {
    let cell = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
    println!(
        "{:<34} {:<8} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "path", "bulkhead", "fake", "load gen", "total"
    );
    for (scenario, path, m) in rows {
        let total = m.cpu_us.iter().copied().sum::<Option<f64>>();
        println!(
            "{:<34} {:<8} {:>9} {:>9} {:>9} {:>9}",
            scenario,
            path,
            cell(m.cpu_us[0]),
            cell(m.cpu_us[1]),
            cell(m.cpu_us[2]),
            cell(total)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Pins every thread of this process (the fake provider's runtime and the
/// load generator) to CPU `cpu`, with `taskset`.
fn pin_self(cpu: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset (util-linux) is needed for --pinned")?;
    if !status.success() {
        bail!("taskset could not pin this process to CPU {cpu}");
    }
    Ok(())
}

/// The one-core mode: bulkhead pinned alone on CPU 0, the fake provider
/// and the load generator on CPU 1, keep-alive, a small non-streamed chat
/// completion. Prints bulkhead's CPU ms per request (from
/// `/proc/<pid>/stat`) beside the direct baseline's (the fake's own CPU
/// for the same requests), its one-core throughput, and the latency it
/// adds at one connection, against issue 20's goals.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
fn run_pinned(opts: &Opts) -> anyhow::Result<()> {
    if std::thread::available_parallelism().map_or(0, usize::from) < 2 {
        bail!("--pinned needs two CPUs");
    }
    let fake = start_fake()?;
    pin_self("1")?;
    let dir = std::env::temp_dir().join(format!("bulkhead-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = crate::start_server_on(
        &dir,
        &config(&fake.provider),
        &[("BENCH_PROVIDER_KEY", PROVIDER_KEY)],
        Some("0"),
    )?;
    let pid = server.child.id();
    let key = crate::create_tenant_key(server.addr)?;
    smoke(server.addr, &key)?;
    println!(
        "bulkhead gateway bench, pinned: bulkhead alone on CPU 0; the fake provider and the 1-thread load generator on CPU 1; {} s per run after {} s warm-up; release build, request logs off; every tenant control on (API-key auth, request and token limits, budget reserve/settle, usage row, audit event)",
        opts.duration.as_secs(),
        opts.warmup.as_secs()
    );
    let direct = Target::post_json(
        fake.provider.addr(),
        "/v1/chat/completions",
        &chat_body("gpt-4o-mini", false),
    )
    .bearer(PROVIDER_KEY)?;
    let through = Target::post_json(
        server.addr,
        "/v1/chat/completions",
        &chat_body("small", false),
    )
    .bearer(&key)?;
    let level = |connections| Load {
        connections,
        duration: opts.duration,
        warmup: opts.warmup,
        paced_rps: None,
    };
    let one_direct = measure(&direct, &level(1), pid)?;
    let one_through = measure(&through, &level(1), pid)?;
    let many_direct = measure(&direct, &level(CLOSED_LEVELS[1]), pid)?;
    let many_through = measure(&through, &level(CLOSED_LEVELS[1]), pid)?;
    let rows = [
        Row {
            scenario: "plain, 1 conn closed loop".into(),
            direct: one_direct,
            through: one_through,
        },
        Row {
            scenario: format!("plain, {} conn closed loop", CLOSED_LEVELS[1]),
            direct: many_direct,
            through: many_through,
        },
    ];
    println!();
    print_table(&rows);
    println!();
    println!(
        "CPU per request, ms (bulkhead: its process on CPU 0; direct: the fake's threads for the same calls):"
    );
    println!(
        "{:<34} {:>12} {:>12} {:>14}",
        "scenario", "bulkhead ms", "direct ms", "bulkhead req/s"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.3}", v / 1000.0));
    for r in &rows {
        println!(
            "{:<34} {:>12} {:>12} {:>14.0}",
            r.scenario,
            ms(r.through.cpu_us[0]),
            ms(r.direct.cpu_us[1]),
            r.through.figures.rps
        );
    }
    println!();
    println!("goals (issue 20):");
    let many = &rows[1].through;
    let cpu_ms = many.cpu_us[0].map(|v| v / 1000.0);
    println!(
        "  CPU per non-streamed call at {} conn: {} ms (<= 0.100: {})",
        CLOSED_LEVELS[1],
        ms(many.cpu_us[0]),
        verdict(cpu_ms.is_some_and(|v| v <= 0.1))
    );
    println!(
        "  throughput on one core: {:.0} req/s (>= 10000: {})",
        many.figures.rps,
        verdict(many.figures.rps >= 10_000.0)
    );
    let one = &rows[0];
    let p50 = one.through.figures.p50_us - one.direct.figures.p50_us;
    let p99 = one.through.figures.p99_us - one.direct.figures.p99_us;
    println!(
        "  added latency at 1 connection: p50 {p50:.0} µs (<= 100: {}), p99 {p99:.0} µs (<= 500: {})",
        verdict(p50 <= 100.0),
        verdict(p99 <= 500.0)
    );
    drop(server);
    drop(fake);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs the bench.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let opts = parse(args)?;
    if opts.pinned {
        return run_pinned(&opts);
    }
    let fake = start_fake()?;
    let dir = std::env::temp_dir().join(format!("bulkhead-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = crate::start_server(
        &dir,
        &config(&fake.provider),
        &[("BENCH_PROVIDER_KEY", PROVIDER_KEY)],
    )?;
    let pid = server.child.id();
    let key = crate::create_tenant_key(server.addr)?;
    smoke(server.addr, &key)?;

    println!(
        "bulkhead gateway bench: {} s per run after {} s warm-up, release build, request logs off",
        opts.duration.as_secs(),
        opts.warmup.as_secs()
    );
    println!(
        "direct = POST /v1/chat/completions to the fake provider (in-process, own runtime); bulkhead = the same through the gateway"
    );
    println!(
        "bulkhead, the fake and the 1-thread load generator share the machine's {} cores; latency = send to last body byte",
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    let closed = |connections| Load {
        connections,
        duration: opts.duration,
        warmup: opts.warmup,
        paced_rps: None,
    };
    let mut levels: Vec<(String, Load)> = CLOSED_LEVELS
        .iter()
        .map(|&c| (format!("{c} conn closed loop"), closed(c)))
        .collect();
    let paced_name = format!("{PACED_RPS:.0} req/s paced ({PACED_CONNECTIONS} conn)");
    let paced = Load {
        paced_rps: Some(PACED_RPS),
        ..closed(PACED_CONNECTIONS)
    };
    levels.push((paced_name.clone(), paced));

    let mut rows = Vec::new();
    for stream in [false, true] {
        let mut direct = Target::post_json(
            fake.provider.addr(),
            "/v1/chat/completions",
            &chat_body("gpt-4o-mini", stream),
        )
        .bearer(PROVIDER_KEY)?;
        let mut through = Target::post_json(
            server.addr,
            "/v1/chat/completions",
            &chat_body("small", stream),
        )
        .bearer(&key)?;
        if stream {
            direct = direct.body_ends_with(SSE_DONE);
            through = through.body_ends_with(SSE_DONE);
        }
        let kind = if stream { "stream" } else { "plain" };
        for (name, level) in &levels {
            rows.push(Row {
                scenario: format!("{kind}, {name}"),
                direct: measure(&direct, level, pid)?,
                through: measure(&through, level, pid)?,
            });
        }
    }
    // Bulkhead's own path without the upstream call and the usage write:
    // authentication, the tenant's model allow-list read, a JSON answer.
    let models = Target::get(server.addr, "/v1/models").bearer(&key)?;
    let models_closed_name = format!("{} conn closed loop", CLOSED_LEVELS[1]);
    let models_closed = measure(&models, &closed(CLOSED_LEVELS[1]), pid)?;
    let models_paced = measure(&models, &paced, pid)?;

    println!();
    print_table(&rows);
    println!();
    println!(
        "reference: GET /v1/models through bulkhead (authentication + allow-list read, no upstream call, no usage write)"
    );
    for (name, m) in [
        (&models_closed_name, &models_closed),
        (&paced_name, &models_paced),
    ] {
        let f = &m.figures;
        println!(
            "{:<34} {:<8} {:>9} {:>8.0} {:>8.0} {:>8.0}",
            name, "bulkhead", f.requests, f.rps, f.p50_us, f.p99_us
        );
    }
    println!();
    println!(
        "CPU per request, µs (process and thread CPU time over the measured phase / requests):"
    );
    let mut cpu: Vec<(&str, &str, &Measured)> = Vec::new();
    for r in &rows {
        cpu.push((&r.scenario, "direct", &r.direct));
        cpu.push(("", "bulkhead", &r.through));
    }
    let models_closed_label = format!("/v1/models, {models_closed_name}");
    let models_paced_label = format!("/v1/models, {paced_name}");
    cpu.push((&models_closed_label, "bulkhead", &models_closed));
    cpu.push((&models_paced_label, "bulkhead", &models_paced));
    print_cpu(&cpu);

    println!();
    println!("goals:");
    for r in rows.iter().filter(|r| r.scenario.contains("paced")) {
        let p50 = r.through.figures.p50_us - r.direct.figures.p50_us;
        let p99 = r.through.figures.p99_us - r.direct.figures.p99_us;
        println!(
            "  {}: added p50 {:.0} µs (< 300: {}), added p99 {:.0} µs (< 1000: {})",
            r.scenario,
            p50,
            verdict(p50 < 300.0),
            p99,
            verdict(p99 < 1000.0)
        );
        // With MissedTickBehavior::Delay a connection whose answers take
        // longer than its period falls behind: the rate is not reached.
        for (path, f) in [
            ("direct", &r.direct.figures),
            ("bulkhead", &r.through.figures),
        ] {
            if f.rps < 0.95 * PACED_RPS {
                println!(
                    "    ({path} reached {:.0} req/s, not {PACED_RPS:.0}: its answers take longer than the {} ms period of a connection)",
                    f.rps,
                    PACED_CONNECTIONS as f64 * 1000.0 / PACED_RPS
                );
            }
        }
    }
    for r in rows.iter().filter(|r| r.scenario.contains("closed")) {
        let ratio = r.through.figures.rps / r.direct.figures.rps;
        println!(
            "  {}: throughput {:.2} of direct (>= 0.60: {})",
            r.scenario,
            ratio,
            verdict(ratio >= 0.60)
        );
    }

    drop(server);
    drop(fake);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
