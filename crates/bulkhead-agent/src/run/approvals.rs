//! The runtime's side of approvals: pausing a run, listing and deciding
//! its requests, and resuming it exactly once.
//!
//! A paused run has no task: everything needed to go on is stored (the
//! thread's messages, the run's steps, the requests). The decision that
//! leaves none of the run's requests pending claims the run in the same
//! transaction (`awaiting_approval` → `running`), and only that caller
//! rebuilds the run's context and resumes it — in whichever process took
//! the decision, so a restart in between loses nothing.

use bulkhead_core::audit::AuditAction;
use std::sync::Arc;
use tracing::Instrument;

use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use bulkhead_core::{ApprovalId, Deadline, Principal, PrincipalKind, RunId, Timestamp};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::{Planned, Refused, RunCtx, Runtime, Target, failure, plan};
use crate::approval::{self, Approval, ApprovalStatus, MAX_COMMENT_CHARS, Settled, Verdict};
use crate::error::AgentError;
use crate::event::RunEvent;
use crate::store::{RunFailure, RunRecord, RunStatus};
use bulkhead_core::codes::{self, ErrorCode};
use bulkhead_vault::credential::ConnectionName;

/// Requests listed at most per call.
pub const MAX_LISTED: usize = 500;

impl Runtime {
    /// Stores the pause: the staged steps, the requests, and the run's
    /// status, in one transaction.
    pub(super) async fn pause(
        &self,
        ctx: &mut RunCtx,
        approvals: &[Approval],
    ) -> Result<(), RunFailure> {
        let steps = std::mem::take(&mut ctx.pending);
        ctx.steps.extend(steps.iter().map(|w| w.step.clone()));
        ctx.record.status = RunStatus::AwaitingApproval;
        self.store
            .pause_run(&ctx.scope, &ctx.record, steps, approvals)
            .await
            .map_err(|e| {
                failure(
                    codes::INTERNAL,
                    format!("could not store the approval requests: {e}"),
                )
            })
    }

    /// The tenant's approval requests, newest first (expired ones settled
    /// first).
    pub async fn approvals(
        self: &Arc<Self>,
        scope: &TenantScope,
        status: Option<ApprovalStatus>,
    ) -> Result<Vec<Approval>, AgentError> {
        self.expire_due(scope).await?;
        Ok(self
            .store
            .approvals(scope, status, None, MAX_LISTED)
            .await?)
    }

    /// One request of the tenant as stored: a request whose time is up may
    /// still read `pending`. Nothing is written, so a caller can authorise
    /// on it (the request's agent, who asked) before anything changes;
    /// [`Runtime::decide`] settles an expired request itself.
    pub async fn peek_approval(
        &self,
        scope: &TenantScope,
        id: ApprovalId,
    ) -> Result<Approval, AgentError> {
        self.store
            .approval(scope, id)
            .await?
            .ok_or(AgentError::NotFound)
    }

    /// One request of the tenant (settled as `expired` first when its time
    /// is up).
    pub async fn approval(
        self: &Arc<Self>,
        scope: &TenantScope,
        id: ApprovalId,
    ) -> Result<Approval, AgentError> {
        let a = self
            .store
            .approval(scope, id)
            .await?
            .ok_or(AgentError::NotFound)?;
        if a.status == ApprovalStatus::Pending && a.expires_at <= Timestamp::now() {
            self.expire(scope, &a).await?;
            return self
                .store
                .approval(scope, id)
                .await?
                .ok_or(AgentError::NotFound);
        }
        Ok(a)
    }

    /// Settles the tenant's pending requests whose time is up; their runs
    /// end (`approval_expired`). Returns how many expired.
    pub async fn expire_due(self: &Arc<Self>, scope: &TenantScope) -> Result<usize, AgentError> {
        let now = Timestamp::now();
        let pending = self
            .store
            .approvals(scope, Some(ApprovalStatus::Pending), None, MAX_LISTED)
            .await?;
        let due: Vec<&Approval> = pending.iter().filter(|a| a.expires_at <= now).collect();
        for a in &due {
            self.expire(scope, a).await?;
        }
        Ok(due.len())
    }

    async fn expire(self: &Arc<Self>, scope: &TenantScope, a: &Approval) -> Result<(), AgentError> {
        let event = NewAuditEvent::new(
            AuditAction::ApprovalExpire,
            format!("approval:{}", a.id),
            Outcome::Failure,
            scope.request_id().clone(),
        )
        .with_run(a.agent.clone(), a.run_id.to_string())
        .with_details(json!({
            "approval_id": a.id, "run_id": a.run_id, "tool": a.tool,
            "expires_at": a.expires_at.to_string(),
        }));
        let settled = self
            .store
            .settle_approval(
                scope,
                a.id,
                ApprovalStatus::Expired,
                None,
                Timestamp::now(),
                event,
            )
            .await?;
        if let Some(Settled::Changed {
            approval,
            resume: true,
        }) = settled
        {
            self.resume(scope, approval.run_id).await?;
        }
        Ok(())
    }

