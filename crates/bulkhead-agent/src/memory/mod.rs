//! In-memory implementations of the agent crate's storage traits
//! ([`MemoryAgentStore`] for [`AgentStore`], [`MemoryKnowledgeStore`] for
//! [`crate::knowledge::KnowledgeStore`]), for tests below HTTP (feature
//! `test-support`).
//!
//! They keep the SQLite store's semantics (`bulkhead-store`'s
//! `sqlite/agent.rs`, `sqlite/approval.rs`, `sqlite/knowledge.rs`): every
//! row lives in the partition of the scope's tenant incarnation, so
//! another tenant's rows are unreachable; lists come in the same order;
//! a write is one transaction (applied to a copy of the partition, which
//! replaces it only when every part succeeded). A store value stands for
//! one process: [`MemoryAgentStore::restarted`] is the same data seen by
//! the next process, so a run the first left `running` is recovered as
//! `interrupted`.
//!
//! What they do not do: keep an audit *chain* (events are kept in order,
//! unhashed, for tests to read back).

mod knowledge;

pub use knowledge::MemoryKnowledgeStore;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::codes;
use bulkhead_core::{ApprovalId, RequestId, RunId, TenantUid, ThreadId, Timestamp};
use serde_json::{Value, json};

use crate::agent::AgentSettings;
use crate::approval::{Approval, ApprovalStatus, Settled};
use crate::store::{
    AgentStore, AgentStoreError, Deletion, RunFailure, RunFilter, RunRecord, RunStatus, Step,
    StepWrite, StoredMessage, ThreadFilter, ThreadSummary,
};

/// A run's row (its steps are kept apart, as in SQLite).
#[derive(Clone)]
struct RunRow {
    record: RunRecord,
    /// The error's message, separately: retention clears it, keeping the code.
    error_message: Option<String>,
    /// The process that owns it while it runs.
    boot: String,
}

/// One tenant incarnation's agent data.
#[derive(Clone, Default)]
struct Partition {
    settings: HashMap<String, AgentSettings>,
    threads: Vec<ThreadId>,
    messages: Vec<(ThreadId, StoredMessage)>,
    runs: Vec<RunRow>,
    steps: Vec<(RunId, Step)>,
    approvals: Vec<Approval>,
    audit: Vec<NewAuditEvent>,
}

/// Tenants' partitions in memory, each under its tenant incarnation (so
/// another tenant's rows are unreachable through a scope): a read sees the
/// scope's partition (an empty one for a tenant with nothing yet), and a
/// write works on a copy that is kept only if it succeeds — one
/// transaction. Shared by the agent and the knowledge stores.
pub(crate) struct Tenants<P>(Arc<Mutex<HashMap<TenantUid, P>>>);

impl<P> Clone for Tenants<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<P> Default for Tenants<P> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

/// The lock was poisoned by a panic while it was held.
pub(crate) struct Poisoned;

impl From<Poisoned> for AgentStoreError {
    fn from(_: Poisoned) -> Self {
        err("the memory store's lock is poisoned")
    }
}

impl<P: Default + Clone> Tenants<P> {
    fn lock(&self) -> Result<MutexGuard<'_, HashMap<TenantUid, P>>, Poisoned> {
        self.0.lock().map_err(|_| Poisoned)
    }

    /// `f` over the scope's partition.
    pub(crate) fn read<T, E: From<Poisoned>>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&P) -> T,
    ) -> Result<T, E> {
        let map = self.lock()?;
        Ok(match map.get(&scope.partition()) {
            Some(p) => f(p),
            None => f(&P::default()),
        })
    }

    /// One transaction: `f` works on a copy, kept only if it succeeds.
    pub(crate) fn write<T, E: From<Poisoned>>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&mut P) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut map = self.lock()?;
        let mut copy = map.get(&scope.partition()).cloned().unwrap_or_default();
        let out = f(&mut copy)?;
        map.insert(scope.partition(), copy);
        Ok(out)
    }
}

