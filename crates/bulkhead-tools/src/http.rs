//! The generic `http` tool: URL and body templates over the model's
//! arguments, or the contract's form (the model names method, path, query
//! and body under `base_url`), the host allow-list, and reading a
//! response under a cap.
//!
//! The model's arguments are data, never template source: they are passed
//! as variables, so `{{ 7*7 }}` inside a value arrives literally. In the
//! URL every interpolated value is percent-encoded (all but RFC 3986
//! unreserved characters), so a value can add neither a path segment, nor a
//! query separator, nor a fragment, nor user info; the host is then checked
//! against the allow-list after rendering. In the body every value is
//! JSON-escaped (minijinja's JSON auto-escape) and the result must parse as
//! JSON. Undefined variables are errors, never empty strings: a missing
//! argument must not silently change which URL is called.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use crate::ToolError;

/// The two template environments: one percent-encodes, one JSON-escapes.
pub(crate) struct Templates {
    url: Environment<'static>,
    body: Environment<'static>,
}

impl Templates {
    pub(crate) fn new() -> Self {
        let mut url = Environment::new();
        url.set_undefined_behavior(UndefinedBehavior::Strict);
        url.set_auto_escape_callback(|_| AutoEscape::None);
        // The formatter sees every `{{ ... }}` output, `|safe` or not: no
        // way around the encoding from inside a template.
        url.set_formatter(|out, _state, value| {
            let text = match value.kind() {
                ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
                ValueKind::Number | ValueKind::Bool => value.to_string(),
                _ => {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        format!("a {} value cannot be put in a URL", value.kind()),
                    ));
                }
            };
            out.write_str(&percent_encode(&text))
                .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "write failed"))
        });
        let mut body = Environment::new();
        body.set_undefined_behavior(UndefinedBehavior::Strict);
        body.set_auto_escape_callback(|_| AutoEscape::Json);
        Self { url, body }
    }

    /// Compiles a URL template; returns its top-level variables.
    pub(crate) fn add_url(&mut self, name: &str, source: &str) -> Result<Vec<String>, String> {
        add(&mut self.url, name, source)
    }

    /// Compiles a body template; returns its top-level variables.
    pub(crate) fn add_body(&mut self, name: &str, source: &str) -> Result<Vec<String>, String> {
        add(&mut self.body, name, source)
    }

    /// Renders a URL template; `variables` are the template's own, to name
    /// the missing one when rendering hits an undefined value.
    pub(crate) fn render_url(
        &self,
        name: &str,
        args: &Value,
        variables: &[String],
    ) -> Result<String, ToolError> {
        render(&self.url, name, args).map_err(|e| invalid("URL", &e, args, variables))
    }

    /// Renders a body template to JSON.
    pub(crate) fn render_body(
        &self,
        name: &str,
        args: &Value,
        variables: &[String],
    ) -> Result<Value, ToolError> {
        let text =
            render(&self.body, name, args).map_err(|e| invalid("body", &e, args, variables))?;
        // With every value JSON-escaped, invalid JSON is the template's
        // fault, not the arguments'.
        serde_json::from_str(&text).map_err(|e| {
            ToolError::Config(format!(
                "the body template of this tool does not produce valid JSON ({e})"
            ))
        })
    }
}

fn add(env: &mut Environment<'static>, name: &str, source: &str) -> Result<Vec<String>, String> {
    env.add_template_owned(name.to_owned(), source.to_owned())
        .map_err(|e| display_error(&e))?;
    let template = env.get_template(name).map_err(|e| display_error(&e))?;
    let vars: BTreeSet<String> = template.undeclared_variables(false).into_iter().collect();
    Ok(vars.into_iter().collect())
}

fn render(
    env: &Environment<'static>,
    name: &str,
    args: &Value,
) -> Result<String, minijinja::Error> {
    env.get_template(name).and_then(|t| t.render(args))
}

fn invalid(what: &str, e: &minijinja::Error, args: &Value, variables: &[String]) -> ToolError {
    if e.kind() == ErrorKind::UndefinedError {
        let missing: Vec<String> = variables
            .iter()
            .filter(|v| args.get(v.as_str()).is_none())
            .map(|v| format!("`{v}`"))
            .collect();
        if !missing.is_empty() {
            return ToolError::InvalidArguments(format!(
                "{}: not given, and the {what} template of this tool needs it",
                missing.join(", ")
            ));
        }
    }
    ToolError::InvalidArguments(format!(
        "the {what} cannot be built from them: {}",
        display_error(e)
    ))
}

