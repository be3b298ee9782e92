//! Planning without I/O: each rule of [`super::plan`] and
//! [`super::limit_round`] on a configured agent and tools, with the
//! tenant's policies compiled in place.

use super::*;
use bulkhead_auth::OperatorAuthenticator;
use bulkhead_core::config::QuotaValues;
use bulkhead_core::{
    Isolation, Region, RequestId, SecretString, Tenant, TenantId, TenantStatus, TenantUid,
    Timestamp,
};
use serde_json::json;

use crate::agent::AgentCatalog;

const CONFIG: &str = r#"
[egress]
allow_http = true
allow_hosts = ["127.0.0.1/32"]
[[providers]]
name = "p"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
region = "eu"
credential = "env:KEY"
[[models]]
name = "small"
provider = "p"
upstream = "m"
[[tools]]
name = "slack"
kind = "slack"
base_url = "http://127.0.0.1:9"
region = "eu"
connection = "slack"
[[tools]]
name = "deploy"
kind = "http"
region = "eu"
approval = "always"
url = "http://127.0.0.1:9/deploy"
allowed_hosts = ["127.0.0.1:9"]
[tools.parameters]
type = "object"
[[agents]]
name = "a"
model = "small"
prompt = "p"
tools = ["slack", "deploy"]
knowledge = ["kb"]
max_tool_calls_per_round = 2
max_tool_calls_per_run = 3
"#;

struct Fixture {
    agent: Agent,
    settings: AgentSettings,
    tools: ToolBox,
    scope: TenantScope,
    engine: PolicyEngine,
}

fn fixture() -> Fixture {
    fixture_in("eu")
}

/// The agent and its tools are in `eu`; the tenant is in `region`.
fn fixture_in(region: &str) -> Fixture {
    let env = |n: &str| (n == "KEY").then(|| "k".to_owned());
    let config = bulkhead_core::config::load(CONFIG, &env).unwrap();
    let agent = AgentCatalog::new(&config)
        .unwrap()
        .get("a")
        .unwrap()
        .clone();
    let tools = ToolBox::new(&config.tools, &bulkhead_egress::Egress::new(&config.egress)).unwrap();
    let token = "plan-tests-operator-token";
    let op = OperatorAuthenticator::new(&SecretString::new(token.into()))
        .verify(Some(token), &RequestId::generate())
        .unwrap();
    let now = Timestamp::now();
    let scope = op.act_for_tenant(&Tenant {
        id: TenantId::parse("acme").unwrap(),
        uid: TenantUid::generate(),
        name: "Acme".into(),
        region: Region::parse(region).unwrap(),
        isolation: Isolation::Shared,
        status: TenantStatus::Active,
        created_at: now,
        updated_at: now,
        quotas: QuotaValues::default(),
    });
    Fixture {
        agent,
        settings: AgentSettings::default(),
        tools,
        scope,
        engine: PolicyEngine::new(Some(bulkhead_policy::PERMIT_ALL)).unwrap(),
    }
}

fn call(name: &str, args: Value) -> Value {
    json!({"id": "c1", "type": "function", "function": {"name": name, "arguments": args.to_string()}})
}

/// Plans `call` under tenant policies `text`; `Ok(needs approval)` or the
/// refusal's code.
fn check(f: &Fixture, text: &str, call: &Value) -> Result<bool, &'static str> {
    let policies = f.engine.compile(text).map_err(|e| e.to_string());
    let rules = Rules {
        agent: &f.agent,
        settings: &f.settings,
        tools: &f.tools,
        scope: &f.scope,
        principal: f.scope.principal(),
        engine: &f.engine,
        policies: &policies,
    };
    plan(&rules, call, 0)
        .map(|p| p.needs_approval)
        .map_err(|r| r.code.code)
}

