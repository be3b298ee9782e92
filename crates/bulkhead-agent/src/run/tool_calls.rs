//! Executing a round of tool calls: each call the model asked for is
//! planned ([`super::plan`]), refused ones are answered to the model, ones
//! needing approval become requests, and the others are recorded, made
//! concurrently with the tenant's credential from the vault, redacted, cut
//! to the agent's result limits and stored.

use std::collections::HashMap;
use std::time::Instant;
use tracing::Instrument;

use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::codes::{self, ErrorCode};
use bulkhead_core::{ApprovalId, Deadline, RunId, Timestamp};
use bulkhead_vault::VaultError;
use bulkhead_vault::credential::{ConnectionName, CredentialSecret};
use bulkhead_vault::store::CredScope;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::plan::{self, Planned, Refused, Rules, Target};
use super::{RunCtx, Runtime};
use crate::agent::Agent;
use crate::approval::{self, Approval, ApprovalStatus};
use crate::event::RunEvent;
use crate::prompt::Fragment;
use crate::store::RunFailure;

/// The failures of a tool call that are refusals (audited `denied`): a
/// check said no, so nothing (or nothing more) was sent.
const DENIED: &[ErrorCode] = &[
    codes::HOST_NOT_ALLOWED,
    codes::EGRESS_REFUSED,
    codes::INVALID_ARGUMENTS,
    codes::MISSING_CREDENTIAL,
    codes::RATE_LIMITED,
];

impl Runtime {
    /// Checks and makes one round of tool calls; `Some`: the calls that
    /// need a person's approval (staged as requests, not yet stored), and
    /// the run pauses.
    pub(super) async fn tool_round(
        &self,
        ctx: &mut RunCtx,
        tx: &mpsc::Sender<RunEvent>,
        calls: &[Value],
        excess: Option<Refused>,
        round: u32,
    ) -> Result<Option<Vec<Approval>>, RunFailure> {
        let mut planned = Vec::new();
        let mut refused = Vec::new();
        // The tenant's policies as of this round (a change applies from
        // the next one).
        let policies = self
            .policies
            .tenant(&ctx.scope)
            .await
            .map_err(|e| e.to_string());
        let rules = Rules {
            agent: &ctx.agent,
            settings: &ctx.settings,
            tools: &self.tools,
            scope: &ctx.scope,
            principal: &ctx.principal,
            engine: self.policies.engine(),
            policies: &policies,
        };
        let mut asks = Vec::new();
        for (i, call) in calls.iter().enumerate() {
            match plan::plan(&rules, call, i) {
                Ok(p) if p.needs_approval => {
                    // A request is shown to people and posted to the
                    // tenant's webhook: the tripwire checks it first, as it
                    // checks every outbound tool call.
                    let bytes = serde_json::to_vec(&p.args).unwrap_or_default();
                    match self
                        .gateway
                        .check_outbound(&ctx.scope, &bytes, bulkhead_gateway::canary::Channel::Tool)
                        .await
                    {
                        Ok(()) => asks.push(p),
                        Err(e) => refused.push(Refused {
                            id: p.id,
                            name: p.name,
                            code: &codes::CROSS_TENANT_LEAK,
                            message: e.to_string(),
                            approval: None,
                        }),
                    }
                }
                Ok(p) => planned.push(p),
                Err(r) => refused.push(r),
            }
        }
        // Results go back in the order the model asked for them.
        let mut results: Vec<(String, Value)> = Vec::new();
        // The calls past the limits come last, as the model asked for them.
        for r in refused.into_iter().chain(excess) {
            results.push(self.stage_refusal(ctx, r));
        }
        results.extend(self.make_calls(ctx, tx, &planned).await?);
        if !asks.is_empty() {
            // The permitted calls are made; the others wait for a person.
            return Ok(Some(self.stage_requests(ctx, asks, round)));
        }
        let order: HashMap<&str, usize> = calls
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.get("id").and_then(Value::as_str).map(|id| (id, i)))
            .collect();
        results.sort_by_key(|(id, _)| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
        for (_, m) in results {
            ctx.fragments.push(Fragment::tenant(&ctx.scope, m));
        }
        Ok(None)
    }

