//! Alert rules: the shape shared by the platform's defaults (`[[alerts]]`)
//! and each tenant's own (`PUT /v1/alerts`), and the one validation both
//! pass through, so a rule the API accepts is a rule the configuration
//! accepts and the other way round.
//!
//! A rule watches one metric of one tenant over a sliding window and
//! fires when the value goes above `threshold` with at least
//! `min_samples` events in the window; it resolves when the value is back
//! at or below the threshold (an empty window's value is 0).

use serde::{Deserialize, Serialize};

use crate::money::Usd;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// Share of the tenant's authenticated requests answered 5xx.
    ErrorRate,
    /// 99th percentile latency (ms) of model calls, tool calls or runs (`of`).
    P99LatencyMs,
    /// Model spend in the window, in US dollars (a decimal string threshold).
    SpendUsd,
    /// Share of the tenant's tool calls that failed.
    ToolErrorRate,
    /// Blocked cross-tenant accesses (canary hits, foreign fragments,
    /// tenant header mismatches) in the window.
    CrossTenantBlock,
}

impl AlertMetric {
    /// The name in rules, bodies and events.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertMetric::ErrorRate => "error_rate",
            AlertMetric::P99LatencyMs => "p99_latency_ms",
            AlertMetric::SpendUsd => "spend_usd",
            AlertMetric::ToolErrorRate => "tool_error_rate",
            AlertMetric::CrossTenantBlock => "cross_tenant_block",
        }
    }
}

/// Whose latency a `p99_latency_ms` rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyOf {
    /// Model and embedding calls.
    Model,
    /// Tool calls.
    Tool,
    /// Whole runs.
    Run,
}

impl LatencyOf {
    /// The name in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            LatencyOf::Model => "model",
            LatencyOf::Tool => "tool",
            LatencyOf::Run => "run",
        }
    }
}

/// A threshold as written: a number, or a decimal string (money).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    /// Rates, latencies, counts.
    Number(f64),
    /// Dollars, as `"25.00"`.
    Decimal(String),
}

/// One rule, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique among the rules that apply to a tenant; a tenant rule with a
    /// platform rule's name replaces it for that tenant.
    pub name: String,
    /// What is watched.
    pub metric: AlertMetric,
    /// Whose latency (`p99_latency_ms` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<LatencyOf>,
    /// Fires above this value.
    pub threshold: Threshold,
    /// The sliding window, in seconds.
    pub window_s: u64,
    /// Fewest events in the window for the rule to fire (default 1).
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
}

fn default_min_samples() -> u64 {
    1
}

/// Shortest window: below a minute, a handful of requests decide.
pub const MIN_WINDOW_S: u64 = 60;
/// Longest window: a day; the window's buckets are held in memory per
/// active tenant and rule.
pub const MAX_WINDOW_S: u64 = 86_400;
/// Most rules of one tenant (each holds a window in memory).
pub const MAX_RULES: usize = 32;
/// Largest `min_samples`.
pub const MAX_MIN_SAMPLES: u64 = 1_000_000;
/// Longest rule name.
pub const MAX_NAME: usize = 64;
/// Largest latency threshold: an hour.
const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// A rule's problem: the field at fault (`threshold`, `of`…) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> RuleError {
    RuleError {
        field,
        message: message.into(),
    }
}

