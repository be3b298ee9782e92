//! A call's bookkeeping: the budget and token reservation taken before
//! it is sent, the `in_flight` ledger row written (and made durable)
//! before the request leaves, and its settlement — usage row, audit event
//! and reservation — recorded exactly once whatever happens. Also what a
//! call is billed when the provider reports no usage (the local count),
//! tool calls' ledger rows, and the usage report read from the ledger.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_quota::{Refusal, Reservation};
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use super::Gateway;
use crate::catalog::Model;
use crate::error::GatewayError;
use crate::store::GatewayStore;
use crate::usage::{Tokens, UsageGroup, UsageRecord, UsageSummary, cost_nanos, nanos_to_usd};

/// One tool call, for the cost ledger.
pub struct ToolUsage<'a> {
    /// The agent whose run made it.
    pub agent: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// The tool's region.
    pub region: &'a str,
    /// `ok` or the failure code.
    pub status: &'a str,
    /// Wall time.
    pub latency_ms: u64,
}

/// A rough count of the tokens in `bytes` of request text, for
/// reservations only (the settle uses the provider's count): about four
/// bytes a token, rounded up, so the estimate errs high.
pub(super) fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// The bytes of generated text in one stream event's data: the string
/// values of its `content`, `arguments` (OpenAI), `text` and
/// `partial_json` (Anthropic) members, found without parsing the JSON (a
/// `"key":"` sequence cannot occur inside a JSON string, whose quotes are
/// escaped). The local count a call is billed by when the provider
/// reports no usage.
pub(super) fn generated_bytes(data: &str) -> usize {
    const KEYS: [&str; 4] = [
        "\"content\":\"",
        "\"arguments\":\"",
        "\"text\":\"",
        "\"partial_json\":\"",
    ];
    let bytes = data.as_bytes();
    let mut total = 0;
    for key in KEYS {
        let mut at = 0;
        while let Some(i) = data[at..].find(key) {
            let start = at + i + key.len();
            let mut j = start;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            total += j.min(bytes.len()) - start;
            at = (j + 1).min(bytes.len());
        }
    }
    total
}

/// The generated text of a non-streamed OpenAI answer, in bytes.
pub(super) fn answer_bytes(answer: &Value) -> usize {
    let mut total = 0;
    for choice in answer["choices"].as_array().into_iter().flatten() {
        let m = &choice["message"];
        total += m["content"].as_str().map_or(0, str::len);
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            total += call["function"]["arguments"].as_str().map_or(0, str::len);
            total += call["function"]["name"].as_str().map_or(0, str::len);
        }
    }
    total
}

/// What a call is billed: the provider's counts, or — when it reported
/// none — the gateway's own (`estimated`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Billed {
    pub(super) tokens: Tokens,
    pub(super) estimated: bool,
}

impl Billed {
    pub(super) fn reported(tokens: Tokens) -> Self {
        Self {
            tokens,
            estimated: false,
        }
    }
}

pub(super) fn openai_tokens(usage: &Value) -> Tokens {
    let n = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        input: n("/prompt_tokens"),
        output: n("/completion_tokens"),
        cached: n("/prompt_tokens_details/cached_tokens"),
    }
}

/// One call's bookkeeping, recorded exactly once whatever happens.
pub(super) struct Call {
    /// The ledger row's id: the `in_flight` row and its settlement.
    pub(super) id: String,
    /// The reservation's estimate (the `in_flight` row's tokens, and the
    /// input count of a call the provider reports no usage for).
    pub(super) est: Tokens,
    /// `model.call` or `model.embed`.
    pub(super) action: AuditAction,
    pub(super) scope: TenantScope,
    pub(super) model: Model,
    pub(super) started: Instant,
    pub(super) time: Timestamp,
    pub(super) stream: bool,
    /// The request messages, kept only when the tenant opted in.
    pub(super) prompt: Option<Value>,
    /// The agent and run the call belongs to, if any.
    pub(super) run: Option<(String, String)>,
    /// The budget and token reservation, settled by [`Call::finish`].
    pub(super) reservation: Mutex<Option<Reservation>>,
    /// The call's span (`chat <model>`, `embeddings <model>`): usage and
    /// outcome are recorded on it when the call is settled.
    pub(super) span: tracing::Span,
}