/// minijinja's message with its detail ("undefined value" alone says too
/// little), without its template source dump.
fn display_error(e: &minijinja::Error) -> String {
    let mut text = e.kind().to_string();
    if let Some(detail) = e.detail() {
        let _ = write!(text, ": {detail}");
    }
    if let Some(line) = e.line() {
        let _ = write!(text, " (line {line})");
    }
    text
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The request of an http tool in the contract's form: the model names
/// `method`, `path`, `query` and `body` under the tool's `base_url`. The
/// path is joined segment by segment, each percent-encoded, so it can add
/// path segments below the base and nothing else: no dot segments, no
/// scheme, host, user info, query or fragment of its own, no empty
/// segments (`//`), no backslashes.
pub(crate) fn base_request(
    base: &reqwest::Url,
    fixed_method: Option<&reqwest::Method>,
    args: &Value,
) -> Result<(reqwest::Method, reqwest::Url, Option<Value>), ToolError> {
    let invalid = |m: String| ToolError::InvalidArguments(m);
    let method = match args.get("method") {
        None | Some(Value::Null) => fixed_method.cloned().unwrap_or(reqwest::Method::GET),
        Some(Value::String(m)) => {
            let m = m.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                return Err(invalid(format!(
                    "method: {m:?} is not one of GET, POST, PUT, PATCH, DELETE"
                )));
            }
            let m = reqwest::Method::from_bytes(m.as_bytes())
                .map_err(|_| invalid("method: not a method".into()))?;
            if fixed_method.is_some_and(|f| *f != m) {
                return Err(invalid(format!(
                    "method: this tool only makes {} requests",
                    fixed_method
                        .map(reqwest::Method::as_str)
                        .unwrap_or_default()
                )));
            }
            m
        }
        Some(_) => return Err(invalid("method: must be a string".into())),
    };
    let path = match args.get("path") {
        Some(Value::String(p)) => p.as_str(),
        None | Some(Value::Null) => "/",
        Some(_) => return Err(invalid("path: must be a string".into())),
    };
    if !path.starts_with('/') {
        return Err(invalid("path: must start with `/`".into()));
    }
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|_| ToolError::Config("the tool's base_url cannot take a path".into()))?;
        segments.pop_if_empty();
        let rest = &path[1..];
        if !rest.is_empty() {
            for seg in rest.split('/') {
                let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
                if seg.is_empty() || decoded == "." || decoded == ".." {
                    return Err(invalid("path: no empty, `.` or `..` segments".into()));
                }
                if seg.chars().any(|c| c.is_control() || c == '\\') {
                    return Err(invalid("path: no control characters or backslashes".into()));
                }
                // `push` percent-encodes what a segment may not hold (`?`,
                // `#`, `/`…), so nothing in it can end the path.
                segments.push(seg);
            }
        }
    }
    match args.get("query") {
        None | Some(Value::Null) => {}
        Some(Value::Object(q)) => {
            let mut pairs = url.query_pairs_mut();
            // Sorted by name, whatever order the JSON map keeps (serde_json's
            // `preserve_order` may be on in the build): one request, one URL.
            let mut q: Vec<(&String, &Value)> = q.iter().collect();
            q.sort_by(|a, b| a.0.cmp(b.0));
            for (k, v) in q {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(invalid(format!(
                            "query.{k}: must be a string, number or boolean"
                        )));
                    }
                };
                pairs.append_pair(k, &v);
            }
        }
        Some(_) => return Err(invalid("query: must be an object".into())),
    }
    let body = match args.get("body") {
        None | Some(Value::Null) => None,
        Some(b) if matches!(method, reqwest::Method::GET | reqwest::Method::DELETE) => {
            let _ = b;
            return Err(invalid(format!("body: a {method} request has no body")));
        }
        Some(b) => Some(b.clone()),
    };
    Ok((method, url, body))
}

/// The arguments schema of an http tool in the contract's form.
pub(crate) fn base_parameters(fixed_method: Option<&str>) -> Value {
    let methods: Vec<&str> = match fixed_method {
        Some(m) => vec![m],
        None => vec!["GET", "POST", "PUT", "PATCH", "DELETE"],
    };
    serde_json::json!({
        "type": "object",
        "properties": {
            "method": {"type": "string", "enum": methods},
            "path": {"type": "string", "description": "The path under the tool's base URL, starting with /"},
            "query": {"type": "object", "description": "Query parameters (strings, numbers or booleans)"},
            "body": {"type": "object", "description": "JSON body (not for GET or DELETE)"}
        },
        "required": ["path"],
        "additionalProperties": false
    })
}

/// Parses a rendered URL and checks what the encoding cannot: dot
/// segments (`.` and `..` are unreserved, and `%2e` counts as a dot to URL
/// parsers), the scheme, and user info.
pub(crate) fn parse_rendered(rendered: &str) -> Result<reqwest::Url, ToolError> {
    let invalid = |m: &str| ToolError::InvalidArguments(format!("the URL {m}"));
    if let Some(rest) = rendered.split_once("://").map(|(_, r)| r) {
        let path = rest.find('/').map_or("", |i| &rest[i..]);
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let dot = |seg: &str| {
            let seg = seg.to_ascii_lowercase().replace("%2e", ".");
            seg == "." || seg == ".."
        };
        if path.split('/').any(dot) {
            return Err(invalid("would contain a `.` or `..` path segment"));
        }
    }
    let url = reqwest::Url::parse(rendered)
        .map_err(|e| invalid(&format!("built from them is not valid ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain user info"));
    }
    Ok(url)
}

