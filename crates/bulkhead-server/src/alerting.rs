//! Per-tenant alert rules, evaluated in process over sliding windows.
//!
//! Each tenant that has had an event recently has a [`TenantAlerts`]: its
//! rules (the platform's `[[alerts]]`, replaced by name by its own from
//! `PUT /v1/alerts`), and for each rule a ring of 60 buckets spanning the
//! rule's window (a bucket is `ceil(window_s / 60)` seconds), so memory
//! is bounded per active tenant and rule, and nothing is held for an idle
//! tenant (its state is dropped once every window is empty and nothing
//! fires). A rule is evaluated when one of its events arrives and on a
//! one-second tick, so it also resolves as its window slides.
//!
//! A rule fires when its value goes above its threshold with at least
//! `min_samples` events in the window, and resolves when the value is at
//! or below it again: one transition each way, whatever the event rate.
//! A transition is recorded (the alert event with its `alert.fired` or
//! `alert.resolved` audit event, in one transaction), counted in the
//! tenant's metrics, and posted, signed, to the tenant's webhook and to
//! the operator's; a single worker handles transitions in order.
//! `cross_tenant_block` rules are the operator's: tenants cannot set one,
//! and they are posted to the operator's webhook only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use bulkhead_auth::observe::{CrossTenant, ModelCall, Observer, RunEnd, ToolCall};
use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::alert::{AlertMetric, AlertRule, LatencyOf, Threshold};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{SecretString, TenantId, TenantUid, Timestamp};
use bulkhead_store::{ControlStore, TenantStore};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

use crate::tenant_metrics::TenantMetrics;

/// Buckets per window.
const BUCKETS: usize = 60;
/// Latency histogram bins per doubling: a p99 is known within ~9 %.
const BINS_PER_OCTAVE: f64 = 8.0;
/// Bins from 1 ms to past an hour (2^22 ms).
const BINS: usize = 22 * 8;

/// The built-in operator rule: any blocked cross-tenant access in five
/// minutes fires, unless `[[alerts]]` has a `cross_tenant_block` rule.
fn builtin_cross_tenant() -> AlertRule {
    AlertRule {
        name: "cross_tenant_block".into(),
        metric: AlertMetric::CrossTenantBlock,
        of: None,
        threshold: Threshold::Number(0.0),
        window_s: 300,
        min_samples: 1,
    }
}

/// A tenant's own alert settings, as `PUT /v1/alerts` takes them and the
/// partition stores them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantAlertSettings {
    /// The tenant's rules; one with a platform rule's name replaces it.
    #[serde(default)]
    pub rules: Vec<AlertRule>,
    /// Where the tenant's transitions are posted (`null`: nowhere).
    #[serde(default)]
    pub webhook: Option<String>,
}

/// A rule ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
struct Compiled {
    rule: AlertRule,
    threshold: f64,
    /// Seconds per bucket.
    width: u64,
}

impl Compiled {
    fn new(rule: AlertRule) -> Option<Self> {
        let threshold = rule.check().ok()?;
        let width = rule.window_s.div_ceil(BUCKETS as u64).max(1);
        Some(Self {
            rule,
            threshold,
            width,
        })
    }
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Which bucket of time this is (`now / width`); stale ones are reset.
    epoch: u64,
    total: u64,
    bad: u64,
    nanos: u64,
    bins: Option<Box<[u32; BINS]>>,
}

fn bin_of(ms: f64) -> usize {
    if ms <= 1.0 {
        return 0;
    }
    ((ms.log2() * BINS_PER_OCTAVE).ceil() as usize).min(BINS - 1)
}

fn bin_upper_ms(bin: usize) -> f64 {
    (bin as f64 / BINS_PER_OCTAVE).exp2()
}

/// One rule's window and state.
#[derive(Debug)]
struct RuleState {
    compiled: Compiled,
    ring: Vec<Bucket>,
    firing: bool,
}

/// One sample for a rule.
#[derive(Debug, Clone, Copy)]
struct Sample {
    bad: bool,
    nanos: u64,
    latency_ms: Option<f64>,
}

impl RuleState {
    fn new(compiled: Compiled) -> Self {
        Self {
            compiled,
            ring: vec![Bucket::default(); BUCKETS],
            firing: false,
        }
    }

