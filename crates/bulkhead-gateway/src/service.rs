//! The gateway service: resolve, check, call, translate, record.

use bulkhead_core::audit::AuditAction;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use bulkhead_core::config::ProviderKind;
use bulkhead_core::{SecretString, TenantUid, Timestamp};
use bulkhead_vault::credential::{ConnectionName, CredentialSecret};
use bulkhead_vault::store::CredScope;
use bulkhead_vault::{Vault, VaultError};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::anthropic::{self, StreamTranslator};
use crate::canary::{CanaryScanner, Channel, LeakAlarm};
use crate::catalog::{Catalog, KeySource, Model};
use crate::error::GatewayError;
use crate::sse;
use crate::store::{GatewaySettings, GatewayStore};
use crate::upstream::{Endpoint, ReadError, Upstream, read_capped};
use crate::usage::{Tokens, UsageGroup, UsageRecord, UsageSummary, cost_nanos, nanos_to_usd};
use bulkhead_quota::fair::FairPermit;
use bulkhead_quota::{FairGate, Limiter, Refusal, Reservation};

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

/// How long a tenant's settings are reused without reading them again.
/// Changes made through this process apply at once (the entry is dropped);
/// another replica's change applies within this time.
const SETTINGS_TTL: Duration = Duration::from_secs(5);

/// The model gateway.
pub struct Gateway {
    catalog: Arc<Catalog>,
    upstream: Upstream,
    vault: Arc<Vault>,
    store: Arc<dyn GatewayStore>,
    recorder: Recorder,
    settings_cache: Mutex<HashMap<TenantUid, (GatewaySettings, Instant)>>,
    canaries: Arc<CanaryScanner>,
    alarm: Option<Arc<dyn LeakAlarm>>,
    limiter: Option<Arc<Limiter>>,
}

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

/// Most choices (`n`) one chat call may ask for.
const MAX_CHOICES: u64 = 128;

/// How long a stream waits for the provider with its slot held; a longer
/// silence gives the slot up until bytes come again, so a stalled stream
/// never keeps another call waiting.
const SLOT_GRACE: Duration = Duration::from_millis(250);

/// How long an error event waits for room on its way to a client that
/// is not reading; past it the stream just ends.
const ERROR_EVENT_WAIT: Duration = Duration::from_secs(1);

/// A rough count of the tokens in `bytes` of request text, for
/// reservations only (the settle uses the provider's count): about four
/// bytes a token, rounded up, so the estimate errs high.
fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

fn now_unix() -> u64 {
    Timestamp::now().unix_seconds().max(0) as u64
}

