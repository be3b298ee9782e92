//! `[[tools]]`: the tools agents may call (HTTP tools and connectors), their
//! request shape, hosts, credentials, risk and approval mode.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::Errors;
use super::names::{check_unique, check_url, is_connection_name};
use crate::Region;

/// Tool kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    /// Slack `chat.postMessage`.
    Slack,
    /// Jira issue creation.
    Jira,
    /// GitHub issue creation.
    Github,
    /// Generic HTTP.
    Http,
}

/// Tool risk levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Reads only.
    Read,
    /// Changes something.
    Write,
    /// Deletes or cannot be undone.
    Destructive,
}

impl Risk {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
        }
    }
}

impl ToolKind {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Slack => "slack",
            ToolKind::Jira => "jira",
            ToolKind::Github => "github",
            ToolKind::Http => "http",
        }
    }
}

/// Tool approval modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// Never asks.
    Never,
    /// Always asks.
    Always,
    /// Policy decides.
    Policy,
}

/// `[[tools]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// Name the model sees.
    pub name: String,
    /// Connector kind.
    pub kind: ToolKind,
    /// Base URL.
    pub base_url: Option<String>,
    /// Residency region.
    pub region: Region,
    /// Vault connection of the calling tenant.
    pub connection: Option<String>,
    /// Hosts an `http` tool may reach (`host:port`).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Risk level.
    pub risk: Option<Risk>,
    /// Approval mode.
    pub approval: Option<ApprovalMode>,
    /// Human description shown to the model.
    pub description: Option<String>,
    /// HTTP method of an `http` tool: GET (default), POST, PUT, PATCH or
    /// DELETE.
    pub method: Option<String>,
    /// URL template of an `http` tool (minijinja; the variables are the
    /// model's arguments, each percent-encoded). Required for `http`.
    pub url: Option<String>,
    /// JSON body template of an `http` tool (values JSON-escaped).
    pub body: Option<String>,
    /// JSON Schema (an object) of an `http` tool's arguments. Required for
    /// `http`; connectors have built-in schemas.
    pub parameters: Option<serde_json::Value>,
    /// Largest response body read from the tool's upstream.
    #[serde(default = "default_tool_max_response")]
    pub max_response_bytes: u64,
    /// Per-call timeout in seconds, response body included.
    #[serde(default = "default_tool_timeout")]
    pub timeout_s: u64,
}

/// 64 KiB: a tool result goes into the model's context, where more than
/// that is wasted tokens (and money) rather than information.
fn default_tool_max_response() -> u64 {
    64 * 1024
}

/// The most a tool result may be: beyond 16 MiB a response is not
/// something a model can use, and the whole body is held in memory.
pub const MAX_TOOL_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// SaaS APIs answer within seconds; 30 s rides out a slow one without
/// holding an agent run for long.
fn default_tool_timeout() -> u64 {
    30
}

/// Five minutes: longer would hold an agent run (and its quota slot) for
/// longer than any interactive caller waits.
pub const MAX_TOOL_TIMEOUT_S: u64 = 300;

/// Methods an `http` tool may use.
pub const TOOL_HTTP_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The request keys of a tool: which kinds take them, and their ranges.
/// Templates and schemas are only checked for presence here; their
/// structure is checked where they are compiled (`bulkhead-tools`).
fn check_tool_request(t: &ToolConfig, p: &str, errors: &mut Errors) {
    if t.kind == ToolKind::Http {
        if let Some(m) = &t.method
            && !TOOL_HTTP_METHODS.contains(&m.as_str())
        {
            errors.push(
                format!("{p}.method"),
                format!("{m:?} is not one of GET, POST, PUT, PATCH, DELETE"),
            );
        }
        match &t.url {
            Some(u) if u.trim().is_empty() => errors.push(format!("{p}.url"), "must not be empty"),
            Some(_) => {}
            None if t.base_url.is_some() => {}
            None => errors.push(
                format!("{p}.url"),
                "http tools need url (a URL template) or base_url",
            ),
        }
        let base_form = t.url.is_none() && t.base_url.is_some();
        if t.body.is_some() && t.method.as_deref().is_none_or(|m| m == "GET") {
            errors.push(
                format!("{p}.body"),
                "a GET request has no body; set method as well",
            );
        }
        match &t.parameters {
            Some(_) if base_form => errors.push(
                format!("{p}.parameters"),
                "an http tool with base_url takes method, path, query and body; its schema is fixed",
            ),
            Some(serde_json::Value::Object(_)) => {}
            Some(_) => errors.push(
                format!("{p}.parameters"),
                "must be a JSON Schema object (a table)",
            ),
            None if base_form => {}
            None => errors.push(
                format!("{p}.parameters"),
                "is required for http tools (the JSON Schema of the arguments)",
            ),
        }
    } else {
        for (key, set) in [
            ("method", t.method.is_some()),
            ("url", t.url.is_some()),
            ("body", t.body.is_some()),
        ] {
            if set {
                errors.push(format!("{p}.{key}"), "only http tools take this key");
            }
        }
        if t.parameters.is_some() {
            errors.push(
                format!("{p}.parameters"),
                "connectors have built-in parameters; only http tools take this key",
            );
        }
    }
    if !(1..=MAX_TOOL_RESPONSE_BYTES).contains(&t.max_response_bytes) {
        errors.push(
            format!("{p}.max_response_bytes"),
            format!("must be between 1 and {MAX_TOOL_RESPONSE_BYTES} (16 MiB)"),
        );
    }
    if !(1..=MAX_TOOL_TIMEOUT_S).contains(&t.timeout_s) {
        errors.push(
            format!("{p}.timeout_s"),
            format!("must be between 1 and {MAX_TOOL_TIMEOUT_S}"),
        );
    }
}