    fn bucket(&mut self, now_s: u64) -> &mut Bucket {
        let epoch = now_s / self.compiled.width;
        let b = &mut self.ring[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b
    }

    fn add(&mut self, now_s: u64, s: Sample) {
        let b = self.bucket(now_s);
        b.total += 1;
        b.bad += u64::from(s.bad);
        b.nanos = b.nanos.saturating_add(s.nanos);
        if let Some(ms) = s.latency_ms {
            let bins = b.bins.get_or_insert_with(|| Box::new([0; BINS]));
            bins[bin_of(ms)] += 1;
        }
    }

    /// The buckets still inside the window at `now_s`.
    fn live(&self, now_s: u64) -> impl Iterator<Item = &Bucket> {
        let epoch = now_s / self.compiled.width;
        let oldest = epoch.saturating_sub(BUCKETS as u64 - 1);
        self.ring
            .iter()
            .filter(move |b| b.epoch >= oldest && b.epoch <= epoch && b.total > 0)
    }

    /// The rule's value and sample count over the window.
    fn value(&self, now_s: u64) -> (f64, u64) {
        let (mut total, mut bad, mut nanos) = (0u64, 0u64, 0u64);
        let mut bins = [0u64; BINS];
        for b in self.live(now_s) {
            total += b.total;
            bad += b.bad;
            nanos = nanos.saturating_add(b.nanos);
            if let Some(bb) = &b.bins {
                for (acc, n) in bins.iter_mut().zip(bb.iter()) {
                    *acc += u64::from(*n);
                }
            }
        }
        let value = match self.compiled.rule.metric {
            AlertMetric::ErrorRate | AlertMetric::ToolErrorRate => {
                if total == 0 {
                    0.0
                } else {
                    bad as f64 / total as f64
                }
            }
            AlertMetric::SpendUsd => nanos as f64 / 1e9,
            AlertMetric::CrossTenantBlock => total as f64,
            AlertMetric::P99LatencyMs => {
                // The smallest bin bound at or above 99 % of the samples.
                let rank = (total as f64 * 0.99).ceil() as u64;
                let mut seen = 0;
                let mut p99 = 0.0;
                if total > 0 {
                    for (i, n) in bins.iter().enumerate() {
                        seen += n;
                        if seen >= rank {
                            p99 = bin_upper_ms(i);
                            break;
                        }
                    }
                }
                p99
            }
        };
        (value, total)
    }

    fn idle(&self, now_s: u64) -> bool {
        !self.firing && self.live(now_s).next().is_none()
    }

    /// The transition due at `now_s`, if any: `Some(true)` fired,
    /// `Some(false)` resolved.
    fn evaluate(&mut self, now_s: u64) -> Option<(bool, f64, u64)> {
        let (value, samples) = self.value(now_s);
        let c = &self.compiled;
        if !self.firing && samples >= c.rule.min_samples && value > c.threshold {
            self.firing = true;
            return Some((true, value, samples));
        }
        if self.firing && value <= c.threshold {
            self.firing = false;
            return Some((false, value, samples));
        }
        None
    }
}

/// One tenant's rules and windows.
struct TenantAlerts {
    /// The scope of the tenant's latest event: transitions are recorded
    /// under it.
    scope: TenantScope,
    rules: Vec<RuleState>,
    webhook: Option<String>,
}

/// What the worker records and posts.
struct Transition {
    scope: TenantScope,
    rule: AlertRule,
    fired: bool,
    value: f64,
    samples: u64,
    webhook: Option<String>,
}

/// What a rule's events are.
#[derive(Clone, Copy)]
enum Event {
    Request { error: bool },
    Model { nanos: u64, ms: f64 },
    Tool { failed: bool, ms: f64 },
    Run { ms: f64 },
    CrossTenant,
}

impl Event {
    /// The sample `metric` takes from this event, if it watches it.
    fn sample(self, metric: AlertMetric, of: Option<LatencyOf>) -> Option<Sample> {
        let plain = |bad| Sample {
            bad,
            nanos: 0,
            latency_ms: None,
        };
        let latency = |ms| Sample {
            bad: false,
            nanos: 0,
            latency_ms: Some(ms),
        };
        match (self, metric, of) {
            (Event::Request { error }, AlertMetric::ErrorRate, _) => Some(plain(error)),
            (Event::Tool { failed, .. }, AlertMetric::ToolErrorRate, _) => Some(plain(failed)),
            (Event::Model { nanos, .. }, AlertMetric::SpendUsd, _) => Some(Sample {
                bad: false,
                nanos,
                latency_ms: None,
            }),
            (Event::Model { ms, .. }, AlertMetric::P99LatencyMs, Some(LatencyOf::Model))
            | (Event::Tool { ms, .. }, AlertMetric::P99LatencyMs, Some(LatencyOf::Tool))
            | (Event::Run { ms }, AlertMetric::P99LatencyMs, Some(LatencyOf::Run)) => {
                Some(latency(ms))
            }
            (Event::CrossTenant, AlertMetric::CrossTenantBlock, _) => Some(plain(true)),
            _ => None,
        }
    }
}

/// Where alerts go, and how they are signed.
pub struct AlertSinks {
    /// The `[alerting] signing_key`; without it nothing is posted.
    pub key: Option<SecretString>,
    /// `[alerting] operator_webhook`.
    pub operator_webhook: Option<String>,
    /// The tenant's webhooks are posted through the egress guard.
    pub egress: bulkhead_egress::Egress,
}

/// The alert engine; also the server's [`Observer`], feeding the
/// per-tenant metrics too.
pub struct AlertEngine {
    platform: Vec<Compiled>,
    tenants: RwLock<HashMap<TenantUid, Arc<Mutex<TenantAlerts>>>>,
    metrics: Arc<TenantMetrics>,
    store: Arc<dyn TenantStore>,
    control: Arc<dyn ControlStore>,
    operator: Option<OperatorScope>,
    queue: mpsc::UnboundedSender<Transition>,
}

fn now_s() -> u64 {
    Timestamp::now().unix_seconds().max(0) as u64
}

/// The effective rules: the platform's, each replaced by the tenant's
/// rule of the same name, then the tenant's others.
fn effective(platform: &[Compiled], own: &[AlertRule]) -> Vec<Compiled> {
    let mut out: Vec<Compiled> = platform
        .iter()
        .filter(|p| !own.iter().any(|o| o.name == p.rule.name))
        .cloned()
        .collect();
    out.extend(own.iter().cloned().filter_map(Compiled::new));
    out
}

impl AlertEngine {
    /// An engine over the platform's rules (`[[alerts]]`, already
    /// validated); starts its worker and its tick.
    pub fn start(
        rules: &[AlertRule],
        sinks: AlertSinks,
        metrics: Arc<TenantMetrics>,
        store: Arc<dyn TenantStore>,
        control: Arc<dyn ControlStore>,
        operator: Option<OperatorScope>,
    ) -> Result<Arc<Self>, String> {
        let mut platform: Vec<Compiled> = rules.iter().cloned().filter_map(Compiled::new).collect();
        if !platform
            .iter()
            .any(|c| c.rule.metric == AlertMetric::CrossTenantBlock)
        {
            platform.extend(Compiled::new(builtin_cross_tenant()));
        }
        let (queue, rx) = mpsc::unbounded_channel();
        let engine = Arc::new(Self {
            platform,
            tenants: RwLock::new(HashMap::new()),
            metrics: metrics.clone(),
            store: store.clone(),
            control,
            operator,
            queue,
        });
        let worker = Worker {
            sinks,
            client: crate::alerts::webhook_client()?,
            metrics,
            store,
        };
        tokio::spawn(worker.run(rx));
        let weak = Arc::downgrade(&engine);
        tokio::spawn(tick(weak));
        Ok(engine)
    }