#[test]
fn each_rule_of_a_call_decides_its_outcome() {
    let f = fixture();
    let slack = json!({"channel": "#ops", "text": "hi"});
    let table: Vec<(&str, Value, Result<bool, &str>)> = vec![
        ("a configured tool", call("slack", slack.clone()), Ok(false)),
        ("always needs approval", call("deploy", json!({})), Ok(true)),
        (
            "the built-in search",
            call("search_knowledge", json!({"query": "refunds"})),
            Ok(false),
        ),
        (
            "not the agent's",
            call("rm_rf", json!({})),
            Err("unknown_tool"),
        ),
        (
            "arguments not JSON",
            json!({"id": "c1", "function": {"name": "slack", "arguments": "{nope"}}),
            Err("invalid_arguments"),
        ),
        (
            "no arguments",
            json!({"id": "c1", "function": {"name": "slack"}}),
            Err("invalid_arguments"),
        ),
        (
            "arguments off the schema",
            call("slack", json!({"channel": 5})),
            Err("invalid_arguments"),
        ),
        (
            "search arguments off its schema",
            call(
                "search_knowledge",
                json!({"query": "x", "collection": "other"}),
            ),
            Err("invalid_arguments"),
        ),
    ];
    for (what, c, want) in table {
        assert_eq!(check(&f, "", &c), want, "{what}");
    }
    // A tool outside the tenant's region is refused, whatever else holds.
    let elsewhere = fixture_in("us");
    assert_eq!(
        check(&elsewhere, "", &call("slack", slack)),
        Err("residency_violation")
    );
}

#[test]
fn the_tenants_policies_forbid_or_ask_for_approval() {
    let f = fixture();
    let c = call("slack", json!({"channel": "#ops", "text": "hi"}));
    let forbid = r##"forbid(principal, action == Action::"call_tool", resource) when { resource.hasTag("channel") && resource.getTag("channel") == "#ops" };"##;
    assert_eq!(check(&f, forbid, &c), Err("policy_denied"));
    let ask = r#"@approval("required")
permit(principal, action == Action::"call_tool", resource) when { resource.kind == "slack" };"#;
    assert_eq!(check(&f, ask, &c), Ok(true));
    // Policies that could not be read refuse every call (fail closed).
    let broken = Err("store down".to_owned());
    let rules = Rules {
        agent: &f.agent,
        settings: &f.settings,
        tools: &f.tools,
        scope: &f.scope,
        principal: f.scope.principal(),
        engine: &f.engine,
        policies: &broken,
    };
    assert_eq!(
        plan(&rules, &c, 0).map(|_| ()).unwrap_err().code.code,
        "internal"
    );
}

#[test]
fn the_tenants_connection_setting_names_the_credential() {
    let mut f = fixture();
    f.settings
        .connections
        .insert("slack".into(), "slack-eng".into());
    let policies = Ok(f.engine.platform());
    let rules = Rules {
        agent: &f.agent,
        settings: &f.settings,
        tools: &f.tools,
        scope: &f.scope,
        principal: f.scope.principal(),
        engine: &f.engine,
        policies: &policies,
    };
    let p = plan(
        &rules,
        &call("slack", json!({"channel": "#ops", "text": "hi"})),
        0,
    )
    .unwrap();
    assert_eq!(
        p.connection.as_ref().map(ConnectionName::as_str),
        Some("slack-eng")
    );
    let mut bad = f.settings.clone();
    bad.connections.insert("slack".into(), "not a name!".into());
    let rules = Rules {
        settings: &bad,
        ..rules
    };
    let r = plan(
        &rules,
        &call("slack", json!({"channel": "#ops", "text": "hi"})),
        0,
    )
    .map(|_| ())
    .unwrap_err();
    assert_eq!(r.code.code, "missing_credential");
}

#[test]
fn fan_out_limits_keep_the_first_calls_and_refuse_the_rest_as_one() {
    let f = fixture();
    let calls = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("c{i}"), "function": {"name": "slack", "arguments": "{}"}}))
            .collect()
    };
    // (calls so far in the run, asked) → (made, kept in the message, refused id)
    let table = [
        (0, 2, 2, 2, None),
        (0, 5, 2, 3, Some("c2")),
        (2, 2, 1, 2, Some("c1")),
        (3, 1, 0, 1, Some("c0")),
        (9, 0, 0, 0, None),
    ];
    for (so_far, asked, made, kept, refused) in table {
        let round = limit_round(&f.agent, so_far, calls(asked));
        assert_eq!(round.calls.len(), made, "{so_far} + {asked}");
        assert_eq!(round.in_message.len(), kept, "{so_far} + {asked}");
        assert_eq!(
            round.excess.as_ref().map(|r| r.id.as_str()),
            refused,
            "{so_far} + {asked}"
        );
        if let Some(r) = &round.excess {
            assert_eq!(r.code.code, "tool_call_limit");
            assert!(
                r.message
                    .contains(&format!("the last {} were not made", asked - made)),
                "{}",
                r.message
            );
        }
    }
}
