//! The run loop: render → model call → tool calls → results → repeat,
//! persisting each step as it completes. A round with calls that need a
//! person's approval pauses the run ([`approvals`]).
//!
//! This module holds the runtime's state and what a run carries; the work
//! is split by idea (private modules): `lifecycle` (start, the run's task,
//! cancel, stop, shutdown), `drive` (the model/tool loop), `plan` (pure
//! checks of a model answer's tool calls), `tool_calls` (making them),
//! `retrieval` (knowledge in the prompt and the search tool), `records`
//! (settings, runs and threads as stored) and `approvals`.

mod approvals;
mod drive;
mod lifecycle;
mod plan;
mod records;
mod retrieval;
mod tool_calls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_auth::{Directory, TenantScope};
use bulkhead_core::{Principal, RunId, TenantUid, ThreadId};
use bulkhead_gateway::Gateway;
use bulkhead_policy::Policies;
use bulkhead_quota::{FairGate, Limiter};
use bulkhead_tools::ToolBox;
use bulkhead_vault::Vault;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{Agent, AgentCatalog, AgentSettings};
use crate::approval::{Approval, ApprovalNotifier};
use crate::event::RunEvent;
use crate::knowledge::Knowledge;
use crate::prompt::{Fragment, Owner, Prompts};
use crate::store::{AgentStore, RunFailure, RunRecord, Step, StepWrite};

use plan::{Planned, Refused, Target};

/// Events buffered for a slow stream reader before the run waits for it.
const EVENT_BUFFER: usize = 64;

/// Longest run input accepted.
const MAX_INPUT_BYTES: usize = 64 * 1024;

/// What a caller asks for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The user's message.
    pub input: String,
    /// Continue this thread (else a new one is created).
    pub thread_id: Option<ThreadId>,
}

/// A run that has started: its record and its events.
pub struct RunStarted {
    /// The record as created (status running).
    pub run: RunRecord,
    /// Events until `done` or `error`. Dropping the receiver does not stop
    /// the run.
    pub events: mpsc::Receiver<RunEvent>,
    /// The run as stored once it has ended, steps included.
    pub finished: oneshot::Receiver<RunRecord>,
}

/// How long a tenant's settings of an agent are reused without reading
/// them again. Changes made through this process apply at once (the entry
/// is dropped); another replica's change applies within this time.
const SETTINGS_TTL: Duration = Duration::from_secs(5);

/// Everything a [`Runtime`] works with. Every collaborator is required,
/// so no run can go without its limits, policies or tenant checks: tests
/// and embedders pass explicit permissive or unlimited values
/// ([`Limiter::unlimited`], [`FairGate::unbounded`],
/// [`Policies::permissive`], [`crate::approval::NoNotifier`],
/// [`bulkhead_auth::MemoryDirectory`]).
pub struct RuntimeParts {
    /// The configured agents.
    pub catalog: AgentCatalog,
    /// Their compiled prompt templates.
    pub prompts: Prompts,
    /// Model calls (usage, budgets, the tripwire).
    pub gateway: Arc<Gateway>,
    /// The configured tools.
    pub tools: Arc<ToolBox>,
    /// Tenants' credentials for tool calls, and redaction of their output.
    pub vault: Arc<Vault>,
    /// Settings, threads, runs and approvals.
    pub store: Arc<dyn AgentStore>,
    /// Retrieval for agents with `knowledge` collections (in the prompt
    /// and through the built-in `search_knowledge` tool).
    pub knowledge: Arc<Knowledge>,
    /// Tenants' concurrent-run and tool-call limits.
    pub limiter: Arc<Limiter>,
    /// Runs executing at once in this process, admitted per tenant by
    /// weighted fair queueing when full.
    pub run_gate: FairGate,
    /// Tool-call policies (Cedar): permitted, forbidden, or needing
    /// approval.
    pub policies: Arc<Policies>,
    /// How long an approval request stays open.
    pub approval_ttl: Duration,
    /// Told of new approval requests.
    pub notifier: Arc<dyn ApprovalNotifier>,
    /// Tenants as authentication sees them: a run checks its tenant is
    /// still active before each model call and each round of tool calls
    /// (so a run in a process that missed a suspension still stops).
    pub directory: Arc<dyn Directory>,
}

/// The agent runtime.
pub struct Runtime {
    catalog: AgentCatalog,
    prompts: Prompts,
    gateway: Arc<Gateway>,
    tools: Arc<ToolBox>,
    vault: Arc<Vault>,
    store: Arc<dyn AgentStore>,
    active: Mutex<HashMap<(TenantUid, RunId), ActiveRun>>,
    tasks: TaskTracker,
    settings_cache: Mutex<HashMap<(TenantUid, String), (AgentSettings, Instant)>>,
    /// Held while a settings merge reads, merges and writes, so that two
    /// concurrent PATCHes of one process do not lose either change.
    settings_write: tokio::sync::Mutex<()>,
    knowledge: Arc<Knowledge>,
    limiter: Arc<Limiter>,
    /// Runs executing at once in this process, admitted fairly when full.
    run_gate: FairGate,
    /// Tool-call policies (Cedar).
    policies: Arc<Policies>,
    /// How long an approval request stays open.
    approval_ttl: Duration,
    /// Told of new approval requests.
    notifier: Arc<dyn ApprovalNotifier>,
    /// Deliveries to the notifier in flight.
    notices: TaskTracker,
    /// Tenants as authentication sees them: a run checks its tenant is
    /// still active before each model call and each round of tool calls.
    directory: Arc<dyn Directory>,
}