    /// The platform's rules, as written.
    pub fn platform_rules(&self) -> Vec<AlertRule> {
        self.platform.iter().map(|c| c.rule.clone()).collect()
    }

    /// Whether `name` is a platform `cross_tenant_block` rule's (which a
    /// tenant may not replace).
    pub fn is_operator_rule(&self, name: &str) -> bool {
        self.platform
            .iter()
            .any(|c| c.rule.name == name && c.rule.metric == AlertMetric::CrossTenantBlock)
    }

    /// The names of the tenant's rules firing now.
    pub fn firing(&self, scope: &TenantScope) -> Vec<String> {
        let Some(t) = self.existing(scope.partition()) else {
            return Vec::new();
        };
        let t = t.lock().unwrap_or_else(PoisonError::into_inner);
        t.rules
            .iter()
            .filter(|r| r.firing)
            .map(|r| r.compiled.rule.name.clone())
            .collect()
    }

    fn existing(&self, uid: TenantUid) -> Option<Arc<Mutex<TenantAlerts>>> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&uid)
            .cloned()
    }

    /// The tenant's state, created (with the platform's rules, the
    /// tenant's own loading in the background) on its first event.
    fn tenant(self: &Arc<Self>, scope: &TenantScope) -> Arc<Mutex<TenantAlerts>> {
        if let Some(t) = self.existing(scope.partition()) {
            return t;
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = tenants.get(&scope.partition()) {
            return t.clone();
        }
        let t = Arc::new(Mutex::new(TenantAlerts {
            scope: scope.clone(),
            rules: self.platform.iter().cloned().map(RuleState::new).collect(),
            webhook: None,
        }));
        tenants.insert(scope.partition(), t.clone());
        drop(tenants);
        let (engine, scope) = (self.clone(), scope.clone());
        tokio::spawn(async move {
            match engine.store.alert_rules(&scope).await {
                Ok(Some(text)) => match serde_json::from_str::<TenantAlertSettings>(&text) {
                    Ok(s) => engine.install(&scope, &s),
                    Err(e) => tracing::error!(error = %e, "stored alert rules do not parse"),
                },
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "could not read a tenant's alert rules"),
            }
        });
        t
    }

    /// Puts the tenant's own rules in force (after `PUT /v1/alerts`, or
    /// once read from its partition). A rule whose definition did not
    /// change keeps its window and state; a removed rule is dropped.
    pub fn install(self: &Arc<Self>, scope: &TenantScope, settings: &TenantAlertSettings) {
        let t = self.tenant_without_load(scope);
        let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
        let mut old = std::mem::take(&mut t.rules);
        t.rules = effective(&self.platform, &settings.rules)
            .into_iter()
            .map(|c| match old.iter().position(|r| r.compiled == c) {
                Some(i) => old.swap_remove(i),
                None => RuleState::new(c),
            })
            .collect();
        for gone in old.iter().filter(|r| r.firing) {
            self.metrics
                .clear_firing(scope.tenant().as_str(), &gone.compiled.rule.name);
        }
        t.webhook = settings.webhook.clone();
    }

    fn tenant_without_load(&self, scope: &TenantScope) -> Arc<Mutex<TenantAlerts>> {
        if let Some(t) = self.existing(scope.partition()) {
            return t;
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        tenants
            .entry(scope.partition())
            .or_insert_with(|| {
                Arc::new(Mutex::new(TenantAlerts {
                    scope: scope.clone(),
                    rules: self.platform.iter().cloned().map(RuleState::new).collect(),
                    webhook: None,
                }))
            })
            .clone()
    }

    /// Drops a deleted tenant's state.
    pub fn forget(&self, uid: TenantUid) {
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&uid);
    }

    fn feed(self: &Arc<Self>, scope: &TenantScope, event: Event) {
        let t = self.tenant(scope);
        let now = now_s();
        let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
        t.scope = scope.clone();
        let webhook = t.webhook.clone();
        for r in t.rules.iter_mut() {
            let Some(sample) = event.sample(r.compiled.rule.metric, r.compiled.rule.of) else {
                continue;
            };
            r.add(now, sample);
            if let Some((fired, value, samples)) = r.evaluate(now) {
                let _ = self.queue.send(Transition {
                    scope: scope.clone(),
                    rule: r.compiled.rule.clone(),
                    fired,
                    value,
                    samples,
                    webhook: webhook.clone(),
                });
            }
        }
    }

    /// Evaluates every active tenant's rules (the tick), and drops the
    /// state of tenants with nothing left in any window.
    fn sweep(&self) {
        let now = now_s();
        let all: Vec<(TenantUid, Arc<Mutex<TenantAlerts>>)> = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(u, t)| (*u, t.clone()))
            .collect();
        let mut idle = Vec::new();
        for (uid, t) in all {
            let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
            let (scope, webhook) = (t.scope.clone(), t.webhook.clone());
            for r in t.rules.iter_mut() {
                if let Some((fired, value, samples)) = r.evaluate(now) {
                    let _ = self.queue.send(Transition {
                        scope: scope.clone(),
                        rule: r.compiled.rule.clone(),
                        fired,
                        value,
                        samples,
                        webhook: webhook.clone(),
                    });
                }
            }
            // A tenant with its own webhook or rules keeps them only in
            // its partition: they are read again on its next event.
            if t.rules.iter().all(|r| r.idle(now)) {
                idle.push(uid);
            }
        }
        if !idle.is_empty() {
            let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
            for uid in idle {
                let drop_it = tenants.get(&uid).is_some_and(|t| {
                    t.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .rules
                        .iter()
                        .all(|r| r.idle(now))
                });
                if drop_it {
                    tenants.remove(&uid);
                }
            }
        }
    }

    /// An answered tenant-plane request (the request middleware).
    pub fn request(self: &Arc<Self>, scope: &TenantScope, status: u16, code: &str) {
        self.metrics.request(scope.tenant().as_str(), status, code);
        self.feed(
            scope,
            Event::Request {
                error: status >= 500,
            },
        );
    }

    /// A credential presented with another tenant's `X-Tenant-ID`: the
    /// credential's tenant is named by the failure, not by a scope, so
    /// one is taken as the operator (as the timed sweeps do).
    pub fn header_mismatch(self: &Arc<Self>, tenant: &TenantId) {
        self.metrics
            .cross_tenant(tenant.as_str(), CrossTenant::TenantHeaderMismatch);
        let Some(op) = self.operator.clone() else {
            return;
        };
        let (engine, tenant) = (self.clone(), tenant.clone());
        tokio::spawn(async move {
            match engine.control.get_tenant(&op, &tenant).await {
                Ok(t) => {
                    let scope = op.act_for_tenant(&t);
                    engine.feed(&scope, Event::CrossTenant);
                }
                Err(e) => tracing::error!(error = %e, "could not look up a tenant for an alert"),
            }
        });
    }
}

