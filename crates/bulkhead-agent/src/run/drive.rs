//! The model/tool loop of one run: assemble the prompt from its fragments,
//! fit it to the agent's context budget, call the model through the
//! gateway, and hand the tool calls it asks for to a round
//! ([`super::tool_calls`]) until an answer, a limit or a pause. Steps are
//! staged as they happen and stored before the client hears of them.

use bulkhead_core::Timestamp;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_gateway::ChatOutcome;
use bulkhead_tools::Tool;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::retrieval::search_tool_definition;
use super::{Ended, RunCtx, Runtime, failure};
use super::{answer, plan};
use crate::event::RunEvent;
use crate::prompt::{self, Fragment, Owner};
use crate::store::{RunFailure, Step, StepWrite};
use bulkhead_core::codes;

impl Runtime {
    /// Stages a step (and the event announcing it) for the next write.
    pub(super) fn stage(
        &self,
        ctx: &mut RunCtx,
        kind: &str,
        data: Value,
        message: Option<Value>,
        event: Option<NewAuditEvent>,
        announce: Option<RunEvent>,
    ) {
        ctx.seq += 1;
        ctx.pending.push(StepWrite {
            step: Step {
                seq: ctx.seq,
                kind: kind.to_owned(),
                data,
                time: Timestamp::now(),
            },
            message,
            event,
        });
        ctx.outbox.extend(announce);
    }

    /// Stores the staged steps in one transaction, then sends their events:
    /// a client never hears of a step that a crash could still lose.
    pub(super) async fn flush(
        &self,
        ctx: &mut RunCtx,
        tx: &mpsc::Sender<RunEvent>,
    ) -> Result<(), RunFailure> {
        // Taken first: if the run is cancelled while this write is queued,
        // the write still happens and the end of the run must not repeat it.
        let steps = std::mem::take(&mut ctx.pending);
        ctx.steps.extend(steps.iter().map(|w| w.step.clone()));
        if !steps.is_empty() {
            self.store
                .append_steps(&ctx.scope, ctx.record.id, steps)
                .await
                .map_err(|e| failure(codes::INTERNAL, format!("could not persist a step: {e}")))?;
        }
        for ev in std::mem::take(&mut ctx.outbox) {
            let _ = tx.send(ev).await;
        }
        Ok(())
    }

