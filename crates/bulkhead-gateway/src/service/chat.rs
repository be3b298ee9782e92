//! Chat completions: the request checked ([`ChatRequest`]), the model
//! resolved for the tenant, the body made for its provider (as sent, or
//! translated for Anthropic), checked for canaries, reserved, and sent from
//! a task of its own, so a caller that goes away cannot stop a call
//! half-way; a whole answer is read here, a stream handed to `stream`.

use std::sync::Mutex;
use std::time::Instant;

use bulkhead_auth::TenantScope;
use bulkhead_core::audit::AuditAction;
use bulkhead_core::config::ProviderKind;
use bulkhead_core::{Deadline, Timestamp};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::ledger::{Billed, Call, answer_bytes, estimate_tokens, openai_tokens};
use super::request::ChatRequest;
use super::slot::Slot;
use super::stream::pump;
use super::{Gateway, now_unix, read_error};
use crate::anthropic;
use crate::canary::Channel;
use crate::error::GatewayError;
use crate::upstream::{Endpoint, ReadError, read_capped};
use crate::usage::Tokens;

/// What a chat completion returns.
pub enum ChatOutcome {
    /// A whole `chat.completion` object.
    Complete(Value),
    /// SSE bytes, ending with `data: [DONE]` (or an error event).
    Stream(mpsc::Receiver<Vec<u8>>),
}

/// Chunks buffered between the upstream reader and a slow client; beyond
/// this the reader waits (backpressure) instead of growing memory.
const STREAM_BUFFER: usize = 32;

impl Gateway {
    /// Runs one chat completion for the scope's tenant.
    pub async fn chat(
        &self,
        scope: &TenantScope,
        body: Value,
    ) -> Result<ChatOutcome, GatewayError> {
        self.chat_in(scope, body, None, None).await
    }

    /// [`Gateway::chat`] within a request's deadline: no attempt, retry or
    /// read of a non-streamed answer goes past it (a stream must have
    /// started by then; once started it is bounded by the provider's
    /// `stream_idle_timeout_s`).
    pub async fn chat_until(
        &self,
        scope: &TenantScope,
        body: Value,
        deadline: Deadline,
    ) -> Result<ChatOutcome, GatewayError> {
        self.chat_in(scope, body, None, Some(deadline)).await
    }

    /// [`Gateway::chat`] on behalf of an agent run, within the run's
    /// deadline: the call's usage row and audit event name the agent and
    /// the run.
    pub async fn chat_for_run(
        &self,
        scope: &TenantScope,
        body: Value,
        agent: &str,
        run_id: &str,
        deadline: Deadline,
    ) -> Result<ChatOutcome, GatewayError> {
        self.chat_in(
            scope,
            body,
            Some((agent.to_owned(), run_id.to_owned())),
            Some(deadline),
        )
        .await
    }

