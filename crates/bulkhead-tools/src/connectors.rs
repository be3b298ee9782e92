//! The Slack, Jira and GitHub connectors: their built-in argument
//! schemas, the checks a schema cannot express, the request each sends and
//! the summary each returns.
//!
//! Only the one write operation each agent needs is offered (post a
//! message, create an issue): a connector is a narrow, reviewed action, not
//! a general API client.

use bulkhead_core::config::ToolKind;
use serde_json::{Value, json};

use crate::ToolError;

/// The built-in JSON Schema of a connector's arguments.
pub(crate) fn parameters(kind: ToolKind) -> Value {
    match kind {
        // Slack limits: channel ids and names are short; 40 000 characters
        // is chat.postMessage's own limit on `text`.
        ToolKind::Slack => json!({
            "type": "object",
            "properties": {
                "channel": {"type": "string", "minLength": 1, "maxLength": 80,
                    "description": "Channel id (C0123…) or name (#general)"},
                "text": {"type": "string", "minLength": 1, "maxLength": 40000,
                    "description": "The message (Slack mrkdwn)"},
            },
            "required": ["channel", "text"],
            "additionalProperties": false,
        }),
        // Jira limits: a summary is at most 255 characters; 32 767 is the
        // size of a Jira text field.
        ToolKind::Jira => json!({
            "type": "object",
            "properties": {
                "project": {"type": "string", "minLength": 2, "maxLength": 10,
                    "description": "Project key, e.g. PROJ"},
                "summary": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": {"type": "string", "maxLength": 32767},
                "issue_type": {"type": "string", "minLength": 1, "maxLength": 64,
                    "description": "Issue type name (default Task)"},
            },
            "required": ["project", "summary"],
            "additionalProperties": false,
        }),
        // GitHub limits: titles of 256 characters, bodies of 65 536.
        ToolKind::Github => json!({
            "type": "object",
            "properties": {
                "repo": {"type": "string", "minLength": 3, "maxLength": 140,
                    "description": "owner/name"},
                "title": {"type": "string", "minLength": 1, "maxLength": 256},
                "body": {"type": "string", "maxLength": 65536},
            },
            "required": ["repo", "title"],
            "additionalProperties": false,
        }),
        ToolKind::Http => json!({"type": "object"}),
    }
}

/// The default description shown to the model.
pub(crate) fn description(kind: ToolKind) -> &'static str {
    match kind {
        ToolKind::Slack => "Post a message to a Slack channel.",
        ToolKind::Jira => "Create a Jira issue.",
        ToolKind::Github => "Open an issue in a GitHub repository.",
        ToolKind::Http => "Call an HTTP API.",
    }
}

/// Checks beyond the schema subset (which has no `pattern`).
pub(crate) fn check(kind: ToolKind, args: &Value) -> Result<(), ToolError> {
    let invalid = |m: &str| Err(ToolError::InvalidArguments(m.to_owned()));
    match kind {
        ToolKind::Jira => {
            let key = args["project"].as_str().unwrap_or_default();
            if !is_project_key(key) {
                return invalid(
                    "`project`: must be a project key: an upper-case letter, then 1-9 upper-case letters or digits",
                );
            }
        }
        ToolKind::Github => {
            if repo(args).is_none() {
                return invalid("`repo`: must be \"owner/name\"");
            }
        }
        ToolKind::Slack | ToolKind::Http => {}
    }
    Ok(())
}