    /// The loop proper; returns the final answer or why there is none.
    pub(super) async fn drive(
        &self,
        ctx: &mut RunCtx,
        tx: &mpsc::Sender<RunEvent>,
    ) -> Result<Ended, RunFailure> {
        let history = self
            .store
            .messages(&ctx.scope, ctx.record.thread_id)
            .await
            .map_err(|e| failure(codes::INTERNAL, e.to_string()))?
            .unwrap_or_default();
        // Retrieved passages go before the conversation, after the
        // platform prompt and the tenant's instructions.
        let history_start = ctx.fragments.len();
        for m in history {
            ctx.fragments.push(Fragment {
                owner: Owner::Tenant(m.owner),
                message: m.message,
            });
        }
        let mut definitions: Vec<Value> = ctx
            .agent
            .tools
            .iter()
            .filter_map(|t| self.tools.get(t))
            .map(Tool::definition)
            .collect();
        if !ctx.agent.knowledge.is_empty() {
            definitions.push(search_tool_definition(&ctx.agent.knowledge));
            // What the knowledge base says about the question, before the
            // first model call: the tenant's own passages, as data.
            // They go in as a user message just before the run's input,
            // never as a system message: documents are whatever the tenant
            // (or its users) uploaded, and must not speak with the
            // platform's authority.
            if let Some(context) = self.retrieve(ctx).await {
                let at = ctx.fragments[history_start..]
                    .iter()
                    .rposition(|f| f.message.get("role").and_then(Value::as_str) == Some("user"))
                    .map_or(history_start, |i| history_start + i);
                ctx.fragments.insert(
                    at,
                    Fragment::tenant(&ctx.scope, json!({"role": "user", "content": context})),
                );
            }
        }
        for step in ctx.first_step..=ctx.agent.max_steps {
            self.check_tenant(&ctx.scope).await?;
            let _ = tx.send(RunEvent::new("step", json!({"step": step}))).await;
            let messages = match prompt::assemble(&ctx.scope, ctx.fragments.clone()) {
                Ok(mut m) => {
                    prompt::fit(&mut m, ctx.agent.context_tokens);
                    // The newest turn's tool results are cut to fit too: the
                    // request never exceeds the budget. What still does not
                    // fit (the prompt or the input alone) is not sent.
                    if !prompt::fit_tool_results(&mut m, ctx.agent.context_tokens) {
                        let message = format!(
                            "the prompt and the input alone exceed the agent's context budget of {} tokens; nothing was sent to the model",
                            ctx.agent.context_tokens
                        );
                        self.stage(
                            ctx,
                            "error",
                            json!({"code": codes::CONTEXT_LIMIT.code, "message": message}),
                            None,
                            None,
                            None,
                        );
                        return Err(failure(codes::CONTEXT_LIMIT, message));
                    }
                    m
                }
                Err(foreign) => {
                    self.gateway.observer().cross_tenant(
                        &ctx.scope,
                        bulkhead_auth::observe::CrossTenant::ForeignFragment,
                    );
                    let event = NewAuditEvent::new(
                        AuditAction::SecurityForeignFragment,
                        format!("run:{}", ctx.record.id),
                        Outcome::Denied,
                        ctx.scope.request_id().clone(),
                    )
                    .with_run(ctx.agent.name.clone(), ctx.record.id.to_string())
                    .with_details(
                        json!({"fragment": foreign.index, "owner_uid": foreign.owner.to_string()}),
                    );
                    self.stage(
                        ctx,
                        "error",
                        json!({"code": codes::FOREIGN_FRAGMENT.code}),
                        None,
                        Some(event),
                        None,
                    );
                    return Err(failure(
                        codes::FOREIGN_FRAGMENT,
                        "the prompt contained text owned by another tenant; nothing was sent to the model",
                    ));
                }
            };
            // Streamed, so that the answer's text reaches the run's client
            // as the model writes it (`delta` events); the usage chunk is
            // asked for, since the run counts its tokens.
            let mut body = json!({"model": ctx.agent.model, "messages": messages,
                "stream": true, "stream_options": {"include_usage": true}});
            if !definitions.is_empty() {
                body["tools"] = Value::Array(definitions.clone());
            }
            let called = self
                .gateway
                .chat_for_run(
                    &ctx.scope,
                    body,
                    &ctx.agent.name,
                    &ctx.record.id.to_string(),
                    ctx.deadline,
                )
                .await;
            let answer = match called {
                Ok(ChatOutcome::Complete(v)) => v,
                Ok(ChatOutcome::Stream(rx)) => match answer::assemble(rx, tx, step).await {
                    Ok(v) => v,
                    Err(e) => {
                        self.stage(
                            ctx,
                            "error",
                            json!({"code": e.code.code, "message": e.message}),
                            None,
                            None,
                            None,
                        );
                        return Err(failure(e.code, e.message));
                    }
                },
                Err(e) => {
                    self.stage(
                        ctx,
                        "error",
                        json!({"code": e.code(), "message": e.to_string()}),
                        None,
                        None,
                        None,
                    );
                    return Err(failure(e.error_code(), e.to_string()));
                }
            };
            let n = |p: &str| answer.pointer(p).and_then(Value::as_u64).unwrap_or(0);
            ctx.record.input_tokens += n("/usage/prompt_tokens");
            ctx.record.output_tokens += n("/usage/completion_tokens");
            let message = answer
                .pointer("/choices/0/message")
                .cloned()
                .unwrap_or(Value::Null);
            let calls: Vec<Value> = message
                .get("tool_calls")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let requested = calls.len();
            let finish = answer
                .pointer("/choices/0/finish_reason")
                .cloned()
                .unwrap_or(Value::Null);
            let data = json!({
                "model": ctx.agent.model,
                "input_tokens": n("/usage/prompt_tokens"),
                "output_tokens": n("/usage/completion_tokens"),
                "finish_reason": finish,
                "tool_calls": requested,
            });
            let content = message
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if calls.is_empty() {
                let m = json!({"role": "assistant", "content": content});
                // Stored with the end of the run, in one transaction.
                let announce = RunEvent::new("model_call", data.clone());
                self.stage(ctx, "model_call", data, None, None, Some(announce));
                self.check_tokens(ctx)?;
                let announce =
                    RunEvent::new("message", json!({"role": "assistant", "content": content}));
                self.stage(
                    ctx,
                    "message",
                    json!({"content": content}),
                    Some(m),
                    None,
                    Some(announce),
                );
                return Ok(Ended::Answer(content));
            }
            let round = plan::limit_round(&ctx.agent, ctx.tool_calls, calls);
            let assistant = json!({"role": "assistant", "content": message.get("content").cloned().unwrap_or(Value::Null), "tool_calls": round.in_message});
            ctx.tool_calls += round.calls.len();
            // Stored with the tool calls it asks for, before any of them runs.
            let announce = RunEvent::new("model_call", data.clone());
            self.stage(
                ctx,
                "model_call",
                data,
                Some(assistant.clone()),
                None,
                Some(announce),
            );
            ctx.fragments.push(Fragment::tenant(&ctx.scope, assistant));
            self.check_tokens(ctx)?;
            if let Some(asks) = self
                .tool_round(ctx, tx, &round.calls, round.excess, step)
                .await?
            {
                return Ok(Ended::Paused(asks));
            }
        }
        Err(failure(
            codes::STEP_LIMIT,
            format!(
                "the agent did not reach an answer within {} model calls",
                ctx.agent.max_steps
            ),
        ))
    }

    fn check_tokens(&self, ctx: &RunCtx) -> Result<(), RunFailure> {
        let used = ctx.record.input_tokens + ctx.record.output_tokens;
        if used > ctx.agent.max_tokens {
            return Err(failure(
                codes::TOKEN_LIMIT,
                format!(
                    "the run used {used} tokens, over the agent's limit of {}",
                    ctx.agent.max_tokens
                ),
            ));
        }
        Ok(())
    }
}