/// Shares the engine as the gateway's observer.
pub struct EngineObserver(pub Arc<AlertEngine>);

impl Observer for EngineObserver {
    fn model_call(&self, scope: &TenantScope, call: &ModelCall<'_>) {
        self.0.metrics.model_call(scope.tenant().as_str(), call);
        self.0.feed(
            scope,
            Event::Model {
                nanos: call.cost_nanos,
                ms: call.latency.as_secs_f64() * 1000.0,
            },
        );
    }

    fn tool_call(&self, scope: &TenantScope, call: &ToolCall<'_>) {
        self.0.metrics.tool_call(scope.tenant().as_str(), call);
        self.0.feed(
            scope,
            Event::Tool {
                failed: call.outcome != "ok",
                ms: call.latency.as_secs_f64() * 1000.0,
            },
        );
    }

    fn run_end(&self, scope: &TenantScope, run: &RunEnd<'_>) {
        self.0.metrics.run_end(scope.tenant().as_str(), run);
        self.0.feed(
            scope,
            Event::Run {
                ms: run.duration.as_secs_f64() * 1000.0,
            },
        );
    }

    fn cross_tenant(&self, scope: &TenantScope, kind: CrossTenant) {
        self.0.metrics.cross_tenant(scope.tenant().as_str(), kind);
        self.0.feed(scope, Event::CrossTenant);
    }
}

