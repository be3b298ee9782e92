//! The tools an agent can call: a generic templated `http` tool and the
//! Slack, Jira and GitHub connectors.
//!
//! A [`ToolBox`] is built once at boot from the `[[tools]]` configuration:
//! it compiles the http tools' templates, checks their argument schemas
//! (the subset in [`schema`]) and holds one pooled HTTP client for every
//! call, behind the egress guard (`bulkhead-egress`): a URL the model's
//! arguments steer, or a name that resolves inside, reaches no address
//! the operator did not allow. [`ToolBox::call`] validates the model's
//! arguments before anything is sent, injects the credential it is given,
//! enforces the tool's timeout and response cap, and returns the answer
//! as text.
//!
//! What this crate does *not* do is decide who may call what: the agent
//! runtime resolves the tenant's credential from the vault, checks
//! residency and approval, and redacts the output before the model sees
//! it. This crate only guarantees that a credential goes where the tool's
//! configuration says and nowhere else — not into an error, a log line or
//! a `Debug` string.
//!
//! ```no_run
//! # async fn demo(config: &bulkhead_core::config::Config,
//! #               cred: &bulkhead_vault::CredentialSecret) -> Result<(), bulkhead_tools::ToolError> {
//! use bulkhead_tools::ToolBox;
//!
//! let egress = bulkhead_egress::Egress::new(&config.egress);
//! let tools = ToolBox::new(&config.tools, &egress)?;
//! if let Some(slack) = tools.get("notify") {
//!     let args = serde_json::json!({"channel": "C1", "text": "hello"});
//!     let out = tools.call(slack, &args, Some(cred)).await?;
//!     assert_eq!(out.status, 200);
//! }
//! # Ok(()) }
//! ```

mod auth;
mod connectors;
mod error;
mod http;
pub mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bulkhead_core::Region;
use bulkhead_core::config::{Risk, ToolConfig, ToolKind};
use bulkhead_egress::{ClientOptions, Egress, EgressError, GuardedClient, Redirects};
use bulkhead_vault::CredentialSecret;
use serde_json::{Value, json};

pub use error::ToolError;

/// Characters of an error body kept for the `Upstream` message: enough
/// for an API's error code and sentence, too little to carry a data dump
/// into a model's context.
const ERROR_SNIPPET_CHARS: usize = 200;
/// Bytes of an error body read to make that snippet (the rest is left
/// unread: an error page can be large).
const ERROR_READ_BYTES: usize = 4096;

/// One configured tool, as the agent runtime sees it.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Name the model calls it by.
    pub name: String,
    /// Connector kind.
    pub kind: ToolKind,
    /// Residency region of the tool's upstream.
    pub region: Region,
    /// Description shown to the model.
    pub description: String,
    /// Risk level (configured, or by kind: connectors write; an http tool
    /// reads with GET, destroys with DELETE, writes otherwise).
    pub risk: Risk,
    /// Whether a call needs a person's approval: always, never, or as the
    /// policies decide (the default).
    pub approval: bulkhead_core::config::ApprovalMode,
    /// The vault connection the tenant's credential comes from, by default.
    pub connection: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    spec: Spec,
    timeout_s: u64,
    max_response_bytes: u64,
}

#[derive(Debug, Clone)]
enum Spec {
    Connector {
        /// Base URL without a trailing slash.
        base: String,
    },
    Http {
        method: reqwest::Method,
        /// Template names in [`http::Templates`].
        url: String,
        body: Option<String>,
        /// Top-level variables of the templates, to name a missing one.
        variables: Vec<String>,
        /// `host:port`, hosts lower-case.
        allowed_hosts: Vec<String>,
    },
    /// The contract's form: the model names method, path, query and body
    /// under `base`.
    HttpBase {
        base: reqwest::Url,
        /// `[[tools]] method`, when the tool allows only that one.
        method: Option<reqwest::Method>,
        /// `host:port`, hosts lower-case.
        allowed_hosts: Vec<String>,
    },
}

impl Tool {
    /// Checks `args` against the tool's schema (and, for connectors, what a
    /// schema cannot say, like Jira's project-key format).
    pub fn validate(&self, args: &Value) -> Result<(), ToolError> {
        schema::validate(&self.parameters, args).map_err(ToolError::InvalidArguments)?;
        match &self.spec {
            Spec::Connector { .. } => connectors::check(self.kind, args),
            // A template variable the arguments lack is found when rendering
            // (strict undefined): `{% if x is defined %}` stays possible.
            Spec::Http { .. } | Spec::HttpBase { .. } => Ok(()),
        }
    }

