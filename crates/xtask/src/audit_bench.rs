//! `cargo xtask bench-audit`: audit export and offline verification.
//!
//! One tenant's chain of N events is written straight through the store's
//! public API (`TenantStore::append_audit`, one transaction per event, a
//! signed checkpoint every 1000 events with the key the server is then
//! configured with), before the release binary starts on that data
//! directory. Then `GET /v1/audit/export` is streamed to a file and timed,
//! with the server's resident memory before (VmRSS) and its peak (VmHWM)
//! after; and `bulkhead audit verify FILE --keys KEYS` is timed as a child
//! with its peak memory from `/usr/bin/time`. The baseline of the same run
//! is a plain read of the exported file. Everything runs at N/10 and at N,
//! so the peaks show whether memory grows with N.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::checkpoint::AuditSigner;
use bulkhead_core::{Isolation, Region, RequestId, Role, SecretString, TenantId};
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{CheckpointRule, ControlStore, NewApiKeyRecord, NewTenant, TenantStore};

/// The checkpoint seed, given to the server as `BENCH_AUDIT_KEY`.
const SEED: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// Events between checkpoints.
const CHECKPOINT_EVENTS: u64 = 1000;

fn parse(args: Vec<String>) -> anyhow::Result<u64> {
    let mut events = 1_000_000;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--events" => {
                events = it
                    .next()
                    .context("--events needs a value")?
                    .parse()
                    .context("--events")?
            }
            other => {
                bail!("unknown argument {other:?}; usage: cargo xtask bench-audit [--events N]")
            }
        }
    }
    if events < 10 {
        bail!("--events must be at least 10");
    }
    Ok(events)
}

/// One size's figures.
struct Row {
    events: u64,
    write_s: f64,
    bytes: u64,
    read_s: f64,
    export_s: f64,
    rss_before_kb: u64,
    hwm_after_kb: u64,
    verify_s: f64,
    verify_max_kb: u64,
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let n = parse(args)?;
    let mut rows = Vec::new();
    for size in [n / 10, n] {
        rows.push(measure(size)?);
    }
    print(&rows);
    Ok(())
}

/// Writes `events` events into a new data directory in `dir`, returning the
/// tenant's API key.
async fn write_chain(dir: &Path, events: u64) -> anyhow::Result<String> {
    let store = SqliteStore::open(&dir.join("data"))?;
    let token = SecretString::new(crate::OPERATOR_TOKEN.into());
    let op = bulkhead_auth::OperatorAuthenticator::new(&token)
        .verify(Some(token.expose()), &RequestId::generate())
        .context("operator scope")?;
    let id = TenantId::parse("bench")?;
    let tenant = store
        .create_tenant(
            &op,
            NewTenant {
                id: id.clone(),
                name: "bench".into(),
                region: Region::local(),
                isolation: Isolation::Shared,
            },
        )
        .await?;
    let key = bulkhead_auth::apikey::generate()?;
    store
        .create_api_key(
            &op,
            &id,
            NewApiKeyRecord {
                id: key.id,
                digest: key.digest,
                name: None,
                roles: vec![Role::Admin],
                expires_at: None,
            },
        )
        .await?;
    let scope = op.act_for_tenant(&tenant);
    let signer = Arc::new(AuditSigner::from_hex(SEED).context("seed")?);
    let rule = CheckpointRule {
        events: CHECKPOINT_EVENTS,
        interval_s: 86_400,
    };
    // The tenant creation and key already hold a few events.
    for i in 0..events.saturating_sub(2) {
        let mut event = NewAuditEvent::new(
            AuditAction::ApprovalNotify,
            format!("run:bench-{i}"),
            Outcome::Success,
            RequestId::generate(),
        );
        event.details = serde_json::json!({"i": i});
        store.append_audit(&scope, event).await?;
        if (i + 1) % CHECKPOINT_EVENTS == 0 {
            store.checkpoint(&scope, signer.clone(), rule).await?;
        }
    }
    Ok(key.plaintext.expose().to_owned())
}

