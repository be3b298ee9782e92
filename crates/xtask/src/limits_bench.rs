//! `cargo xtask bench-limits`: what a limit decision costs, in-process
//! against Redis.
//!
//! Two operations of the `Limiter`, each on the in-process
//! `MemoryBackend` (the in-run baseline) and on `RedisBackend`: a
//! per-minute window decision (`Limiter::request`) and a model call's
//! reserve then settle (`Limiter::reserve`, `Reservation::settle`). Each
//! is measured from one caller (latency) and from many concurrent callers
//! of one tenant (throughput, and latency under load). Quotas are huge so
//! every decision is admitted: the cost measured is the deciding, not a
//! refusal's short cut.
//!
//! Then the cost ledger's write throughput (group commit against one
//! commit per row), and the fairness experiment as a figure: quiet
//! tenants' p99 under a flood over their p99 without it, for fair and for
//! FIFO admission.

use bulkhead_core::audit::AuditAction;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bulkhead_auth::{OperatorAuthenticator, TenantScope};
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use bulkhead_core::config::QuotaValues;
use bulkhead_core::money::Usd;
use bulkhead_core::{Isolation, Region, RequestId, SecretString, TenantId, Timestamp};
use bulkhead_gateway::GatewayStore;
use bulkhead_gateway::usage::{Tokens, UsageRecord};
use bulkhead_quota::{FairGate, LimitBackend, Limiter, MemoryBackend, SpendLedger};
use bulkhead_store::redis_limits::{RedisBackend, redacted_url};
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{ControlStore, NewTenant};

const USAGE: &str =
    "usage: cargo xtask bench-limits [--decisions N] [--concurrency N] [--redis-url URL]";

struct Opts {
    /// Decisions per scenario (single caller and concurrent alike).
    decisions: usize,
    concurrency: usize,
    redis_url: String,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        decisions: 20_000,
        concurrency: 16,
        redis_url: "redis://127.0.0.1:6379".to_owned(),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |n: &str| it.next().with_context(|| format!("{n} needs a value"));
        match a.as_str() {
            "--decisions" => o.decisions = value("--decisions")?.parse().context("--decisions")?,
            "--concurrency" => {
                o.concurrency = value("--concurrency")?.parse().context("--concurrency")?
            }
            "--redis-url" => o.redis_url = value("--redis-url")?,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.decisions < 100 || o.concurrency == 0 {
        bail!("--decisions must be at least 100 and --concurrency at least 1; {USAGE}");
    }
    Ok(o)
}

/// A ledger with nothing spent: budgets are seeded at zero.
struct NothingSpent;

#[async_trait]
impl SpendLedger for NothingSpent {
    async fn spent_since(&self, _: &TenantScope, _: Timestamp) -> Result<u64, String> {
        Ok(0)
    }
}

/// One measured scenario: per-decision latencies and the wall time.
struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_s: f64,
}

fn figures(mut ns: Vec<u64>, wall: Duration) -> Figures {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    Figures {
        p50_us: p(0.50),
        p99_us: p(0.99),
        per_s: ns.len() as f64 / wall.as_secs_f64(),
    }
}

/// `Limiter::request`: one window counter.
async fn request(limiter: Arc<Limiter>, scope: TenantScope) -> anyhow::Result<()> {
    limiter
        .request(&scope)
        .await
        .map_err(|e| anyhow::anyhow!("refused: {e}"))
}

/// `Limiter::reserve` then `Reservation::settle` for a short chat call:
/// 1,200 tokens estimated at $0.0006, settled at 900 tokens and $0.00045
/// (so the token window is corrected too, as after a real call).
async fn reserve_settle(limiter: Arc<Limiter>, scope: TenantScope) -> anyhow::Result<()> {
    let r = limiter
        .reserve(&scope, 1_200, 600_000)
        .await
        .map_err(|e| anyhow::anyhow!("refused: {e}"))?;
    r.settle(900, 450_000).await;
    Ok(())
}

