//! The cost ledger: one usage record per model call, embedding call and
//! tool call, with the agent and run that made it and its cost in fixed
//! point; and the report lines aggregated from it.

use bulkhead_core::Timestamp;
use bulkhead_core::money::Usd;
use serde::Serialize;

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// Input (prompt) tokens, cached ones included.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
    /// Input tokens served from the provider's cache.
    pub cached: u64,
}

/// One model call, as recorded in the tenant's partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// Record id (UUIDv7).
    pub id: String,
    /// When the call started.
    pub time: Timestamp,
    /// Request id.
    pub request_id: String,
    /// Model alias.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// Provider region.
    pub region: String,
    /// Tokens.
    pub tokens: Tokens,
    /// Cost in nano-dollars (1e-9 USD): small calls cost fractions of a micro-dollar.
    pub cost_nanos: u64,
    /// Wall time in milliseconds.
    pub latency_ms: u64,
    /// `ok`, `upstream_error`, `upstream_timeout`, `upstream_rate_limited`,
    /// `upstream_too_large`, `client_disconnected`, `client_stalled`,
    /// `error`; `in_flight` while the call runs (the row is written before
    /// the request is sent and settled in place), `interrupted` for a call
    /// its process died during (billed at its estimate), `cancelled` for a
    /// call stopped because its caller went away (a cancelled or timed-out
    /// run, the shutdown grace), billed what the provider reported or else
    /// its estimate.
    pub status: String,
    /// The tokens are the gateway's own count or estimate, not the
    /// provider's (it reported none, or the call never settled).
    pub estimated: bool,
    /// Whether it was a streamed call.
    pub stream: bool,
    /// `model` (chat), `embed` or `tool`.
    pub kind: &'static str,
    /// The agent whose run made the call, if any.
    pub agent: Option<String>,
    /// That run's id.
    pub run_id: Option<String>,
    /// The tool called (`kind = tool`; `model` is empty then).
    pub tool: Option<String>,
}

/// Cost of `tokens` at the given per-million prices, in nano-dollars,
/// rounded half up. Cached input tokens are priced separately from the
/// rest of the input.
pub fn cost_nanos(tokens: Tokens, input: Usd, output: Usd, cached: Usd) -> u64 {
    let uncached = tokens.input.saturating_sub(tokens.cached) as u128;
    // micro-dollars per million tokens == pico-dollars per token; /1000 gives nanos.
    let picos = uncached * input.micros() as u128
        + tokens.cached as u128 * cached.micros() as u128
        + tokens.output as u128 * output.micros() as u128;
    u64::try_from((picos + 500) / 1000).unwrap_or(u64::MAX)
}

/// Nano-dollars as a decimal string of dollars (`"0.000001500"`).
pub fn nanos_to_usd(nanos: u64) -> String {
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}

/// What a usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageGroup {
    /// UTC day.
    Day,
    /// Agent (none for direct API calls).
    Agent,
    /// Model alias (none for tool calls).
    Model,
    /// Tool (none for model calls).
    Tool,
}

impl UsageGroup {
    /// Parses a `group_by` list such as `day,model`: known names, no
    /// repeats, at least one.
    pub fn parse_list(s: &str) -> Result<Vec<UsageGroup>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim) {
            let g = match part {
                "day" => UsageGroup::Day,
                "agent" => UsageGroup::Agent,
                "model" => UsageGroup::Model,
                "tool" => UsageGroup::Tool,
                other => {
                    return Err(format!(
                        "`group_by` takes day, agent, model and tool (comma-separated), not {other:?}"
                    ));
                }
            };
            if out.contains(&g) {
                return Err(format!("`group_by` names {part:?} twice"));
            }
            out.push(g);
        }
        Ok(out)
    }
}

/// One aggregate line of a usage report; the grouping fields not asked
/// for are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageSummary {
    /// UTC day, `YYYY-MM-DD`.
    pub day: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Model alias.
    pub model: Option<String>,
    /// Tool.
    pub tool: Option<String>,
    /// Calls.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_tokens: u64,
    /// Cost in nano-dollars.
    pub cost_nanos: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_fixed_point() {
        let p = |s: &str| Usd::parse(s).unwrap();
        let t = Tokens {
            input: 1000,
            output: 500,
            cached: 200,
        };
        // (800 × 0.15 + 200 × 0.075 + 500 × 0.60) / 1e6 USD = 435 µ$ = 435,000 nano-dollars.
        assert_eq!(cost_nanos(t, p("0.15"), p("0.60"), p("0.075")), 435_000);
        assert_eq!(nanos_to_usd(435_000), "0.000435000");
        let one = Tokens {
            input: 1,
            output: 0,
            cached: 0,
        };
        assert_eq!(
            cost_nanos(one, p("0.0015"), p("0"), p("0")),
            2,
            "1.5 nanos rounds half up"
        );
        assert_eq!(cost_nanos(Tokens::default(), p("10"), p("10"), p("10")), 0);
    }
}