    /// Decides request `a` (as read by [`Runtime::approval`]) as the
    /// scope's principal (who must have been authorised to approve it).
    /// With `expected_hash`, the decision holds only for exactly those
    /// arguments. When it is the run's last pending request, the run
    /// resumes (in this process) before this returns; only one decision
    /// ever does that.
    pub async fn decide(
        self: &Arc<Self>,
        scope: &TenantScope,
        a: &Approval,
        verdict: Verdict,
        comment: Option<String>,
        expected_hash: Option<&str>,
    ) -> Result<Approval, AgentError> {
        let id = a.id;
        if let Some(c) = &comment
            && c.chars().count() > MAX_COMMENT_CHARS
        {
            return Err(AgentError::Invalid(format!(
                "comment: longer than {MAX_COMMENT_CHARS} characters"
            )));
        }
        if a.status != ApprovalStatus::Pending {
            return Err(AgentError::Decided(a.status));
        }
        if a.expires_at <= Timestamp::now() {
            self.expire(scope, a).await?;
            return Err(AgentError::Decided(ApprovalStatus::Expired));
        }
        if let Some(h) = expected_hash
            && !h.eq_ignore_ascii_case(&a.arguments_hash)
        {
            return Err(AgentError::Mismatch(format!(
                "arguments_hash: the request's arguments hash to {}, not {h}",
                a.arguments_hash
            )));
        }
        let kind = match verdict {
            Verdict::Approve => AuditAction::ApprovalApprove,
            Verdict::Deny => AuditAction::ApprovalDeny,
        };
        let event = NewAuditEvent::new(
            kind,
            format!("approval:{id}"),
            Outcome::Success,
            scope.request_id().clone(),
        )
        .with_run(a.agent.clone(), a.run_id.to_string())
        .with_details(json!({
            "approval_id": id, "run_id": a.run_id, "tool": a.tool,
            "decision": verdict.status().as_str(), "comment": comment,
            "arguments_sha256": a.arguments_hash, "requested_by": a.requested_by,
        }));
        match self
            .store
            .settle_approval(
                scope,
                id,
                verdict.status(),
                comment,
                Timestamp::now(),
                event,
            )
            .await?
        {
            None => Err(AgentError::NotFound),
            Some(Settled::Unchanged(current)) => {
                if current.status == ApprovalStatus::Pending {
                    // Still pending but refused: its time ran out meanwhile.
                    self.expire(scope, &current).await?;
                    return Err(AgentError::Decided(ApprovalStatus::Expired));
                }
                Err(AgentError::Decided(current.status))
            }
            Some(Settled::Changed { approval, resume }) => {
                if resume {
                    self.resume(scope, approval.run_id).await?;
                }
                Ok(approval)
            }
        }
    }

    /// Cancels a paused run: its pending requests expire and it ends
    /// `cancelled` without making the calls.
    pub(super) async fn cancel_paused(
        &self,
        scope: &TenantScope,
        mut run: RunRecord,
    ) -> Result<RunRecord, AgentError> {
        run.status = RunStatus::Cancelled;
        run.finished_at = Some(Timestamp::now());
        run.error = Some(failure(
            codes::CANCELLED,
            "the run was cancelled while awaiting approval; the calls were not made",
        ));
        let event = NewAuditEvent::new(
            AuditAction::RunFinish,
            format!("run:{}", run.id),
            Outcome::Failure,
            scope.request_id().clone(),
        )
        .with_run(run.agent.clone(), run.id.to_string())
        .with_details(json!({
            "agent": run.agent, "status": run.status.as_str(), "error": codes::CANCELLED.code,
            "input_tokens": run.input_tokens, "output_tokens": run.output_tokens,
        }));
        if !self.store.cancel_paused(scope, &run, event).await? {
            return Err(AgentError::Finished);
        }
        self.run(scope, run.id).await
    }

