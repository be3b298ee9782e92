//! `cargo xtask bench-policy`: what an authorisation decision costs with
//! many tenants' policy sets loaded.
//!
//! In-process, release build: 1,000 tenants, each with its own policies
//! (five static policies: a forbid on a Slack channel, a forbid on a Jira
//! project, an approval permit on destructive tools, a forbid for viewers
//! and a permit), compiled and merged with the default platform policies.
//! Decisions are made for random tenants, alternating an endpoint check
//! (`search` on a collection) and a tool-call check (`call_tool` with
//! arguments as tags). The baseline, measured in the same run, is the role
//! check the policies replaced (`Principal::has_role`).
//!
//! Then the approval round trip ([`crate::approval_bench`]), unless
//! `--approval-rounds 0`.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context, bail};
use bulkhead_auth::OperatorAuthenticator;
use bulkhead_core::{Isolation, Region, RequestId, Role, SecretString, TenantId};
use bulkhead_policy::{Action, PolicyEngine, Resource};
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{ControlStore, NewTenant};
use serde_json::json;

const USAGE: &str =
    "usage: cargo xtask bench-policy [--tenants N] [--decisions N] [--approval-rounds N]";

fn tenant_policies(i: usize) -> String {
    format!(
        r##"
forbid(principal, action == Action::"call_tool", resource)
  when {{ resource.kind == "slack" && resource.hasTag("channel") && resource.getTag("channel") == "#general-{i}" }};
forbid(principal, action == Action::"call_tool", resource)
  when {{ resource.kind == "jira" && resource.hasTag("project") && resource.getTag("project") == "SEC{i}" }};
@approval("required")
permit(principal, action == Action::"call_tool", resource) when {{ resource.risk == "destructive" }};
forbid(principal, action == Action::"manage_documents", resource) when {{ principal.roles.contains("viewer") }};
permit(principal, action == Action::"search", resource) when {{ principal.roles.contains("member") }};
"##
    )
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Runs the bench and prints its figures.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let (mut tenants, mut decisions, mut rounds) = (1000usize, 200_000usize, 300usize);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |n: &str| it.next().with_context(|| format!("{n} needs a value"));
        match a.as_str() {
            "--tenants" => tenants = value("--tenants")?.parse().context("--tenants")?,
            "--decisions" => decisions = value("--decisions")?.parse().context("--decisions")?,
            "--approval-rounds" => {
                rounds = value("--approval-rounds")?
                    .parse()
                    .context("--approval-rounds")?
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if tenants == 0 || decisions < 1000 {
        bail!("--tenants must be at least 1 and --decisions at least 1000; {USAGE}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("bulkhead-policy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir)?;
    let token = SecretString::new("bench-operator-token-0123456789".into());
    let op = OperatorAuthenticator::new(&token)
        .verify(Some(token.expose()), &RequestId::generate())
        .context("operator scope")?;
    let engine = PolicyEngine::new(None)?;
    let t = Instant::now();
    let mut loaded = Vec::with_capacity(tenants);
    for i in 0..tenants {
        let tenant = rt.block_on(store.create_tenant(
            &op,
            NewTenant {
                id: TenantId::parse(&format!("t{i}"))?,
                name: format!("t{i}"),
                region: Region::local(),
                isolation: Isolation::Shared,
            },
        ))?;
        let scope = op.act_for_tenant(&tenant);
        loaded.push((scope, engine.compile(&tenant_policies(i))?));
    }
    println!(
        "bulkhead policy bench: {tenants} tenants, each with 5 policies of its own plus the platform's; release build, one thread"
    );
    println!(
        "compiled and validated {tenants} policy sets in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let args = json!({"channel": "#ops", "text": "disk full"});
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut policy_ns = Vec::with_capacity(decisions);
    let mut role_ns = Vec::with_capacity(decisions);
    let mut allowed = 0usize;
    for d in 0..decisions {
        let (scope, policies) = &loaded[(next() % tenants as u64) as usize];
        let t = Instant::now();
        let decision = if d % 2 == 0 {
            engine.authorize(
                policies,
                scope,
                Action::Search,
                &Resource::Collection("faq"),
            )?
        } else {
            engine.authorize(
                policies,
                scope,
                Action::CallTool,
                &Resource::Tool {
                    name: "slack",
                    risk: "write",
                    kind: "slack",
                    connection: "slack",
                    arguments: &args,
                },
            )?
        };
        policy_ns.push(t.elapsed().as_nanos() as f64);
        allowed += usize::from(black_box(decision.allowed));
        let t = Instant::now();
        let ok = black_box(scope.principal().has_role(Role::Admin))
            || black_box(scope.principal().has_role(Role::Member));
        role_ns.push(t.elapsed().as_nanos() as f64);
        black_box(ok);
    }
    let (p50, p99) = (pct(&mut policy_ns, 0.5), pct(&mut policy_ns, 0.99));
    let (b50, b99) = (pct(&mut role_ns, 0.5), pct(&mut role_ns, 0.99));
    println!("\n{decisions} decisions over random tenants ({allowed} allowed)   p50 µs    p99 µs");
    println!(
        "  Cedar: endpoint and tool-call checks             {:>8.2}  {:>8.2}",
        p50 / 1000.0,
        p99 / 1000.0
    );
    println!(
        "  baseline: the role check it replaced            {:>8.3}  {:>8.3}",
        b50 / 1000.0,
        b99 / 1000.0
    );
    println!(
        "  ratio (p50)                                     {:>8.0}",
        p50 / b50.max(1.0)
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    if rounds > 0 {
        crate::approval_bench::run(rounds)?;
    }
    Ok(())
}
