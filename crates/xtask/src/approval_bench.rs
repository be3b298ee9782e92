//! The approval round trip, part of `cargo xtask bench-policy`: what a
//! person's approval adds to a run, apart from the person.
//!
//! The release binary on loopback, with a fake model and a Slack stand-in
//! that answer at once. Baseline (same run): the agent `direct`, whose
//! Slack tool needs no approval — model call → tool call → model call.
//! Measured: the agent `gated`, whose same tool is `approval = "always"` —
//! the run pauses (`202`), an approver approves, and `GET
//! /v1/runs/{id}?wait=` returns the completed run. One client, one round
//! at a time, so each figure is latency, not throughput.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};
use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn};
use serde_json::{Value, json};

const PROVIDER_KEY: &str = "sk-approval-bench-provider-key";
const SLACK_TOKEN: &str = "xoxb-approval-bench-token";

/// A tool call for a new question (of whichever Slack tool the agent
/// has), the answer once the tool has answered.
fn model(request: &Value) -> Option<Reply> {
    let last = request["messages"].as_array()?.last()?;
    if last["role"] != "user" {
        return Some(Reply::text("done"));
    }
    let tool = request["tools"][0]["function"]["name"].as_str()?.to_owned();
    Some(Reply::tool_call(
        tool,
        json!({"channel": "#bench", "text": "approve me"}),
    ))
}

fn config(fake: &FakeProvider, saas: &SaasStandIn) -> String {
    format!(
        r#"[operator]
token = "env:BENCH_OPERATOR_TOKEN"

[[providers]]
name = "fake"
kind = "openai"
base_url = "{}/v1"
region = "eu"
credential = "env:BENCH_PROVIDER_KEY"
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
base_url = "{s}"
region = "eu"
connection = "slack"
[[tools]]
name = "slack_gated"
kind = "slack"
base_url = "{s}"
region = "eu"
connection = "slack"
approval = "always"
[[agents]]
name = "direct"
model = "small"
prompt = "You post to Slack."
tools = ["slack"]
[[agents]]
name = "gated"
model = "small"
prompt = "You post to Slack."
tools = ["slack_gated"]
"#,
        fake.base_url(),
        s = saas.base_url()
    )
}

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {token}");
        let mut res = match body {
            Some(b) if method == "PUT" => self
                .agent
                .put(&url)
                .header("authorization", &auth)
                .send_json(b)?,
            Some(b) => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .send_json(b)?,
            None => self.agent.get(&url).header("authorization", &auth).call()?,
        };
        let status = res.status().as_u16();
        Ok((status, res.body_mut().read_json()?))
    }

    fn expect(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, token, body)?;
        if status != want {
            bail!("{method} {path} answered {status} (expected {want}): {v}");
        }
        Ok(v)
    }
}