/// `n` calls of `f` from `callers` concurrent tasks (one call at a time
/// each), after a warm-up (connection, script cache, seeded budgets).
async fn measure<F, Fut>(f: F, n: usize, callers: usize) -> anyhow::Result<Figures>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    for _ in 0..(n / 20).max(50) {
        f().await?;
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let share = n / callers + usize::from(c < n % callers);
        let f = f.clone();
        tasks.spawn(async move {
            let mut ns = Vec::with_capacity(share);
            for _ in 0..share {
                let t = Instant::now();
                f().await?;
                ns.push(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(ns)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok(figures(all, started.elapsed()))
}

fn limiter(backend: Arc<dyn LimitBackend>) -> Arc<Limiter> {
    // Far above what the bench can spend ($1M, 10^15 nano-dollars), so
    // every decision is admitted, and below 2^53 so the Redis scripts
    // compare exactly.
    let budget = Usd::from_micros(1_000_000 * 1_000_000);
    let defaults = QuotaValues {
        requests_per_minute: Some(1_000_000_000_000),
        tokens_per_minute: Some(1_000_000_000_000),
        daily_budget_usd: Some(budget),
        monthly_budget_usd: Some(budget),
        ..QuotaValues::default()
    };
    Arc::new(Limiter::new(
        defaults,
        backend,
        Arc::new(NothingSpent),
        Duration::from_secs(600),
    ))
}

/// Runs the bench and prints its figures.
pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(o))
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
async fn bench(o: Opts) -> anyhow::Result<()> {
    let shown = redacted_url(&o.redis_url);
    let redis = RedisBackend::connect(&o.redis_url).await.with_context(|| {
        format!("bench-limits needs Redis at {shown} (`bash scripts/services.sh` starts one on 127.0.0.1:6379)")
    })?;

    // A tenant scope reached the way the server's operator actions reach
    // one. The tenant id is fixed, so repeated runs reuse the same few
    // Redis keys (all expiring) instead of leaving new ones behind.
    let dir = std::env::temp_dir().join(format!("bulkhead-limits-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir)?;
    let token = SecretString::new("bench-operator-token-0123456789".into());
    let op = OperatorAuthenticator::new(&token)
        .verify(Some(token.expose()), &RequestId::generate())
        .context("operator scope")?;
    let tenant = store
        .create_tenant(
            &op,
            NewTenant {
                id: TenantId::parse("bench-limits")?,
                name: "bench-limits".into(),
                region: Region::local(),
                isolation: Isolation::Shared,
            },
        )
        .await?;
    let scope = op.act_for_tenant(&tenant);

    let redis = Arc::new(redis);
    let memory = limiter(Arc::new(MemoryBackend::new()));
    let shared = limiter(redis.clone());

    println!(
        "bulkhead limits bench: release build, {} decisions per scenario after a warm-up; in-process backend vs Redis at {shown}, one tenant",
        o.decisions
    );
    println!(
        "reserve + settle = tokens window add + budget reserve (daily and monthly), then token correction + budget settle"
    );
    let row = |name: &str, f: &Figures, base: &Figures| {
        println!(
            "{:<46} {:>9.2} {:>9.2} {:>12.0} {:>10.1} {:>10.3}",
            name,
            f.p50_us,
            f.p99_us,
            f.per_s,
            f.p50_us / base.p50_us,
            f.per_s / base.per_s
        );
    };
    for callers in [1, o.concurrency] {
        println!();
        println!("{callers} caller(s) at once:");
        println!(
            "{:<46} {:>9} {:>9} {:>12} {:>10} {:>10}",
            "scenario", "p50 µs", "p99 µs", "decisions/s", "p50 ratio", "rate ratio"
        );
        let s = scope.clone();
        let (l, r) = (memory.clone(), shared.clone());
        let base = measure(move || request(l.clone(), s.clone()), o.decisions, callers).await?;
        let s = scope.clone();
        let redis_request =
            measure(move || request(r.clone(), s.clone()), o.decisions, callers).await?;
        let s = scope.clone();
        let (l, r) = (memory.clone(), shared.clone());
        let base_pair = measure(
            move || reserve_settle(l.clone(), s.clone()),
            o.decisions,
            callers,
        )
        .await?;
        let s = scope.clone();
        let redis_pair = measure(
            move || reserve_settle(r.clone(), s.clone()),
            o.decisions,
            callers,
        )
        .await?;
        // The floor: a bare PING on the same connection, against the
        // window decision's baseline.
        let b = redis.clone();
        let ping = measure(
            move || {
                let b = b.clone();
                async move { b.ping().await.map_err(anyhow::Error::from) }
            },
            o.decisions,
            callers,
        )
        .await?;
        row("window decision (request), memory (baseline)", &base, &base);
        row("window decision (request), redis", &redis_request, &base);
        row(
            "reserve + settle, memory (baseline)",
            &base_pair,
            &base_pair,
        );
        row("reserve + settle, redis", &redis_pair, &base_pair);
        row("redis PING round trip (vs window baseline)", &ping, &base);
    }
    ledger(&store, &op).await?;
    fairness().await;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn usage_row(i: usize, tenant: &TenantScope) -> (UsageRecord, NewAuditEvent) {
    let usage = UsageRecord {
        id: uuid::Uuid::now_v7().to_string(),
        time: Timestamp::now(),
        request_id: tenant.request_id().to_string(),
        model: "small".into(),
        provider: "fake".into(),
        region: "local".into(),
        tokens: Tokens {
            input: 1000,
            output: 100,
            cached: 0,
        },
        cost_nanos: 1_200_000,
        latency_ms: 1,
        status: "ok".into(),
        estimated: false,
        stream: false,
        kind: "model",
        agent: Some("support".into()),
        run_id: Some(format!("run-{i}")),
        tool: None,
    };
    let event = NewAuditEvent::new(
        AuditAction::ModelCall,
        "model:small",
        Outcome::Success,
        tenant.request_id().clone(),
    );
    (usage, event)
}

/// Ledger rows (each with its audit event, as the gateway writes them)
/// per second: one at a time (each waits for its own commit: the
/// baseline), queued together for one tenant (group commit), and queued
/// for 16 tenants at once.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
async fn ledger(store: &SqliteStore, op: &bulkhead_auth::OperatorScope) -> anyhow::Result<()> {
    let mut scopes = Vec::new();
    for i in 0..16 {
        let t = store
            .create_tenant(
                op,
                NewTenant {
                    id: TenantId::parse(&format!("bench-ledger-{i}"))?,
                    name: "bench".into(),
                    region: Region::local(),
                    isolation: Isolation::Shared,
                },
            )
            .await?;
        scopes.push(op.act_for_tenant(&t));
    }
    println!();
    println!("ledger writes (usage row + audit event, committed):");
    println!(
        "{:<46} {:>9} {:>12} {:>10}",
        "scenario", "rows", "rows/s", "ratio"
    );
    let one_by_one = 1_000;
    let t = Instant::now();
    for i in 0..one_by_one {
        let (u, e) = usage_row(i, &scopes[0]);
        store.record_usage(&scopes[0], u, e).await?;
    }
    let base = one_by_one as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:<46} {:>9} {:>12.0} {:>10.2}",
        "one at a time, one tenant (baseline)", one_by_one, base, 1.0
    );
    for (name, tenants) in [
        ("queued together, one tenant", 1),
        ("queued together, 16 tenants", 16),
    ] {
        let rows = 20_000;
        let t = Instant::now();
        let writes: Vec<_> = (0..rows)
            .map(|i| {
                let s = &scopes[i % tenants];
                let (u, e) = usage_row(i, s);
                store.record_usage(s, u, e)
            })
            .collect();
        for w in futures_util::future::join_all(writes).await {
            w?;
        }
        let rate = rows as f64 / t.elapsed().as_secs_f64();
        println!("{name:<46} {rows:>9} {rate:>12.0} {:>10.2}", rate / base);
    }
    Ok(())
}

/// Admission for the fairness experiment: the fair gate, or a plain FIFO
/// semaphore (what a provider cap is without fair queueing).
#[derive(Clone)]
enum Gate {
    Fair(FairGate),
    Fifo(Arc<tokio::sync::Semaphore>),
}

/// Quiet tenants' p99 latency (ms, real time) on a gate of 8 slots with
/// model calls of 5–15 ms: three tenants call every 20 ms each (40 calls
/// each) while one tenant has `flood` calls queued from the start.
async fn quiet_p99(gate: Gate, flood: usize) -> f64 {
    let service = |i: u64| Duration::from_millis(5 + (i * 7919) % 11);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let hold = |gate: Gate, tenant: String, d: Duration| async move {
        match gate {
            Gate::Fair(g) => {
                let _p = g.acquire(&tenant, 1).await;
                tokio::time::sleep(d).await;
            }
            Gate::Fifo(s) => {
                let _p = s.acquire_owned().await;
                tokio::time::sleep(d).await;
            }
        }
    };
    for i in 0..flood as u64 {
        let g = gate.clone();
        tasks.push(tokio::spawn(async move {
            hold(g, "flood".into(), service(i)).await;
            None
        }));
    }
    for q in 0..3u64 {
        for i in 0..40u64 {
            let g = gate.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_millis(i * 20 + q * 7)).await;
                let t = Instant::now();
                hold(g, format!("quiet{q}"), service(q * 40 + i)).await;
                Some(t.elapsed().as_secs_f64() * 1000.0)
            }));
        }
    }
    let mut lat = Vec::new();
    for t in tasks {
        if let Ok(Some(ms)) = t.await {
            lat.push(ms);
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    lat.get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// The fairness experiment as a figure: quiet tenants' p99 under a flood
/// of 2,000 queued calls over their p99 without it, with fair admission
/// and with FIFO admission.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
async fn fairness() {
    let fifo = || Gate::Fifo(Arc::new(tokio::sync::Semaphore::new(8)));
    let quiet = quiet_p99(Gate::Fair(FairGate::new(8)), 0).await;
    let fair = quiet_p99(Gate::Fair(FairGate::new(8)), 2_000).await;
    let quiet_fifo = quiet_p99(fifo(), 0).await;
    let flooded_fifo = quiet_p99(fifo(), 2_000).await;
    println!();
    println!(
        "fairness: 8 slots, calls of 5-15 ms; 3 quiet tenants each call every 20 ms while one tenant queues 2,000 calls (real time)"
    );
    println!(
        "{:<46} {:>12} {:>12} {:>10}",
        "admission", "quiet p99", "flooded p99", "ratio"
    );
    println!(
        "{:<46} {:>9.1} ms {:>9.1} ms {:>10.2}",
        "weighted fair queueing (FairGate)",
        quiet,
        fair,
        fair / quiet
    );
    println!(
        "{:<46} {:>9.1} ms {:>9.1} ms {:>10.2}",
        "FIFO semaphore (baseline)",
        quiet_fifo,
        flooded_fifo,
        flooded_fifo / quiet_fifo
    );
}
