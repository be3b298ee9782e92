//! Building the toolbox: configuration errors by key path, defaults, and
//! the definitions the model sees.

use bulkhead_core::config::{Risk, ToolKind};
use bulkhead_testkit::SaasStandIn;
use bulkhead_tools::{ToolBox, ToolError};
use serde_json::json;

use crate::support::{connector, http, loopback};

fn config_error(configs: Vec<bulkhead_core::config::ToolConfig>) -> String {
    match ToolBox::new(&configs, &loopback()) {
        Err(ToolError::Config(m)) => m,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bad_templates_and_schemas_name_the_key() {
    let saas = SaasStandIn::start().await;
    let cases = [
        (
            json!({"url": "http://h/{{ id "}),
            "tools[0].url: syntax error",
        ),
        (
            json!({"url": "ftp://h/{{ id }}"}),
            "tools[0].url: must start with http:// or https://",
        ),
        (
            json!({"method": "POST", "body": "{% if %}"}),
            "tools[0].body: syntax error",
        ),
        (
            json!({"parameters": {"type": "object", "properties": {"id": {"type": "string", "pattern": "^a"}}}}),
            "tools[0].parameters: properties.id.pattern: unsupported keyword \"pattern\"",
        ),
        (
            json!({"parameters": {"type": "string"}}),
            "tools[0].parameters: the arguments schema must have type = \"object\"",
        ),
        (
            json!({"parameters": null}),
            "tools[0].parameters: is required",
        ),
        (
            json!({"method": "TRACE"}),
            "tools[0].method: \"TRACE\" is not one of",
        ),
        (
            json!({"allowed_hosts": ["nohost"]}),
            "tools[0].allowed_hosts[0]: \"nohost\" is not \"host:port\"",
        ),
        (
            json!({"allowed_hosts": []}),
            "tools[0].allowed_hosts: an http tool needs at least one",
        ),
    ];
    for (extra, expected) in cases {
        let message = config_error(vec![http(&saas, "/echo", extra.clone())]);
        assert!(message.starts_with(expected), "{extra}: {message}");
    }
    let mut slack = connector(&saas, "slack");
    slack.url = Some("http://x".into());
    slack.parameters = Some(json!({"type": "object"}));
    let message = config_error(vec![http(&saas, "/echo", json!({})), slack]);
    assert_eq!(
        message,
        "tools[1].url: only http tools take this key; tools[1].parameters: only http tools take this key"
    );
    let message = config_error(vec![connector(&saas, "jira"), connector(&saas, "jira")]);
    assert_eq!(message, "tools[1].name: duplicate name \"jira\"");
    let mut github = connector(&saas, "github");
    github.base_url = None;
    let message = config_error(vec![github]);
    assert_eq!(message, "tools[0].base_url: is required for this tool kind");
}

#[tokio::test]
async fn tools_carry_their_metadata_and_openai_definitions() {
    let saas = SaasStandIn::start().await;
    let mut jira = connector(&saas, "jira");
    jira.description = Some("File a ticket in the tenant's Jira.".into());
    let configs = vec![
        connector(&saas, "slack"),
        jira,
        connector(&saas, "github"),
        http(&saas, "/echo", json!({"name": "read"})),
        http(
            &saas,
            "/echo",
            json!({"name": "delete", "method": "DELETE"}),
        ),
        http(
            &saas,
            "/echo",
            json!({"name": "post", "method": "POST", "risk": "destructive", "description": "Post it."}),
        ),
    ];
    let tools = ToolBox::new(&configs, &loopback()).unwrap();
    assert!(tools.get("nope").is_none());
    let slack = tools.get("slack").unwrap();
    assert_eq!(slack.kind, ToolKind::Slack);
    assert_eq!(slack.region.as_str(), "eu");
    assert_eq!(slack.connection.as_deref(), Some("slack"));
    assert_eq!(slack.risk, Risk::Write);
    assert_eq!(
        slack.definition(),
        json!({"type": "function", "function": {
            "name": "slack",
            "description": "Post a message to a Slack channel.",
            "parameters": slack.parameters,
        }})
    );
    assert_eq!(slack.parameters["required"], json!(["channel", "text"]));
    assert_eq!(
        tools.get("jira").unwrap().description,
        "File a ticket in the tenant's Jira."
    );
    assert_eq!(tools.get("read").unwrap().risk, Risk::Read);
    assert_eq!(tools.get("read").unwrap().connection, None);
    assert_eq!(tools.get("delete").unwrap().risk, Risk::Destructive);
    let post = tools.get("post").unwrap();
    assert_eq!(post.risk, Risk::Destructive);
    assert_eq!(
        post.definition()["function"]["parameters"],
        json!({"type": "object"})
    );
    assert_eq!((post.timeout_s(), post.max_response_bytes()), (30, 65_536));
    assert_eq!(tools.tools().count(), 6);
    // Nothing in Debug output but names and settings.
    let debug = format!("{tools:?}");
    assert!(debug.contains("slack"), "{debug}");
}

/// The tools example in docs/configuration.md loads and builds, so the
/// documentation cannot drift from the code.
#[test]
fn the_documented_example_builds() {
    let doc = include_str!("../../../../docs/configuration.md");
    let example = doc
        .split("```toml")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("customer_notes"))
        .unwrap();
    let c = bulkhead_core::config::load(example, &|_| None).unwrap();
    let tools = ToolBox::new(&c.tools, &bulkhead_egress::Egress::new(&c.egress)).unwrap();
    assert_eq!(tools.tools().count(), 4);
    let tool = tools.get("customer_notes").unwrap();
    assert_eq!(tool.risk, Risk::Write);
    assert_eq!((tool.timeout_s(), tool.max_response_bytes()), (10, 16384));
    tool.validate(&json!({"customer_id": "c1", "note": "n"}))
        .unwrap();
    assert!(tool.validate(&json!({"customer_id": "c1"})).is_err());
}

/// The agent runtime shares one toolbox across tasks and spawns calls.
#[tokio::test]
async fn the_toolbox_is_shareable_and_calls_are_send() {
    fn shareable<T: Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    shareable::<ToolBox>();
    shareable::<bulkhead_tools::Tool>();
    let saas = SaasStandIn::start().await;
    let tools = ToolBox::new(&[http(&saas, "/echo", json!({}))], &loopback()).unwrap();
    let args = json!({});
    let call = tools.call(tools.get("web").unwrap(), &args, None);
    send(&call);
    call.await.unwrap();
}