/// The agent runtime's storage in memory (see the module doc).
#[derive(Clone)]
pub struct MemoryAgentStore {
    partitions: Tenants<Partition>,
    boot: String,
}

impl std::fmt::Debug for MemoryAgentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAgentStore")
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryAgentStore {
    fn default() -> Self {
        Self::new()
    }
}

fn err(message: impl Into<String>) -> AgentStoreError {
    AgentStoreError(message.into().into())
}

/// What a run left `running` by a stopped process becomes (as SQLite says it).
const INTERRUPTED: &str =
    "the server stopped while the run was in progress; it was not resumed (no step was repeated)";

impl Partition {
    fn run_mut(&mut self, id: RunId) -> Option<&mut RunRow> {
        self.runs.iter_mut().find(|r| r.record.id == id)
    }

    fn run_row(&self, id: RunId) -> Option<&RunRow> {
        self.runs.iter().find(|r| r.record.id == id)
    }

    fn insert_message(
        &mut self,
        owner: TenantUid,
        thread: ThreadId,
        run: Option<RunId>,
        message: &Value,
    ) {
        let seq = self
            .messages
            .iter()
            .filter(|(t, _)| *t == thread)
            .map(|(_, m)| m.seq)
            .max()
            .unwrap_or(0)
            + 1;
        self.messages.push((
            thread,
            StoredMessage {
                seq,
                owner,
                run_id: run,
                message: message.clone(),
                time: Timestamp::now(),
            },
        ));
    }

    /// Inserts steps in order, with their thread messages and audit events.
    fn write_steps(
        &mut self,
        scope: &TenantScope,
        run: RunId,
        steps: Vec<StepWrite>,
    ) -> Result<(), AgentStoreError> {
        for w in steps {
            let thread = self
                .run_row(run)
                .map(|r| r.record.thread_id)
                .ok_or_else(|| err(format!("no run {run} for its step")))?;
            if self
                .steps
                .iter()
                .any(|(r, s)| *r == run && s.seq == w.step.seq)
            {
                return Err(err(format!("step {} of run {run} exists", w.step.seq)));
            }
            self.steps.push((run, w.step));
            if let Some(m) = &w.message {
                self.insert_message(scope.partition(), thread, Some(run), m);
            }
            if let Some(event) = w.event {
                self.audit.push(event);
            }
        }
        Ok(())
    }

    fn read_run(&self, id: RunId) -> Option<RunRecord> {
        let row = self.run_row(id)?;
        let mut record = row.record.clone();
        record.error = record.error.map(|e| RunFailure {
            code: e.code,
            message: row.error_message.clone().unwrap_or_default(),
        });
        let mut steps: Vec<Step> = self
            .steps
            .iter()
            .filter(|(r, _)| *r == id)
            .map(|(_, s)| s.clone())
            .collect();
        steps.sort_by_key(|s| s.seq);
        record.steps = steps;
        Some(record)
    }

    fn busy(&self, run: &RunRow) -> bool {
        matches!(
            run.record.status,
            RunStatus::Running | RunStatus::AwaitingApproval
        )
    }

    /// Deletes runs (with their steps and approval requests); returns how
    /// many steps went.
    fn remove_runs(&mut self, runs: &[RunId]) -> usize {
        let before = self.steps.len();
        self.steps.retain(|(r, _)| !runs.contains(r));
        let steps = before - self.steps.len();
        self.approvals.retain(|a| !runs.contains(&a.run_id));
        self.runs.retain(|r| !runs.contains(&r.record.id));
        steps
    }
}

impl MemoryAgentStore {
    /// An empty store, as one process sees it.
    pub fn new() -> Self {
        Self {
            partitions: Tenants::default(),
            boot: RequestId::generate().to_string(),
        }
    }

    /// The same data as seen by the next process: runs this one left
    /// `running` are reported as `interrupted` when next read.
    pub fn restarted(&self) -> Self {
        Self {
            partitions: self.partitions.clone(),
            boot: RequestId::generate().to_string(),
        }
    }