impl Call {
    /// What a call stopped before the provider said what it used is
    /// billed: its estimate, marked estimated.
    pub(super) fn estimate(&self) -> Billed {
        Billed {
            tokens: self.est,
            estimated: true,
        }
    }
    pub(super) fn record(&self, billed: Billed, status: &str) -> (UsageRecord, NewAuditEvent) {
        let m = &self.model;
        let tokens = billed.tokens;
        let usage = UsageRecord {
            id: self.id.clone(),
            time: self.time,
            request_id: self.scope.request_id().to_string(),
            model: m.name.clone(),
            provider: m.provider.name.clone(),
            region: m.provider.region.to_string(),
            tokens,
            cost_nanos: cost_nanos(tokens, m.price_input, m.price_output, m.price_cached),
            latency_ms: self.started.elapsed().as_millis() as u64,
            status: status.to_owned(),
            estimated: billed.estimated,
            stream: self.stream,
            kind: if self.action == AuditAction::ModelEmbed {
                "embed"
            } else {
                "model"
            },
            agent: self.run.as_ref().map(|(a, _)| a.clone()),
            run_id: self.run.as_ref().map(|(_, r)| r.clone()),
            tool: None,
        };
        let outcome = if status == "ok" {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let mut details = json!({
            "provider": usage.provider, "region": usage.region, "upstream_model": m.upstream,
            "input_tokens": tokens.input, "output_tokens": tokens.output, "cached_tokens": tokens.cached,
            "cost_usd": nanos_to_usd(usage.cost_nanos), "latency_ms": usage.latency_ms,
            "status": status, "stream": self.stream, "usage_estimated": billed.estimated,
        });
        if let Some(p) = &self.prompt {
            details["messages"] = p.clone();
        }
        let event = NewAuditEvent::new(
            self.action,
            format!("model:{}", m.name),
            outcome,
            self.scope.request_id().clone(),
        )
        .with_details(details);
        let event = match &self.run {
            Some((agent, run)) => event.with_run(agent.clone(), run.clone()),
            None => event,
        };
        (usage, event)
    }

    /// Queues the call's usage row and audit event with the store's writer
    /// and returns without waiting for the commit: the answer is not held
    /// back by an fsync, yet a usage or audit read that starts after this
    /// returns includes the row. The write is tracked, so a graceful
    /// shutdown ([`Gateway::drain`]) waits for it.
    pub(super) fn finish(&self, recorder: &Recorder, billed: Billed, status: &str) {
        let tokens = billed.tokens;
        let (usage, event) = self.record(billed, status);
        bulkhead_telemetry::record_usage(
            &self.span,
            tokens.input,
            tokens.output,
            &nanos_to_usd(usage.cost_nanos),
        );
        bulkhead_telemetry::record_outcome(&self.span, status);
        recorder.observer().model_call(
            &self.scope,
            &bulkhead_auth::observe::ModelCall {
                model: &usage.model,
                kind: usage.kind,
                status,
                input_tokens: tokens.input,
                output_tokens: tokens.output,
                cost_nanos: usage.cost_nanos,
                latency: std::time::Duration::from_millis(usage.latency_ms),
            },
        );
        let model = usage.model.clone();
        let cost = usage.cost_nanos;
        let write = recorder.store.record_usage(&self.scope, usage, event);
        let reservation = self.reservation.lock().ok().and_then(|mut r| r.take());
        recorder.tasks.spawn(async move {
            // The ledger row is queued (above); the counters follow it.
            if let Some(r) = reservation {
                r.settle(tokens.input + tokens.output, cost).await;
            }
            if let Err(e) = write.await {
                // The call happened; losing its row is an operator alarm, not a client error.
                tracing::error!(error = %e, model = %model, "could not record model usage");
            }
        });
    }
}

impl Call {
    /// Queues the call's `in_flight` ledger row (its estimate) without
    /// waiting for it to be durable: it commits with the tenant's other
    /// writes within the store's deferral window (docs/benchmarks.md,
    /// "the ledger's loss window"), so a crash loses at most the calls
    /// sent in that window. A ledger that failed to write refuses the
    /// next calls until a write succeeds again: calls are not made
    /// unrecorded for long.
    pub(super) async fn begin(&self, recorder: &Recorder) -> Result<(), GatewayError> {
        use std::sync::atomic::Ordering;
        if recorder.ledger_failed.load(Ordering::Relaxed) {
            // Wait for this one: it says whether the ledger is back.
            let (usage, _) = self.record(self.estimate(), "in_flight");
            let written = recorder.store.begin_usage(&self.scope, usage).await;
            if let Err(e) = written {
                return Err(GatewayError::Internal(format!(
                    "could not write the ledger: {e}"
                )));
            }
            recorder.ledger_failed.store(false, Ordering::Relaxed);
            return Ok(());
        }
        let (usage, _) = self.record(self.estimate(), "in_flight");
        let write = recorder.store.begin_usage(&self.scope, usage);
        let failed = recorder.ledger_failed.clone();
        recorder.tasks.spawn(async move {
            if let Err(e) = write.await {
                failed.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "could not write a model call's in-flight ledger row");
            }
        });
        Ok(())
    }

    /// The provider's counts, or the local count when it reported none:
    /// the request's estimated input and `generated` bytes of output.
    pub(super) fn bill(&self, reported: Option<Tokens>, generated: usize, events: u64) -> Billed {
        match reported {
            Some(t) if t.input > 0 || t.output > 0 => Billed::reported(t),
            _ if generated == 0 && events == 0 => Billed::default(),
            _ => Billed {
                tokens: Tokens {
                    input: self.est.input,
                    // Streams send about a token an event: never below that.
                    output: estimate_tokens(generated).max(events),
                    cached: 0,
                },
                estimated: true,
            },
        }
    }
}

