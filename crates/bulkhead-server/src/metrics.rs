//! Prometheus metrics, served as OpenMetrics text on `GET /metrics`.
//!
//! Route labels use the matched route template, never the raw path, so a
//! client cannot create unbounded label values. The per-tenant counter is
//! bounded by the number of tenants, which the operator controls.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    auth_failures: Family<ReasonLabels, Counter>,
    tenant_requests: Family<TenantLabels, Counter>,
    cross_tenant_leak: Counter,
    limited: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
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
            "Refused authentications by internal reason",
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
        Self {
            registry,
            requests,
            latency,
            auth_failures,
            tenant_requests,
            cross_tenant_leak,
            limited,
        }
    }

    /// Records one finished request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
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

    /// Records a refused authentication.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records an authenticated tenant request.
    pub fn tenant_request(&self, tenant: &str) {
        self.tenant_requests
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .inc();
    }

    /// Records a request refused over a tenant limit.
    pub fn limited(&self, code: &str) {
        self.limited
            .get_or_create(&ReasonLabels {
                reason: code.to_owned(),
            })
            .inc();
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
