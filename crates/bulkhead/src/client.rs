//! A small blocking client for the operator API, used by the operator
//! sub-commands. Errors carry the server's problem `detail`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

/// How operator commands reach the server.
#[derive(Args, Clone)]
pub struct Connection {
    /// Base URL of the bulkhead server.
    #[arg(
        long,
        env = "BULKHEAD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Data directory holding a generated operator token (used when
    /// BULKHEAD_OPERATOR_TOKEN is not set).
    #[arg(long, default_value = ".bulkhead", global = true)]
    pub data_dir: PathBuf,
    /// The operator token.
    #[arg(
        long = "operator-token",
        env = "BULKHEAD_OPERATOR_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub token: Option<String>,
}

/// The client.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

fn token_from_dir(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("operator_token");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no operator token: set BULKHEAD_OPERATOR_TOKEN or point --data-dir at the server's data directory ({} is not readable)",
            path.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

impl Client {
    /// From the command-line connection options.
    pub fn new(conn: &Connection) -> anyhow::Result<Self> {
        let token = match &conn.token {
            Some(t) if !t.is_empty() => t.clone(),
            _ => token_from_dir(&conn.data_dir)?,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Ok(Self {
            agent,
            base: conn.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// A client that presents `token` (a tenant API key or JWT) to the
    /// tenant plane at `url`.
    pub fn with_token(url: &str, token: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn finish(
        &self,
        what: &str,
        res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Value> {
        let mut res = res.with_context(|| format!("cannot reach {}", self.base))?;
        let status = res.status();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(body);
        }
        let detail = body
            .get("detail")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string());
        let code = body.get("code").and_then(Value::as_str).unwrap_or("error");
        bail!("{what} failed: {} {code}: {detail}", status.as_u16())
    }

    /// Any method, with an optional JSON body; returns the status and the
    /// body instead of failing on an error status (only an unreachable
    /// server is an error), for callers that branch on the answer.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let res = match (method, body) {
            ("GET", _) => self.agent.get(url).header("authorization", auth).call(),
            ("POST", Some(b)) => self
                .agent
                .post(url)
                .header("authorization", auth)
                .send_json(b),
            _ => bail!("unsupported request {method} {path}"),
        };
        let mut res = res.with_context(|| format!("cannot reach {}", self.base))?;
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    /// GET.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = self
            .agent
            .get(self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(&format!("GET {path}"), res)
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .agent
            .post(self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.finish(&format!("POST {path}"), res)
    }

    /// PUT a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .agent
            .put(self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.finish(&format!("PUT {path}"), res)
    }

    /// PATCH a JSON body.
    pub fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self
            .agent
            .patch(self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.finish(&format!("PATCH {path}"), res)
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let res = self
            .agent
            .delete(self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(&format!("DELETE {path}"), res)
    }
}
