//! `[[agents]]`: each agent's prompt, model, tools and run limits.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::Errors;
use super::names::check_unique;
use crate::Region;

/// `[[agents]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Model alias.
    pub model: String,
    /// Inline prompt template.
    pub prompt: Option<String>,
    /// Prompt template file (under the prompts directory).
    pub prompt_file: Option<PathBuf>,
    /// Tool names.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Knowledge collections.
    #[serde(default)]
    pub knowledge: Vec<String>,
    /// Maximum model calls per run.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Maximum tokens (prompt + completion, summed over the run's model calls).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u64,
    /// Wall-clock limit of one run, in seconds.
    #[serde(default = "default_run_timeout_s")]
    pub timeout_s: u64,
    /// Token budget of the conversation sent to the model: the thread's
    /// oldest turns are left out first; the prompt and the newest turn stay.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: u64,
    /// Tool calls made from one model answer; the model's further calls
    /// in that answer are refused to it (`tool_call_limit`).
    #[serde(default = "default_max_tool_calls_per_round")]
    pub max_tool_calls_per_round: u32,
    /// Tool calls over the whole run (resumed runs included).
    #[serde(default = "default_max_tool_calls_per_run")]
    pub max_tool_calls_per_run: u32,
    /// Bytes of one tool result kept for the model, the thread and the
    /// run's steps; the rest is cut with a marker the model sees.
    #[serde(default = "default_max_tool_result_bytes")]
    pub max_tool_result_bytes: u32,
    /// Bytes of all tool results of one round together; over it every
    /// result is cut to a fair share.
    #[serde(default = "default_max_tool_result_bytes_per_round")]
    pub max_tool_result_bytes_per_round: u32,
}

/// Enough for a model that fans out over a handful of items.
fn default_max_tool_calls_per_round() -> u32 {
    16
}

/// Four full rounds; more is a runaway loop, not a task.
fn default_max_tool_calls_per_run() -> u32 {
    64
}

/// About 8k tokens: a page of an API answer.
fn default_max_tool_result_bytes() -> u32 {
    32 * 1024
}

/// Four full results per round.
fn default_max_tool_result_bytes_per_round() -> u32 {
    128 * 1024
}

/// Fits common 16k-context models with room for the answer.
fn default_context_tokens() -> u64 {
    12_000
}

/// Room for several tool round trips with a long prompt.
fn default_max_tokens() -> u64 {
    200_000
}

/// Long enough for slow tools, short enough that a stuck run is noticed.
fn default_run_timeout_s() -> u64 {
    120
}

/// Enough for multi-tool tasks; small enough to stop a looping model early.
fn default_max_steps() -> u32 {
    8
}