    /// Resumes a run this caller claimed: rebuilds its context from what
    /// is stored and goes on in a task of its own.
    async fn resume(self: &Arc<Self>, scope: &TenantScope, id: RunId) -> Result<(), AgentError> {
        let record = self.run(scope, id).await?;
        let all = self
            .store
            .approvals(scope, None, Some(id), MAX_LISTED)
            .await?;
        let round = all.iter().map(|a| a.round).max().unwrap_or(0);
        let mut decided: Vec<Approval> = all.into_iter().filter(|a| a.round == round).collect();
        decided.sort_by_key(|a| a.created_at);
        let token = self.activate(scope.partition(), id);
        let (tx, _) = mpsc::channel(1);
        let (done_tx, _) = oneshot::channel();
        let ctx = match self.rebuild(scope, record.clone(), &decided).await {
            Ok(ctx) => ctx,
            Err(f) => {
                // It cannot go on (its agent is gone, say): it ends here.
                self.end_unresumable(scope, record, f).await;
                return Ok(());
            }
        };
        // A resumed run takes a run slot when one is free; an approved call
        // is not refused for want of one (the person already decided).
        let lease = self
            .limiter
            .start_run(
                scope,
                ctx.agent.timeout + std::time::Duration::from_secs(60),
            )
            .await
            .ok();
        let this = self.clone();
        let run_id = record.id.to_string();
        let run = bulkhead_telemetry::RunRef {
            agent: &record.agent,
            run_id: &run_id,
        };
        // The resumed run is a child of the request (or sweep) whose
        // decision resumed it; each decided approval shows its wait.
        let span = bulkhead_telemetry::run_span(scope, run, true);
        span.in_scope(|| {
            for a in &decided {
                let wait = span_wait_s(a);
                let s = bulkhead_telemetry::approval_span(
                    scope,
                    run,
                    &a.tool,
                    &a.id.to_string(),
                    a.status.as_str(),
                );
                s.record("bulkhead.approval.wait_s", wait);
            }
        });
        self.tasks.spawn(
            async move {
                this.execute(ctx, tx, token, done_tx, lease, Some(decided))
                    .await
            }
            .instrument(span),
        );
        Ok(())
    }

