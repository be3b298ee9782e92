//! Prometheus metrics, served as OpenMetrics text on `GET /metrics`.
//!
//! Every label value comes from a fixed set or a bounded one, never from
//! what a client sent: methods are one of the standard seven or `other`,
//! routes are matched templates or `unmatched`, refusal and failure
//! reasons are from known lists or `other`. Tenant series exist only for
//! tenants that authenticated while alive, are dropped when the tenant is
//! deleted, and are capped (`server.metrics_max_tenants`); the rest count
//! under `tenant="_other"` (an underscore is not valid in a tenant id, so
//! it cannot collide with one). Without a metrics token, authentication
//! failures are counted by a coarse class, not by internal reason.
//!
//! The per-tenant families (model calls, tools, runs, alerts…) are in
//! [`crate::tenant_metrics`], under the same cap.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_core::codes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::tenant_metrics::TenantMetrics;

/// The label of methods outside [`METHODS`], refusal codes and failure
/// reasons outside their known lists.
pub const OTHER: &str = "other";

/// The label of tenants beyond `server.metrics_max_tenants`.
pub const OTHER_TENANTS: &str = "_other";

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Methods counted by name; any other is [`OTHER`].
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Limit refusal codes counted by name (`bulkhead_quota::Refusal::code`).
const LIMIT_CODES: &[&str] = &[
    codes::RATE_LIMITED.code,
    codes::CONCURRENCY_LIMITED.code,
    codes::BUDGET_EXCEEDED.code,
    codes::LIMITS_UNAVAILABLE.code,
];

/// Internal authentication failure reasons, counted by name only behind
/// the metrics token: they say which check failed, which a public
/// endpoint must not tell a credential guesser.
const AUTH_REASONS: &[&str] = &[
    "missing",
    "malformed_authorization",
    "api_key_malformed",
    "api_key_unknown",
    "api_key_revoked",
    "api_key_expired",
    "jwt_malformed",
    "jwt_unknown_issuer",
    "jwt_algorithm_not_allowed",
    "jwt_unknown_key",
    "jwt_invalid",
    "jwt_bad_tenant_claim",
    "jwt_bad_claims",
    "jwt_unknown_tenant",
    "tenant_suspended",
    "tenant_header_mismatch",
    "unavailable",
    "operator_token",
    "metrics_token",
    "throttled",
];

/// The coarse class of an authentication failure: what the public
/// metrics show.
fn auth_class(reason: &str) -> &'static str {
    match reason {
        "missing" => "missing",
        "malformed_authorization" => "malformed",
        r if r.starts_with("api_key_") || r.starts_with("jwt_") => "invalid_credential",
        "tenant_suspended" | "tenant_header_mismatch" => "tenant_refused",
        "unavailable" => "unavailable",
        "operator_token" => "operator_token",
        "metrics_token" => "metrics_token",
        // Over the `[auth]` failure limits: refused before any check.
        "throttled" => "throttled",
        _ => OTHER,
    }
}

/// The label a value gets: itself if it is in `known`, else [`OTHER`].
fn known(value: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .unwrap_or(OTHER)
}

/// The method label of a request.
pub fn method_label(method: &str) -> &'static str {
    known(method, METHODS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

/// What the metrics may reveal and hold.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// Most tenants with their own series (`server.metrics_max_tenants`).
    pub max_tenants: usize,
    /// Count authentication failures by internal reason (only when
    /// `/metrics` requires a token); otherwise by coarse class.
    pub detailed_auth_reasons: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            max_tenants: 1000,
            detailed_auth_reasons: false,
        }
    }
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    options: MetricsOptions,
    requests: Family<HttpLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    tenant_requests: Family<TenantLabels, Counter>,
    /// Tenants that have their own series; the lock also orders a
    /// tenant's first count against its deletion.
    tenants: Mutex<HashSet<String>>,
    cross_tenant_leak: Counter,
    limited: Family<ReasonLabels, Counter>,
    connections_open: Gauge,
    connections_refused: Family<ReasonLabels, Counter>,
    connections_timed_out: Counter,
    /// The per-tenant families (`crate::tenant_metrics`), in this registry
    /// through a collector.
    per_tenant: Arc<TenantMetrics>,
}