/// `VmRSS` or `VmHWM` of `pid`, in kB.
fn proc_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).context("field")?.parse()?)
}

#[expect(clippy::print_stdout, reason = "a bench prints its progress")]
fn measure(events: u64) -> anyhow::Result<Row> {
    let dir = std::env::temp_dir().join(format!(
        "bulkhead-audit-bench-{}-{events}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("writing {events} events...");
    let t = Instant::now();
    let key = rt.block_on(write_chain(&dir, events))?;
    let write_s = t.elapsed().as_secs_f64();
    drop(rt);

    let config = format!(
        "[operator]\ntoken = \"env:BENCH_OPERATOR_TOKEN\"\n[audit]\nsigning_key = \"env:BENCH_AUDIT_KEY\"\ncheckpoint_events = {CHECKPOINT_EVENTS}\n"
    );
    let server = crate::start_server(&dir, &config, &[("BENCH_AUDIT_KEY", SEED)])?;
    let pid = server.child.id();
    let base = format!("http://{}", server.addr);
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let keys = agent
        .get(format!("{base}/v1/audit/keys"))
        .header("authorization", format!("Bearer {key}"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let keys_path = dir.join("keys.json");
    std::fs::write(&keys_path, keys)?;

    let rss_before_kb = proc_kb(pid, "VmRSS:")?;
    let file = dir.join("export.jsonl");
    let t = Instant::now();
    let mut resp = agent
        .get(format!("{base}/v1/audit/export"))
        .header("authorization", format!("Bearer {key}"))
        .call()?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    let bytes = std::io::copy(&mut resp.body_mut().as_reader(), &mut out)?;
    std::io::Write::flush(&mut out)?;
    let export_s = t.elapsed().as_secs_f64();
    let hwm_after_kb = proc_kb(pid, "VmHWM:")?;
    drop(server);

    // Baseline: the same file read raw.
    let t = Instant::now();
    let mut f = std::fs::File::open(&file)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        lines += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let read_s = t.elapsed().as_secs_f64();
    std::hint::black_box(lines);

    let bin = crate::workspace_root().join("target/release/bulkhead");
    let time_out = dir.join("time.txt");
    let t = Instant::now();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&time_out)
        .arg(&bin)
        .args(["audit", "verify"])
        .arg(&file)
        .arg("--keys")
        .arg(&keys_path)
        .stdout(std::process::Stdio::null())
        .status()?;
    let verify_s = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("bulkhead audit verify failed on {}", file.display());
    }
    let verify_max_kb = std::fs::read_to_string(&time_out)?
        .lines()
        .last()
        .context("time output")?
        .trim()
        .parse()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Row {
        events,
        write_s,
        bytes,
        read_s,
        export_s,
        rss_before_kb,
        hwm_after_kb,
        verify_s,
        verify_max_kb,
    })
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
fn print(rows: &[Row]) {
    println!(
        "bulkhead audit bench: one tenant, checkpoint every {CHECKPOINT_EVENTS} events, release build"
    );
    println!(
        "{:>9} {:>8} {:>9} {:>12} {:>12} {:>9} {:>9} {:>12} {:>9}",
        "events",
        "write s",
        "MB",
        "read ev/s",
        "export ev/s",
        "RSS0 MB",
        "HWM MB",
        "verify ev/s",
        "vmax MB"
    );
    for r in rows {
        let e = r.events as f64;
        println!(
            "{:>9} {:>8.1} {:>9.1} {:>12.0} {:>12.0} {:>9.1} {:>9.1} {:>12.0} {:>9.1}",
            r.events,
            r.write_s,
            r.bytes as f64 / 1e6,
            e / r.read_s,
            e / r.export_s,
            r.rss_before_kb as f64 / 1024.0,
            r.hwm_after_kb as f64 / 1024.0,
            e / r.verify_s,
            r.verify_max_kb as f64 / 1024.0,
        );
    }
}