/// The bytes of generated text in one stream event's data: the string
/// values of its `content`, `arguments` (OpenAI), `text` and
/// `partial_json` (Anthropic) members, found without parsing the JSON (a
/// `"key":"` sequence cannot occur inside a JSON string, whose quotes are
/// escaped). The local count a call is billed by when the provider
/// reports no usage.
fn generated_bytes(data: &str) -> usize {
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
fn answer_bytes(answer: &Value) -> usize {
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
struct Billed {
    tokens: Tokens,
    estimated: bool,
}

impl Billed {
    fn reported(tokens: Tokens) -> Self {
        Self {
            tokens,
            estimated: false,
        }
    }
}

/// A stream's hold on its provider's capacity: held while bytes move,
/// given up while the stream is idle (the provider silent, the client not
/// reading) and, while another tenant waits, whenever its tenant holds
/// more than its share.
struct Slot {
    gate: FairGate,
    tenant: String,
    weight: u32,
    permit: Option<FairPermit>,
}

impl Slot {
    async fn take(gate: FairGate, tenant: String, weight: u32) -> Self {
        let permit = Some(gate.acquire(&tenant, weight).await);
        Self {
            gate,
            tenant,
            weight,
            permit,
        }
    }

    fn release(&mut self) {
        self.permit = None;
    }

    async fn hold(&mut self) {
        if self.permit.is_none() {
            self.permit = Some(self.gate.acquire(&self.tenant, self.weight).await);
        }
    }

    /// Between two writes: over its tenant's share while another waits,
    /// the stream queues again (behind that tenant, by fair queueing).
    async fn share(&mut self) {
        if self.permit.as_ref().is_some_and(FairPermit::over_share) {
            self.permit = None;
            self.hold().await;
        }
    }
}

fn openai_tokens(usage: &Value) -> Tokens {
    let n = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        input: n("/prompt_tokens"),
        output: n("/completion_tokens"),
        cached: n("/prompt_tokens_details/cached_tokens"),
    }
}

/// One call's bookkeeping, recorded exactly once whatever happens.
struct Call {
    /// The ledger row's id: the `in_flight` row and its settlement.
    id: String,
    /// The reservation's estimate (the `in_flight` row's tokens, and the
    /// input count of a call the provider reports no usage for).
    est: Tokens,
    /// `model.call` or `model.embed`.
    action: AuditAction,
    scope: TenantScope,
    model: Model,
    started: Instant,
    time: Timestamp,
    stream: bool,
    /// The request messages, kept only when the tenant opted in.
    prompt: Option<Value>,
    /// The agent and run the call belongs to, if any.
    run: Option<(String, String)>,
    /// The budget and token reservation, settled by [`Call::finish`].
    reservation: Mutex<Option<Reservation>>,
}

impl Call {
    fn record(&self, billed: Billed, status: &str) -> (UsageRecord, NewAuditEvent) {
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
    fn finish(&self, recorder: &Recorder, billed: Billed, status: &str) {
        let tokens = billed.tokens;
        let (usage, event) = self.record(billed, status);
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
    /// Writes the call's `in_flight` ledger row (its estimate) and waits
    /// until it is durable: only then may the request be sent, so a crash
    /// after it reached the provider still leaves the call in the ledger.
    /// A ledger that cannot be written refuses the call, never sends it
    /// unrecorded.
    async fn begin(&self, recorder: &Recorder) -> Result<(), GatewayError> {
        let (usage, _) = self.record(
            Billed {
                tokens: self.est,
                estimated: true,
            },
            "in_flight",
        );
        recorder
            .store
            .begin_usage(&self.scope, usage)
            .await
            .map_err(|e| GatewayError::Internal(format!("could not write the ledger: {e}")))
    }

    /// The provider's counts, or the local count when it reported none:
    /// the request's estimated input and `generated` bytes of output.
    fn bill(&self, reported: Option<Tokens>, generated: usize, events: u64) -> Billed {
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
struct Recorder {
    store: Arc<dyn GatewayStore>,
    tasks: TaskTracker,
}

impl Gateway {
    /// A gateway over the configured catalog.
    pub fn new(
        catalog: Arc<Catalog>,
        vault: Arc<Vault>,
        store: Arc<dyn GatewayStore>,
    ) -> Result<Self, GatewayError> {
        Ok(Self {
            catalog,
            upstream: Upstream::new()?,
            vault,
            recorder: Recorder {
                store: store.clone(),
                tasks: TaskTracker::new(),
            },
            store,
            settings_cache: Mutex::new(HashMap::new()),
            canaries: Arc::new(CanaryScanner::new()),
            alarm: None,
            limiter: None,
        })
    }

    /// Enforces tenants' token rates and budgets with `limiter`, and
    /// admits them to saturated providers by their weights.
    pub fn with_limiter(mut self, limiter: Arc<Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The limiter, if limits are enforced.
    pub fn limiter(&self) -> Option<&Arc<Limiter>> {
        self.limiter.as_ref()
    }

    fn weight(&self, scope: &TenantScope) -> u32 {
        self.limiter.as_ref().map_or(1, |l| l.weight(scope))
    }

    /// Reserves a call's estimated tokens and cost; a refusal is audited.
    async fn reserve(
        &self,
        scope: &TenantScope,
        model: &Model,
        action: AuditAction,
        est: Tokens,
    ) -> Result<Option<Reservation>, GatewayError> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        let cost = cost_nanos(
            est,
            model.price_input,
            model.price_output,
            model.price_cached,
        );
        match limiter.reserve(scope, est.input + est.output, cost).await {
            Ok(r) => Ok(Some(r)),
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
        let write = self.recorder.store.record_usage_row(scope, usage);
        self.recorder.tasks.spawn(async move {
            if let Err(e) = write.await {
                tracing::error!(error = %e, "could not record a tool call in the ledger");
            }
        });
    }

    /// Arms the cross-tenant tripwire: outbound requests are scanned with
    /// `canaries`, and hits reported to `alarm`.
    pub fn with_tripwire(
        mut self,
        canaries: Arc<CanaryScanner>,
        alarm: Arc<dyn LeakAlarm>,
    ) -> Self {
        self.canaries = canaries;
        self.alarm = Some(alarm);
        self
    }

    /// Checks an outbound request (model or tool) for another tenant's
    /// canary; on a hit, raises the alarm and refuses.
    pub async fn check_outbound(
        &self,
        scope: &TenantScope,
        bytes: &[u8],
        channel: Channel,
    ) -> Result<(), GatewayError> {
        if self.canaries.is_empty() {
            return Ok(());
        }
        let Some(victim) = self.canaries.check(scope.partition(), bytes) else {
            return Ok(());
        };
        tracing::error!(tenant = %scope.tenant(), channel = channel.as_str(), "blocked a request carrying another tenant's canary");
        if let Some(alarm) = &self.alarm {
            alarm.raise(scope, victim, channel).await;
        }
        Err(GatewayError::CrossTenantLeak)
    }

    /// Waits until every started call (streams included) has finished and
    /// its usage row and audit event are written. Call it after the HTTP
    /// server has stopped accepting requests; calls started afterwards are
    /// still recorded but no longer waited for.
    pub async fn drain(&self) {
        self.recorder.tasks.close();
        self.recorder.tasks.wait().await;
        self.recorder.tasks.reopen();
    }

    fn forget_settings(&self, scope: &TenantScope) {
        if let Ok(mut cache) = self.settings_cache.lock() {
            cache.remove(&scope.partition());
        }
    }

    /// The models this tenant may use: allowed for it and served from its region.
    pub async fn models(&self, scope: &TenantScope) -> Result<Vec<Model>, GatewayError> {
        let allowed = self.settings(scope).await?.allowed_models;
        Ok(self
            .catalog
            .all()
            .filter(|m| allowed.as_ref().is_none_or(|a| a.contains(&m.name)))
            .filter(|m| &m.provider.region == scope.region())
            .cloned()
            .collect())
    }

    /// The tenant's gateway settings (cached per tenant incarnation).
    pub async fn settings(&self, scope: &TenantScope) -> Result<GatewaySettings, GatewayError> {
        if let Ok(cache) = self.settings_cache.lock()
            && let Some((s, at)) = cache.get(&scope.partition())
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(s.clone());
        }
        let settings = self
            .store
            .settings(scope)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        if let Ok(mut cache) = self.settings_cache.lock() {
            cache.insert(scope.partition(), (settings.clone(), Instant::now()));
        }
        Ok(settings)
    }

    /// After a settings write: the cached settings go whatever the outcome
    /// (a failed write may still have committed).
    fn settings_changed(
        &self,
        scope: &TenantScope,
        result: Result<(), crate::store::GatewayStoreError>,
    ) -> Result<(), GatewayError> {
        self.forget_settings(scope);
        result.map_err(|e| GatewayError::Internal(e.to_string()))
    }

    /// Turns keeping prompts in the tenant's audit chain on or off.
    pub async fn set_audit_prompts(
        &self,
        scope: &TenantScope,
        on: bool,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_audit_prompts(scope, on, event).await;
        self.settings_changed(scope, result)
    }

    /// Sets or clears the tenant's message retention.
    pub async fn set_retention(
        &self,
        scope: &TenantScope,
        days: Option<u32>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_retention(scope, days, event).await;
        self.settings_changed(scope, result)
    }

    /// Sets or clears the tenant's approval webhook.
    pub async fn set_approval_webhook(
        &self,
        scope: &TenantScope,
        url: Option<String>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_approval_webhook(scope, url, event).await;
        self.settings_changed(scope, result)
    }

    /// Replaces the tenant's model allow-list.
    pub async fn set_allowed(
        &self,
        scope: &TenantScope,
        models: Option<Vec<String>>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayError> {
        let result = self.store.set_allowed_models(scope, models, event).await;
        self.settings_changed(scope, result)
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

    async fn resolve(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<(Model, GatewaySettings), GatewayError> {
        let model = self
            .catalog
            .get(name)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))?;
        let settings = self.settings(scope).await?;
        if settings
            .allowed_models
            .as_ref()
            .is_some_and(|a| !a.contains(&model.name))
        {
            return Err(GatewayError::ModelNotFound(name.to_owned()));
        }
        if &model.provider.region != scope.region() {
            let err = GatewayError::Residency {
                model: model.name.clone(),
                provider_region: model.provider.region.to_string(),
                tenant_region: scope.region().to_string(),
            };
            let event = NewAuditEvent::new(
                AuditAction::ModelCall,
                format!("model:{}", model.name),
                Outcome::Denied,
                scope.request_id().clone(),
            )
            .with_details(
                json!({"reason": "residency", "provider": model.provider.name,
                "provider_region": model.provider.region, "tenant_region": scope.region()}),
            );
            if let Err(e) = self.store.append_audit(scope, event).await {
                tracing::error!(error = %e, "could not audit a residency refusal");
            }
            return Err(err);
        }
        Ok((model, settings))
    }

    async fn key(
        &self,
        scope: &TenantScope,
        model: &Model,
    ) -> Result<Option<SecretString>, GatewayError> {
        match &model.provider.key {
            KeySource::None => Ok(None),
            KeySource::Platform(k) => Ok(Some(k.clone())),
            KeySource::Tenant(conn) => {
                let name = ConnectionName::parse(conn)
                    .map_err(|_| GatewayError::MissingCredential(conn.clone()))?;
                let purpose = format!("model:{}", model.name);
                match self
                    .vault
                    .use_credential(CredScope::Tenant(scope), &name, &purpose)
                    .await
                {
                    Ok(CredentialSecret::ApiKey(k)) | Ok(CredentialSecret::Bearer(k)) => {
                        Ok(Some(k))
                    }
                    Ok(CredentialSecret::Oauth2(o)) => Ok(Some(o.access_token)),
                    Ok(CredentialSecret::Basic { .. })
                    | Err(VaultError::NotFound)
                    | Err(VaultError::NeedsReauth) => {
                        Err(GatewayError::MissingCredential(conn.clone()))
                    }
                    Err(e) => Err(GatewayError::Internal(e.to_string())),
                }
            }
        }
    }

    /// Runs one chat completion for the scope's tenant.
    pub async fn chat(
        &self,
        scope: &TenantScope,
        body: Value,
    ) -> Result<ChatOutcome, GatewayError> {
        self.chat_in(scope, body, None).await
    }

    /// [`Gateway::chat`] on behalf of an agent run: the call's audit event
    /// names the agent and the run.
    pub async fn chat_for_run(
        &self,
        scope: &TenantScope,
        body: Value,
        agent: &str,
        run_id: &str,
    ) -> Result<ChatOutcome, GatewayError> {
        self.chat_in(scope, body, Some((agent.to_owned(), run_id.to_owned())))
            .await
    }

    async fn chat_in(
        &self,
        scope: &TenantScope,
        body: Value,
        run: Option<(String, String)>,
    ) -> Result<ChatOutcome, GatewayError> {
        let Value::Object(req) = body else {
            return Err(GatewayError::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        };
        let name = req
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                GatewayError::InvalidRequest("`model` is required and must be a string".into())
            })?
            .to_owned();
        // Malformed messages are refused here, before the model is resolved,
        // a limit is counted or anything is sent or billed.
        crate::validate::messages(req.get("messages"))?;
        let stream = match req.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(GatewayError::InvalidRequest(
                    "`stream` must be a boolean".into(),
                ));
            }
        };
        let wants_usage = req
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let choices = match req.get("n") {
            None | Some(Value::Null) => 1,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_CHOICES).contains(&n) => n,
                _ => {
                    return Err(GatewayError::InvalidRequest(format!(
                        "`n` must be an integer between 1 and {MAX_CHOICES}"
                    )));
                }
            },
        };
        let (model, settings) = self.resolve(scope, &name).await?;
        // What one choice may use: the request's limit, else the model's
        // maximum output (sent to Anthropic, which needs a limit, so the
        // estimate is what the provider is held to).
        let per_choice = req
            .get("max_completion_tokens")
            .or_else(|| req.get("max_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(model.max_output_tokens);
        let mut req = req;
        if model.provider.kind == ProviderKind::Anthropic
            && req.get("max_completion_tokens").is_none()
            && req.get("max_tokens").is_none()
        {
            req.insert("max_tokens".into(), json!(model.max_output_tokens));
        }
        let upstream_body = match model.provider.kind {
            ProviderKind::Openai | ProviderKind::AzureOpenai => {
                let mut b: Map<String, Value> = req.clone();
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
            started: Instant::now(),
            time: Timestamp::now(),
            stream,
            prompt: settings
                .audit_prompts
                .then(|| req.get("messages").cloned())
                .flatten(),
            run,
            reservation: Mutex::new(reservation),
        };
        // The call runs in its own task: a caller that goes away (a
        // cancelled run, a dropped request) cannot stop it half-way, so
        // what the provider bills is always recorded and settled. One that
        // goes away before the call is sent stops it from being sent.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let upstream = self.upstream.clone();
        let recorder = self.recorder.clone();
        // Fair-queue tags are per incarnation: a tenant created again under
        // a deleted one's id does not inherit its place in the queue.
        let tenant = scope.partition().to_string();
        let weight = self.weight(scope);
        self.recorder.tasks.spawn(async move {
            let mut slot = Slot::take(model.provider.permits.clone(), tenant, weight).await;
            if done_tx.is_closed() {
                // Nothing was sent: no usage, and the reservation (dropped
                // with `call`) is given back.
                return;
            }
            if let Err(e) = call.begin(&recorder).await {
                let _ = done_tx.send(Err(e));
                return;
            }
            let res = match upstream
                .send(
                    &model.provider,
                    Endpoint::Chat,
                    &model.upstream,
                    key.as_ref(),
                    &upstream_body,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    call.finish(&recorder, Billed::default(), e.usage_status());
                    let _ = done_tx.send(Err(e));
                    return;
                }
            };
            if !stream {
                let result = complete(&call, res).await;
                drop(slot);
                let answer = match result {
                    Ok((value, billed)) => {
                        call.finish(&recorder, billed, "ok");
                        Ok(ChatOutcome::Complete(value))
                    }
                    Err((e, billed)) => {
                        call.finish(&recorder, billed, e.usage_status());
                        Err(e)
                    }
                };
                let _ = done_tx.send(answer);
                return;
            }
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            let _ = done_tx.send(Ok(ChatOutcome::Stream(rx)));
            let (billed, status) = pump(&call, res, &tx, wants_usage, &mut slot).await;
            // Queued before the client's stream ends (dropping `tx`), so a
            // read that follows the stream sees the row.
            call.finish(&recorder, billed, status);
            drop(tx);
            drop(slot);
        });
        done_rx.await.unwrap_or_else(|_| {
            Err(GatewayError::Internal(
                "the model call's task stopped".into(),
            ))
        })
    }

    /// Embeds `inputs` with the embedding model `name` for the scope's
    /// tenant: the model's provider must be in the tenant's region; one
    /// usage row and one `model.embed` audit event per call. Vectors come
    /// back in input order, each of the model's dimensions.
    pub async fn embed(
        &self,
        scope: &TenantScope,
        name: &str,
        inputs: &[String],
    ) -> Result<Vec<Vec<f32>>, GatewayError> {
        let (model, dimensions) = self
            .catalog
            .embedding(name)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))?;
        if &model.provider.region != scope.region() {
            return Err(GatewayError::Residency {
                model: model.name.clone(),
                provider_region: model.provider.region.to_string(),
                tenant_region: scope.region().to_string(),
            });
        }
        if model.provider.kind == ProviderKind::Anthropic {
            return Err(GatewayError::InvalidRequest(
                "Anthropic providers have no embeddings endpoint".into(),
            ));
        }
        let joined = inputs.join("\n");
        self.check_outbound(scope, joined.as_bytes(), Channel::Model)
            .await?;
        let key = self.key(scope, &model).await?;
        let est = Tokens {
            input: estimate_tokens(joined.len()),
            output: 0,
            cached: 0,
        };
        let reservation = self
            .reserve(scope, &model, AuditAction::ModelEmbed, est)
            .await?;
        let call = Call {
            id: uuid::Uuid::now_v7().to_string(),
            est,
            action: AuditAction::ModelEmbed,
            scope: scope.clone(),
            model: model.clone(),
            started: Instant::now(),
            time: Timestamp::now(),
            stream: false,
            prompt: None,
            run: None,
            reservation: Mutex::new(reservation),
        };
        let body = json!({"model": model.upstream, "input": inputs, "dimensions": dimensions});
        let permit = model
            .provider
            .permits
            .acquire(&scope.partition().to_string(), self.weight(scope))
            .await;
        call.begin(&self.recorder).await?;
        let result = async {
            let res = self
                .upstream
                .send(
                    &model.provider,
                    Endpoint::Embeddings,
                    &model.upstream,
                    key.as_ref(),
                    &body,
                )
                .await?;
            let provider = &model.provider;
            let bytes = read_capped(res, provider.max_response_bytes, provider.timeout)
                .await
                .map_err(|e| read_error(provider, e))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
                GatewayError::Upstream("the provider answered with malformed JSON".into())
            })?;
            let tokens = openai_tokens(value.get("usage").unwrap_or(&Value::Null));
            let mut vectors: Vec<(u64, Vec<f32>)> = Vec::with_capacity(inputs.len());
            for item in value["data"].as_array().into_iter().flatten() {
                let index = item["index"].as_u64().unwrap_or(vectors.len() as u64);
                let v: Vec<f32> = item["embedding"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_f64)
                            .map(|x| x as f32)
                            .collect()
                    })
                    .unwrap_or_default();
                if v.len() != dimensions as usize {
                    return Err(GatewayError::Upstream(format!(
                        "the provider returned a vector of {} dimensions, not {dimensions}",
                        v.len()
                    )));
                }
                vectors.push((index, v));
            }
            if vectors.len() != inputs.len() {
                return Err(GatewayError::Upstream(format!(
                    "the provider returned {} vectors for {} inputs",
                    vectors.len(),
                    inputs.len()
                )));
            }
            vectors.sort_by_key(|(i, _)| *i);
            Ok((vectors.into_iter().map(|(_, v)| v).collect(), tokens))
        }
        .await;
        drop(permit);
        match result {
            Ok((vectors, tokens)) => {
                let billed = call.bill(Some(tokens), 0, 0);
                // No usage from the provider: the input it embedded.
                let billed = if tokens == Tokens::default() {
                    Billed {
                        tokens: est,
                        estimated: true,
                    }
                } else {
                    billed
                };
                call.finish(&self.recorder, billed, "ok");
                Ok(vectors)
            }
            Err(e) => {
                call.finish(&self.recorder, Billed::default(), e.usage_status());
                Err(e)
            }
        }
    }
}

