//! A run's life outside the loop: starting one (checks, rendering, the
//! run slot, the record), the task that drives it under its time limit,
//! a cancel or the tenant's stop, and storing its end or its pause; the
//! runs active in this process, and shutting them all down. A run a dead
//! process left `running` is recovered by the store: it is reported (and
//! from then on stored) as failed (`interrupted`) and never resumed.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{Deadline, RunId, TenantUid, ThreadId, Timestamp};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    ActiveRun, EVENT_BUFFER, Ended, MAX_INPUT_BYTES, RunCtx, RunRequest, RunStarted, Runtime,
    STOP_WAIT, TenantStop, failure, opening, summary,
};
use crate::approval::Approval;
use crate::error::AgentError;
use crate::event::RunEvent;
use crate::store::{RunFailure, RunRecord, RunStatus};
use bulkhead_core::codes;

impl Runtime {
    /// Stops every run of the tenant incarnation `uid` executing in this
    /// process: each is cancelled (its model call's answer discarded, its
    /// tool calls in flight dropped) and ends `cancelled` with the code of
    /// `why`. Returns once each has recorded its end (waiting at most
    /// [`STOP_WAIT`] for each), with the number of runs stopped. Runs
    /// paused for an approval hold no task; they cannot resume because
    /// nobody of a suspended tenant can authenticate to decide them.
    pub async fn stop_tenant(&self, _op: &OperatorScope, uid: TenantUid, why: TenantStop) -> usize {
        let ended: Vec<CancellationToken> = match self.active.lock() {
            Ok(active) => active
                .iter()
                .filter(|((u, _), _)| *u == uid)
                .map(|(_, r)| {
                    let _ = r.stopped.set(why);
                    r.cancel.cancel();
                    r.ended.clone()
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for e in &ended {
            if tokio::time::timeout(STOP_WAIT, e.cancelled())
                .await
                .is_err()
            {
                tracing::error!(tenant_uid = %uid, "a stopped run did not record its end in time");
            }
        }
        ended.len()
    }

    /// Whether the run's tenant is still the active incarnation it started
    /// under; refuses (fails closed) when the directory cannot say.
    pub(super) async fn check_tenant(&self, scope: &TenantScope) -> Result<(), RunFailure> {
        match self.directory.tenant(scope.tenant()).await {
            Ok(Some(t)) if t.uid == scope.partition() => match t.status {
                bulkhead_core::TenantStatus::Active => Ok(()),
                bulkhead_core::TenantStatus::Suspended => Err(TenantStop::Suspended.failure()),
            },
            Ok(_) => Err(TenantStop::Deleted.failure()),
            Err(e) => {
                tracing::error!(error = %e, "could not check a run's tenant");
                Err(failure(
                    codes::INTERNAL,
                    "the organisation's status could not be checked; the run stopped",
                ))
            }
        }
    }

    /// Why a cancelled run ended: its tenant was stopped, or it was asked to.
    fn cancelled(&self, uid: TenantUid, id: RunId) -> RunFailure {
        let why = self
            .active
            .lock()
            .ok()
            .and_then(|a| a.get(&(uid, id)).and_then(|r| r.stopped.get().copied()));
        match why {
            Some(why) => why.failure(),
            None => failure(codes::CANCELLED, "the run was cancelled"),
        }
    }

    /// Asks a running run to stop; returns the record as it then stands.
    pub async fn cancel(&self, scope: &TenantScope, id: RunId) -> Result<RunRecord, AgentError> {
        let mut run = self.run(scope, id).await?;
        if run.status == RunStatus::AwaitingApproval {
            match self.cancel_paused(scope, run).await {
                // A decision resumed it meanwhile: cancel it as a running run.
                Err(AgentError::Finished) => run = self.run(scope, id).await?,
                other => return other,
            }
        }
        if run.status != RunStatus::Running {
            return Err(AgentError::Finished);
        }
        let token = self
            .active
            .lock()
            .ok()
            .and_then(|a| a.get(&(scope.partition(), id)).map(|r| r.cancel.clone()));
        match token {
            Some(t) => {
                t.cancel();
                Ok(run)
            }
            // Not running in this process: it has just ended (the store
            // reports a run a stopped process left behind as failed).
            None => Err(AgentError::Finished),
        }
    }

    /// Lets the runs still going finish within `grace`, then does what
    /// [`Runtime::shutdown`] does with the rest.
    pub async fn shutdown_within(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "shutdown grace is over; cancelling the runs still going"
            );
        }
        self.shutdown().await;
    }

    /// Cancels every active run and waits until each has recorded its end.
    pub async fn shutdown(&self) {
        if let Ok(active) = self.active.lock() {
            for r in active.values() {
                r.cancel.cancel();
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
        self.notices.close();
        self.notices.wait().await;
    }

    /// Waits until every approval notice sent so far is delivered (or has
    /// failed for good).
    pub async fn drain_notices(&self) {
        self.notices.close();
        self.notices.wait().await;
        self.notices.reopen();
    }

    /// Starts a run of `agent` for the scope's tenant. The run goes on in
    /// its own task whether or not anyone reads its events.
    pub async fn start(
        self: &Arc<Self>,
        scope: &TenantScope,
        agent: &str,
        req: RunRequest,
    ) -> Result<RunStarted, AgentError> {
        let agent = self.agent(scope, agent)?.clone();
        if req.input.trim().is_empty() {
            return Err(AgentError::Invalid("input: must not be empty".into()));
        }
        if req.input.len() > MAX_INPUT_BYTES {
            return Err(AgentError::Invalid(format!(
                "input: longer than {MAX_INPUT_BYTES} bytes"
            )));
        }
        let settings = self.cached_settings(scope, &agent.name).await?;
        if !settings.enabled {
            return Err(AgentError::Disabled(agent.name));
        }
        let (thread_id, new_thread) = match req.thread_id {
            Some(t) => {
                if !self.store.thread_exists(scope, t).await? {
                    return Err(AgentError::NotFound);
                }
                if self.store.thread_paused(scope, t).await? {
                    return Err(AgentError::ThreadPaused);
                }
                (t, false)
            }
            None => (ThreadId::generate(), true),
        };
        // Render before anything is stored: a template error is the
        // caller's to fix (a missing variable), not a failed run.
        let system = self.prompts.render(&agent, scope, &settings.variables)?;
        // The slot is held until the run ends; if this process dies, it
        // expires after the run's own time limit.
        let lease = match self
            .limiter
            .start_run(scope, agent.timeout + Duration::from_secs(60))
            .await
        {
            Ok(lease) => lease,
            Err(refusal) => {
                self.gateway
                    .audit_refusal(
                        scope,
                        &format!("agent:{}", agent.name),
                        AuditAction::RunStart.as_str(),
                        &refusal,
                    )
                    .await;
                return Err(AgentError::Limited(refusal));
            }
        };
        let record = RunRecord {
            id: RunId::generate(),
            thread_id,
            agent: agent.name.clone(),
            principal: scope.principal().id().to_owned(),
            status: RunStatus::Running,
            created_at: Timestamp::now(),
            finished_at: None,
            output: None,
            error: None,
            input_tokens: 0,
            output_tokens: 0,
            steps: Vec::new(),
        };
        let input = json!({"role": "user", "content": req.input});
        let event = NewAuditEvent::new(
            AuditAction::RunStart,
            format!("run:{}", record.id),
            Outcome::Success,
            scope.request_id().clone(),
        )
        .with_run(agent.name.clone(), record.id.to_string())
        .with_details(json!({"agent": agent.name, "thread_id": thread_id.to_string()}));
        let token = self.activate(scope.partition(), record.id);
        if let Err(e) = self
            .store
            .begin_run(scope, &record, new_thread, &input, event)
            .await
        {
            self.forget(scope.partition(), record.id);
            return Err(e.into());
        }
        let fragments = opening(scope, system, &settings);
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let (done_tx, done_rx) = oneshot::channel();
        let deadline = Deadline::after(agent.timeout);
        let ctx = RunCtx {
            scope: scope.clone(),
            principal: scope.principal().clone(),
            first_step: 1,
            agent,
            settings,
            record: record.clone(),
            fragments,
            seq: 0,
            pending: Vec::new(),
            outbox: Vec::new(),
            steps: Vec::new(),
            input: req.input.clone(),
            tool_calls: 0,
            // Set again when the run starts executing.
            deadline,
        };
        let this = self.clone();
        let run_id = record.id.to_string();
        let span = bulkhead_telemetry::run_span(
            scope,
            bulkhead_telemetry::RunRef {
                agent: &record.agent,
                run_id: &run_id,
            },
            false,
        );
        span.record(
            "gen_ai.conversation.id",
            record.thread_id.to_string().as_str(),
        );
        // The run outlives the request that started it: its span (a child
        // of the request's) goes with its task.
        self.tasks.spawn(
            async move {
                this.execute(ctx, tx, token, done_tx, Some(lease), None)
                    .await
            }
            .instrument(span),
        );
        Ok(RunStarted {
            run: record,
            events: rx,
            finished: done_rx,
        })
    }

    /// Registers a run executing in this process; returns its cancel token.
    pub(super) fn activate(&self, uid: TenantUid, id: RunId) -> CancellationToken {
        let run = ActiveRun {
            cancel: CancellationToken::new(),
            ended: CancellationToken::new(),
            stopped: Arc::new(std::sync::OnceLock::new()),
        };
        let token = run.cancel.clone();
        if let Ok(mut active) = self.active.lock() {
            active.insert((uid, id), run);
        }
        token
    }

    /// The run no longer executes here (its end or pause is stored).
    pub(super) fn forget(&self, uid: TenantUid, id: RunId) {
        let run = self
            .active
            .lock()
            .ok()
            .and_then(|mut active| active.remove(&(uid, id)));
        if let Some(r) = run {
            r.ended.cancel();
        }
    }

    /// The run once it is no longer executing in this process (ended,
    /// paused, or never here), waiting at most `max`.
    pub async fn wait(
        &self,
        scope: &TenantScope,
        id: RunId,
        max: Duration,
    ) -> Result<RunRecord, AgentError> {
        let ended = self
            .active
            .lock()
            .ok()
            .and_then(|a| a.get(&(scope.partition(), id)).map(|r| r.ended.clone()));
        if let Some(ended) = ended {
            let _ = tokio::time::timeout(max, ended.cancelled()).await;
        }
        self.run(scope, id).await
    }

    pub(super) async fn execute(
        &self,
        mut ctx: RunCtx,
        tx: mpsc::Sender<RunEvent>,
        cancel: CancellationToken,
        finished: oneshot::Sender<RunRecord>,
        lease: Option<bulkhead_quota::RunLease>,
        resume: Option<Vec<Approval>>,
    ) {
        let timeout = ctx.agent.timeout;
        // One deadline for the run's time limit and every call it makes.
        ctx.deadline = Deadline::after(timeout);
        let deadline = tokio::time::Instant::from_std(ctx.deadline.instant());
        let weight = self.limiter.weight(&ctx.scope);
        // Per incarnation, like every other in-memory key of a tenant.
        let tenant = ctx.scope.partition().to_string();
        let mut outcome = tokio::select! {
            r = async {
                // Waiting for a slot counts against the run's time limit.
                let _slot = self.run_gate.acquire(&tenant, weight).await;
                if let Some(decided) = resume {
                    self.resume_round(&mut ctx, &tx, decided).await?;
                }
                self.drive(&mut ctx, &tx).await
            } => r,
            _ = cancel.cancelled() => Err(self.cancelled(ctx.scope.partition(), ctx.record.id)),
            _ = tokio::time::sleep_until(deadline) => Err(failure(
                codes::TIMEOUT,
                format!("the run did not finish within {} s", timeout.as_secs()),
            )),
        };
        let scope = ctx.scope.clone();
        if let Ok(Ended::Paused(approvals)) = outcome {
            match self.pause(&mut ctx, &approvals).await {
                Ok(()) => {
                    let run_id = ctx.record.id.to_string();
                    for a in &approvals {
                        // A mark of the wait's start; its end is the span
                        // the decision's resume makes.
                        let _ = bulkhead_telemetry::approval_span(
                            &scope,
                            bulkhead_telemetry::RunRef {
                                agent: &ctx.record.agent,
                                run_id: &run_id,
                            },
                            &a.tool,
                            &a.id.to_string(),
                            "requested",
                        );
                    }
                    bulkhead_telemetry::record_outcome(
                        &tracing::Span::current(),
                        "awaiting_approval",
                    );
                    tracing::Span::current().record("bulkhead.run.status", "awaiting_approval");
                    if let Some(lease) = lease {
                        lease.release().await;
                    }
                    self.forget(scope.partition(), ctx.record.id);
                    for ev in std::mem::take(&mut ctx.outbox) {
                        let _ = tx.send(ev).await;
                    }
                    let listed: Vec<Value> = approvals
                        .iter()
                        .map(|a| json!({"id": a.id, "tool": a.tool, "summary": a.summary, "expires_at": a.expires_at.to_string()}))
                        .collect();
                    let _ = tx
                        .send(RunEvent::new(
                            "awaiting_approval",
                            json!({"run_id": ctx.record.id.to_string(), "status": RunStatus::AwaitingApproval, "approvals": listed}),
                        ))
                        .await;
                    let notifier = self.notifier.clone();
                    let scope = scope.clone();
                    self.notices
                        .spawn(async move { notifier.requested(&scope, &approvals).await });
                    let mut record = ctx.record;
                    record.steps = std::mem::take(&mut ctx.steps);
                    let _ = finished.send(record);
                    return;
                }
                Err(f) => outcome = Err(f),
            }
        }
        let mut record = ctx.record;
        record.finished_at = Some(Timestamp::now());
        match outcome {
            Ok(Ended::Answer(answer)) => {
                record.status = RunStatus::Completed;
                record.output = Some(answer);
            }
            // A pause either returned above or became a failure.
            Ok(Ended::Paused(_)) => {
                record.status = RunStatus::Failed;
                record.error = Some(failure(codes::INTERNAL, "the run could not pause"));
            }
            Err(f) => {
                // Stopped from outside (a cancel, the tenant's suspension
                // or deletion) rather than failed.
                let stopped = [
                    codes::CANCELLED,
                    codes::TENANT_SUSPENDED,
                    codes::TENANT_DELETED,
                ];
                record.status = if stopped.iter().any(|c| c.code == f.code) {
                    RunStatus::Cancelled
                } else {
                    RunStatus::Failed
                };
                record.error = Some(f);
            }
        }
        let span = tracing::Span::current();
        span.record("bulkhead.run.status", record.status.as_str());
        bulkhead_telemetry::record_outcome(
            &span,
            match &record.error {
                None => "completed",
                Some(f) => &f.code,
            },
        );
        let outcome = if record.status == RunStatus::Completed {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let event = NewAuditEvent::new(
            AuditAction::RunFinish,
            format!("run:{}", record.id),
            outcome,
            scope.request_id().clone(),
        )
        .with_run(record.agent.clone(), record.id.to_string())
        .with_details(json!({
            "agent": record.agent,
            "status": record.status.as_str(),
            "error": record.error.as_ref().map(|e| e.code.clone()),
            "steps": ctx.seq,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
        }));
        let finished_at = record.finished_at.unwrap_or(record.created_at);
        self.gateway.observer().run_end(
            &scope,
            &bulkhead_auth::observe::RunEnd {
                agent: &record.agent,
                status: record.status.as_str(),
                duration: std::time::Duration::from_micros(
                    (finished_at.unix_micros() - record.created_at.unix_micros()).max(0) as u64,
                ),
            },
        );
        let last_steps = std::mem::take(&mut ctx.pending);
        ctx.steps.extend(last_steps.iter().map(|w| w.step.clone()));
        if let Err(e) = self
            .store
            .finish_run(&scope, &record, last_steps, event)
            .await
        {
            tracing::error!(error = %e, run_id = %record.id, "could not record the end of a run");
        }
        // The slot is free before anyone hears that the run ended, so a
        // client starting its next run right away is not refused.
        if let Some(lease) = lease {
            lease.release().await;
        }
        self.forget(scope.partition(), record.id);
        for ev in std::mem::take(&mut ctx.outbox) {
            let _ = tx.send(ev).await;
        }
        let last = match &record.error {
            None => RunEvent::new("done", summary(&record)),
            Some(f) => RunEvent::new(
                "error",
                json!({"run_id": record.id.to_string(), "status": record.status, "code": f.code, "message": f.message}),
            ),
        };
        let _ = tx.send(last).await;
        record.steps = std::mem::take(&mut ctx.steps);
        let _ = finished.send(record);
    }
}
