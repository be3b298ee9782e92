//! Per-tenant metric families: requests and errors by code, model calls,
//! tokens, cost, tool calls, runs, their latencies, blocked cross-tenant
//! accesses and alert transitions, each series labelled `tenant`.
//!
//! Each tenant's series live in their own [`Series`], so that one
//! tenant's can be encoded alone (`GET /v1/metrics`) and the whole set
//! for the platform (`GET /metrics`, through a [`Collector`] in the
//! process registry) from the same data. The hot path takes a read lock
//! on the tenant map (a write lock only for a tenant's first event) and
//! then a read lock on the family; counters are atomics.
//!
//! The cardinality guard: at most `server.metrics_max_tenants` tenants
//! get series of their own; the rest count together under
//! `tenant="_other"`. A tenant over the cap sees no series of its own at
//! `GET /v1/metrics` (the shared bucket holds other tenants' counts). The
//! other labels are bounded: models, tools and agents come from the
//! configuration, statuses and codes from fixed lists, rule names from
//! the tenant's at most 32 rules.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::metrics::OTHER_TENANTS;

/// A label set: (name, value) pairs in a fixed order.
type Labels = Vec<(&'static str, String)>;

/// One family of one tenant: its series by label set.
struct Labeled<M> {
    series: RwLock<HashMap<Labels, M>>,
    make: fn() -> M,
}

impl<M: Clone> Labeled<M> {
    fn new(make: fn() -> M) -> Self {
        Self {
            series: RwLock::new(HashMap::new()),
            make,
        }
    }

    /// The series of `labels`, created on first use.
    fn get(&self, labels: Labels) -> M {
        if let Some(m) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&labels)
        {
            return m.clone();
        }
        self.series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(labels)
            .or_insert_with(self.make)
            .clone()
    }
}

/// A family that can encode its series under a `tenant` label.
trait EncodeTenant: Send + Sync {
    fn encode_tenant(&self, tenant: &str, encoder: &mut MetricEncoder) -> fmt::Result;
    fn is_empty(&self) -> bool;
}

