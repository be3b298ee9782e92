//! What the agent runtime needs from storage (implemented by the store
//! crate), and the records it keeps: settings, threads, runs, steps.

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_core::{ApprovalId, RunId, TenantUid, ThreadId, Timestamp};
use serde::Serialize;
use serde_json::Value;

use crate::agent::AgentSettings;
use crate::approval::{Approval, ApprovalStatus, Settled};

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Deleted.
    Deleted,
    /// No such thread or run in this tenant.
    NotFound,
    /// A run of it is running or awaiting approval: nothing was deleted.
    InProgress,
}

/// Storage failures, as the runtime sees them: the store's own error, kept
/// whole as the source (its message is this error's message), so logs and
/// callers keep the chain down to, e.g., the SQLite error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// In progress.
    Running,
    /// Paused until a person decides its tool calls (no task runs it).
    AwaitingApproval,
    /// The model gave a final answer.
    Completed,
    /// Ended by an error, a limit, or a restart of the server.
    Failed,
    /// Cancelled by a caller.
    Cancelled,
}

impl RunStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "awaiting_approval" => RunStatus::AwaitingApproval,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
}

/// Why a run ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunFailure {
    /// Stable code (`step_limit`, `token_limit`, `timeout`, `cancelled`,
    /// `interrupted`, `prompt_error`, `foreign_fragment`, a gateway code…).
    pub code: String,
    /// Human-readable.
    pub message: String,
}

/// One persisted step of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// 1-based position in the run.
    pub seq: u32,
    /// `model_call`, `tool_call`, `tool_result`, `tool_refused`,
    /// `approval_requested`, `message`, `error`.
    pub kind: String,
    /// What happened (never a secret; arguments and outputs as the model saw them).
    pub data: Value,
    /// When it completed.
    pub time: Timestamp,
}

/// A step to store, with the thread message and audit event that go with it.
#[derive(Debug, Clone)]
pub struct StepWrite {
    /// The step.
    pub step: Step,
    /// A message it adds to the run's thread.
    pub message: Option<Value>,
    /// Its audit event.
    pub event: Option<NewAuditEvent>,
}

/// A run and its steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Id.
    pub id: RunId,
    /// Thread.
    pub thread_id: ThreadId,
    /// Agent name.
    pub agent: String,
    /// Principal who started it.
    pub principal: String,
    /// State.
    pub status: RunStatus,
    /// Start.
    pub created_at: Timestamp,
    /// End.
    pub finished_at: Option<Timestamp>,
    /// The final answer.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<RunFailure>,
    /// Tokens over all model calls.
    pub input_tokens: u64,
    /// Tokens over all model calls.
    pub output_tokens: u64,
    /// Steps, in order (empty when listing).
    pub steps: Vec<Step>,
}

/// One message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredMessage {
    /// Position in the thread.
    pub seq: u64,
    /// The tenant whose partition wrote it: provenance for prompt assembly.
    #[serde(skip)]
    pub owner: TenantUid,
    /// The run that added it.
    pub run_id: Option<RunId>,
    /// The message in OpenAI chat format.
    pub message: Value,
    /// When.
    pub time: Timestamp,
}

/// Which runs a listing returns: newest first, at most `limit`, those
/// started before the run `after` (the previous page's last), optionally
/// only one agent's or those in one state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this agent's runs.
    pub agent: Option<String>,
    /// Only runs in this state (as stored).
    pub status: Option<RunStatus>,
    /// Only runs older than this one (the cursor).
    pub after: Option<RunId>,
    /// Page size.
    pub limit: usize,
}

/// Which threads a listing returns: newest first, at most `limit`, those
/// older than the thread `after`, optionally only those an agent ran on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadFilter {
    /// Only threads with a run of this agent.
    pub agent: Option<String>,
    /// Only threads older than this one (the cursor).
    pub after: Option<ThreadId>,
    /// Page size.
    pub limit: usize,
}

/// One thread in a listing: threads with at least one run (the tenant's
/// canary thread has none and is never listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadSummary {
    /// Id.
    pub id: ThreadId,
    /// When its first run started.
    pub created_at: Timestamp,
    /// When its latest run started.
    pub last_run_at: Timestamp,
    /// The agents that ran on it, by name.
    pub agents: Vec<String>,
    /// How many runs it has.
    pub runs: u64,
}