/// Tenant `bench` with a member (runs), an approver, and the Slack credential.
fn setup(c: &Client) -> anyhow::Result<(String, String)> {
    let op = crate::OPERATOR_TOKEN;
    c.expect(
        "POST",
        "/admin/v1/tenants",
        op,
        Some(json!({"id": "bench", "region": "eu"})),
        201,
    )?;
    let key = |roles: Value| -> anyhow::Result<String> {
        let v = c.expect(
            "POST",
            "/admin/v1/tenants/bench/api-keys",
            op,
            Some(json!({ "roles": roles })),
            201,
        )?;
        Ok(v["key"].as_str().context("no key")?.to_owned())
    };
    let (admin, member, approver) = (
        key(json!(["admin"]))?,
        key(json!(["member"]))?,
        key(json!(["approver"]))?,
    );
    let (status, v) = c.call(
        "PUT",
        "/v1/credentials/slack",
        &admin,
        Some(json!({"kind": "bearer", "secret": SLACK_TOKEN})),
    )?;
    if !(200..300).contains(&status) {
        bail!("storing the Slack credential answered {status}: {v}");
    }
    Ok((member, approver))
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs `rounds` plain runs and `rounds` approved runs, and prints them.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
pub fn run(rounds: usize) -> anyhow::Result<()> {
    let outside = crate::agent_bench::start_outside(model)?;
    let (fake, saas) = (&outside.fake, &outside.saas);
    let dir = std::env::temp_dir().join(format!("bulkhead-approval-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let server = crate::start_server(
        &dir,
        &config(fake, saas),
        &[("BENCH_PROVIDER_KEY", PROVIDER_KEY)],
    )?;
    let addr: SocketAddr = server.addr;
    let c = Client {
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
        base: format!("http://{addr}"),
    };
    let (member, approver) = setup(&c)?;
    let input = Some(json!({"input": "post it"}));
    // Warm-up: a tenth of the rounds of each kind, not measured.
    let mut plain = Vec::new();
    let (mut pause, mut approve, mut resume, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + rounds / 10 {
        let measured = round >= rounds / 10;
        let t = Instant::now();
        let run = c.expect(
            "POST",
            "/v1/agents/direct/runs",
            &member,
            input.clone(),
            200,
        )?;
        let took = t.elapsed().as_secs_f64() * 1e6;
        if run["status"] != "completed" {
            bail!("the plain run did not complete: {run}");
        }
        let t0 = Instant::now();
        let run = c.expect("POST", "/v1/agents/gated/runs", &member, input.clone(), 202)?;
        let t1 = Instant::now();
        let id = run["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["kind"] == "approval_requested"))
            .and_then(|s| s["data"]["approval_id"].as_str())
            .context("no approval requested")?
            .to_owned();
        c.expect(
            "POST",
            &format!("/v1/approvals/{id}/approve"),
            &approver,
            Some(json!({"comment": "bench"})),
            200,
        )?;
        let t2 = Instant::now();
        let run_id = run["id"].as_str().context("no run id")?;
        let done = c.expect(
            "GET",
            &format!("/v1/runs/{run_id}?wait=20"),
            &member,
            None,
            200,
        )?;
        let t3 = Instant::now();
        if done["status"] != "completed" {
            bail!("the approved run did not complete: {done}");
        }
        if measured {
            plain.push(took);
            pause.push((t1 - t0).as_secs_f64() * 1e6);
            approve.push((t2 - t1).as_secs_f64() * 1e6);
            resume.push((t3 - t2).as_secs_f64() * 1e6);
            total.push((t3 - t0).as_secs_f64() * 1e6);
        }
    }
    let posted = saas.requests().len();
    if posted != 2 * (rounds + rounds / 10) {
        bail!("the Slack stand-in got {posted} posts, not one per run");
    }
    println!(
        "\napproval round trip: {rounds} rounds after {} warm-up, one client, release binary on loopback",
        rounds / 10
    );
    println!(
        "  a run = model call → Slack call → model call; the gated run pauses before the Slack call\n"
    );
    println!("{:<52} {:>9} {:>9}", "", "p50 µs", "p99 µs");
    let rows: [(&str, &mut Vec<f64>); 5] = [
        ("baseline: plain run (POST → 200 completed)", &mut plain),
        ("gated run: POST → 202 awaiting_approval", &mut pause),
        (
            "  approve: POST /v1/approvals/{id}/approve → 200",
            &mut approve,
        ),
        ("  resume: GET /v1/runs/{id}?wait= → completed", &mut resume),
        ("gated run, whole round trip", &mut total),
    ];
    let mut summary = Vec::new();
    for (name, v) in rows {
        let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
        println!("{name:<52} {p50:>9.0} {p99:>9.0}");
        summary.push((p50, p99));
    }
    let ((b50, b99), (t50, t99)) = (summary[0], summary[4]);
    println!(
        "\napproval overhead (round trip − baseline): p50 {:.0} µs, p99 {:.0} µs; ratio round trip/baseline (p50) {:.2}",
        t50 - b50,
        t99 - b99,
        t50 / b50.max(1.0)
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