    /// Stages a refused call: its tool message for the model, step and
    /// audit event. Returns the call id and message.
    pub(super) fn stage_refusal(&self, ctx: &mut RunCtx, r: Refused) -> (String, Value) {
        let code = r.code.code;
        let content = json!({"error": code, "message": r.message}).to_string();
        let m = json!({"role": "tool", "tool_call_id": r.id, "content": content});
        let mut details =
            json!({"run_id": ctx.record.id.to_string(), "code": code, "reason": r.message});
        if let Some(a) = r.approval {
            details["approval_id"] = json!(a);
        }
        let event = NewAuditEvent::new(
            AuditAction::ToolRefused,
            format!("tool:{}", r.name),
            Outcome::Denied,
            ctx.scope.request_id().clone(),
        )
        .with_run(ctx.agent.name.clone(), ctx.record.id.to_string())
        .with_details(details);
        let data = json!({"id": r.id, "tool": r.name, "code": code, "message": r.message});
        let announce = RunEvent::new(
            "tool_result",
            json!({"id": r.id, "tool": r.name, "ok": false, "code": code, "message": r.message}),
        );
        self.stage(
            ctx,
            "tool_refused",
            data,
            Some(m.clone()),
            Some(event),
            Some(announce),
        );
        (r.id, m)
    }