/// Agent settings, threads and runs, in the tenant's partition.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// A tenant's settings of an agent (`None`: never set).
    async fn agent_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
    ) -> Result<Option<AgentSettings>, AgentStoreError>;
    /// Replaces a tenant's settings of an agent, with its audit event.
    async fn put_agent_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
        settings: &AgentSettings,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError>;
    /// Whether the thread exists in the tenant's partition.
    async fn thread_exists(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<bool, AgentStoreError>;
    /// A thread's messages in order (`None`: no such thread).
    async fn messages(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<Option<Vec<StoredMessage>>, AgentStoreError>;
    /// Records a new run (status running, owned by this process) and its
    /// input message, creating the thread when `new_thread`. One
    /// transaction in the partition, with the audit event.
    async fn begin_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        new_thread: bool,
        input: &Value,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError>;
    /// Persists steps (each optionally with a thread message and an audit
    /// event), in order, in one transaction.
    async fn append_steps(
        &self,
        scope: &TenantScope,
        run: RunId,
        steps: Vec<StepWrite>,
    ) -> Result<(), AgentStoreError>;
    /// Records the run's last steps and its end (status, output, error,
    /// tokens) with its audit event, in one transaction.
    async fn finish_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: Vec<StepWrite>,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError>;
    /// Deletes a thread: its messages, its runs with their steps and
    /// approval requests, and the thread, with the audit event, in one
    /// transaction. The tenant's canary thread is never found.
    async fn delete_thread(
        &self,
        scope: &TenantScope,
        id: ThreadId,
        event: NewAuditEvent,
    ) -> Result<Deletion, AgentStoreError>;
    /// Deletes a run: its steps, approval requests and thread messages,
    /// and the run, with the audit event, in one transaction.
    async fn delete_run(
        &self,
        scope: &TenantScope,
        id: RunId,
        event: NewAuditEvent,
    ) -> Result<Deletion, AgentStoreError>;
    /// Retention: deletes the thread messages of runs written before
    /// `cutoff`, and of runs that ended before it the steps (tool
    /// arguments and results, model outputs), the output, the error
    /// message and the settled approval requests (their arguments),
    /// keeping only the run's metadata (agent, status, token counts, times).
    /// Writes the audit event when anything went; returns how many
    /// messages and runs were purged.
    async fn apply_retention(
        &self,
        scope: &TenantScope,
        cutoff: Timestamp,
        event: NewAuditEvent,
    ) -> Result<u64, AgentStoreError>;
    /// A run with its steps (`None`: no such run in this tenant). A run a
    /// stopped process left `running` is reported — and from then on
    /// stored — as failed (`interrupted`), with a `run.interrupted` event.
    /// A run `awaiting_approval` is left as it is: no process owns it.
    async fn run(
        &self,
        scope: &TenantScope,
        id: RunId,
    ) -> Result<Option<RunRecord>, AgentStoreError>;
    /// The tenant's runs without their steps, newest first (see
    /// [`RunFilter`]). Statuses are as stored: a run a stopped process
    /// left `running` reads `running` until it is fetched by id.
    async fn list_runs(
        &self,
        scope: &TenantScope,
        filter: &RunFilter,
    ) -> Result<Vec<RunRecord>, AgentStoreError>;
    /// The tenant's threads, newest first (see [`ThreadFilter`]).
    async fn list_threads(
        &self,
        scope: &TenantScope,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadSummary>, AgentStoreError>;
    /// A run with its steps exactly as stored, writing nothing: a run a
    /// stopped process left `running` still reads `running`. For
    /// authorising on the run's agent before [`AgentStore::run`] may
    /// settle it.
    async fn stored_run(
        &self,
        scope: &TenantScope,
        id: RunId,
    ) -> Result<Option<RunRecord>, AgentStoreError>;
    /// Whether a run of the thread is awaiting approval (a new run on it
    /// would answer the paused tool calls out of turn).
    async fn thread_paused(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<bool, AgentStoreError>;
    /// Pauses a run: its last steps (with their events), its approval
    /// requests and its status `awaiting_approval` (with its token
    /// counts), in one transaction.
    async fn pause_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: Vec<StepWrite>,
        approvals: &[Approval],
    ) -> Result<(), AgentStoreError>;
    /// The tenant's approval requests, newest first, optionally only those
    /// in `status` or of `run` (at most `limit`).
    async fn approvals(
        &self,
        scope: &TenantScope,
        status: Option<ApprovalStatus>,
        run: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<Approval>, AgentStoreError>;
    /// One request (`None`: no such request in this tenant).
    async fn approval(
        &self,
        scope: &TenantScope,
        id: ApprovalId,
    ) -> Result<Option<Approval>, AgentStoreError>;
    /// Compare-and-set of a pending request to `to`, decided by the scope's
    /// principal (`decided_by` stays empty for `expired`), with its audit
    /// event, in one transaction. `approved`/`denied` apply only before
    /// `now` reaches the expiry; `expired` only after. When no request of
    /// the run is pending any more, the run moves from `awaiting_approval`
    /// to `running` (owned by this process) in the same transaction and
    /// the result says `resume`. `None`: no such request.
    async fn settle_approval(
        &self,
        scope: &TenantScope,
        id: ApprovalId,
        to: ApprovalStatus,
        comment: Option<String>,
        now: Timestamp,
        event: NewAuditEvent,
    ) -> Result<Option<Settled>, AgentStoreError>;
    /// Ends a paused run as cancelled: its pending requests become
    /// `expired`, with the run's end and its audit event, in one
    /// transaction. False when the run was not paused.
    async fn cancel_paused(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        event: NewAuditEvent,
    ) -> Result<bool, AgentStoreError>;
}