/// `[A-Z][A-Z0-9]{1,9}`.
fn is_project_key(key: &str) -> bool {
    let b = key.as_bytes();
    (2..=10).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// `owner/name` with GitHub's characters; never `.` or `..`, which would
/// move up the API path.
fn repo(args: &Value) -> Option<(&str, &str)> {
    let (owner, name) = args["repo"].as_str()?.split_once('/')?;
    let part = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    (part(owner, 39) && part(name, 100)).then_some((owner, name))
}

/// A Slack Web API method's URL. `base` is Slack's documented API root,
/// `https://slack.com/api`; a base without the `/api` (the site root, which
/// earlier configurations used) still reaches the same method. `base` has
/// no trailing `/` (configuration trims it).
fn slack_url(base: &str, method: &str) -> String {
    if base.ends_with("/api") {
        format!("{base}/{method}")
    } else {
        format!("{base}/api/{method}")
    }
}

/// One connector request, ready to send.
pub(crate) struct Request {
    pub url: String,
    pub body: Value,
    pub headers: Vec<(&'static str, &'static str)>,
}

/// The request for validated `args`.
pub(crate) fn request(kind: ToolKind, base: &str, args: &Value) -> Result<Request, ToolError> {
    let text = |k: &str| args[k].as_str().unwrap_or_default().to_owned();
    Ok(match kind {
        ToolKind::Slack => Request {
            url: slack_url(base, "chat.postMessage"),
            body: json!({"channel": text("channel"), "text": text("text")}),
            headers: vec![],
        },
        ToolKind::Jira => {
            let mut fields = json!({
                "project": {"key": text("project")},
                "summary": text("summary"),
                "issuetype": {"name": args["issue_type"].as_str().unwrap_or("Task")},
            });
            if let Some(d) = args["description"].as_str() {
                fields["description"] = json!(d);
            }
            Request {
                url: format!("{base}/rest/api/2/issue"),
                body: json!({"fields": fields}),
                headers: vec![],
            }
        }
        ToolKind::Github => {
            let (owner, name) = repo(args).ok_or_else(|| {
                ToolError::InvalidArguments("`repo`: must be \"owner/name\"".into())
            })?;
            let mut body = json!({"title": text("title")});
            if let Some(b) = args["body"].as_str() {
                body["body"] = json!(b);
            }
            Request {
                url: format!("{base}/repos/{owner}/{name}/issues"),
                body,
                headers: vec![
                    ("accept", "application/vnd.github+json"),
                    ("x-github-api-version", "2022-11-28"),
                    // GitHub refuses requests without a User-Agent.
                    ("user-agent", "bulkhead"),
                ],
            }
        }
        ToolKind::Http => {
            return Err(ToolError::Config("the http tool is not a connector".into()));
        }
    })
}

/// The compact summary of a successful answer, or why it is a failure.
pub(crate) fn summarize(kind: ToolKind, status: u16, body: &Value) -> Result<Value, ToolError> {
    let unexpected = || ToolError::Upstream {
        status,
        message: "unexpected answer shape".into(),
    };
    match kind {
        ToolKind::Slack => {
            // Slack answers failures with 200 and `ok: false`.
            if body["ok"] != Value::Bool(true) {
                let error = body["error"].as_str().unwrap_or("no error code");
                return Err(ToolError::Upstream {
                    status,
                    message: error.chars().take(100).collect(),
                });
            }
            Ok(json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}))
        }
        ToolKind::Jira => {
            if body["key"].is_null() {
                return Err(unexpected());
            }
            Ok(json!({"key": body["key"], "id": body["id"]}))
        }
        ToolKind::Github => {
            if body["number"].is_null() {
                return Err(unexpected());
            }
            Ok(json!({"number": body["number"], "html_url": body["html_url"]}))
        }
        ToolKind::Http => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_keys_and_repos() {
        for ok in ["PR", "PROJ", "A1", "ABCDEFGHIJ"] {
            assert!(is_project_key(ok), "{ok}");
        }
        for bad in ["P", "proj", "1AB", "ABCDEFGHIJK", "PR-1", ""] {
            assert!(!is_project_key(bad), "{bad}");
        }
        for ok in ["o/r", "my-org/my.repo_1"] {
            assert!(repo(&json!({"repo": ok})).is_some(), "{ok}");
        }
        for bad in ["o", "o/", "/r", "o/r/x", "../r", "o/..", "o/r?x", "o r/x"] {
            assert!(repo(&json!({"repo": bad})).is_none(), "{bad}");
        }
        for kind in [ToolKind::Slack, ToolKind::Jira, ToolKind::Github] {
            crate::schema::check(&parameters(kind)).unwrap();
        }
    }
}