    /// The call. It runs in its own task, so that whatever happens to the
    /// caller its row is settled; a caller that goes away (a dropped
    /// request, a cancelled or timed-out run) cancels it: the request to
    /// the provider is dropped and the row records `cancelled`.
    pub(super) async fn chat_in(
        &self,
        scope: &TenantScope,
        body: Value,
        run: Option<(String, String)>,
        deadline: Option<Deadline>,
    ) -> Result<ChatOutcome, GatewayError> {
        let request = ChatRequest::parse(body)?;
        let (model, settings) = self.resolve(scope, &request.model).await?;
        let span = bulkhead_telemetry::model_span(
            scope,
            model_ref("chat", &model, request.stream),
            run.as_ref()
                .map(|(agent, run_id)| bulkhead_telemetry::RunRef { agent, run_id }),
        );
        let result = self
            .chat_resolved(scope, request, model, settings, run, deadline)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            bulkhead_telemetry::record_outcome(&span, e.code());
        }
        result
    }

    /// The call, once its model is known, in the model call's span.
    async fn chat_resolved(
        &self,
        scope: &TenantScope,
        request: ChatRequest,
        model: crate::catalog::Model,
        settings: crate::store::GatewaySettings,
        run: Option<(String, String)>,
        deadline: Option<Deadline>,
    ) -> Result<ChatOutcome, GatewayError> {
        let stream = request.stream;
        let wants_usage = request.include_usage;
        let choices = request.choices;
        // What one choice may use: the request's limit, else the model's
        // maximum output (sent to Anthropic, which needs a limit, so the
        // estimate is what the provider is held to).
        let per_choice = request.max_output_tokens.unwrap_or(model.max_output_tokens);
        let has_output_limit = request.has_output_limit;
        let mut req = request.body;
        if model.provider.kind == ProviderKind::Anthropic && !has_output_limit {
            req.insert("max_tokens".into(), json!(model.max_output_tokens));
        }
        let upstream_body = match model.provider.kind {
            ProviderKind::Openai | ProviderKind::AzureOpenai => {
                let mut b: serde_json::Map<String, Value> = req.clone();
                b.insert("model".into(), Value::String(model.upstream.clone()));
                if stream {
                    // Always ask for usage: every call is billed, whatever the client wants to see.
                    b.insert("stream_options".into(), json!({"include_usage": true}));
                }
                Value::Object(b)
            }
            ProviderKind::Anthropic => anthropic::to_anthropic(&req, &model.upstream, stream)?,
        };
        let bytes = serde_json::to_vec(&upstream_body)
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        self.check_outbound(scope, &bytes, Channel::Model).await?;
        let key = self.key(scope, &model).await?;
        // Every choice may use its whole limit: the estimate covers `n`.
        let est = Tokens {
            input: estimate_tokens(bytes.len()),
            output: per_choice.saturating_mul(choices),
            cached: 0,
        };
        let reservation = self
            .reserve(scope, &model, AuditAction::ModelCall, est)
            .await?;
        let call = Call {
            id: uuid::Uuid::now_v7().to_string(),
            est,
            action: AuditAction::ModelCall,
            scope: scope.clone(),
            model: model.clone(),
            #[expect(
                clippy::disallowed_methods,
                reason = "the ledger row's latency is elapsed time on the monotonic clock"
            )]
            started: Instant::now(),
            time: Timestamp::now(),
            stream,
            prompt: settings
                .audit_prompts
                .then(|| req.get("messages").cloned())
                .flatten(),
            run,
            reservation: Mutex::new(Some(reservation)),
            span: tracing::Span::current(),
        };
        // The call runs in its own task, so its row is always settled. A
        // caller that goes away (a dropped request, a cancelled run) stops
        // it: before it is sent, nothing is sent; after, the request to the
        // provider is dropped and the row says `cancelled`.
        let (mut done_tx, done_rx) = tokio::sync::oneshot::channel();
        let upstream = self.upstream.clone();
        let recorder = self.recorder.clone();
        // Fair-queue tags are per incarnation: a tenant created again under
        // a deleted one's id does not inherit its place in the queue.
        let tenant = scope.partition().to_string();
        let weight = self.weight(scope);
        let task = async move {
            let queued = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(
                        tokio::time::Instant::from_std(d.instant()),
                        Slot::take(model.provider.permits.clone(), tenant, weight),
                    )
                    .await
                    .ok(),
                    None => Some(Slot::take(model.provider.permits.clone(), tenant, weight).await),
                }
            };
            let mut slot = tokio::select! {
                slot = queued => match slot {
                    Some(slot) => slot,
                    None => {
                        // Never sent: no usage, the reservation is given back.
                        bulkhead_telemetry::record_outcome(&call.span, "upstream_timeout");
                        let _ = done_tx.send(Err(GatewayError::UpstreamTimeout(0)));
                        return;
                    }
                },
                // Nothing was sent: no usage, and the reservation (dropped
                // with `call`) is given back.
                () = done_tx.closed() => {
                    bulkhead_telemetry::record_outcome(&call.span, "cancelled");
                    return;
                }
                () = recorder.stop.cancelled() => return,
            };
            if let Err(e) = call.begin(&recorder).await {
                let _ = done_tx.send(Err(e));
                return;
            }
            let first = async {
                let res = upstream
                    .send(
                        &model.provider,
                        Endpoint::Chat,
                        &model.upstream,
                        key.as_ref(),
                        &upstream_body,
                        deadline,
                    )
                    .await
                    .map_err(|e| (e, Billed::default()))?;
                if stream {
                    Ok(First::Stream(res))
                } else {
                    complete(&call, res, deadline).await.map(First::Complete)
                }
            };
            let first = tokio::select! {
                first = first => first,
                () = done_tx.closed() => {
                    call.finish(&recorder, call.estimate(), "cancelled");
                    return;
                }
                () = recorder.stop.cancelled() => {
                    call.finish(&recorder, call.estimate(), "cancelled");
                    let _ = done_tx.send(Err(GatewayError::Internal(
                        "the server stopped during the call".into(),
                    )));
                    return;
                }
            };
            let res = match first {
                Ok(First::Stream(res)) => res,
                Ok(First::Complete((value, billed))) => {
                    drop(slot);
                    call.finish(&recorder, billed, "ok");
                    let _ = done_tx.send(Ok(ChatOutcome::Complete(value)));
                    return;
                }
                Err((e, billed)) => {
                    drop(slot);
                    call.finish(&recorder, billed, e.usage_status());
                    let _ = done_tx.send(Err(e));
                    return;
                }
            };
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            let _ = done_tx.send(Ok(ChatOutcome::Stream(rx)));
            let pumped = tokio::select! {
                pumped = pump(&call, res, &tx, wants_usage, &mut slot) => Some(pumped),
                () = recorder.stop.cancelled() => None,
            };
            let (billed, status) = pumped.unwrap_or_else(|| (call.estimate(), "cancelled"));
            // Queued before the client's stream ends (dropping `tx`), so a
            // read that follows the stream sees the row.
            call.finish(&recorder, billed, status);
            drop(tx);
            drop(slot);
        };
        self.recorder
            .tasks
            .spawn(task.instrument(tracing::Span::current()));
        done_rx.await.unwrap_or_else(|_| {
            Err(GatewayError::Internal(
                "the model call's task stopped".into(),
            ))
        })
    }
}

