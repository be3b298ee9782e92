//! `cargo xtask bench-outbox`: what the NATS outbox (`[audit.nats]`) adds
//! to a model call's ledger write, in-process.
//!
//! A model call's store work is one `record_usage`: its usage row and its
//! `model.call` audit event, committed (fsync) through the tenant's write
//! queue. It is measured twice in the same run, on two stores in the same
//! temporary directory: streams off (the baseline: `SqliteStore::open`) and
//! streams on (`SqliteStore::open_with_outbox`, so the trigger writes the
//! outbox row in the same transaction, with the publisher running against
//! NATS at `--nats-url` and draining the rows as they commit). Then the
//! time until JetStream has acknowledged every event of the second run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bulkhead_auth::{OperatorAuthenticator, OperatorScope, TenantScope};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{Isolation, Region, RequestId, SecretString, TenantId, Timestamp};
use bulkhead_gateway::GatewayStore;
use bulkhead_gateway::usage::{Tokens, UsageRecord};
use bulkhead_store::nats::NatsTarget;
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{ControlStore, NewTenant, TenantStore};

const USAGE: &str =
    "usage: cargo xtask bench-outbox [--calls N] [--concurrency N] [--nats-url URL]";
const STREAM: &str = "BULKHEAD_BENCH_OUTBOX";
const PREFIX: &str = "bench.outbox";

struct Opts {
    calls: usize,
    concurrency: usize,
    nats_url: String,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        calls: 2_000,
        concurrency: 16,
        nats_url: "nats://127.0.0.1:4222".into(),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |n: &str| it.next().with_context(|| format!("{n} needs a value"));
        match a.as_str() {
            "--calls" => o.calls = value("--calls")?.parse().context("--calls")?,
            "--concurrency" => {
                o.concurrency = value("--concurrency")?.parse().context("--concurrency")?
            }
            "--nats-url" => o.nats_url = value("--nats-url")?,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if o.calls == 0 || o.concurrency == 0 {
        bail!("--calls and --concurrency must be at least 1");
    }
    Ok(o)
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(o))
}

/// Latency percentiles (ms) and calls per second.
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    per_s: f64,
}

fn figures(mut ns: Vec<u64>, wall: Duration) -> Figures {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() as f64 - 1.0) * q).round() as usize] as f64 / 1e6;
    Figures {
        p50_ms: p(0.50),
        p99_ms: p(0.99),
        per_s: ns.len() as f64 / wall.as_secs_f64(),
    }
}

fn call(i: usize, tenant: &TenantScope) -> (UsageRecord, NewAuditEvent) {
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

async fn tenant(store: &SqliteStore, op: &OperatorScope) -> anyhow::Result<TenantScope> {
    let t = store
        .create_tenant(
            op,
            NewTenant {
                id: TenantId::parse("bench-outbox")?,
                name: "bench".into(),
                region: Region::local(),
                isolation: Isolation::Shared,
            },
        )
        .await?;
    Ok(op.act_for_tenant(&t))
}

/// `calls` model-call writes from `callers` tasks, each waiting for its
/// own commit; a warm-up of a tenth first.
async fn measure(
    store: &SqliteStore,
    scope: &TenantScope,
    calls: usize,
    callers: usize,
) -> anyhow::Result<Figures> {
    for i in 0..calls / 10 {
        let (u, e) = call(i, scope);
        store.record_usage(scope, u, e).await?;
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let share = calls / callers + usize::from(c < calls % callers);
        let (store, scope) = (store.clone(), scope.clone());
        tasks.spawn(async move {
            let mut ns = Vec::with_capacity(share);
            for i in 0..share {
                let (u, e) = call(i, &scope);
                let t = Instant::now();
                store.record_usage(&scope, u, e).await?;
                ns.push(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>(ns)
        });
    }
    let mut all = Vec::with_capacity(calls);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok(figures(all, started.elapsed()))
}

/// Messages the bench stream holds.
async fn stream_len(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(STREAM).await?;
    Ok(stream.info().await?.state.messages)
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
async fn bench(o: Opts) -> anyhow::Result<()> {
    let client = async_nats::connect(o.nats_url.as_str()).await.with_context(|| {
        format!("bench-outbox needs NATS with JetStream at {} (`bash scripts/services.sh` starts one)", o.nats_url)
    })?;
    let js = async_nats::jetstream::new(client);
    // A fresh stream each run, so the count below is this run's.
    let _ = js.delete_stream(STREAM).await;

    let dir = std::env::temp_dir().join(format!("bulkhead-outbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("off"))?;
    std::fs::create_dir_all(dir.join("on"))?;
    let token = SecretString::new("bench-operator-token-0123456789".into());
    let op = OperatorAuthenticator::new(&token)
        .verify(Some(token.expose()), &RequestId::generate())
        .context("operator scope")?;

    let off = SqliteStore::open(&dir.join("off"))?;
    let off_scope = tenant(&off, &op).await?;
    let on = SqliteStore::open_with_outbox(&dir.join("on"))?;
    let on_scope = tenant(&on, &op).await?;
    let publisher = tokio::spawn(bulkhead_store::nats::run(
        on.clone(),
        NatsTarget {
            url: o.nats_url.clone(),
            stream: STREAM.into(),
            subject_prefix: PREFIX.into(),
            auth: None,
        },
    ));

    println!(
        "bulkhead outbox bench: {} model-call ledger writes (usage row + model.call event, committed) per scenario after a warm-up of a tenth; streams off vs [audit.nats] on (outbox row in the same transaction, publisher draining to {})",
        o.calls, o.nats_url
    );
    println!(
        "{:<44} {:>9} {:>9} {:>10} {:>10}",
        "scenario", "p50 ms", "p99 ms", "calls/s", "p50 ratio"
    );
    for callers in [1, o.concurrency] {
        let base = measure(&off, &off_scope, o.calls, callers).await?;
        let with = measure(&on, &on_scope, o.calls, callers).await?;
        for (name, f) in [("streams off (baseline)", &base), ("streams on", &with)] {
            println!(
                "{:<44} {:>9.3} {:>9.3} {:>10.0} {:>10.2}",
                format!("{callers} caller(s), {name}"),
                f.p50_ms,
                f.p99_ms,
                f.per_s,
                f.p50_ms / base.p50_ms
            );
        }
    }
    // Every event of the "on" store: the tenant's creation events, the
    // warm-ups and the measured calls.
    let expected = on
        .audit(
            &on_scope,
            bulkhead_store::Page {
                after: 0,
                limit: u32::MAX,
            },
        )
        .await?
        .len() as u64;
    let t = Instant::now();
    while stream_len(&js).await.unwrap_or(0) < expected {
        if t.elapsed() > Duration::from_secs(120) {
            bail!("the stream did not receive all {expected} events within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "all {expected} events acknowledged by JetStream {:.0} ms after the last write; stream holds {}",
        t.elapsed().as_secs_f64() * 1e3,
        stream_len(&js).await?
    );
    publisher.abort();
    let _ = js.delete_stream(STREAM).await;
    drop((off, on));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
