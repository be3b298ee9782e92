//! `[telemetry]`: traces exported over OTLP (HTTP with protobuf), off
//! unless `otlp_endpoint` is set.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::Errors;
use super::secret::{ConfigSecret, resolve};

/// `[telemetry]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP endpoint's base URL (`http://collector:4318`); spans
    /// are posted to `<otlp_endpoint>/v1/traces`. None: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of traces started here that are kept, 0 to 1 (a caller's
    /// `traceparent` sampling decision is followed).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Headers sent with every export (e.g. a collector's API key), each
    /// `"env:NAME"`.
    #[serde(default)]
    pub headers: BTreeMap<String, ConfigSecret>,
}

fn default_service_name() -> String {
    "bulkhead".to_owned()
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
            headers: BTreeMap::new(),
        }
    }
}

/// A header name as HTTP allows it (a token), lowercase or not.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `[telemetry]`: an http(s) endpoint without credentials, a ratio in
/// 0..=1, a service name, header names and their values from the
/// environment.
pub(super) fn validate(
    t: &mut TelemetryConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if let Some(url) = &t.otlp_endpoint {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            None => errors.push(
                "telemetry.otlp_endpoint",
                format!("{url:?} is not an http(s) URL"),
            ),
            Some(r) if r.is_empty() || r.starts_with('/') => errors.push(
                "telemetry.otlp_endpoint",
                format!("{url:?} has no host"),
            ),
            // Not echoed: it may carry a password.
            Some(r) if r.split('/').next().is_some_and(|a| a.contains('@')) => errors.push(
                "telemetry.otlp_endpoint",
                "must not carry credentials: use telemetry.headers",
            ),
            Some(r) if r.contains(['?', '#']) => errors.push(
                "telemetry.otlp_endpoint",
                "must be a base URL without query or fragment (spans go to <otlp_endpoint>/v1/traces)",
            ),
            Some(_) => {}
        }
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        errors.push("telemetry.sample_ratio", "must be between 0 and 1");
    }
    if t.service_name.trim().is_empty() || t.service_name.len() > 128 {
        errors.push("telemetry.service_name", "must be 1 to 128 characters");
    }
    for (name, value) in &mut t.headers {
        let path = format!("telemetry.headers.{name}");
        if !is_header_name(name) {
            errors.push(&path, "is not a valid HTTP header name");
            continue;
        }
        resolve(value, &path, env, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use super::super::testing::env;

    fn errors(text: &str) -> String {
        match load(text, &env) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn off_by_default_and_checked_when_on() {
        let c = load("", &env).unwrap();
        assert!(c.telemetry.otlp_endpoint.is_none());
        assert_eq!(c.telemetry.service_name, "bulkhead");
        assert!((c.telemetry.sample_ratio - 1.0).abs() < f64::EPSILON);
        assert_eq!(
            errors("[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.25\n"),
            ""
        );
        let e = errors("[telemetry]\notlp_endpoint = \"grpc://x:4317\"\nsample_ratio = 1.5\n");
        assert!(
            e.contains("telemetry.otlp_endpoint") && e.contains("not an http(s) URL"),
            "{e}"
        );
        assert!(e.contains("telemetry.sample_ratio"), "{e}");
        let e = errors("[telemetry]\notlp_endpoint = \"https://u:pw@x\"\n");
        assert!(
            e.contains("must not carry credentials") && !e.contains("pw"),
            "{e}"
        );
        let e = errors("[telemetry]\nheaders = { \"x-key\" = \"literal\" }\n");
        assert!(e.contains("env:NAME"), "{e}");
        let e = errors("[telemetry]\nheaders = { \"bad header\" = \"env:HOME\" }\n");
        assert!(e.contains("telemetry.headers.bad header"), "{e}");
        let e = errors("[telemetry]\nbogus = 1\n");
        assert!(e.contains("telemetry.bogus"), "{e}");
    }
}