    /// The OpenAI tool definition:
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`.
    pub fn definition(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }

    /// The per-call timeout.
    pub fn timeout_s(&self) -> u64 {
        self.timeout_s
    }

    /// The response cap in bytes.
    pub fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes
    }
}

/// A successful tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// The upstream's HTTP status.
    pub status: u16,
    /// The response body as text (http), or a compact JSON summary
    /// (connectors).
    pub content: String,
}

/// Every configured tool, with the one HTTP client they share.
pub struct ToolBox {
    tools: BTreeMap<String, Tool>,
    templates: http::Templates,
    client: GuardedClient,
}

impl fmt::Debug for ToolBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolBox")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The `reqwest` error as text, or the guard's refusal inside it.
pub(crate) fn request_error(e: reqwest::Error) -> ToolError {
    if let Some(refusal) = Egress::refusal(&e) {
        return egress_error(refusal);
    }
    // The URL is dropped from the message: the caller knows which tool it
    // called, and the query may hold argument values.
    ToolError::Request(e.without_url().to_string())
}

fn egress_error(e: &EgressError) -> ToolError {
    ToolError::EgressRefused(e.to_string())
}

impl ToolBox {
    /// Builds every tool: compiles templates, checks schemas, and checks
    /// that `egress` would let each connector's base URL and each http
    /// tool's allowed hosts through (what can be told without DNS). All
    /// problems are reported at once, each named by key path
    /// (`tools[2].url: ...`).
    pub fn new(tools: &[ToolConfig], egress: &Egress) -> Result<Self, ToolError> {
        let mut templates = http::Templates::new();
        let mut built = BTreeMap::new();
        let mut errors = Vec::new();
        for (i, config) in tools.iter().enumerate() {
            let p = format!("tools[{i}]");
            if built.contains_key(&config.name) {
                errors.push(format!("{p}.name: duplicate name {:?}", config.name));
                continue;
            }
            match build(config, &p, &mut templates, egress) {
                Ok(tool) => {
                    built.insert(config.name.clone(), tool);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if !errors.is_empty() {
            return Err(ToolError::Config(errors.join("; ")));
        }
        let client = egress
            .client(ClientOptions {
                pool_idle_timeout: Some(Duration::from_secs(90)),
                // A redirect would leave the allow-list unchecked and carry
                // the credential to wherever the upstream points.
                redirects: Redirects::None,
                ..ClientOptions::default()
            })
            .map_err(request_error)?;
        Ok(Self {
            tools: built,
            templates,
            client,
        })
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// Every tool, by name.
    pub fn tools(&self) -> impl Iterator<Item = &Tool> {
        self.tools.values()
    }

    /// Calls `tool` with the model's `args`, sending `credential` (when
    /// given) as the request's `Authorization`. Invalid arguments, a host
    /// outside the allow-list or a connector without a credential are
    /// refused before anything is sent. No error message contains a value
    /// of `credential`.
    pub async fn call(
        &self,
        tool: &Tool,
        args: &Value,
        credential: Option<&CredentialSecret>,
    ) -> Result<ToolOutput, ToolError> {
        let secrets = auth::secrets(credential);
        let result = self.call_inner(tool, args, credential, &secrets).await;
        match &result {
            Ok(out) => {
                tracing::debug!(tool = %tool.name, status = out.status, "tool call answered")
            }
            Err(e) => tracing::debug!(tool = %tool.name, code = e.code(), "tool call failed"),
        }
        result.map_err(|e| e.scrubbed(&secrets))
    }

    async fn call_inner(
        &self,
        tool: &Tool,
        args: &Value,
        credential: Option<&CredentialSecret>,
        secrets: &bulkhead_vault::Redactor,
    ) -> Result<ToolOutput, ToolError> {
        tool.validate(args)?;
        let request = match &tool.spec {
            Spec::Connector { base } => {
                let Some(credential) = credential else {
                    return Err(ToolError::MissingCredential);
                };
                let r = connectors::request(tool.kind, base, args)?;
                let mut req = self
                    .client
                    .request_str(reqwest::Method::POST, &r.url)
                    .map_err(|e| egress_error(&e))?
                    .json(&r.body);
                for (name, value) in r.headers {
                    req = req.header(name, value);
                }
                auth::authorize(req, credential)
            }
            Spec::Http {
                method,
                url,
                body,
                allowed_hosts,
                variables,
            } => {
                let rendered = self.templates.render_url(url, args, variables)?;
                let url = http::parse_rendered(&rendered)?;
                let host = http::host_port(&url).ok_or_else(|| {
                    ToolError::InvalidArguments("the URL built from them has no host".into())
                })?;
                if !allowed_hosts.contains(&host) {
                    return Err(ToolError::HostNotAllowed { host });
                }
                let mut req = self
                    .client
                    .request(method.clone(), url)
                    .map_err(|e| egress_error(&e))?;
                if let Some(body) = body {
                    req = req.json(&self.templates.render_body(body, args, variables)?);
                }
                match credential {
                    Some(c) => auth::authorize(req, c),
                    None => req,
                }
            }
            Spec::HttpBase {
                base,
                method,
                allowed_hosts,
            } => {
                let (method, url, body) = http::base_request(base, method.as_ref(), args)?;
                let host = http::host_port(&url).ok_or_else(|| {
                    ToolError::InvalidArguments("the URL built from them has no host".into())
                })?;
                if !allowed_hosts.contains(&host) {
                    return Err(ToolError::HostNotAllowed { host });
                }
                let mut req = self
                    .client
                    .request(method, url)
                    .map_err(|e| egress_error(&e))?;
                if let Some(body) = body {
                    req = req.json(&body);
                }
                match credential {
                    Some(c) => auth::authorize(req, c),
                    None => req,
                }
            }
        };
        // The call joins the run's trace (W3C Trace Context).
        let request = match bulkhead_telemetry::traceparent() {
            Some(tp) => request.header("traceparent", tp),
            None => request,
        };
        let seconds = tool.timeout_s;
        let exchange = async {
            let response = request.send().await.map_err(request_error)?;
            self.answer(tool, response, secrets).await
        };
        // One deadline over connecting, sending and reading the whole body.
        match tokio::time::timeout(Duration::from_secs(seconds), exchange).await {
            Ok(result) => result,
            Err(_) => Err(ToolError::Timeout { seconds }),
        }
    }

    async fn answer(
        &self,
        tool: &Tool,
        response: reqwest::Response,
        secrets: &bulkhead_vault::Redactor,
    ) -> Result<ToolOutput, ToolError> {
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let body = http::read_prefix(response, ERROR_READ_BYTES).await;
            return Err(ToolError::Upstream {
                status,
                message: snippet(&body, secrets),
            });
        }
        let body = http::read_capped(response, tool.max_response_bytes).await?;
        let content = match tool.spec {
            Spec::Http { .. } | Spec::HttpBase { .. } => {
                String::from_utf8_lossy(&body).into_owned()
            }
            Spec::Connector { .. } => {
                let json: Value =
                    serde_json::from_slice(&body).map_err(|_| ToolError::Upstream {
                        status,
                        message: format!("not JSON: {}", snippet(&body, secrets)),
                    })?;
                connectors::summarize(tool.kind, status, &json)?.to_string()
            }
        };
        Ok(ToolOutput { status, content })
    }
}

/// The start of an error body as text, credentials removed *before*
/// cutting (a cut secret would no longer match).
fn snippet(body: &[u8], secrets: &bulkhead_vault::Redactor) -> String {
    let text = error::scrub(&String::from_utf8_lossy(body), secrets);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".to_owned();
    }
    let mut out: String = text.chars().take(ERROR_SNIPPET_CHARS).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn default_risk(config: &ToolConfig) -> Risk {
    match (config.kind, config.method.as_deref()) {
        (ToolKind::Http, None | Some("GET")) => Risk::Read,
        (ToolKind::Http, Some("DELETE")) => Risk::Destructive,
        _ => Risk::Write,
    }
}

fn build(
    config: &ToolConfig,
    p: &str,
    templates: &mut http::Templates,
    egress: &Egress,
) -> Result<Tool, Vec<String>> {
    let mut errors = Vec::new();
    let spec = if config.kind == ToolKind::Http {
        build_http(config, p, templates, egress, &mut errors)
    } else {
        for (key, set) in [
            ("method", config.method.is_some()),
            ("url", config.url.is_some()),
            ("body", config.body.is_some()),
            ("parameters", config.parameters.is_some()),
        ] {
            if set {
                errors.push(format!("{p}.{key}: only http tools take this key"));
            }
        }
        match config.base_url.as_deref().map(reqwest::Url::parse) {
            Some(Ok(url)) if matches!(url.scheme(), "http" | "https") => {
                if let Err(e) = egress.check_url(&url) {
                    errors.push(format!("{p}.base_url: {e}"));
                }
                Some(Spec::Connector {
                    base: url.as_str().trim_end_matches('/').to_owned(),
                })
            }
            Some(_) => {
                errors.push(format!("{p}.base_url: not an http:// or https:// URL"));
                None
            }
            None => {
                errors.push(format!("{p}.base_url: is required for this tool kind"));
                None
            }
        }
    };
    let parameters = match config.kind {
        ToolKind::Http if config.url.is_none() && config.parameters.is_none() => {
            http::base_parameters(config.method.as_deref())
        }
        ToolKind::Http => config.parameters.clone().unwrap_or_else(|| json!({})),
        kind => connectors::parameters(kind),
    };
    match (spec, errors.is_empty()) {
        (Some(spec), true) => Ok(Tool {
            name: config.name.clone(),
            kind: config.kind,
            region: config.region.clone(),
            description: config
                .description
                .clone()
                .unwrap_or_else(|| connectors::description(config.kind).to_owned()),
            risk: config.risk.unwrap_or_else(|| default_risk(config)),
            approval: config
                .approval
                .unwrap_or(bulkhead_core::config::ApprovalMode::Policy),
            connection: config.connection.clone(),
            parameters,
            spec,
            timeout_s: config.timeout_s,
            max_response_bytes: config.max_response_bytes,
        }),
        _ => Err(errors),
    }
}

fn build_http(
    config: &ToolConfig,
    p: &str,
    templates: &mut http::Templates,
    egress: &Egress,
    errors: &mut Vec<String>,
) -> Option<Spec> {
    let method_name = config.method.as_deref().unwrap_or("GET");
    let method = match method_name {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
            reqwest::Method::from_bytes(method_name.as_bytes()).ok()
        }
        _ => None,
    };
    if method.is_none() {
        errors.push(format!(
            "{p}.method: {method_name:?} is not one of GET, POST, PUT, PATCH, DELETE"
        ));
    }
    let base_form = config.url.is_none() && config.base_url.is_some();
    match &config.parameters {
        Some(_) if base_form => errors.push(format!(
            "{p}.parameters: an http tool with base_url takes method, path, query and body; its schema is fixed"
        )),
        Some(schema) => {
            if let Err(e) = schema::check(schema) {
                errors.push(format!("{p}.parameters: {e}"));
            } else if schema.get("type") != Some(&json!("object")) {
                errors.push(format!(
                    "{p}.parameters: the arguments schema must have type = \"object\""
                ));
            }
        }
        None if base_form => {}
        None => errors.push(format!("{p}.parameters: is required for http tools")),
    }
    let allowed_hosts = http_allowed_hosts(config, p, egress, errors);
    if base_form {
        if config.body.is_some() {
            errors.push(format!(
                "{p}.body: an http tool with base_url takes its body from the model"
            ));
        }
        let base = match config.base_url.as_deref().map(reqwest::Url::parse) {
            Some(Ok(url)) if matches!(url.scheme(), "http" | "https") && url.query().is_none() => {
                if let Err(e) = egress.check_url(&url) {
                    errors.push(format!("{p}.base_url: {e}"));
                }
                match http::host_port(&url) {
                    Some(h) if allowed_hosts.contains(&h) => {}
                    _ => errors.push(format!(
                        "{p}.base_url: its host:port must be one of allowed_hosts"
                    )),
                }
                Some(url)
            }
            _ => {
                errors.push(format!(
                    "{p}.base_url: not an http:// or https:// URL without a query"
                ));
                None
            }
        };
        return Some(Spec::HttpBase {
            base: base?,
            method: config.method.as_ref().and(method),
            allowed_hosts,
        });
    }
    let mut variables = Vec::new();
    let url_name = format!("{}#url", config.name);
    match config.url.as_deref() {
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            if url.starts_with("http://")
                && let Err(e) = egress.check_scheme("http")
            {
                errors.push(format!("{p}.url: {e}"));
            }
            match templates.add_url(&url_name, url) {
                Ok(vars) => variables.extend(vars),
                Err(e) => errors.push(format!("{p}.url: {e}")),
            }
        }
        Some(_) => errors.push(format!("{p}.url: must start with http:// or https://")),
        None => errors.push(format!("{p}.url: is required for http tools")),
    }
    let body_name = format!("{}#body", config.name);
    if let Some(body) = &config.body {
        match templates.add_body(&body_name, body) {
            Ok(vars) => variables.extend(vars),
            Err(e) => errors.push(format!("{p}.body: {e}")),
        }
    }
    variables.sort();
    variables.dedup();
    Some(Spec::Http {
        method: method?,
        url: url_name,
        body: config.body.as_ref().map(|_| body_name),
        variables,
        allowed_hosts,
    })
}

/// An http tool's `allowed_hosts`, lower-cased, each told to the egress
/// guard now.
fn http_allowed_hosts(
    config: &ToolConfig,
    p: &str,
    egress: &Egress,
    errors: &mut Vec<String>,
) -> Vec<String> {
    let mut allowed_hosts = Vec::new();
    for (j, h) in config.allowed_hosts.iter().enumerate() {
        match h.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                // What the guard will say about calls to this host, told
                // now (addresses written literally, ports of allowed names;
                // the scheme is checked on `url`).
                if let Err(e) = egress.check_str(&format!("https://{h}/")) {
                    errors.push(format!("{p}.allowed_hosts[{j}]: {e}"));
                }
                allowed_hosts.push(h.to_ascii_lowercase());
            }
            _ => errors.push(format!(
                "{p}.allowed_hosts[{j}]: {h:?} is not \"host:port\""
            )),
        }
    }
    if config.allowed_hosts.is_empty() {
        errors.push(format!(
            "{p}.allowed_hosts: an http tool needs at least one allowed host"
        ));
    }
    allowed_hosts
}
