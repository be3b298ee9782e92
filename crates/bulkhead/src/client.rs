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
        if status.is_success() {
            return Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            });
        }
        bail!("{what} failed: {}", explain(status, &text))
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

    /// GET, copying the body to `out` as it arrives; returns its size.
    pub fn get_to(&self, path: &str, out: &mut dyn std::io::Write) -> anyhow::Result<u64> {
        let res = self
            .agent
            .get(self.url(path))
            .header("authorization", format!("Bearer {}", self.token))
            .call();
        let mut res = res.with_context(|| format!("cannot reach {}", self.base))?;
        let status = res.status();
        if !status.is_success() {
            let text = res.body_mut().read_to_string().unwrap_or_default();
            bail!("GET {path} failed: {}", explain(status, &text));
        }
        let mut reader = res.body_mut().as_reader();
        std::io::copy(&mut reader, out).with_context(|| format!("GET {path}: cut off"))
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

/// The words of the status line (`502 Bad Gateway`).
fn status_line(status: ureq::http::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// An error answer in plain words: a problem's `detail` (or an OpenAI
/// error's `message`, with its `param`) and code, never the JSON itself
/// nor a parser's message about it.
pub fn explain(status: ureq::http::StatusCode, text: &str) -> String {
    let line = status_line(status);
    if text.trim().is_empty() {
        return format!("the server answered {line} with an empty body");
    }
    let Ok(body) = serde_json::from_str::<Value>(text) else {
        return format!("the server answered {line} with a non-JSON body");
    };
    let str_of = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    // problem+json: {detail, code}; OpenAI: {error: {message, param, code}}.
    let (detail, param, code) = if let Some(d) = str_of(body.get("detail")) {
        (d, None, str_of(body.get("code")))
    } else if let Some(m) = str_of(body.pointer("/error/message")) {
        (
            m,
            str_of(body.pointer("/error/param")),
            str_of(body.pointer("/error/code")).or_else(|| str_of(body.pointer("/error/type"))),
        )
    } else {
        return format!("the server answered {line} without an error detail");
    };
    let mut detail = plain(&detail);
    if let Some(p) = param.filter(|p| !p.is_empty() && !detail.starts_with(p.as_str())) {
        detail = format!("{p}: {detail}");
    }
    match code {
        Some(code) => format!("{detail} ({} {code})", status.as_u16()),
        None => format!("{detail} ({line})"),
    }
}

/// A server's detail without the JSON deserialiser's framing: the
/// extractor's prefix and the `at line 1 column 9` position, which name
/// nothing the person typed.
pub fn plain(detail: &str) -> String {
    let mut d = detail.trim();
    for prefix in [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
        "Failed to deserialize query string: ",
        "Invalid URL: ",
    ] {
        if let Some(rest) = d.strip_prefix(prefix) {
            d = rest;
        }
    }
    let mut out = d.to_owned();
    if let Some(at) = out.rfind(" at line ") {
        let tail = &out[at + " at line ".len()..];
        let positional = tail.split_once(" column ").is_some_and(|(l, c)| {
            l.chars().all(|ch| ch.is_ascii_digit()) && c.chars().all(|ch| ch.is_ascii_digit())
        });
        if positional {
            out.truncate(at);
        }
    }
    if out.is_empty() {
        "the server gave no detail".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::StatusCode;

    #[test]
    fn errors_are_told_in_plain_words() {
        let bad_gateway = StatusCode::BAD_GATEWAY;
        assert_eq!(
            explain(bad_gateway, "<html>oops</html>"),
            "the server answered 502 Bad Gateway with a non-JSON body"
        );
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(
            explain(
                unprocessable,
                r#"{"detail": "Failed to deserialize the JSON body into the target type: name: invalid type: integer `5`, expected a string at line 1 column 9", "code": "invalid_body"}"#
            ),
            "name: invalid type: integer `5`, expected a string (422 invalid_body)"
        );
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            explain(
                bad,
                r#"{"error": {"message": "unknown model", "param": "model", "code": "model_not_found"}}"#
            ),
            "model: unknown model (400 model_not_found)"
        );
        assert_eq!(
            explain(bad, "[]"),
            "the server answered 400 Bad Request without an error detail"
        );
        assert_eq!(
            explain(bad, ""),
            "the server answered 400 Bad Request with an empty body"
        );
    }
}
