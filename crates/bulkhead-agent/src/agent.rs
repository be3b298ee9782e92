//! Agents as the operator configured them, and each tenant's settings.

use std::collections::BTreeMap;
use std::time::Duration;

use bulkhead_core::Region;
use bulkhead_core::config::Config;
use bulkhead_vault::credential::ConnectionName;
use serde::{Deserialize, Serialize};

use crate::error::AgentError;

/// One configured agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Name (unique).
    pub name: String,
    /// What it does (shown to tenants).
    pub description: String,
    /// Model alias in the gateway's catalog.
    pub model: String,
    /// Region of the model's provider: only tenants of this region can run it.
    pub region: Region,
    /// Tool names the model may call.
    pub tools: Vec<String>,
    /// Knowledge collections (searched by the knowledge layer).
    pub knowledge: Vec<String>,
    /// Maximum model calls per run.
    pub max_steps: u32,
    /// Maximum tokens per run (prompt + completion over all calls).
    pub max_tokens: u64,
    /// Wall-clock limit of a run.
    pub timeout: Duration,
    /// Token budget of the conversation sent to the model (older turns
    /// of the thread are left out first).
    pub context_tokens: u64,
    /// Tool calls made from one model answer.
    pub max_tool_calls_per_round: usize,
    /// Tool calls over the whole run.
    pub max_tool_calls_per_run: usize,
    /// Bytes of one tool result kept.
    pub max_tool_result_bytes: usize,
    /// Bytes of one round's tool results together.
    pub max_tool_result_bytes_per_round: usize,
}

/// The configured agents.
#[derive(Debug, Clone, Default)]
pub struct AgentCatalog {
    agents: BTreeMap<String, Agent>,
}

impl AgentCatalog {
    /// The agents of a validated configuration.
    pub fn new(config: &Config) -> Result<Self, AgentError> {
        let mut agents = BTreeMap::new();
        for (i, a) in config.agents.iter().enumerate() {
            let region = config
                .models
                .iter()
                .find(|m| m.name == a.model)
                .and_then(|m| config.providers.iter().find(|p| p.name == m.provider))
                .map(|p| p.region.clone())
                .ok_or_else(|| {
                    AgentError::Config(format!("agents[{i}].model: unknown model {:?}", a.model))
                })?;
            agents.insert(
                a.name.clone(),
                Agent {
                    name: a.name.clone(),
                    description: a.description.clone().unwrap_or_default(),
                    model: a.model.clone(),
                    region,
                    tools: a.tools.clone(),
                    knowledge: a.knowledge.clone(),
                    max_steps: a.max_steps,
                    max_tokens: a.max_tokens,
                    timeout: Duration::from_secs(a.timeout_s),
                    context_tokens: a.context_tokens,
                    max_tool_calls_per_round: a.max_tool_calls_per_round as usize,
                    max_tool_calls_per_run: a.max_tool_calls_per_run as usize,
                    max_tool_result_bytes: a.max_tool_result_bytes as usize,
                    max_tool_result_bytes_per_round: a.max_tool_result_bytes_per_round as usize,
                },
            );
        }
        Ok(Self { agents })
    }

    /// The agent named `name`.
    pub fn get(&self, name: &str) -> Option<&Agent> {
        self.agents.get(name)
    }

    /// Every agent, by name.
    pub fn all(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }
}

/// Longest template variable value, instructions text.
const MAX_VARIABLE_BYTES: usize = 4096;
const MAX_INSTRUCTIONS_BYTES: usize = 16 * 1024;
const MAX_VARIABLES: usize = 64;

/// A tenant's settings of one agent (`PUT /v1/agents/{agent}/settings`).
/// Everything here is tenant-written text: it reaches the prompt as data
/// and is never evaluated as template code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// Values of the template's `vars.*` variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Extra instructions, added to the prompt as the tenant's own message.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Which of the tenant's connections each tool uses (tool name →
    /// connection); a tool not listed uses the connection configured for it.
    #[serde(default)]
    pub connections: BTreeMap<String, String>,
    /// Whether the tenant's principals may run the agent.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            variables: BTreeMap::new(),
            instructions: None,
            connections: BTreeMap::new(),
            enabled: true,
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

impl AgentSettings {
    /// Checks the settings against the agent they are for; the message
    /// names the offending field.
    pub fn validate(&self, agent: &Agent) -> Result<(), AgentError> {
        if self.variables.len() > MAX_VARIABLES {
            return Err(AgentError::Invalid(format!(
                "variables: at most {MAX_VARIABLES} variables"
            )));
        }
        for (k, v) in &self.variables {
            if !is_identifier(k) {
                return Err(AgentError::Invalid(format!(
                    "variables.{k}: a variable name is a letter or `_` followed by letters, digits or `_` (at most 64)"
                )));
            }
            if v.len() > MAX_VARIABLE_BYTES {
                return Err(AgentError::Invalid(format!(
                    "variables.{k}: longer than {MAX_VARIABLE_BYTES} bytes"
                )));
            }
        }
        if self
            .instructions
            .as_ref()
            .is_some_and(|i| i.len() > MAX_INSTRUCTIONS_BYTES)
        {
            return Err(AgentError::Invalid(format!(
                "instructions: longer than {MAX_INSTRUCTIONS_BYTES} bytes"
            )));
        }
        for (tool, conn) in &self.connections {
            if !agent.tools.iter().any(|t| t == tool) {
                return Err(AgentError::Invalid(format!(
                    "connections.{tool}: the agent {:?} has no tool {tool:?}",
                    agent.name
                )));
            }
            ConnectionName::parse(conn)
                .map_err(|e| AgentError::Invalid(format!("connections.{tool}: {e}")))?;
        }
        Ok(())
    }
}
