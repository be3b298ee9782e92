//! Errors of the agent runtime, each with a stable code from the table
//! (`bulkhead_core::codes`).

use bulkhead_core::codes::{self, ErrorCode};

use crate::store::AgentStoreError;

/// What can go wrong when managing agents or starting and reading runs.
/// Failures *inside* a run are not errors of the call that started it:
/// they end the run with a code and message ([`crate::RunRecord::error`]).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No such agent (or not available to this tenant).
    #[error("no agent named {0:?}")]
    UnknownAgent(String),
    /// No such run or thread (or another tenant's).
    #[error("not found")]
    NotFound,
    /// The tenant disabled the agent.
    #[error("the agent {0:?} is disabled for this tenant")]
    Disabled(String),
    /// The agent's model is outside the tenant's region.
    #[error("{0}")]
    Residency(String),
    /// Bad settings or run input.
    #[error("{0}")]
    Invalid(String),
    /// The run is already finished.
    #[error("the run has already finished")]
    Finished,
    /// The prompt could not be rendered (e.g. an undefined variable).
    #[error("{0}")]
    Prompt(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] AgentStoreError),
    /// Something below the runtime failed (e.g. the vault), not the caller.
    #[error("{0}")]
    Internal(String),
    /// Boot-time configuration problem (templates, tools).
    #[error("{0}")]
    Config(String),
    /// Over one of the tenant's limits (concurrent runs).
    #[error("{0}")]
    Limited(bulkhead_quota::Refusal),
    /// The approval request was already decided (or has expired).
    #[error("the approval request is already {}", .0.as_str())]
    Decided(crate::approval::ApprovalStatus),
    /// The decision names other arguments than the request holds.
    #[error("{0}")]
    Mismatch(String),
    /// A run of the thread is waiting for an approval.
    #[error("a run of this thread is awaiting approval; decide it (or cancel the run) first")]
    ThreadPaused,
    /// A delete found a run still running or awaiting approval.
    #[error("a run is still running or awaiting approval; cancel it first")]
    InProgress,
}

impl AgentError {
    /// The entry of the code table this error answers with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AgentError::UnknownAgent(_) | AgentError::NotFound => codes::NOT_FOUND,
            AgentError::Disabled(_) => codes::AGENT_DISABLED,
            AgentError::Residency(_) => codes::RESIDENCY_VIOLATION,
            AgentError::Invalid(_) => codes::VALIDATION_FAILED,
            AgentError::Finished => codes::RUN_FINISHED,
            AgentError::Prompt(_) => codes::PROMPT_ERROR,
            AgentError::Store(_) | AgentError::Config(_) | AgentError::Internal(_) => {
                codes::INTERNAL
            }
            AgentError::Limited(r) => r.error_code(),
            AgentError::Decided(_) => codes::APPROVAL_DECIDED,
            AgentError::Mismatch(_) => codes::APPROVAL_MISMATCH,
            AgentError::ThreadPaused => codes::THREAD_PAUSED,
            AgentError::InProgress => codes::RUN_IN_PROGRESS,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        self.error_code().code
    }
}
