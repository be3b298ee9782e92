//! `[limits]`: where the limit counters live, budget reservations, run
//! admission and the knowledge vector cache.

use serde::Deserialize;

use super::error::Errors;

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Where counters live.
    #[serde(default)]
    pub backend: LimitsBackend,
    /// Redis URL for the `redis` backend.
    pub redis_url: Option<String>,
    /// How long a model call's budget reservation lives if its process
    /// dies before settling it (seconds).
    #[serde(default = "default_reservation_ttl")]
    pub reservation_ttl_s: u64,
    /// Agent runs executing at once in this process; beyond it runs wait,
    /// admitted per tenant by weighted fair queueing. None: no limit.
    pub max_concurrent_runs: Option<u32>,
    /// Memory for decoded knowledge vectors (and their ANN graphs) across
    /// all tenants, in MiB; least recently used collections are dropped.
    #[serde(default = "default_vector_cache_mb")]
    pub vector_cache_mb: u64,
}

/// Half a GiB: about 500,000 vectors of 256 dimensions.
fn default_vector_cache_mb() -> u64 {
    512
}

fn default_reservation_ttl() -> u64 {
    600
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            backend: LimitsBackend::Memory,
            redis_url: None,
            reservation_ttl_s: default_reservation_ttl(),
            max_concurrent_runs: None,
            vector_cache_mb: default_vector_cache_mb(),
        }
    }
}

/// Limit counter backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    /// In-process.
    #[default]
    Memory,
    /// Shared through Redis.
    Redis,
}

/// `[limits]`: a usable Redis URL for the redis backend, and ranges.
pub(super) fn validate(limits: &LimitsConfig, errors: &mut Errors) {
    if limits.backend == LimitsBackend::Redis {
        match &limits.redis_url {
            Some(u) if u.starts_with("redis://") => {}
            Some(u) if u.starts_with("rediss://") => errors.push(
                "limits.redis_url",
                "rediss:// (TLS) is not supported by this build; use redis:// on a trusted network",
            ),
            // Not echoed: the URL may carry a password.
            Some(_) => errors.push("limits.redis_url", "is not a redis:// URL"),
            None => errors.push("limits.redis_url", "is required when backend = \"redis\""),
        }
    }
    if limits.reservation_ttl_s == 0 {
        errors.push("limits.reservation_ttl_s", "must be at least 1");
    }
    if limits.vector_cache_mb == 0 || limits.vector_cache_mb > 1 << 20 {
        errors.push("limits.vector_cache_mb", "must be between 1 and 1048576");
    }
    if limits.max_concurrent_runs == Some(0) {
        errors.push("limits.max_concurrent_runs", "must be at least 1");
    }
}