    /// The context of a stored run, as it stood when it paused.
    async fn rebuild(
        &self,
        scope: &TenantScope,
        mut record: RunRecord,
        decided: &[Approval],
    ) -> Result<RunCtx, RunFailure> {
        let agent = self
            .agent(scope, &record.agent)
            .map_err(|_| {
                failure(
                    codes::NOT_FOUND,
                    format!("the agent {:?} no longer exists", record.agent),
                )
            })?
            .clone();
        let settings = self
            .cached_settings(scope, &agent.name)
            .await
            .map_err(|e| failure(codes::INTERNAL, e.to_string()))?;
        let system = self
            .prompts
            .render(&agent, scope, &settings.variables)
            .map_err(|e| failure(codes::PROMPT_ERROR, e.to_string()))?;
        let fragments = super::opening(scope, system, &settings);
        // The run's input is its first message in the thread.
        let input = self
            .store
            .messages(scope, record.thread_id)
            .await
            .map_err(|e| failure(codes::INTERNAL, e.to_string()))?
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.run_id == Some(record.id) && m.message["role"] == "user")
            .and_then(|m| m.message["content"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let model_calls = record
            .steps
            .iter()
            .filter(|s| s.kind == "model_call")
            .count() as u32;
        let (roles, requester) = decided
            .first()
            .map(|a| (a.requested_roles.clone(), a.requested_by.clone()))
            .unwrap_or_else(|| (Vec::new(), record.principal.clone()));
        let kind = if requester.starts_with("key:") {
            PrincipalKind::ApiKey
        } else {
            PrincipalKind::Jwt
        };
        let steps = std::mem::take(&mut record.steps);
        record.status = RunStatus::Running;
        let deadline = Deadline::after(agent.timeout);
        Ok(RunCtx {
            scope: scope.clone(),
            principal: Principal::new(requester, kind, roles),
            first_step: model_calls + 1,
            agent,
            settings,
            fragments,
            seq: steps.iter().map(|s| s.seq).max().unwrap_or(0),
            // Counted from the record (an approved call's request and its
            // call count twice: the limit errs on the safe side).
            tool_calls: steps
                .iter()
                .filter(|s| {
                    matches!(s.kind.as_str(), "tool_call" | "approval_requested")
                        || (s.kind == "tool_refused"
                            && s.data["code"] != codes::TOOL_CALL_LIMIT.code)
                })
                .count(),
            steps,
            record,
            pending: Vec::new(),
            outbox: Vec::new(),
            input,
            // Set again when the resumed run starts executing.
            deadline,
        })
    }

    /// Ends a claimed run that cannot be resumed.
    async fn end_unresumable(&self, scope: &TenantScope, mut record: RunRecord, f: RunFailure) {
        record.status = RunStatus::Failed;
        record.finished_at = Some(Timestamp::now());
        let event = NewAuditEvent::new(
            AuditAction::RunFinish,
            format!("run:{}", record.id),
            Outcome::Failure,
            scope.request_id().clone(),
        )
        .with_run(record.agent.clone(), record.id.to_string())
        .with_details(json!({"agent": record.agent, "status": "failed", "error": f.code}));
        record.error = Some(f);
        if let Err(e) = self
            .store
            .finish_run(scope, &record, Vec::new(), event)
            .await
        {
            tracing::error!(error = %e, run_id = %record.id, "could not record the end of a run");
        }
        self.forget(scope.partition(), record.id);
    }

    /// Answers the paused round: approved calls are made (checked again
    /// against the agent, the arguments' hash and the tenant's policies),
    /// denied and expired ones are refused to the model. Any refusal ends
    /// the run.
    pub(super) async fn resume_round(
        &self,
        ctx: &mut RunCtx,
        tx: &mpsc::Sender<RunEvent>,
        decided: Vec<Approval>,
    ) -> Result<(), RunFailure> {
        let policies = self
            .policies
            .tenant(&ctx.scope)
            .await
            .map_err(|e| e.to_string());
        let mut planned = Vec::new();
        let mut end: Option<RunFailure> = None;
        for a in &decided {
            let refusal = |code: &'static ErrorCode, message: String| Refused {
                id: a.tool_call_id.clone(),
                name: a.tool.clone(),
                code,
                message,
                approval: Some(a.id),
            };
            let who = a.decided_by.as_deref().unwrap_or("nobody");
            let note = a
                .comment
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            let checked = match a.status {
                ApprovalStatus::Approved => self.recheck(ctx, a, &policies),
                ApprovalStatus::Denied => Err((&codes::APPROVAL_DENIED, format!(
                    "{who} denied this call{note}; it was not made and the run ends"
                ))),
                ApprovalStatus::Expired | ApprovalStatus::Pending => Err((
                    &codes::APPROVAL_EXPIRED,
                    "nobody approved this call in time (or the run was cancelled); it was not made and the run ends".to_owned(),
                )),
            };
            match checked {
                Ok(p) => planned.push(p),
                Err((code, message)) => {
                    if end.is_none() {
                        end = Some(failure(*code, message.clone()));
                    }
                    let r = refusal(code, message);
                    self.stage_refusal(ctx, r);
                }
            }
        }
        self.make_calls(ctx, tx, &planned).await?;
        match end {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// An approved request, checked again before the call is made.
    fn recheck<'a>(
        &'a self,
        ctx: &RunCtx,
        a: &Approval,
        policies: &Result<bulkhead_policy::TenantPolicies, String>,
    ) -> Result<Planned<'a>, (&'static ErrorCode, String)> {
        if approval::arguments_hash(&a.arguments) != a.arguments_hash {
            return Err((
                &codes::APPROVAL_MISMATCH,
                "the stored arguments no longer match the approved hash; the call was not made"
                    .to_owned(),
            ));
        }
        let tool = ctx
            .agent
            .tools
            .contains(&a.tool)
            .then(|| self.tools.get(&a.tool))
            .flatten()
            .ok_or_else(|| {
                (
                    &codes::UNKNOWN_TOOL,
                    format!("this agent no longer has a tool named {:?}", a.tool),
                )
            })?;
        let connection = a
            .connection
            .as_deref()
            .map(ConnectionName::parse)
            .transpose()
            .map_err(|_| {
                (
                    &codes::MISSING_CREDENTIAL,
                    "the connection name is invalid".to_owned(),
                )
            })?;
        // Policies may have changed while the run waited: a call they now
        // forbid is not made, approval or not.
        let rules = plan::Rules {
            agent: &ctx.agent,
            settings: &ctx.settings,
            tools: &self.tools,
            scope: &ctx.scope,
            principal: &ctx.principal,
            engine: self.policies.engine(),
            policies,
        };
        plan::check_policy(
            &rules,
            &a.tool,
            tool.risk.as_str(),
            tool.kind.as_str(),
            connection.as_ref(),
            &a.arguments,
        )?;
        Ok(Planned {
            id: a.tool_call_id.clone(),
            name: a.tool.clone(),
            target: Target::Tool(tool),
            args: a.arguments.clone(),
            connection,
            needs_approval: false,
            approval: Some(a.id),
        })
    }
}

/// How long an approval waited for its decision, in whole seconds.
fn span_wait_s(a: &Approval) -> i64 {
    let end = a.decided_at.unwrap_or(a.expires_at);
    (end.unix_seconds() - a.created_at.unix_seconds()).max(0)
}