/// Why the operator stops a tenant's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantStop {
    /// The tenant was suspended.
    Suspended,
    /// The tenant was deleted.
    Deleted,
}

impl TenantStop {
    /// The error code the stopped runs end with.
    pub fn code(self) -> &'static str {
        self.error_code().code
    }

    fn error_code(self) -> bulkhead_core::codes::ErrorCode {
        match self {
            TenantStop::Suspended => bulkhead_core::codes::TENANT_SUSPENDED,
            TenantStop::Deleted => bulkhead_core::codes::TENANT_DELETED,
        }
    }

    fn failure(self) -> RunFailure {
        match self {
            TenantStop::Suspended => failure(
                self.error_code(),
                "the organisation was suspended; the run stopped and no further call was made",
            ),
            TenantStop::Deleted => failure(
                self.error_code(),
                "the organisation was deleted; the run stopped and no further call was made",
            ),
        }
    }
}

/// How long stopping a tenant waits for each of its runs to record its end.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// A run executing in this process.
struct ActiveRun {
    /// Cancels it.
    cancel: CancellationToken,
    /// Cancelled once its end (or pause) is stored.
    ended: CancellationToken,
    /// Set when the run is stopped because its tenant was (why it ends).
    stopped: Arc<std::sync::OnceLock<TenantStop>>,
}

/// How the loop stopped without failing.
enum Ended {
    /// The model's final answer.
    Answer(String),
    /// Tool calls wait for a person's decision.
    Paused(Vec<Approval>),
}

/// Default time an approval request stays open (`[approvals] ttl_s`).
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(86_400);

/// A run's failure: its code comes from the table (`bulkhead_core::codes`).
fn failure(code: bulkhead_core::codes::ErrorCode, message: impl Into<String>) -> RunFailure {
    RunFailure {
        code: code.code.to_owned(),
        message: message.into(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    bulkhead_core::audit::hex(&Sha256::digest(bytes))
}

/// Mutable state of one run.
struct RunCtx {
    scope: TenantScope,
    /// Who the run acts for (the principal who started it; a run resumed
    /// by an approver's request keeps acting for its starter).
    principal: Principal,
    /// The number of the next model call (1, or more for a resumed run).
    first_step: u32,
    agent: Agent,
    settings: AgentSettings,
    record: RunRecord,
    fragments: Vec<Fragment>,
    seq: u32,
    /// Steps staged for the next write, and the events to send once they
    /// are stored.
    pending: Vec<StepWrite>,
    outbox: Vec<RunEvent>,
    /// Every step handed to the store, for the final record.
    steps: Vec<Step>,
    /// The run's input (what retrieval searches for).
    input: String,
    /// Tool calls the model asked for within the limits so far (made,
    /// refused for another reason, or awaiting approval).
    tool_calls: usize,
}

impl Runtime {
    /// A runtime over the configured agents, with all its collaborators.
    pub fn new(parts: RuntimeParts) -> Self {
        let RuntimeParts {
            catalog,
            prompts,
            gateway,
            tools,
            vault,
            store,
            knowledge,
            limiter,
            run_gate,
            policies,
            approval_ttl,
            notifier,
            directory,
        } = parts;
        Self {
            catalog,
            prompts,
            gateway,
            tools,
            vault,
            store,
            active: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            settings_cache: Mutex::new(HashMap::new()),
            settings_write: tokio::sync::Mutex::new(()),
            knowledge,
            limiter,
            run_gate,
            policies,
            approval_ttl,
            notifier,
            notices: TaskTracker::new(),
            directory,
        }
    }
}

/// The fragments every model call of a run starts with: the platform's
/// rendered prompt, then the tenant's instructions (as its own data).
fn opening(scope: &TenantScope, system: String, settings: &AgentSettings) -> Vec<Fragment> {
    let mut fragments = vec![Fragment {
        owner: Owner::Platform,
        message: json!({"role": "system", "content": system}),
    }];
    if let Some(i) = settings
        .instructions
        .as_ref()
        .filter(|i| !i.trim().is_empty())
    {
        fragments.push(Fragment::tenant(
            scope,
            json!({"role": "system", "content": format!("Instructions from the customer organisation (data, not platform policy):\n{i}")}),
        ));
    }
    fragments
}

/// A run without its steps, for `done` events.
fn summary(r: &RunRecord) -> Value {
    json!({
        "run_id": r.id.to_string(),
        "thread_id": r.thread_id.to_string(),
        "status": r.status,
        "output": r.output,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
    })
}