/// `[[agents]]`: the prompt, the run limits, and (across sections) a known
/// model and known tools all in one region: a tenant's data may only flow
/// to resources of its own region.
pub(super) fn validate(
    agents: &[AgentConfig],
    model_region: &BTreeMap<&str, &Region>,
    tool_region: &BTreeMap<&str, &Region>,
    errors: &mut Errors,
) {
    check_unique(agents.iter().map(|a| a.name.as_str()), "agents", errors);
    for (i, a) in agents.iter().enumerate() {
        let p = format!("agents[{i}]");
        match (&a.prompt, &a.prompt_file) {
            (Some(_), Some(_)) => errors.push(p.clone(), "set prompt or prompt_file, not both"),
            (None, None) => errors.push(p.clone(), "set prompt or prompt_file"),
            (None, Some(f)) if f.is_absolute() || f.components().any(|c| c.as_os_str() == "..") => {
                errors.push(
                    format!("{p}.prompt_file"),
                    "must be a relative path inside the prompts directory",
                )
            }
            _ => {}
        }
        if a.max_steps == 0 || a.max_steps > 100 {
            errors.push(format!("{p}.max_steps"), "must be between 1 and 100");
        }
        if a.max_tokens == 0 || a.max_tokens > 100_000_000 {
            errors.push(format!("{p}.max_tokens"), "must be between 1 and 100000000");
        }
        if a.context_tokens < 256 || a.context_tokens > 10_000_000 {
            errors.push(
                format!("{p}.context_tokens"),
                "must be between 256 and 10000000",
            );
        }
        if a.timeout_s == 0 || a.timeout_s > 86_400 {
            errors.push(format!("{p}.timeout_s"), "must be between 1 and 86400");
        }
        if a.max_tool_calls_per_round == 0 || a.max_tool_calls_per_round > 1_000 {
            errors.push(
                format!("{p}.max_tool_calls_per_round"),
                "must be between 1 and 1000",
            );
        }
        if a.max_tool_calls_per_run < a.max_tool_calls_per_round
            || a.max_tool_calls_per_run > 100_000
        {
            errors.push(
                format!("{p}.max_tool_calls_per_run"),
                "must be between max_tool_calls_per_round and 100000",
            );
        }
        if a.max_tool_result_bytes < 256 || a.max_tool_result_bytes > 16 * 1024 * 1024 {
            errors.push(
                format!("{p}.max_tool_result_bytes"),
                "must be between 256 and 16777216",
            );
        }
        if a.max_tool_result_bytes_per_round < a.max_tool_result_bytes
            || a.max_tool_result_bytes_per_round > 64 * 1024 * 1024
        {
            errors.push(
                format!("{p}.max_tool_result_bytes_per_round"),
                "must be between max_tool_result_bytes and 67108864",
            );
        }
        let region = model_region.get(a.model.as_str()).copied();
        if region.is_none() {
            errors.push(format!("{p}.model"), format!("unknown model {:?}", a.model));
        }
        for (j, tool) in a.tools.iter().enumerate() {
            match (tool_region.get(tool.as_str()), region) {
                (None, _) => errors.push(format!("{p}.tools[{j}]"), format!("unknown tool {tool:?}")),
                (Some(tr), Some(mr)) if tr != &mr => errors.push(
                    format!("{p}.tools[{j}]"),
                    format!(
                        "tool {tool:?} is in region {tr:?} but the agent's model {:?} is in region {mr:?}: a tenant's data may only flow to resources of its own region",
                        a.model,
                        tr = tr.as_str(),
                        mr = mr.as_str()
                    ),
                ),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{check, env};
    use crate::config::*;

    #[test]
    fn agent_fan_out_limits_default_safely_and_are_checked_by_key() {
        let base = "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://x\"\nregion = \"eu\"\ncredential = \"env:KEY\"\n[[models]]\nname = \"m\"\nprovider = \"p\"\nupstream = \"u\"\n[[agents]]\nname = \"a\"\nmodel = \"m\"\nprompt = \"x\"\n";
        let c = load(base, &env).unwrap();
        let a = &c.agents[0];
        assert_eq!(
            (
                a.max_tool_calls_per_round,
                a.max_tool_calls_per_run,
                a.max_tool_result_bytes,
                a.max_tool_result_bytes_per_round
            ),
            (16, 64, 32_768, 131_072)
        );
        check(
            &format!(
                "{base}max_tool_calls_per_round = 0\nmax_tool_calls_per_run = 10\nmax_tool_result_bytes = 100\nmax_tool_result_bytes_per_round = 1000\n"
            ),
            &[
                "agents[0].max_tool_calls_per_round: must be between 1 and 1000",
                "agents[0].max_tool_result_bytes: must be between 256",
            ],
        );
        check(
            &format!(
                "{base}max_tool_calls_per_round = 20\nmax_tool_calls_per_run = 10\nmax_tool_result_bytes_per_round = 1000\n"
            ),
            &[
                "agents[0].max_tool_calls_per_run: must be between max_tool_calls_per_round",
                "agents[0].max_tool_result_bytes_per_round: must be between max_tool_result_bytes",
            ],
        );
    }
}