    /// The tenant's audit events, in the order they were written.
    pub fn audit_events(&self, scope: &TenantScope) -> Vec<NewAuditEvent> {
        self.read(scope, |p| p.audit.clone()).unwrap_or_default()
    }

    /// A new thread holding one message of no run, written under `owner`
    /// (the tenant's canary is stored so, under its own uid). With another
    /// tenant's uid it is what a store that mixed partitions would hand
    /// back: the runtime must refuse to send it.
    pub fn put_thread_with_message(
        &self,
        scope: &TenantScope,
        owner: TenantUid,
        message: &Value,
    ) -> Result<ThreadId, AgentStoreError> {
        let thread = ThreadId::generate();
        self.write(scope, |p| {
            p.threads.push(thread);
            p.insert_message(owner, thread, None, message);
            Ok(thread)
        })
    }

    fn read<T>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&Partition) -> T,
    ) -> Result<T, AgentStoreError> {
        self.partitions.read(scope, f)
    }

    fn write<T>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&mut Partition) -> Result<T, AgentStoreError>,
    ) -> Result<T, AgentStoreError> {
        self.partitions.write(scope, f)
    }
}

#[async_trait]
impl AgentStore for MemoryAgentStore {
    async fn agent_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
    ) -> Result<Option<AgentSettings>, AgentStoreError> {
        self.read(scope, |p| p.settings.get(agent).cloned())
    }

    async fn put_agent_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
        settings: &AgentSettings,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError> {
        self.write(scope, |p| {
            p.settings.insert(agent.to_owned(), settings.clone());
            p.audit.push(event);
            Ok(())
        })
    }

    async fn thread_exists(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<bool, AgentStoreError> {
        self.read(scope, |p| p.threads.contains(&thread))
    }

    async fn messages(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<Option<Vec<StoredMessage>>, AgentStoreError> {
        self.read(scope, |p| {
            p.threads.contains(&thread).then(|| {
                let mut out: Vec<StoredMessage> = p
                    .messages
                    .iter()
                    .filter(|(t, _)| *t == thread)
                    .map(|(_, m)| m.clone())
                    .collect();
                out.sort_by_key(|m| m.seq);
                out
            })
        })
    }

    async fn begin_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        new_thread: bool,
        input: &Value,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError> {
        self.write(scope, |p| {
            let exists = p.threads.contains(&run.thread_id);
            if new_thread && exists {
                return Err(err("the thread exists"));
            }
            if !new_thread && !exists {
                return Err(err("no such thread"));
            }
            if p.run_row(run.id).is_some() {
                return Err(err("the run exists"));
            }
            if new_thread {
                p.threads.push(run.thread_id);
            }
            let mut record = run.clone();
            // As a new row: running, nothing else of the end yet.
            record.status = RunStatus::Running;
            record.finished_at = None;
            record.output = None;
            record.error = None;
            record.input_tokens = 0;
            record.output_tokens = 0;
            record.steps = Vec::new();
            p.runs.push(RunRow {
                record,
                error_message: None,
                boot: self.boot.clone(),
            });
            p.insert_message(scope.partition(), run.thread_id, Some(run.id), input);
            p.audit.push(event);
            Ok(())
        })
    }

    async fn append_steps(
        &self,
        scope: &TenantScope,
        run: RunId,
        steps: Vec<StepWrite>,
    ) -> Result<(), AgentStoreError> {
        self.write(scope, |p| p.write_steps(scope, run, steps))
    }

    async fn finish_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: Vec<StepWrite>,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError> {
        self.write(scope, |p| {
            p.write_steps(scope, run.id, steps)?;
            if let Some(row) = p.run_mut(run.id) {
                row.record.status = run.status;
                row.record.finished_at = run.finished_at;
                row.record.output = run.output.clone();
                row.record.error = run.error.clone();
                row.error_message = run.error.as_ref().map(|e| e.message.clone());
                row.record.input_tokens = run.input_tokens;
                row.record.output_tokens = run.output_tokens;
            }
            p.audit.push(event);
            Ok(())
        })
    }

    async fn delete_thread(
        &self,
        scope: &TenantScope,
        id: ThreadId,
        mut event: NewAuditEvent,
    ) -> Result<Deletion, AgentStoreError> {
        self.write(scope, |p| {
            // The canary's thread (a message of no run) answers like a
            // missing one.
            let canary = p
                .messages
                .iter()
                .any(|(t, m)| *t == id && m.run_id.is_none());
            if !p.threads.contains(&id) || canary {
                return Ok(Deletion::NotFound);
            }
            let runs: Vec<RunId> = p
                .runs
                .iter()
                .filter(|r| r.record.thread_id == id)
                .map(|r| r.record.id)
                .collect();
            if p
                .runs
                .iter()
                .any(|r| r.record.thread_id == id && p.busy(r))
            {
                return Ok(Deletion::InProgress);
            }
            let steps = p.remove_runs(&runs);
            let before = p.messages.len();
            p.messages.retain(|(t, _)| *t != id);
            let messages = before - p.messages.len();
            p.threads.retain(|t| *t != id);
            event.details = json!({"thread_id": id.to_string(), "messages": messages, "runs": runs.len(), "steps": steps});
            p.audit.push(event);
            Ok(Deletion::Deleted)
        })
    }

    async fn delete_run(
        &self,
        scope: &TenantScope,
        id: RunId,
        mut event: NewAuditEvent,
    ) -> Result<Deletion, AgentStoreError> {
        self.write(scope, |p| {
            let Some(run) = p.run_row(id) else {
                return Ok(Deletion::NotFound);
            };
            if p.busy(run) {
                return Ok(Deletion::InProgress);
            }
            let steps = p.remove_runs(&[id]);
            let before = p.messages.len();
            p.messages.retain(|(_, m)| m.run_id != Some(id));
            let messages = before - p.messages.len();
            event.details = json!({"run_id": id.to_string(), "messages": messages, "steps": steps});
            p.audit.push(event);
            Ok(Deletion::Deleted)
        })
    }

    async fn apply_retention(
        &self,
        scope: &TenantScope,
        cutoff: Timestamp,
        mut event: NewAuditEvent,
    ) -> Result<u64, AgentStoreError> {
        self.write(scope, |p| {
            let before = p.messages.len();
            p.messages
                .retain(|(_, m)| !(m.time < cutoff && m.run_id.is_some()));
            let deleted = before - p.messages.len();
            let purged: Vec<RunId> = p
                .runs
                .iter()
                .filter(|r| {
                    let id = r.record.id;
                    r.record.finished_at.is_some_and(|f| f < cutoff)
                        && (r.record.output.is_some()
                            || r.error_message.is_some()
                            || p.steps.iter().any(|(s, _)| *s == id)
                            || p.approvals
                                .iter()
                                .any(|a| a.run_id == id && a.status != ApprovalStatus::Pending))
                })
                .map(|r| r.record.id)
                .collect();
            p.steps.retain(|(r, _)| !purged.contains(r));
            p.approvals
                .retain(|a| !(purged.contains(&a.run_id) && a.status != ApprovalStatus::Pending));
            for id in &purged {
                if let Some(row) = p.run_mut(*id) {
                    row.record.output = None;
                    row.error_message = None;
                }
            }
            if deleted > 0 || !purged.is_empty() {
                event.details = json!({
                    "deleted_messages": deleted,
                    "purged_runs": purged.len(),
                    "older_than": cutoff.to_string(),
                });
                p.audit.push(event);
            }
            Ok(deleted as u64 + purged.len() as u64)
        })
    }

    async fn run(
        &self,
        scope: &TenantScope,
        id: RunId,
    ) -> Result<Option<RunRecord>, AgentStoreError> {
        let stale = self.read(scope, |p| {
            p.run_row(id)
                .is_some_and(|r| r.record.status == RunStatus::Running && r.boot != self.boot)
        })?;
        if stale {
            // Left running by a process that stopped: failed from now on.
            self.write(scope, |p| {
                let now = Timestamp::now();
                let Some(row) = p.run_mut(id) else {
                    return Ok(());
                };
                if row.record.status != RunStatus::Running {
                    return Ok(());
                }
                row.record.status = RunStatus::Failed;
                row.record.finished_at = Some(now);
                row.record.error = Some(RunFailure {
                    code: codes::INTERRUPTED.code.into(),
                    message: INTERRUPTED.into(),
                });
                row.error_message = Some(INTERRUPTED.into());
                let seq = p
                    .steps
                    .iter()
                    .filter(|(r, _)| *r == id)
                    .map(|(_, s)| s.seq)
                    .max()
                    .unwrap_or(0)
                    + 1;
                p.steps.push((
                    id,
                    Step {
                        seq,
                        kind: "error".into(),
                        data: json!({"code": codes::INTERRUPTED.code, "message": INTERRUPTED}),
                        time: now,
                    },
                ));
                p.audit.push(NewAuditEvent::new(
                    AuditAction::RunInterrupted,
                    format!("run:{id}"),
                    Outcome::Failure,
                    RequestId::generate(),
                ));
                Ok(())
            })?;
        }
        self.read(scope, |p| p.read_run(id))
    }

    async fn stored_run(
        &self,
        scope: &TenantScope,
        id: RunId,
    ) -> Result<Option<RunRecord>, AgentStoreError> {
        self.read(scope, |p| p.read_run(id))
    }

    async fn list_runs(
        &self,
        scope: &TenantScope,
        filter: &RunFilter,
    ) -> Result<Vec<RunRecord>, AgentStoreError> {
        self.read(scope, |p| {
            let mut ids: Vec<RunId> = p
                .runs
                .iter()
                .filter(|r| filter.agent.as_ref().is_none_or(|a| &r.record.agent == a))
                .filter(|r| filter.status.is_none_or(|s| r.record.status == s))
                .filter(|r| filter.after.is_none_or(|a| r.record.id < a))
                .map(|r| r.record.id)
                .collect();
            // UUIDv7: newest first is the ids' descending order.
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.into_iter()
                .take(filter.limit)
                .filter_map(|id| p.read_run(id))
                .map(|mut r| {
                    r.steps = Vec::new();
                    r
                })
                .collect()
        })
    }

    async fn list_threads(
        &self,
        scope: &TenantScope,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadSummary>, AgentStoreError> {
        self.read(scope, |p| {
            let mut out: Vec<ThreadSummary> = Vec::new();
            for t in &p.threads {
                if filter.after.is_some_and(|a| *t >= a) {
                    continue;
                }
                let runs: Vec<&RunRecord> = p
                    .runs
                    .iter()
                    .map(|r| &r.record)
                    .filter(|r| r.thread_id == *t)
                    .collect();
                let (Some(first), Some(last)) = (
                    runs.iter().map(|r| r.created_at).min(),
                    runs.iter().map(|r| r.created_at).max(),
                ) else {
                    continue;
                };
                let mut agents: Vec<String> = runs.iter().map(|r| r.agent.clone()).collect();
                agents.sort();
                agents.dedup();
                if filter.agent.as_ref().is_some_and(|a| !agents.contains(a)) {
                    continue;
                }
                out.push(ThreadSummary {
                    id: *t,
                    created_at: first,
                    last_run_at: last,
                    agents,
                    runs: runs.len() as u64,
                });
            }
            out.sort_unstable_by_key(|t| std::cmp::Reverse(t.id));
            out.truncate(filter.limit);
            out
        })
    }

    async fn thread_paused(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<bool, AgentStoreError> {
        self.read(scope, |p| {
            p.runs.iter().any(|r| {
                r.record.thread_id == thread && r.record.status == RunStatus::AwaitingApproval
            })
        })
    }

    async fn pause_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: Vec<StepWrite>,
        approvals: &[Approval],
    ) -> Result<(), AgentStoreError> {
        self.write(scope, |p| {
            p.write_steps(scope, run.id, steps)?;
            for a in approvals {
                if p.approvals.iter().any(|x| x.id == a.id) {
                    return Err(err(format!("approval {} exists", a.id)));
                }
                p.approvals.push(a.clone());
            }
            let row = p
                .run_mut(run.id)
                .filter(|r| r.record.status == RunStatus::Running)
                .ok_or_else(|| err("conflict: the run is no longer running"))?;
            row.record.status = RunStatus::AwaitingApproval;
            row.record.input_tokens = run.input_tokens;
            row.record.output_tokens = run.output_tokens;
            Ok(())
        })
    }

    async fn approvals(
        &self,
        scope: &TenantScope,
        status: Option<ApprovalStatus>,
        run: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<Approval>, AgentStoreError> {
        self.read(scope, |p| {
            let mut out: Vec<Approval> = p
                .approvals
                .iter()
                .filter(|a| status.is_none_or(|s| a.status == s))
                .filter(|a| run.is_none_or(|r| a.run_id == r))
                .cloned()
                .collect();
            // Newest first, ties by id (as SQLite's `created_at DESC, id DESC`).
            out.sort_by(|a, b| {
                (b.created_at, b.id.to_string()).cmp(&(a.created_at, a.id.to_string()))
            });
            out.truncate(limit);
            out
        })
    }

    async fn approval(
        &self,
        scope: &TenantScope,
        id: ApprovalId,
    ) -> Result<Option<Approval>, AgentStoreError> {
        self.read(scope, |p| p.approvals.iter().find(|a| a.id == id).cloned())
    }

    async fn settle_approval(
        &self,
        scope: &TenantScope,
        id: ApprovalId,
        to: ApprovalStatus,
        comment: Option<String>,
        now: Timestamp,
        event: NewAuditEvent,
    ) -> Result<Option<Settled>, AgentStoreError> {
        self.write(scope, |p| {
            let Some(a) = p.approvals.iter_mut().find(|a| a.id == id) else {
                return Ok(None);
            };
            let changed = a.status == ApprovalStatus::Pending
                && match to {
                    ApprovalStatus::Expired => a.expires_at <= now,
                    ApprovalStatus::Approved | ApprovalStatus::Denied => a.expires_at > now,
                    ApprovalStatus::Pending => false,
                };
            if !changed {
                return Ok(Some(Settled::Unchanged(a.clone())));
            }
            a.status = to;
            a.decided_at = Some(now);
            if to != ApprovalStatus::Expired {
                a.decided_by = Some(scope.principal().id().to_owned());
                a.comment = comment;
            }
            let approval = a.clone();
            p.audit.push(event);
            let pending = p
                .approvals
                .iter()
                .any(|x| x.run_id == approval.run_id && x.status == ApprovalStatus::Pending);
            // The last decision claims the run for this process: exactly
            // one caller sees `resume`.
            let mut resume = false;
            if !pending
                && let Some(row) = p.run_mut(approval.run_id)
                && row.record.status == RunStatus::AwaitingApproval
            {
                row.record.status = RunStatus::Running;
                row.boot = self.boot.clone();
                resume = true;
            }
            Ok(Some(Settled::Changed { approval, resume }))
        })
    }

    async fn cancel_paused(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        event: NewAuditEvent,
    ) -> Result<bool, AgentStoreError> {
        self.write(scope, |p| {
            let Some(row) = p
                .run_mut(run.id)
                .filter(|r| r.record.status == RunStatus::AwaitingApproval)
            else {
                return Ok(false);
            };
            row.record.status = run.status;
            row.record.finished_at = run.finished_at;
            row.record.error = run.error.clone();
            row.error_message = run.error.as_ref().map(|e| e.message.clone());
            let now = Timestamp::now();
            for a in p
                .approvals
                .iter_mut()
                .filter(|a| a.run_id == run.id && a.status == ApprovalStatus::Pending)
            {
                a.status = ApprovalStatus::Expired;
                a.decided_at = Some(now);
                a.comment = Some("the run was cancelled".into());
            }
            p.audit.push(event);
            Ok(true)
        })
    }
}