/// Whether `name` is a valid rule name: 1–64 of `a-z`, `0-9`, `_`, `-`,
/// starting with a letter.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl AlertRule {
    /// Checks every field; the threshold in the metric's unit (a rate,
    /// milliseconds, dollars, a count).
    pub fn check(&self) -> Result<f64, RuleError> {
        if !valid_name(&self.name) {
            return Err(err(
                "name",
                "must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter",
            ));
        }
        match (self.metric, self.of) {
            (AlertMetric::P99LatencyMs, None) => {
                return Err(err("of", "p99_latency_ms needs of: model, tool or run"));
            }
            (AlertMetric::P99LatencyMs, Some(_)) | (_, None) => {}
            (m, Some(_)) => {
                return Err(err(
                    "of",
                    format!("only p99_latency_ms takes of, not {}", m.as_str()),
                ));
            }
        }
        if !(MIN_WINDOW_S..=MAX_WINDOW_S).contains(&self.window_s) {
            return Err(err(
                "window_s",
                format!("must be between {MIN_WINDOW_S} and {MAX_WINDOW_S} seconds"),
            ));
        }
        if !(1..=MAX_MIN_SAMPLES).contains(&self.min_samples) {
            return Err(err(
                "min_samples",
                format!("must be between 1 and {MAX_MIN_SAMPLES}"),
            ));
        }
        let number = || match &self.threshold {
            Threshold::Number(n) if n.is_finite() => Ok(*n),
            _ => Err(err(
                "threshold",
                format!("{} takes a number", self.metric.as_str()),
            )),
        };
        match self.metric {
            AlertMetric::ErrorRate | AlertMetric::ToolErrorRate => {
                let t = number()?;
                if !(0.0..1.0).contains(&t) {
                    return Err(err("threshold", "a rate must be at least 0 and below 1"));
                }
                Ok(t)
            }
            AlertMetric::P99LatencyMs => {
                let t = number()?;
                if !(t > 0.0 && t <= MAX_LATENCY_MS) {
                    return Err(err(
                        "threshold",
                        "a latency must be above 0 and at most 3600000 ms",
                    ));
                }
                Ok(t)
            }
            AlertMetric::CrossTenantBlock => {
                let t = number()?;
                if !(t >= 0.0 && t.fract() == 0.0 && t <= 1e9) {
                    return Err(err(
                        "threshold",
                        "a count must be a whole number, at least 0",
                    ));
                }
                Ok(t)
            }
            AlertMetric::SpendUsd => {
                let Threshold::Decimal(s) = &self.threshold else {
                    return Err(err(
                        "threshold",
                        "spend_usd takes a decimal string, like \"25.00\"",
                    ));
                };
                let usd = Usd::parse(s).map_err(|e| err("threshold", e.to_string()))?;
                if usd == Usd::ZERO {
                    return Err(err("threshold", "must be above 0"));
                }
                Ok(usd.micros() as f64 / 1e6)
            }
        }
    }
}

/// Checks a list of rules: each rule, unique names, at most
/// [`MAX_RULES`]. The error names the rule's index.
pub fn check_rules(rules: &[AlertRule]) -> Result<(), (Option<usize>, RuleError)> {
    if rules.len() > MAX_RULES {
        return Err((None, err("rules", format!("at most {MAX_RULES} rules"))));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        r.check().map_err(|e| (Some(i), e))?;
        if !seen.insert(r.name.as_str()) {
            return Err((Some(i), err("name", format!("{:?} is used twice", r.name))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: serde_json::Value) -> Result<f64, RuleError> {
        serde_json::from_value::<AlertRule>(v).unwrap().check()
    }

    #[test]
    fn rules_are_checked_by_field() {
        use serde_json::json;
        let ok = |v| rule(v).unwrap();
        assert_eq!(
            ok(
                json!({"name":"errors","metric":"error_rate","threshold":0.02,"window_s":300,"min_samples":50})
            ),
            0.02
        );
        assert_eq!(
            ok(json!({"name":"spend","metric":"spend_usd","threshold":"25.00","window_s":3600})),
            25.0
        );
        assert_eq!(
            ok(
                json!({"name":"slow","metric":"p99_latency_ms","of":"model","threshold":2000,"window_s":300})
            ),
            2000.0
        );
        let field = |v| rule(v).unwrap_err().field;
        assert_eq!(
            field(json!({"name":"Bad","metric":"error_rate","threshold":0.1,"window_s":300})),
            "name"
        );
        assert_eq!(
            field(json!({"name":"e","metric":"error_rate","threshold":1.5,"window_s":300})),
            "threshold"
        );
        assert_eq!(
            field(json!({"name":"e","metric":"error_rate","threshold":0.1,"window_s":10})),
            "window_s"
        );
        assert_eq!(
            field(
                json!({"name":"e","metric":"error_rate","of":"tool","threshold":0.1,"window_s":60})
            ),
            "of"
        );
        assert_eq!(
            field(json!({"name":"e","metric":"p99_latency_ms","threshold":10,"window_s":60})),
            "of"
        );
        assert_eq!(
            field(json!({"name":"e","metric":"spend_usd","threshold":25,"window_s":60})),
            "threshold"
        );
        assert_eq!(
            field(json!({"name":"e","metric":"spend_usd","threshold":"0","window_s":60})),
            "threshold"
        );
        assert_eq!(
            field(
                json!({"name":"e","metric":"error_rate","threshold":0.1,"window_s":60,"min_samples":0})
            ),
            "min_samples"
        );
        assert!(
            serde_json::from_value::<AlertRule>(
                json!({"name":"e","metric":"error_rate","threshold":0.1,"window_s":60,"extra":1})
            )
            .unwrap_err()
            .to_string()
            .contains("extra")
        );
        let r: AlertRule = serde_json::from_value(
            json!({"name":"e","metric":"error_rate","threshold":0.1,"window_s":60}),
        )
        .unwrap();
        let (i, e) = check_rules(&[r.clone(), r]).unwrap_err();
        assert_eq!((i, e.field), (Some(1), "name"));
    }
}