impl<M: EncodeMetric + Clone + Send + Sync> EncodeTenant for Labeled<M> {
    fn encode_tenant(&self, tenant: &str, encoder: &mut MetricEncoder) -> fmt::Result {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        let tenant = [("tenant", tenant)];
        for (labels, metric) in series.iter() {
            let set = (tenant, labels.clone());
            metric.encode(encoder.encode_family(&set)?)?;
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

fn latency_histogram() -> Histogram {
    // 10 ms to ~82 s in doublings: model and tool calls.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

fn run_histogram() -> Histogram {
    // 100 ms to ~27 min in doublings: whole runs.
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// One tenant's series (or the `_other` bucket's).
pub struct Series {
    http: Labeled<Counter>,
    model_calls: Labeled<Counter>,
    tokens: Labeled<Counter>,
    cost: Labeled<Counter<f64, AtomicU64>>,
    model_latency: Labeled<Histogram>,
    tool_calls: Labeled<Counter>,
    tool_latency: Labeled<Histogram>,
    runs: Labeled<Counter>,
    run_latency: Labeled<Histogram>,
    cross_tenant: Labeled<Counter>,
    alerts: Labeled<Counter>,
    firing: Labeled<Gauge>,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            http: Labeled::new(Counter::default),
            model_calls: Labeled::new(Counter::default),
            tokens: Labeled::new(Counter::default),
            cost: Labeled::new(Counter::default),
            model_latency: Labeled::new(latency_histogram),
            tool_calls: Labeled::new(Counter::default),
            tool_latency: Labeled::new(latency_histogram),
            runs: Labeled::new(Counter::default),
            run_latency: Labeled::new(run_histogram),
            cross_tenant: Labeled::new(Counter::default),
            alerts: Labeled::new(Counter::default),
            firing: Labeled::new(Gauge::default),
        }
    }
}

/// One family's descriptor and where its series are.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    of: fn(&Series) -> &dyn EncodeTenant,
}

/// Every per-tenant family, in exposition order. The names (with the
/// `bulkhead_` prefix, and `_total` on counters) are the contract of
/// docs/observability.md and the Grafana dashboard.
const FAMILIES: &[Family] = &[
    Family {
        name: "tenant_http_requests",
        help: "Authenticated tenant-plane requests by tenant, status and problem code (ok below 400)",
        kind: MetricType::Counter,
        of: |s| &s.http,
    },
    Family {
        name: "tenant_model_calls",
        help: "Model and embedding calls by tenant, model, kind and ledger status",
        kind: MetricType::Counter,
        of: |s| &s.model_calls,
    },
    Family {
        name: "tenant_model_tokens",
        help: "Model tokens billed by tenant, model and direction (input, output)",
        kind: MetricType::Counter,
        of: |s| &s.tokens,
    },
    Family {
        name: "tenant_model_cost_usd",
        help: "Model cost in US dollars by tenant and model",
        kind: MetricType::Counter,
        of: |s| &s.cost,
    },
    Family {
        name: "tenant_model_call_duration_seconds",
        help: "Model call latency by tenant and model",
        kind: MetricType::Histogram,
        of: |s| &s.model_latency,
    },
    Family {
        name: "tenant_tool_calls",
        help: "Tool calls by tenant, tool and outcome (ok or the failure code)",
        kind: MetricType::Counter,
        of: |s| &s.tool_calls,
    },
    Family {
        name: "tenant_tool_call_duration_seconds",
        help: "Tool call latency by tenant and tool",
        kind: MetricType::Histogram,
        of: |s| &s.tool_latency,
    },
    Family {
        name: "tenant_runs",
        help: "Ended runs by tenant, agent and status",
        kind: MetricType::Counter,
        of: |s| &s.runs,
    },
    Family {
        name: "tenant_run_duration_seconds",
        help: "Run duration by tenant and agent",
        kind: MetricType::Histogram,
        of: |s| &s.run_latency,
    },
    Family {
        name: "tenant_cross_tenant_blocks",
        help: "Blocked cross-tenant accesses by tenant and kind",
        kind: MetricType::Counter,
        of: |s| &s.cross_tenant,
    },
    Family {
        name: "tenant_alerts",
        help: "Alert transitions by tenant, rule and state (fired, resolved)",
        kind: MetricType::Counter,
        of: |s| &s.alerts,
    },
    Family {
        name: "tenant_alert_firing",
        help: "1 while a tenant's alert rule fires",
        kind: MetricType::Gauge,
        of: |s| &s.firing,
    },
];

/// The exposed name of a family: prefixed, `_total` on counters.
pub fn exposed_names() -> Vec<String> {
    FAMILIES
        .iter()
        .map(|f| match f.kind {
            MetricType::Counter => format!("bulkhead_{}_total", f.name),
            _ => format!("bulkhead_{}", f.name),
        })
        .collect()
}

/// Every tenant's series, capped.
pub struct TenantMetrics {
    max_tenants: usize,
    tenants: RwLock<HashMap<String, Arc<Series>>>,
    other: Arc<Series>,
}

impl fmt::Debug for TenantMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantMetrics")
            .field("max_tenants", &self.max_tenants)
            .finish_non_exhaustive()
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

impl TenantMetrics {
    /// At most `max_tenants` with series of their own.
    pub fn new(max_tenants: usize) -> Self {
        Self {
            max_tenants,
            tenants: RwLock::new(HashMap::new()),
            other: Arc::new(Series::default()),
        }
    }

    /// The tenant's series, or the shared `_other` bucket beyond the cap.
    fn series(&self, tenant: &str) -> Arc<Series> {
        if let Some(s) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return s.clone();
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = tenants.get(tenant) {
            return s.clone();
        }
        if tenants.len() >= self.max_tenants {
            return self.other.clone();
        }
        let s = Arc::new(Series::default());
        tenants.insert(tenant.to_owned(), s.clone());
        s
    }

    /// Drops a deleted tenant's series and frees its place under the cap.
    pub fn forget(&self, tenant: &str) {
        self.tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tenant);
    }

    /// An answered request: `code` is the problem code, `ok` below 400.
    pub fn request(&self, tenant: &str, status: u16, code: &str) {
        self.series(tenant)
            .http
            .get(vec![("status", status.to_string()), ("code", s(code))])
            .inc();
    }

    /// A settled model or embedding call.
    pub fn model_call(&self, tenant: &str, c: &bulkhead_auth::observe::ModelCall<'_>) {
        let series = self.series(tenant);
        series
            .model_calls
            .get(vec![
                ("model", s(c.model)),
                ("kind", s(c.kind)),
                ("status", s(c.status)),
            ])
            .inc();
        for (direction, n) in [("input", c.input_tokens), ("output", c.output_tokens)] {
            if n > 0 {
                series
                    .tokens
                    .get(vec![("model", s(c.model)), ("direction", s(direction))])
                    .inc_by(n);
            }
        }
        series
            .cost
            .get(vec![("model", s(c.model))])
            .inc_by(c.cost_nanos as f64 / 1e9);
        series
            .model_latency
            .get(vec![("model", s(c.model))])
            .observe(c.latency.as_secs_f64());
    }

    /// A tool call's result.
    pub fn tool_call(&self, tenant: &str, c: &bulkhead_auth::observe::ToolCall<'_>) {
        let series = self.series(tenant);
        series
            .tool_calls
            .get(vec![("tool", s(c.tool)), ("outcome", s(c.outcome))])
            .inc();
        series
            .tool_latency
            .get(vec![("tool", s(c.tool))])
            .observe(c.latency.as_secs_f64());
    }

    /// A run's end.
    pub fn run_end(&self, tenant: &str, r: &bulkhead_auth::observe::RunEnd<'_>) {
        let series = self.series(tenant);
        series
            .runs
            .get(vec![("agent", s(r.agent)), ("status", s(r.status))])
            .inc();
        series
            .run_latency
            .get(vec![("agent", s(r.agent))])
            .observe(r.duration.as_secs_f64());
    }

    /// A blocked cross-tenant access.
    pub fn cross_tenant(&self, tenant: &str, kind: bulkhead_auth::observe::CrossTenant) {
        self.series(tenant)
            .cross_tenant
            .get(vec![("kind", s(kind.as_str()))])
            .inc();
    }

    /// An alert transition: `fired` sets the rule's gauge, `resolved`
    /// clears it.
    pub fn alert(&self, tenant: &str, rule: &str, fired: bool) {
        let series = self.series(tenant);
        let state = if fired { "fired" } else { "resolved" };
        series
            .alerts
            .get(vec![("rule", s(rule)), ("state", s(state))])
            .inc();
        series
            .firing
            .get(vec![("rule", s(rule))])
            .set(i64::from(fired));
    }

    /// Clears a rule's firing gauge without a transition (the rule was
    /// removed while firing).
    pub fn clear_firing(&self, tenant: &str, rule: &str) {
        self.series(tenant)
            .firing
            .get(vec![("rule", s(rule))])
            .set(0);
    }

    /// The collector that puts every tenant's series in the process
    /// registry.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(AllTenants(self.clone()))
    }