    /// Makes checked calls: each is on record before any is sent, they run
    /// concurrently, and their results are stored. Returns each call id
    /// with its tool message.
    pub(super) async fn make_calls(
        &self,
        ctx: &mut RunCtx,
        tx: &mpsc::Sender<RunEvent>,
        planned: &[Planned<'_>],
    ) -> Result<Vec<(String, Value)>, RunFailure> {
        let mut results = Vec::new();
        // A tenant suspended since the model call (in a process that did
        // not hear of it) gets no further call made for it.
        if !planned.is_empty() {
            self.check_tenant(&ctx.scope).await?;
        }
        for p in planned {
            let mut data = json!({
                "id": p.id, "tool": p.name,
                "connection": p.connection.as_ref().map(ConnectionName::as_str),
                "arguments": p.args,
            });
            if let Some(a) = p.approval {
                data["approval_id"] = json!(a);
            }
            let announce = RunEvent::new("tool_call", data.clone());
            self.stage(ctx, "tool_call", data, None, None, Some(announce));
        }
        // Every call is on record before any of them is sent: a crash
        // cannot lead to a call being made twice.
        self.flush(ctx, tx).await?;
        // Independent calls run concurrently.
        let run_id = ctx.record.id.to_string();
        let outputs = futures_util::future::join_all(planned.iter().map(|p| {
            let span = bulkhead_telemetry::tool_span(
                &ctx.scope,
                bulkhead_telemetry::RunRef {
                    agent: &ctx.agent.name,
                    run_id: &run_id,
                },
                &p.name,
                &p.id,
            );
            async {
                #[expect(
                    clippy::disallowed_methods,
                    reason = "a tool call's duration (its ledger row) is elapsed time on the monotonic clock"
                )]
                let started = Instant::now();
                let out = self
                    .execute_tool(&ctx.agent, &ctx.scope, (ctx.record.id, ctx.deadline), p)
                    .await;
                let status = match (&out.0, &out.1) {
                    (true, _) => "ok",
                    (false, Some(c)) => c.code,
                    (false, None) => "error",
                };
                bulkhead_telemetry::record_outcome(&tracing::Span::current(), status);
                (out, started.elapsed())
            }
            .instrument(span)
        }))
        .await;
        // Only as much of the results as the agent's limits allow is kept
        // (cut after redaction, so a cut cannot split a secret out of
        // reach of the redaction).
        let (meta, mut contents): (Vec<_>, Vec<String>) = outputs
            .into_iter()
            .map(|((ok, code, content), took)| ((ok, code, took), content))
            .unzip();
        crate::fanout::limit_round(
            &mut contents,
            ctx.agent.max_tool_result_bytes,
            ctx.agent.max_tool_result_bytes_per_round,
        );
        let outputs = meta
            .into_iter()
            .zip(contents)
            .map(|((ok, code, took), content)| ((ok, code, content), took));
        for (p, ((ok, code, content), took)) in planned.iter().zip(outputs) {
            // The cost ledger's row for the call (tools have no price).
            if code != Some(codes::RATE_LIMITED) {
                self.gateway.record_tool_call(
                    &ctx.scope,
                    bulkhead_gateway::ToolUsage {
                        agent: &ctx.agent.name,
                        run_id: &ctx.record.id.to_string(),
                        tool: &p.name,
                        region: ctx.scope.region().as_str(),
                        status: if ok {
                            "ok"
                        } else {
                            code.map_or("error", |c| c.code)
                        },
                        latency_ms: took.as_millis() as u64,
                    },
                );
            }
            let m = json!({"role": "tool", "tool_call_id": p.id, "content": content});
            let outcome = match (ok, code) {
                (true, _) => Outcome::Success,
                (false, Some(c)) if DENIED.contains(&c) => Outcome::Denied,
                _ => Outcome::Failure,
            };
            let mut details = json!({
                "run_id": ctx.record.id.to_string(),
                "connection": p.connection.as_ref().map(ConnectionName::as_str),
                "arguments_sha256": approval::arguments_hash(&p.args),
                "code": code.map(|c| c.code),
            });
            if let Some(a) = p.approval {
                details["approval_id"] = json!(a);
            }
            let event = NewAuditEvent::new(
                AuditAction::ToolCall,
                format!("tool:{}", p.name),
                outcome,
                ctx.scope.request_id().clone(),
            )
            .with_run(ctx.agent.name.clone(), ctx.record.id.to_string())
            .with_details(details);
            let data = json!({"id": p.id, "tool": p.name, "ok": ok, "code": code.map(|c| c.code), "content": content});
            let announce = RunEvent::new("tool_result", data.clone());
            self.stage(
                ctx,
                "tool_result",
                data,
                Some(m.clone()),
                Some(event),
                Some(announce),
            );
            results.push((p.id.clone(), m));
        }
        self.flush(ctx, tx).await?;
        Ok(results)
    }

    /// Stages an approval request (step and `approval.request` event) for
    /// each call that needs one; they are stored with the run's pause.
    fn stage_requests(
        &self,
        ctx: &mut RunCtx,
        asks: Vec<Planned<'_>>,
        round: u32,
    ) -> Vec<Approval> {
        let now = Timestamp::now();
        let expires = now.plus_seconds(self.approval_ttl.as_secs() as i64);
        let mut out = Vec::new();
        for p in asks {
            let (risk, kind) = match p.target {
                Target::Tool(t) => (t.risk.as_str(), t.kind.as_str()),
                Target::Search => ("read", "builtin"),
            };
            let connection = p.connection.as_ref().map(|c| c.as_str().to_owned());
            let a = Approval {
                id: ApprovalId::generate(),
                status: ApprovalStatus::Pending,
                run_id: ctx.record.id,
                agent: ctx.agent.name.clone(),
                tool: p.name.clone(),
                tool_call_id: p.id.clone(),
                connection: connection.clone(),
                arguments_hash: approval::arguments_hash(&p.args),
                summary: approval::summary(
                    &ctx.agent.name,
                    ctx.scope.tenant().as_str(),
                    &p.name,
                    risk,
                    kind,
                    connection.as_deref(),
                    &p.args,
                ),
                arguments: p.args,
                requested_by: ctx.principal.id().to_owned(),
                requested_roles: ctx.principal.roles().to_vec(),
                round,
                created_at: now,
                expires_at: expires,
                decided_by: None,
                decided_at: None,
                comment: None,
            };
            // The event names the call by its hash: argument values are
            // the model's output, kept out of the audit chain like prompts.
            let event = NewAuditEvent::new(
                AuditAction::ApprovalRequest,
                format!("approval:{}", a.id),
                Outcome::Success,
                ctx.scope.request_id().clone(),
            )
            .with_run(ctx.agent.name.clone(), ctx.record.id.to_string())
            .with_details(json!({
                "approval_id": a.id, "run_id": a.run_id, "tool": a.tool,
                "connection": a.connection, "arguments_sha256": a.arguments_hash,
                "requested_by": a.requested_by, "expires_at": a.expires_at.to_string(),
            }));
            let data = json!({
                "id": a.tool_call_id, "tool": a.tool, "approval_id": a.id,
                "connection": a.connection, "arguments": a.arguments,
                "arguments_hash": a.arguments_hash, "summary": a.summary,
                "expires_at": a.expires_at.to_string(),
            });
            let announce = RunEvent::new("approval_requested", data.clone());
            self.stage(
                ctx,
                "approval_requested",
                data,
                None,
                Some(event),
                Some(announce),
            );
            out.push(a);
        }
        out
    }

    /// Runs one checked tool call with the tenant's credential; returns
    /// (ok, error code, content for the model — already redacted).
    async fn execute_tool(
        &self,
        ctx_agent: &Agent,
        scope: &TenantScope,
        run: (RunId, Deadline),
        p: &Planned<'_>,
    ) -> (bool, Option<ErrorCode>, String) {
        if let Err(refusal) = self.limiter.tool_call(scope).await {
            self.gateway
                .audit_refusal(
                    scope,
                    &format!("tool:{}", p.name),
                    AuditAction::ToolCall.as_str(),
                    &refusal,
                )
                .await;
            return (
                false,
                Some(refusal.error_code()),
                json!({"error": refusal.code(), "message": refusal.to_string()}).to_string(),
            );
        }
        let tool = match p.target {
            Target::Tool(t) => t,
            Target::Search => return self.search_tool(ctx_agent, scope, run, &p.args).await,
        };
        // The tripwire: the arguments are everything the request carries
        // besides the configured URL and the credential.
        if let Ok(bytes) = serde_json::to_vec(&p.args)
            && let Err(e) = self
                .gateway
                .check_outbound(scope, &bytes, bulkhead_gateway::canary::Channel::Tool)
                .await
        {
            return (
                false,
                Some(codes::CROSS_TENANT_LEAK),
                json!({"error": e.code(), "message": e.to_string()}).to_string(),
            );
        }
        let credential: Option<CredentialSecret> = match &p.connection {
            None => None,
            Some(conn) => {
                let purpose = format!("tool:{}", p.name);
                match self
                    .vault
                    .use_credential(CredScope::Tenant(scope), conn, &purpose)
                    .await
                {
                    Ok(c) => Some(c),
                    Err(VaultError::NotFound) | Err(VaultError::NeedsReauth) => {
                        let msg = format!(
                            "this organisation has no usable connection {:?} for the tool",
                            conn.as_str()
                        );
                        return (
                            false,
                            Some(codes::MISSING_CREDENTIAL),
                            json!({"error": codes::MISSING_CREDENTIAL.code, "message": msg})
                                .to_string(),
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, tool = %p.name, "could not open a tool credential");
                        return (
                            false,
                            Some(codes::INTERNAL),
                            json!({"error": codes::INTERNAL.code, "message": "the credential could not be opened"}).to_string(),
                        );
                    }
                }
            }
        };
        let (ok, code, text) = match self.tools.call(tool, &p.args, credential.as_ref()).await {
            Ok(out) => (true, None, out.content),
            Err(e) => (
                false,
                Some(e.error_code()),
                json!({"error": e.code(), "message": e.to_string()}).to_string(),
            ),
        };
        drop(credential);
        // Tool output reaches the model only after the tenant's own secrets
        // are stripped from it (a service echoing a token back, say).
        match self.vault.redact(scope, &text).await {
            Ok(clean) => (ok, code, clean),
            Err(e) => {
                tracing::error!(error = %e, "could not redact tool output");
                (
                    false,
                    Some(codes::INTERNAL),
                    json!({"error": codes::INTERNAL.code, "message": "the tool output could not be checked for secrets"}).to_string(),
                )
            }
        }
    }
}
