//! Shared helpers: tool configurations, toolboxes and credentials.

use bulkhead_core::SecretString;
use bulkhead_core::config::ToolConfig;
use bulkhead_egress::Egress;
use bulkhead_testkit::SaasStandIn;
use bulkhead_tools::{ToolBox, ToolError};
use bulkhead_vault::CredentialSecret;
use bulkhead_vault::credential::OAuth2Secret;
use serde_json::{Value, json};

/// A tool configuration from JSON (the same serde model as the TOML).
pub fn config(v: Value) -> ToolConfig {
    serde_json::from_value(v).unwrap()
}

/// A connector of `kind` pointed at the stand-in.
pub fn connector(saas: &SaasStandIn, kind: &str) -> ToolConfig {
    config(json!({
        "name": kind, "kind": kind, "region": "eu",
        "base_url": saas.base_url(), "connection": kind,
    }))
}

/// An http tool on the stand-in: `url` is appended to its base URL,
/// `extra` merged into the configuration.
pub fn http(saas: &SaasStandIn, url: &str, extra: Value) -> ToolConfig {
    let mut v = json!({
        "name": "web", "kind": "http", "region": "eu",
        "url": format!("{}{url}", saas.base_url()),
        "allowed_hosts": [saas.addr().to_string()],
        "parameters": {"type": "object"},
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    config(v)
}

/// The egress guard these tests run behind: the stand-in is on loopback
/// over plain http, which the operator must allow explicitly.
pub fn loopback() -> Egress {
    egress("allow_http = true\nallow_hosts = [\"127.0.0.1/32\"]")
}

/// The egress guard of an `[egress]` table's body.
pub fn egress(table: &str) -> Egress {
    let c = bulkhead_core::config::load(&format!("[egress]\n{table}\n"), &|_| None).unwrap();
    Egress::new(&c.egress)
}

/// A toolbox of one tool, and that tool's name.
pub fn one(config: ToolConfig) -> ToolBox {
    ToolBox::new(&[config], &loopback()).unwrap()
}

/// Calls the toolbox's only tool.
pub async fn call(
    tools: &ToolBox,
    args: Value,
    cred: Option<&CredentialSecret>,
) -> Result<bulkhead_tools::ToolOutput, ToolError> {
    let tool = tools.tools().next().unwrap();
    tools.call(tool, &args, cred).await
}

pub fn secret(s: &str) -> SecretString {
    SecretString::new(s.to_owned())
}

pub fn bearer(s: &str) -> CredentialSecret {
    CredentialSecret::Bearer(secret(s))
}

pub fn api_key(s: &str) -> CredentialSecret {
    CredentialSecret::ApiKey(secret(s))
}

pub fn basic(user: &str, password: &str) -> CredentialSecret {
    CredentialSecret::Basic {
        username: user.to_owned(),
        password: secret(password),
    }
}

pub fn oauth2(access: &str, refresh: &str) -> CredentialSecret {
    CredentialSecret::Oauth2(OAuth2Secret {
        access_token: secret(access),
        refresh_token: Some(secret(refresh)),
        expires_at: None,
        token_url: "https://idp.example/token".into(),
        client_id: "client".into(),
        client_secret: Some(secret("client-secret-canary")),
        scope: None,
    })
}