/// `host:port` of a URL, the port defaulted by scheme, the host lower-case.
pub(crate) fn host_port(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// Reads a response body up to `limit` bytes, chunk by chunk; a body
/// announcing or reaching more is refused without reading further.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, ToolError> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Err(ToolError::ResponseTooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(crate::request_error)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ToolError::ResponseTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `limit` bytes of an error body; the rest is not needed
/// for a snippet and is not read.
pub(crate) async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    body
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn url_values_are_percent_encoded_and_data_only() {
        let mut t = Templates::new();
        let vars = t
            .add_url(
                "u",
                "https://api.example.com/v1/{{ id }}?q={{ q }}&n={{ n }}",
            )
            .unwrap();
        assert_eq!(vars, ["id", "n", "q"]);
        let url = t
            .render_url(
                "u",
                &json!({"id": "x/../../admin?y=1#", "q": "{{ 7*7 }} a&b=c", "n": 3}),
                &vars,
            )
            .unwrap();
        assert_eq!(
            url,
            "https://api.example.com/v1/x%2F..%2F..%2Fadmin%3Fy%3D1%23?q=%7B%7B%207%2A7%20%7D%7D%20a%26b%3Dc&n=3"
        );
        let parsed = parse_rendered(&url).unwrap();
        assert_eq!(parsed.host_str(), Some("api.example.com"));
        assert_eq!(parsed.path(), "/v1/x%2F..%2F..%2Fadmin%3Fy%3D1%23");
        assert_eq!(parsed.fragment(), None);
    }

    #[test]
    fn safe_does_not_bypass_the_encoding() {
        let mut t = Templates::new();
        t.add_url("u", "https://h/{{ p|safe }}").unwrap();
        assert_eq!(
            t.render_url("u", &json!({"p": "a/b"}), &[]).unwrap(),
            "https://h/a%2Fb"
        );
    }

    #[test]
    fn undefined_and_unprintable_values_are_errors() {
        let mut t = Templates::new();
        let v = t.add_url("u", "https://h/{{ id }}/{{ o.x }}").unwrap();
        let e = t.render_url("u", &json!({"o": {"x": 1}}), &v).unwrap_err();
        assert_eq!(
            e,
            ToolError::InvalidArguments(
                "`id`: not given, and the URL template of this tool needs it".into()
            )
        );
        let e = t
            .render_url("u", &json!({"id": 1, "o": {}}), &v)
            .unwrap_err();
        assert!(
            matches!(e, ToolError::InvalidArguments(ref m) if m.contains("undefined")),
            "{e}"
        );
        let e = t
            .render_url("u", &json!({"id": [1], "o": {"x": 1}}), &v)
            .unwrap_err();
        assert!(e.to_string().contains("cannot be put in a URL"), "{e}");
        let e = t
            .render_url("u", &json!({"id": null, "o": {"x": 1}}), &v)
            .unwrap_err();
        assert!(e.to_string().contains("cannot be put in a URL"), "{e}");
    }

    #[test]
    fn dot_segments_user_info_and_schemes_are_refused() {
        for bad in [
            "https://h/a/../b",
            "https://h/a/./b",
            "https://h/%2e%2E/b",
            "https://h/.%2e?x",
            "https://h/..",
            "https://u:p@h/",
            "https://evil.com%40h/",
            "ftp://h/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(parse_rendered(bad).is_err(), "{bad}");
        }
        let ok = parse_rendered("https://h/a..b/.x?p=../..").unwrap();
        assert_eq!(host_port(&ok).as_deref(), Some("h:443"));
        let ok = parse_rendered("http://H.example:8080/").unwrap();
        assert_eq!(host_port(&ok).as_deref(), Some("h.example:8080"));
    }

    #[test]
    fn body_values_are_json_escaped() {
        let mut t = Templates::new();
        t.add_body("b", r#"{"text": {{ text }}, "n": {{ n }}}"#)
            .unwrap();
        let body = t
            .render_body(
                "b",
                &json!({"text": "\"}, \"admin\": true, \"x\": {{ 7*7 }}", "n": 2}),
                &[],
            )
            .unwrap();
        assert_eq!(
            body,
            json!({"text": "\"}, \"admin\": true, \"x\": {{ 7*7 }}", "n": 2})
        );
        t.add_body("bad", r#"{"text": "{{ text }}"}"#).unwrap();
        let e = t
            .render_body("bad", &json!({"text": "x"}), &[])
            .unwrap_err();
        assert!(matches!(e, ToolError::Config(_)), "{e}");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let mut t = Templates::new();
        assert!(t.add_url("u", "https://h/{{ id ").is_err());
        assert!(t.add_body("b", "{% if %}").is_err());
    }
}