/// Evaluates every second while the engine lives.
async fn tick(engine: Weak<AlertEngine>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine.sweep();
    }
}

/// Records and posts transitions, one at a time, in order.
struct Worker {
    sinks: AlertSinks,
    client: reqwest::Client,
    metrics: Arc<TenantMetrics>,
    store: Arc<dyn TenantStore>,
}

/// A transition's body: what the webhooks get and the events list shows.
fn body(t: &Transition) -> serde_json::Value {
    let value = match t.rule.metric {
        AlertMetric::SpendUsd => json!(format!("{:.6}", t.value)),
        _ => json!(t.value),
    };
    json!({
        "type": if t.fired { "alert.fired" } else { "alert.resolved" },
        "tenant": t.scope.tenant().as_str(),
        "rule": t.rule.name,
        "metric": t.rule.metric.as_str(),
        "of": t.rule.of.map(LatencyOf::as_str),
        "value": value,
        "threshold": t.rule.threshold,
        "window_s": t.rule.window_s,
        "min_samples": t.rule.min_samples,
        "samples": t.samples,
        "at": Timestamp::now().to_string(),
    })
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Transition>) {
        while let Some(t) = rx.recv().await {
            self.handle(t).await;
        }
    }

    async fn handle(&self, t: Transition) {
        let tenant = t.scope.tenant().as_str().to_owned();
        self.metrics.alert(&tenant, &t.rule.name, t.fired);
        let body = body(&t);
        let text = body.to_string();
        let action = if t.fired {
            AuditAction::AlertFired
        } else {
            AuditAction::AlertResolved
        };
        let event = NewAuditEvent::new(
            action,
            format!("alert:{}", t.rule.name),
            Outcome::Success,
            t.scope.request_id().clone(),
        )
        .with_details(json!({
            "rule": t.rule.name, "metric": t.rule.metric.as_str(),
            "of": t.rule.of.map(LatencyOf::as_str), "value": body["value"],
            "threshold": t.rule.threshold, "window_s": t.rule.window_s,
            "samples": t.samples,
        }));
        if let Err(e) = self.store.record_alert(&t.scope, text.clone(), event).await {
            tracing::error!(error = %e, rule = %t.rule.name, "could not record an alert");
        }
        let Some(key) = &self.sinks.key else { return };
        let bytes = text.into_bytes();
        let operator_only = t.rule.metric == AlertMetric::CrossTenantBlock;
        if let Some(url) = t.webhook.as_ref().filter(|_| !operator_only) {
            let guarded = self.sinks.egress.client(bulkhead_egress::ClientOptions {
                timeout: Some(Duration::from_secs(5)),
                ..Default::default()
            });
            let outcome = match guarded {
                Ok(client) => {
                    crate::alerts::deliver_via(
                        || {
                            client
                                .request_str(reqwest::Method::POST, url)
                                .map_err(|e| e.to_string())
                        },
                        key,
                        &bytes,
                    )
                    .await
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, rule = %t.rule.name, "could not post an alert to the tenant's webhook");
            }
        }
        if let Some(url) = &self.sinks.operator_webhook {
            let outcome =
                crate::alerts::deliver_via(|| Ok(self.client.post(url)), key, &bytes).await;
            if let Err(e) = outcome {
                tracing::warn!(error = %e, rule = %t.rule.name, "could not post an alert to the operator's webhook");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(v: serde_json::Value) -> RuleState {
        RuleState::new(Compiled::new(serde_json::from_value(v).unwrap()).unwrap())
    }

    fn plain(bad: bool) -> Sample {
        Sample {
            bad,
            nanos: 0,
            latency_ms: None,
        }
    }

    #[test]
    fn a_rule_fires_once_and_resolves_once() {
        let mut r = state(
            json!({"name":"e","metric":"error_rate","threshold":0.02,"window_s":60,"min_samples":50}),
        );
        let t = 1_000_000;
        // 49 samples at 100 % errors: under min_samples, nothing.
        for _ in 0..49 {
            r.add(t, plain(true));
            assert_eq!(r.evaluate(t), None);
        }
        r.add(t, plain(true));
        assert!(matches!(r.evaluate(t), Some((true, v, 50)) if v == 1.0));
        // More errors: still firing, no second transition.
        r.add(t, plain(true));
        assert_eq!(r.evaluate(t), None);
        // The window slides past every sample: the value is 0, resolved once.
        assert!(matches!(r.evaluate(t + 61), Some((false, v, 0)) if v == 0.0));
        assert_eq!(r.evaluate(t + 62), None);
        assert!(r.idle(t + 62));
    }

    #[test]
    fn p99_is_the_bin_bound_above_99_percent() {
        let mut r = state(
            json!({"name":"slow","metric":"p99_latency_ms","of":"model","threshold":1000,"window_s":300}),
        );
        let t = 5_000;
        for _ in 0..99 {
            r.add(
                t,
                Sample {
                    bad: false,
                    nanos: 0,
                    latency_ms: Some(10.0),
                },
            );
        }
        r.add(
            t,
            Sample {
                bad: false,
                nanos: 0,
                latency_ms: Some(5000.0),
            },
        );
        let (p99, n) = r.value(t);
        assert_eq!(n, 100);
        assert!((10.0..11.0).contains(&p99), "{p99}");
        r.add(
            t,
            Sample {
                bad: false,
                nanos: 0,
                latency_ms: Some(5000.0),
            },
        );
        let (p99, _) = r.value(t);
        assert!((5000.0..5500.0).contains(&p99), "{p99}");
    }
}