    /// The scope's tenant's series alone, as OpenMetrics text with the
    /// same names and labels as in `GET /metrics` (no families, only
    /// `# EOF`, for a tenant without series of its own). It takes the
    /// scope, not a name, so only an authenticated tenant's own series
    /// can be asked for.
    pub fn encode_tenant(&self, scope: &bulkhead_auth::TenantScope) -> String {
        self.encode_one(scope.tenant().as_str())
    }

    fn encode_one(&self, tenant: &str) -> String {
        let series = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned();
        let mut registry = Registry::with_prefix("bulkhead");
        if let Some(series) = series {
            registry.register_collector(Box::new(OneTenant {
                tenant: tenant.to_owned(),
                series,
            }));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Encodes `tenants`' series family by family (a family with no series
/// is left out).
fn encode_families(
    tenants: &[(String, Arc<Series>)],
    mut encoder: DescriptorEncoder,
) -> fmt::Result {
    for family in FAMILIES {
        if tenants.iter().all(|(_, s)| (family.of)(s).is_empty()) {
            continue;
        }
        let mut metric = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
        for (tenant, series) in tenants {
            (family.of)(series).encode_tenant(tenant, &mut metric)?;
        }
    }
    Ok(())
}

#[derive(Debug)]
struct AllTenants(Arc<TenantMetrics>);

impl Collector for AllTenants {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut tenants: Vec<(String, Arc<Series>)> = self
            .0
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(t, s)| (t.clone(), s.clone()))
            .collect();
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
        tenants.push((OTHER_TENANTS.to_owned(), self.0.other.clone()));
        encode_families(&tenants, encoder)
    }
}

struct OneTenant {
    tenant: String,
    series: Arc<Series>,
}

impl fmt::Debug for OneTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTenant")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Collector for OneTenant {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        encode_families(&[(self.tenant.clone(), self.series.clone())], encoder)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bulkhead_auth::observe::{ModelCall, ToolCall};