/// The span attributes of a model call to `model`.
pub(super) fn model_ref<'a>(
    operation: &'static str,
    model: &'a crate::catalog::Model,
    stream: bool,
) -> bulkhead_telemetry::ModelRef<'a> {
    bulkhead_telemetry::ModelRef {
        operation,
        model: &model.name,
        provider_kind: match model.provider.kind {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::AzureOpenai => "azure-openai",
        },
        provider: &model.provider.name,
        base_url: &model.provider.base_url,
        stream,
    }
}

/// The provider's answer (OpenAI or Anthropic, as received) on the call's
/// span: its id, model and finish (stop) reasons.
fn record_answer(span: &tracing::Span, value: &Value) {
    let mut finish: Vec<&str> = value["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["finish_reason"].as_str())
        .collect();
    if let Some(stop) = value["stop_reason"].as_str() {
        finish.push(stop);
    }
    bulkhead_telemetry::record_response(
        span,
        value["id"].as_str(),
        value["model"].as_str(),
        &finish,
    );
}

/// What the first part of a call gave: a stream to pump, or the whole
/// (non-streamed) answer with what it is billed.
enum First {
    Stream(reqwest::Response),
    Complete((Value, Billed)),
}

/// A non-streamed chat answer: read (at most the provider's
/// `max_response_bytes`, incrementally), checked, model renamed, usage
/// taken — or counted locally when the provider reports none. A failure
/// carries what it is billed.
async fn complete(
    call: &Call,
    res: reqwest::Response,
    deadline: Option<Deadline>,
) -> Result<(Value, Billed), (GatewayError, Billed)> {
    let provider = &call.model.provider;
    let limit = Deadline::cap(deadline, provider.timeout);
    let bytes = match read_capped(res, provider.max_response_bytes, limit).await {
        Ok(b) => b,
        Err(e) => {
            // What was received was generated, and billed by the provider.
            let billed = match &e {
                ReadError::TooLarge(received) => call.bill(None, (*received).max(1), 0),
                _ => Billed::default(),
            };
            return Err((read_error(provider, e), billed));
        }
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
        (
            GatewayError::Upstream("the provider answered with malformed JSON".into()),
            Billed::default(),
        )
    })?;
    if bulkhead_telemetry::exporting() {
        record_answer(&call.span, &value);
    }
    let (value, tokens) = match provider.kind {
        ProviderKind::Openai | ProviderKind::AzureOpenai => {
            let Value::Object(mut obj) = value else {
                return Err((
                    GatewayError::Upstream("the provider answered with a non-object".into()),
                    Billed::default(),
                ));
            };
            if !obj.get("choices").is_some_and(Value::is_array) {
                return Err((
                    GatewayError::Upstream("the provider's answer has no choices".into()),
                    Billed::default(),
                ));
            }
            let tokens = openai_tokens(obj.get("usage").unwrap_or(&Value::Null));
            obj.insert("model".into(), Value::String(call.model.name.clone()));
            (Value::Object(obj), tokens)
        }
        ProviderKind::Anthropic => anthropic::from_anthropic(&value, &call.model.name, now_unix())
            .map_err(|e| (e, Billed::default()))?,
    };
    let billed = call.bill(Some(tokens), answer_bytes(&value), 0);
    Ok((value, billed))
}