/// Counts one open connection until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric, with the default options.
    pub fn new() -> Self {
        Self::with_options(MetricsOptions::default())
    }

    /// Registers every metric.
    pub fn with_options(options: MetricsOptions) -> Self {
        let mut registry = Registry::with_prefix("bulkhead");
        let requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to ~3 s in doublings.
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Request latency by route",
            latency.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            if options.detailed_auth_reasons {
                "Refused authentications by internal reason"
            } else {
                "Refused authentications by class"
            },
            auth_failures.clone(),
        );
        let tenant_requests = Family::<TenantLabels, Counter>::default();
        registry.register(
            "tenant_requests",
            "Authenticated tenant-plane requests by tenant",
            tenant_requests.clone(),
        );
        let cross_tenant_leak = Counter::default();
        registry.register(
            "cross_tenant_leak",
            "Outbound requests blocked because they carried another tenant's canary",
            cross_tenant_leak.clone(),
        );
        let limited = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "limit_refusals",
            "Requests refused over a tenant limit, by code",
            limited.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Open client connections",
            connections_open.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, by the cap they were over",
            connections_refused.clone(),
        );
        let connections_timed_out = Counter::default();
        registry.register(
            "connections_timed_out",
            "Connections closed for a slow request head or an idle keep-alive",
            connections_timed_out.clone(),
        );
        let per_tenant = Arc::new(TenantMetrics::new(options.max_tenants));
        registry.register_collector(per_tenant.collector());
        Self {
            registry,
            per_tenant,
            options,
            connections_open,
            connections_refused,
            connections_timed_out,
            requests,
            latency,
            auth_failures,
            tenant_requests,
            tenants: Mutex::new(HashSet::new()),
            cross_tenant_leak,
            limited,
        }
    }

    /// Records one finished request. `route` must be a matched route
    /// template or [`UNMATCHED`]; the method is normalised here.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&HttpLabels {
                method: method_label(method),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a refused authentication, by internal reason behind the
    /// metrics token and by coarse class otherwise.
    pub fn auth_failure(&self, reason: &str) {
        let reason = if self.options.detailed_auth_reasons {
            known(reason, AUTH_REASONS)
        } else {
            auth_class(reason)
        };
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Records an authenticated tenant request. The tenant gets its own
    /// series while fewer than `max_tenants` have one.
    pub fn tenant_request(&self, tenant: &str) {
        let label = {
            let mut tenants = self
                .tenants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if tenants.contains(tenant) {
                tenant.to_owned()
            } else if tenants.len() < self.options.max_tenants {
                tenants.insert(tenant.to_owned());
                tenant.to_owned()
            } else {
                OTHER_TENANTS.to_owned()
            }
        };
        self.tenant_requests
            .get_or_create(&TenantLabels { tenant: label })
            .inc();
    }

    /// Drops a deleted tenant's series and frees its place under the cap.
    pub fn forget_tenant(&self, tenant: &str) {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tenants.remove(tenant);
        self.tenant_requests.remove(&TenantLabels {
            tenant: tenant.to_owned(),
        });
        self.per_tenant.forget(tenant);
    }

    /// The per-tenant families.
    pub fn per_tenant(&self) -> &Arc<TenantMetrics> {
        &self.per_tenant
    }

    /// Records a request refused over a tenant limit.
    pub fn limited(&self, code: &str) {
        self.limited
            .get_or_create(&ReasonLabels {
                reason: known(code, LIMIT_CODES),
            })
            .inc();
    }

    /// Counts an open connection while the result lives.
    pub fn connection_open(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// Records a connection closed at accept (`max_connections` or
    /// `max_connections_per_peer`).
    pub fn connection_refused(&self, cap: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason: cap })
            .inc();
    }

    /// Records a connection closed by its head or keep-alive deadline.
    pub fn connection_timed_out(&self) {
        self.connections_timed_out.inc();
    }

    /// Records a tripped canary.
    pub fn cross_tenant_leak(&self) {
        self.cross_tenant_leak.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_known_values() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("get"), OTHER);
        assert_eq!(method_label(&"X".repeat(10_000)), OTHER);
        let m = Metrics::new();
        m.limited("rate_limited");
        m.limited("made_up");
        m.auth_failure("api_key_revoked");
        m.auth_failure("jwt_unknown_key");
        m.auth_failure("something new");
        let text = m.encode();
        assert!(text.contains(r#"bulkhead_limit_refusals_total{reason="other"} 1"#));
        assert!(text.contains(r#"bulkhead_auth_failures_total{reason="invalid_credential"} 2"#));
        assert!(text.contains(r#"bulkhead_auth_failures_total{reason="other"} 1"#));
        assert!(!text.contains("api_key_revoked") && !text.contains("made_up"));

        let m = Metrics::with_options(MetricsOptions {
            max_tenants: 1,
            detailed_auth_reasons: true,
        });
        m.auth_failure("api_key_revoked");
        m.auth_failure("something new");
        let text = m.encode();
        assert!(text.contains(r#"bulkhead_auth_failures_total{reason="api_key_revoked"} 1"#));
        assert!(text.contains(r#"bulkhead_auth_failures_total{reason="other"} 1"#));
    }
}