    use super::*;

    #[test]
    fn a_tenant_encodes_alone_and_the_cap_sends_the_rest_to_other() {
        let m = Arc::new(TenantMetrics::new(2));
        let call = ModelCall {
            model: "small",
            kind: "model",
            status: "ok",
            input_tokens: 10,
            output_tokens: 5,
            cost_nanos: 1_500_000_000,
            latency: Duration::from_millis(30),
        };
        m.model_call("acme", &call);
        m.request("acme", 200, "ok");
        m.tool_call(
            "globex",
            &ToolCall {
                tool: "notify",
                outcome: "ok",
                latency: Duration::from_millis(5),
            },
        );
        m.request("initech", 502, "upstream_error");
        let acme = m.encode_one("acme");
        assert!(
            acme.contains(r#"bulkhead_tenant_model_tokens_total{tenant="acme",model="small",direction="input"} 10"#),
            "{acme}"
        );
        assert!(
            acme.contains(
                r#"bulkhead_tenant_model_cost_usd_total{tenant="acme",model="small"} 1.5"#
            )
        );
        assert!(acme.contains(
            r#"bulkhead_tenant_http_requests_total{tenant="acme",status="200",code="ok"} 1"#
        ));
        assert!(!acme.contains("globex") && !acme.contains("initech") && !acme.contains("_other"));
        assert!(acme.ends_with("# EOF\n"));
        // Over the cap: initech counts under _other and has no series of its own.
        assert_eq!(m.encode_one("initech"), "# EOF\n");
        let mut registry = Registry::with_prefix("bulkhead");
        registry.register_collector(m.collector());
        let mut all = String::new();
        prometheus_client::encoding::text::encode(&mut all, &registry).unwrap();
        assert!(all.contains(r#"bulkhead_tenant_http_requests_total{tenant="_other",status="502",code="upstream_error"} 1"#), "{all}");
        assert!(all.contains(
            r#"bulkhead_tenant_tool_calls_total{tenant="globex",tool="notify",outcome="ok"} 1"#
        ));
        // One HELP line per family, whatever the number of tenants.
        assert_eq!(
            all.matches("# HELP bulkhead_tenant_http_requests ").count(),
            1
        );
        m.forget("acme");
        assert_eq!(m.encode_one("acme"), "# EOF\n");
    }
}