/// Where calls' records go, and the tasks still writing them.
#[derive(Clone)]
pub(super) struct Recorder {
    pub(super) store: Arc<dyn GatewayStore>,
    pub(super) tasks: TaskTracker,
    /// Cancelled when the server's shutdown grace is over: calls still
    /// going stop and are recorded `cancelled`.
    pub(super) stop: tokio_util::sync::CancellationToken,
    /// Told of every settled call (the server's per-tenant metrics and
    /// alerts); set once, after construction ([`Gateway::set_observer`]).
    pub(super) observer: Arc<std::sync::OnceLock<Arc<dyn bulkhead_auth::observe::Observer>>>,
    /// Set when a call's `in_flight` row could not be written, cleared
    /// by the next that could: while set, calls are refused rather than
    /// made unrecorded.
    pub(super) ledger_failed: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    pub(super) fn observer(&self) -> &dyn bulkhead_auth::observe::Observer {
        match self.observer.get() {
            Some(o) => o.as_ref(),
            None => &bulkhead_auth::observe::NoObserver,
        }
    }
}

impl Gateway {
    /// Reserves a call's estimated tokens and cost; a refusal is audited.
    pub(super) async fn reserve(
        &self,
        scope: &TenantScope,
        model: &Model,
        action: AuditAction,
        est: Tokens,
    ) -> Result<Reservation, GatewayError> {
        let cost = cost_nanos(
            est,
            model.price_input,
            model.price_output,
            model.price_cached,
        );
        match self
            .limiter
            .reserve(scope, est.input + est.output, cost)
            .await
        {
            Ok(r) => Ok(r),
            Err(refusal) => {
                self.audit_refusal(
                    scope,
                    &format!("model:{}", model.name),
                    action.as_str(),
                    &refusal,
                )
                .await;
                Err(GatewayError::Limited(refusal))
            }
        }
    }

    /// Appends a `limit.exceeded` event for a refused `action` on `resource`.
    pub async fn audit_refusal(
        &self,
        scope: &TenantScope,
        resource: &str,
        action: &str,
        refusal: &Refusal,
    ) {
        let event = NewAuditEvent::new(
            AuditAction::LimitExceeded,
            resource.to_owned(),
            Outcome::Denied,
            scope.request_id().clone(),
        )
        .with_details(json!({
            "code": refusal.code(), "action": action, "reason": refusal.to_string(),
            "retry_after_s": refusal.retry_after_s(),
        }));
        if let Err(e) = self.store.append_audit(scope, event).await {
            tracing::error!(error = %e, "could not audit a refusal over a limit");
        }
    }

    /// Writes a tool call's ledger row (tools have no price: cost 0), with
    /// the agent and run that made it.
    pub fn record_tool_call(&self, scope: &TenantScope, call: ToolUsage<'_>) {
        let usage = UsageRecord {
            id: uuid::Uuid::now_v7().to_string(),
            time: Timestamp::now(),
            request_id: scope.request_id().to_string(),
            model: String::new(),
            provider: String::new(),
            region: call.region.to_owned(),
            tokens: Tokens::default(),
            cost_nanos: 0,
            latency_ms: call.latency_ms,
            status: call.status.to_owned(),
            estimated: false,
            stream: false,
            kind: "tool",
            agent: Some(call.agent.to_owned()),
            run_id: Some(call.run_id.to_owned()),
            tool: Some(call.tool.to_owned()),
        };
        self.recorder.observer().tool_call(
            scope,
            &bulkhead_auth::observe::ToolCall {
                tool: call.tool,
                outcome: call.status,
                latency: std::time::Duration::from_millis(call.latency_ms),
            },
        );
        let write = self.recorder.store.record_usage_row(scope, usage);
        self.recorder.tasks.spawn(async move {
            if let Err(e) = write.await {
                tracing::error!(error = %e, "could not record a tool call in the ledger");
            }
        });
    }

    /// The ledger grouped by `group`.
    pub async fn usage(
        &self,
        scope: &TenantScope,
        from: Timestamp,
        to: Timestamp,
        group: &[UsageGroup],
    ) -> Result<Vec<UsageSummary>, GatewayError> {
        self.store
            .usage_summary(scope, from, to, group)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::generated_bytes;

    #[test]
    fn the_local_count_takes_generated_text_only() {
        // OpenAI content and tool-call arguments, escapes included.
        let chunk =
            r#"{"id":"c","model":"m","choices":[{"delta":{"content":"a \"quoted\" word"}}]}"#;
        assert_eq!(generated_bytes(chunk), r#"a \"quoted\" word"#.len());
        let call = r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":"{\"x\":1}"}}]}}]}"#;
        assert_eq!(generated_bytes(call), r#"{\"x\":1}"#.len());
        // Anthropic text and partial JSON deltas.
        let text = r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"hello"}}"#;
        assert_eq!(generated_bytes(text), 5);
        let json = r#"{"delta":{"type":"input_json_delta","partial_json":"{\"a\""}}"#;
        assert_eq!(generated_bytes(json), r#"{\"a\""#.len());
        // Nothing generated: role chunks, usage chunks, a cut-off string.
        assert_eq!(
            generated_bytes(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#),
            0
        );
        assert_eq!(generated_bytes(r#"{"content":"abc"#), 3);
    }
}