/// `[[tools]]`: names, URLs, request keys, connections and hosts. Answers
/// each tool's region, which the agents' residency check needs.
pub(super) fn validate<'a>(
    tools: &'a [ToolConfig],
    errors: &mut Errors,
) -> BTreeMap<&'a str, &'a Region> {
    check_unique(tools.iter().map(|t| t.name.as_str()), "tools", errors);
    let mut tool_region: BTreeMap<&str, &Region> = BTreeMap::new();
    for (i, t) in tools.iter().enumerate() {
        let p = format!("tools[{i}]");
        tool_region.insert(&t.name, &t.region);
        match &t.base_url {
            Some(_) if t.kind == ToolKind::Http && t.url.is_some() => errors.push(
                format!("{p}.base_url"),
                "set url (a URL template) or base_url (the model names the path), not both",
            ),
            Some(url) => check_url(url, &format!("{p}.base_url"), errors),
            None if t.kind != ToolKind::Http => {
                errors.push(format!("{p}.base_url"), "is required for this tool kind")
            }
            None => {}
        }
        check_tool_request(t, &p, errors);
        match &t.connection {
            Some(c) if !is_connection_name(c) => errors.push(
                format!("{p}.connection"),
                format!("{c:?} is not a connection name (1-64 characters [a-z0-9_-])"),
            ),
            None if t.kind != ToolKind::Http => {
                errors.push(format!("{p}.connection"), "is required for this tool kind")
            }
            _ => {}
        }
        if t.kind == ToolKind::Http {
            if t.allowed_hosts.is_empty() {
                errors.push(
                    format!("{p}.allowed_hosts"),
                    "an http tool needs at least one allowed host",
                );
            }
        } else if !t.allowed_hosts.is_empty() {
            errors.push(
                format!("{p}.allowed_hosts"),
                "only http tools take allowed_hosts",
            );
        }
        for (j, h) in t.allowed_hosts.iter().enumerate() {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                errors.push(
                    format!("{p}.allowed_hosts[{j}]"),
                    format!("{h:?} is not \"host:port\""),
                );
            }
        }
    }
    tool_region
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{check, env};
    use crate::config::*;

    #[test]
    fn tool_request_keys_are_checked_per_kind() {
        let slack = "[[tools]]\nname = \"s\"\nkind = \"slack\"\nbase_url = \"https://slack.com\"\nregion = \"eu\"\nconnection = \"slack\"\n";
        let http = "[[tools]]\nname = \"h\"\nkind = \"http\"\nregion = \"eu\"\nallowed_hosts = [\"x:443\"]\n";
        let url = "url = \"https://x/{{ a }}\"\n";
        let params = "parameters = { type = \"object\" }\n";
        check(&format!("{http}{url}{params}"), &[]);
        check(
            &format!(
                "{slack}method = \"POST\"\nurl = \"https://x\"\nbody = \"{{}}\"\nparameters = {{ type = \"object\" }}\n"
            ),
            &[
                "tools[0].method: only http tools take this key",
                "tools[0].url: only http tools take this key",
                "tools[0].body: only http tools take this key",
                "tools[0].parameters: connectors have built-in parameters",
            ],
        );
        check(
            http,
            &[
                "tools[0].url: http tools need url (a URL template) or base_url",
                "tools[0].parameters: is required for http tools",
            ],
        );
        check(
            &format!("{http}url = \" \"\nparameters = [1]\nmethod = \"get\"\n"),
            &[
                "tools[0].method: \"get\" is not one of",
                "tools[0].url: must not be empty",
                "tools[0].parameters: must be a JSON Schema object",
            ],
        );
        check(
            &format!("{http}{url}{params}body = \"{{}}\"\n"),
            &["tools[0].body: a GET request has no body"],
        );
        check(
            &format!("{http}{url}{params}base_url = \"https://x\"\n"),
            &["tools[0].base_url: set url (a URL template) or base_url"],
        );
        // The contract's form: base_url and allowed_hosts, connection
        // optional, no parameters (the model names method, path, query and
        // body).
        let c = load(
            &format!("{http}base_url = \"https://api.example.com/v2\"\n"),
            &env,
        )
        .unwrap();
        assert_eq!(
            c.tools[0].base_url.as_deref(),
            Some("https://api.example.com/v2")
        );
        check(
            &format!("{http}base_url = \"https://api.example.com\"\n{params}"),
            &["tools[0].parameters: an http tool with base_url takes method, path, query and body"],
        );
        check(
            &format!("{slack}timeout_s = 0\nmax_response_bytes = 0\n"),
            &[
                "tools[0].max_response_bytes: must be between 1 and 16777216",
                "tools[0].timeout_s: must be between 1 and 300",
            ],
        );
        check(
            &format!("{slack}timeout_s = 301\nmax_response_bytes = 16777217\n"),
            &[
                "tools[0].max_response_bytes: must be between 1",
                "tools[0].timeout_s: must be between 1",
            ],
        );
        check(
            &format!("{slack}timeout_s = 300\nmax_response_bytes = 16777216\n"),
            &[],
        );
    }
}