fn read_error(provider: &crate::catalog::Provider, e: ReadError) -> GatewayError {
    match e {
        ReadError::TooLarge(_) => GatewayError::UpstreamTooLarge(provider.max_response_bytes),
        ReadError::Timeout => GatewayError::UpstreamTimeout(provider.timeout.as_secs()),
        ReadError::Failed(m) => GatewayError::Upstream(m),
    }
}

/// A non-streamed chat answer: read (at most the provider's
/// `max_response_bytes`, incrementally), checked, model renamed, usage
/// taken — or counted locally when the provider reports none. A failure
/// carries what it is billed.
async fn complete(
    call: &Call,
    res: reqwest::Response,
) -> Result<(Value, Billed), (GatewayError, Billed)> {
    let provider = &call.model.provider;
    let bytes = match read_capped(res, provider.max_response_bytes, provider.timeout).await {
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

/// The fast path for the common OpenAI chunk (a delta, `"usage":null`):
/// the upstream model name replaced by the alias without parsing and
/// re-serialising the JSON. `None` — take the full path — for anything
/// else: a chunk with usage, whitespace in the `model` member, an escaped
/// model name, a repeated member, or text that does not look like one
/// JSON object. The `"model":"` sequence cannot occur inside a JSON
/// string (quotes there are escaped), so the one found is the member.
fn rename_model(data: &str, alias_json: &str) -> Option<String> {
    const KEY: &str = "\"model\":\"";
    let t = data.trim();
    if !(t.starts_with('{') && t.ends_with('}')) {
        return None;
    }
    if t.matches("\"usage\"").count() != t.matches("\"usage\":null").count() {
        return None;
    }
    let start = t.find(KEY)?;
    if t[start + 1..].contains(KEY) {
        return None;
    }
    let value_start = start + KEY.len() - 1;
    let value_end = value_start + 1 + t[value_start + 1..].find('"')?;
    if t[value_start..value_end].contains('\\') {
        return None;
    }
    let mut out = String::with_capacity(t.len() + alias_json.len());
    out.push_str(&t[..value_start]);
    out.push_str(alias_json);
    out.push_str(&t[value_end + 1..]);
    Some(out)
}

/// What a stream has counted so far: the provider's usage, if it sent
/// any, and the local count (generated bytes, content events) that bills
/// it when it did not.
struct Counted {
    tokens: Tokens,
    reported: bool,
    generated: usize,
    events: u64,
    /// Bytes received from the provider (against `max_response_bytes`).
    received: usize,
}

impl Counted {
    fn billed(&self, call: &Call) -> Billed {
        call.bill(
            self.reported.then_some(self.tokens),
            self.generated,
            self.events,
        )
    }

    /// Counts one upstream event's text, for the local count.
    fn event(&mut self, data: &str) {
        let n = generated_bytes(data);
        if n > 0 {
            self.generated += n;
            self.events += 1;
        }
    }
}

/// Why a stream's next chunk did not come.
enum Stalled {
    /// The provider sent nothing within the idle limit.
    Upstream,
    /// The provider sent more than `max_response_bytes`.
    TooLarge,
}

/// The longest a stream may go without bytes moving.
fn idle_limit(call: &Call) -> Duration {
    let p = &call.model.provider;
    p.stream_idle.min(p.timeout)
}

/// The next chunk of the provider's stream. Waits [`SLOT_GRACE`] with the
/// slot held, then gives the slot up for the rest of the idle limit and
/// takes it back (fairly queued) once bytes come. Counts the bytes
/// against the provider's `max_response_bytes`.
async fn next_chunk<B: AsRef<[u8]>>(
    call: &Call,
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    slot: &mut Slot,
    counted: &mut Counted,
) -> Result<Option<B>, Stalled> {
    let idle = idle_limit(call);
    let next = match tokio::time::timeout(SLOT_GRACE.min(idle), body.next()).await {
        Ok(n) => n,
        Err(_) => {
            slot.release();
            let n = tokio::time::timeout(idle.saturating_sub(SLOT_GRACE), body.next())
                .await
                .map_err(|_| Stalled::Upstream)?;
            slot.hold().await;
            n
        }
    };
    match next {
        Some(Ok(chunk)) => {
            counted.received += chunk.as_ref().len();
            if counted.received > call.model.provider.max_response_bytes {
                return Err(Stalled::TooLarge);
            }
            Ok(Some(chunk))
        }
        // A failed read ends the stream like its end (the caller tells
        // an early end from a finished one).
        Some(Err(_)) | None => Ok(None),
    }
}

/// Why bytes could not be handed to the client.
enum Gone {
    /// The client went away.
    Disconnected,
    /// The client took nothing for the idle limit.
    Stalled,
}

/// Hands `batch` to the client. When the client is not taking bytes, the
/// slot is given up until it does (for at most the idle limit); after
/// each write, a stream over its tenant's share of a saturated provider
/// queues again.
async fn deliver(
    call: &Call,
    tx: &mpsc::Sender<Vec<u8>>,
    batch: Vec<u8>,
    slot: &mut Slot,
) -> Result<(), Gone> {
    match tx.try_reserve() {
        Ok(permit) => permit.send(batch),
        Err(mpsc::error::TrySendError::Closed(())) => return Err(Gone::Disconnected),
        Err(mpsc::error::TrySendError::Full(())) => {
            slot.release();
            match tokio::time::timeout(idle_limit(call), tx.reserve()).await {
                Ok(Ok(permit)) => permit.send(batch),
                Ok(Err(_)) => return Err(Gone::Disconnected),
                Err(_) => return Err(Gone::Stalled),
            }
            slot.hold().await;
        }
    }
    slot.share().await;
    Ok(())
}

/// Sends a last event (an error) if the client takes it soon; a client
/// that does not read just sees its stream end.
async fn tell(tx: &mpsc::Sender<Vec<u8>>, bytes: Vec<u8>, slot: &mut Slot) {
    slot.release();
    let _ = tokio::time::timeout(ERROR_EVENT_WAIT, tx.send(bytes)).await;
}

/// Reads the rest of an abandoned stream for its usage (the provider
/// bills the whole answer whether or not anyone reads it), for at most
/// the idle limit in all and within the size cap — an endless stream is
/// not read forever; what was counted so far bills it then.
async fn drain_usage<B: AsRef<[u8]>>(
    call: &Call,
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    parser: &mut sse::Parser,
    translator: &mut StreamTranslator,
    counted: &mut Counted,
    slot: &mut Slot,
) {
    let _ = tokio::time::timeout(
        idle_limit(call),
        drain(call, body, parser, translator, counted, slot),
    )
    .await;
}

async fn drain<B: AsRef<[u8]>>(
    call: &Call,
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    parser: &mut sse::Parser,
    translator: &mut StreamTranslator,
    counted: &mut Counted,
    slot: &mut Slot,
) {
    let provider = &call.model.provider;
    loop {
        let chunk = match next_chunk(call, body, slot, counted).await {
            Ok(Some(c)) => c,
            _ => return,
        };
        let Ok(events) = parser.feed(chunk.as_ref()) else {
            return;
        };
        for ev in events {
            match provider.kind {
                ProviderKind::Openai | ProviderKind::AzureOpenai => {
                    if ev.data.trim() == "[DONE]" {
                        return;
                    }
                    counted.event(&ev.data);
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data)
                        && let Some(u) = v.get("usage").filter(|u| !u.is_null())
                    {
                        counted.tokens = openai_tokens(u);
                        counted.reported = true;
                    }
                }
                ProviderKind::Anthropic => {
                    counted.event(&ev.data);
                    if translator.on_event(&ev).is_err() {
                        return;
                    }
                    counted.tokens = translator.tokens;
                    counted.reported = translator.tokens != Tokens::default();
                    if translator.finished {
                        return;
                    }
                }
            }
        }
        // Bytes moved: between reads, over its share the drain queues again.
        slot.share().await;
    }
}

fn error_event(code: &str, message: &str) -> Vec<u8> {
    sse::data(
        &json!({"error": {"message": message, "type": "upstream_error", "code": code}}).to_string(),
    )
}

/// Moves a streamed answer from the provider to the client, translating
/// and counting tokens; returns what to bill and the status. Holds the
/// provider slot only while bytes move; cuts a stream idle (either way)
/// past the provider's `stream_idle_timeout_s` or larger than its
/// `max_response_bytes`. Stops reading the provider when the client goes
/// away or stalls, after reading on for the usage.
async fn pump(
    call: &Call,
    res: reqwest::Response,
    tx: &mpsc::Sender<Vec<u8>>,
    wants_usage: bool,
    slot: &mut Slot,
) -> (Billed, &'static str) {
    let provider = &call.model.provider;
    let alias = call.model.name.clone();
    let alias_json = Value::String(alias.clone()).to_string();
    let mut body = res.bytes_stream();
    let mut parser = sse::Parser::with_limit(provider.max_response_bytes);
    let mut counted = Counted {
        tokens: Tokens::default(),
        reported: false,
        generated: 0,
        events: 0,
        received: 0,
    };
    let mut translator = StreamTranslator::new(&alias, now_unix());
    let mut done = false;
    loop {
        let chunk = match next_chunk(call, &mut body, slot, &mut counted).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(Stalled::Upstream) => {
                tell(
                    tx,
                    error_event("upstream_timeout", "the model provider stopped sending"),
                    slot,
                )
                .await;
                return (counted.billed(call), "upstream_timeout");
            }
            Err(Stalled::TooLarge) => {
                tell(tx, too_large_event(provider), slot).await;
                return (counted.billed(call), "upstream_too_large");
            }
        };
        let Ok(events) = parser.feed(&chunk) else {
            tell(tx, too_large_event(provider), slot).await;
            return (counted.billed(call), "upstream_too_large");
        };
        // Everything one upstream read produced goes to the client as one
        // write: fewer channel hand-offs and body frames per stream.
        let mut batch: Vec<u8> = Vec::new();
        for ev in events {
            let out: Vec<Vec<u8>> = match provider.kind {
                ProviderKind::Openai | ProviderKind::AzureOpenai => {
                    if ev.data.trim() == "[DONE]" {
                        done = true;
                        vec![]
                    } else if let Some(renamed) = rename_model(&ev.data, &alias_json) {
                        counted.event(&ev.data);
                        vec![sse::data(&renamed)]
                    } else {
                        counted.event(&ev.data);
                        match serde_json::from_str::<Value>(&ev.data) {
                            Ok(Value::Object(mut obj)) => {
                                if let Some(u) = obj.get("usage").filter(|u| !u.is_null()) {
                                    counted.tokens = openai_tokens(u);
                                    counted.reported = true;
                                }
                                let usage_only = obj
                                    .get("choices")
                                    .and_then(Value::as_array)
                                    .is_some_and(Vec::is_empty);
                                obj.insert("model".into(), Value::String(alias.clone()));
                                if usage_only && !wants_usage {
                                    vec![]
                                } else {
                                    vec![sse::data(&Value::Object(obj).to_string())]
                                }
                            }
                            _ => {
                                // What came before the bad event still reaches the client.
                                batch.extend(error_event(
                                    "upstream_error",
                                    "the provider sent malformed JSON",
                                ));
                                tell(tx, batch, slot).await;
                                return (counted.billed(call), "upstream_error");
                            }
                        }
                    }
                }
                ProviderKind::Anthropic => {
                    counted.event(&ev.data);
                    match translator.on_event(&ev) {
                        Ok(chunks) => {
                            counted.tokens = translator.tokens;
                            counted.reported = translator.tokens != Tokens::default();
                            if translator.finished {
                                done = true;
                            }
                            chunks.iter().map(|c| sse::data(&c.to_string())).collect()
                        }
                        Err(e) => {
                            batch.extend(error_event("upstream_error", &e.to_string()));
                            tell(tx, batch, slot).await;
                            return (counted.billed(call), "upstream_error");
                        }
                    }
                }
            };
            for bytes in out {
                batch.extend_from_slice(&bytes);
            }
        }
        if done {
            // The end of the stream rides in the same write.
            if provider.kind == ProviderKind::Anthropic && wants_usage {
                batch.extend_from_slice(&sse::data(&translator.usage_chunk().to_string()));
            }
            batch.extend_from_slice(&sse::data("[DONE]"));
        }
        if !batch.is_empty()
            && let Err(gone) = deliver(call, tx, batch, slot).await
        {
            // The provider bills the whole answer whether or not anyone
            // reads it: keep reading for the usage it reports at the end,
            // so the row is exact. A stalled client is treated the same.
            if !done {
                drain_usage(
                    call,
                    &mut body,
                    &mut parser,
                    &mut translator,
                    &mut counted,
                    slot,
                )
                .await;
            }
            let status = match gone {
                Gone::Disconnected => "client_disconnected",
                Gone::Stalled => "client_stalled",
            };
            return (counted.billed(call), status);
        }
        if done {
            break;
        }
    }
    if !done {
        tell(
            tx,
            error_event(
                "upstream_stream_cut",
                "the model provider ended the stream early",
            ),
            slot,
        )
        .await;
        return (counted.billed(call), "upstream_error");
    }
    (counted.billed(call), "ok")
}

fn too_large_event(provider: &crate::catalog::Provider) -> Vec<u8> {
    error_event(
        "upstream_too_large",
        &GatewayError::UpstreamTooLarge(provider.max_response_bytes).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::{generated_bytes, rename_model};

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

    #[test]
    fn the_fast_path_renames_only_a_plain_model_member() {
        let alias = "\"small\"";
        assert_eq!(
            rename_model(
                r#"{"id":"c1","model":"gpt-4o-mini-2024-07-18","choices":[{"delta":{"content":"\"model\":\"x\""}}],"usage":null}"#,
                alias
            )
            .as_deref(),
            Some(
                r#"{"id":"c1","model":"small","choices":[{"delta":{"content":"\"model\":\"x\""}}],"usage":null}"#
            )
        );
        // Usage, whitespace, escapes, repeats and non-objects take the full path.
        for data in [
            r#"{"model":"m","choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"model": "m","choices":[]}"#,
            r#"{"model":"m\"x","choices":[]}"#,
            r#"{"model":"m","x":{"model":"n"}}"#,
            r#"not json "model":"m""#,
        ] {
            assert_eq!(rename_model(data, alias), None, "{data}");
        }
    }
}
