//! `[server]`: the listener, its connection limits, the data directory and
//! who may read `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{ConfigError, Errors};
use super::secret::{ConfigSecret, resolve_token};
use crate::Region;

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Data directory (control database, tenant partitions, key files).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Region of tenants created without one.
    #[serde(default = "default_region")]
    pub default_region: Region,
    /// Whole-request timeout in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: u64,
    /// Largest accepted request body in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Bearer token `GET /metrics` requires (`env:NAME`); without it the
    /// metrics are public, which reveals tenant ids in labels. Required
    /// when `listen` is not a loopback address, unless `metrics_public`.
    pub metrics_token: Option<ConfigSecret>,
    /// Serve `/metrics` without a token on a non-loopback `listen`: the
    /// operator's explicit choice (a private network, a scraper without
    /// credentials).
    #[serde(default)]
    pub metrics_public: bool,
    /// Most tenants with their own `bulkhead_tenant_requests_total`
    /// series; the rest are counted under `tenant="_other"`.
    #[serde(default = "default_metrics_max_tenants")]
    pub metrics_max_tenants: usize,
    /// Seconds a connection has to send a complete request head: from
    /// accept for its first request, from the first byte for later ones.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_s: u64,
    /// Seconds an idle keep-alive connection (no request in flight, no
    /// byte of a new one) is kept open.
    #[serde(default = "default_keepalive_idle")]
    pub keepalive_idle_s: u64,
    /// Most open connections; more are accepted and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most open connections from one peer address (IPv6: one /64).
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Largest request head (request line and headers) in bytes; larger
    /// is answered `431` and the connection closed.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most header fields in one request; more is answered `431`.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Directory of agent prompt files (`agents.prompt_file` is relative to
    /// it); templates cannot read files outside it.
    #[serde(default = "default_prompts_dir")]
    pub prompts_dir: PathBuf,
    /// How often tenants' message retention is applied, in seconds.
    #[serde(default = "default_retention_interval")]
    pub retention_interval_s: u64,
    /// Seconds a stopping server gives requests and runs in flight to
    /// finish; then they are cancelled and recorded, and the process exits.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_s: u64,
}

/// Kubernetes kills a pod 30 s after SIGTERM by default: 25 s of grace
/// leaves the rest for cancelling and recording what is left.
fn default_shutdown_grace() -> u64 {
    25
}

/// Enough for a large platform; each series is one counter.
fn default_metrics_max_tenants() -> usize {
    1000
}

/// A client on a slow mobile link sends a request head in well under a
/// second; ten is generous and keeps a slow-header attacker's connection
/// short-lived.
fn default_header_read_timeout() -> u64 {
    10
}

/// Longer than the usual client pool idle time (reqwest 90 s, but most
/// SDKs and proxies 30–60 s), short enough to shed idle sockets.
fn default_keepalive_idle() -> u64 {
    60
}

/// Below the usual hard limit on open files, leaving room for the
/// databases, the provider pool and the log.
fn default_max_connections() -> usize {
    10_000
}

/// A backend's pool uses tens of connections; one address cannot hold
/// more than a fortieth of the global cap.
fn default_max_connections_per_peer() -> usize {
    256
}

/// 16 KiB: large JWTs fit several times over, and a slow-header attacker's
/// connection holds at most this much memory.
fn default_max_header_bytes() -> usize {
    16 * 1024
}

/// hyper's own default.
fn default_max_headers() -> usize {
    100
}

/// Hourly: retention is counted in days.
fn default_retention_interval() -> u64 {
    3600
}

fn default_prompts_dir() -> PathBuf {
    PathBuf::from("prompts")
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(".bulkhead")
}

fn default_region() -> Region {
    // "local" names the machine the embedded default runs on; it matches no
    // provider unless the operator tags one so, which keeps residency strict.
    Region::local()
}

/// Long enough for a model call on the later agent paths; short enough that
/// a stuck request frees its connection.
fn default_request_timeout() -> u64 {
    30
}

/// 1 MiB: large JSON bodies are refused early; document upload paths raise
/// their own limits.
fn default_max_body() -> usize {
    1024 * 1024
}

impl ServerConfig {
    /// Why `/metrics` may not be served as configured: public (no
    /// `metrics_token`) on a non-loopback `listen` without
    /// `metrics_public = true`. Checked when the file is loaded and again
    /// at boot, after `serve --listen` has replaced the address.
    pub fn metrics_exposure_error(&self) -> Option<ConfigError> {
        if self.listen.ip().is_loopback() || self.metrics_token.is_some() || self.metrics_public {
            return None;
        }
        Some(ConfigError {
            path: "server.metrics_token".into(),
            message: format!(
                "is required when listen ({}) is not a loopback address, because the \
                 metrics name tenants; set it, or set server.metrics_public = true to \
                 serve them to anyone who can connect",
                self.listen
            ),
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            default_region: default_region(),
            request_timeout_s: default_request_timeout(),
            max_body_bytes: default_max_body(),
            metrics_token: None,
            metrics_public: false,
            metrics_max_tenants: default_metrics_max_tenants(),
            header_read_timeout_s: default_header_read_timeout(),
            keepalive_idle_s: default_keepalive_idle(),
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            prompts_dir: default_prompts_dir(),
            retention_interval_s: default_retention_interval(),
            shutdown_grace_s: default_shutdown_grace(),
        }
    }
}

/// The connection limits: hyper refuses a buffer under 8 KiB, and a zero
/// anywhere would refuse every client.
fn validate_connections(server: &ServerConfig, errors: &mut Errors) {
    if !(1..=300).contains(&server.header_read_timeout_s) {
        errors.push("server.header_read_timeout_s", "must be between 1 and 300");
    }
    if !(1..=3600).contains(&server.keepalive_idle_s) {
        errors.push("server.keepalive_idle_s", "must be between 1 and 3600");
    }
    if server.max_connections == 0 {
        errors.push("server.max_connections", "must be at least 1");
    }
    if server.max_connections_per_peer == 0 {
        errors.push("server.max_connections_per_peer", "must be at least 1");
    } else if server.max_connections_per_peer > server.max_connections {
        errors.push(
            "server.max_connections_per_peer",
            "must be at most server.max_connections",
        );
    }
    if !(8192..=1024 * 1024).contains(&server.max_header_bytes) {
        errors.push(
            "server.max_header_bytes",
            "must be between 8192 and 1048576",
        );
    }
    if !(1..=1000).contains(&server.max_headers) {
        errors.push("server.max_headers", "must be between 1 and 1000");
    }
    if server.metrics_max_tenants > 100_000 {
        errors.push("server.metrics_max_tenants", "must be at most 100000");
    }
}

/// `[server]`: ranges, the connection limits, and the metrics exposure.
pub(super) fn validate(
    server: &mut ServerConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Errors,
) {
    if server.retention_interval_s < 60 {
        errors.push("server.retention_interval_s", "must be at least 60");
    }
    if server.request_timeout_s == 0 {
        errors.push("server.request_timeout_s", "must be at least 1");
    }
    if !(1..=3600).contains(&server.shutdown_grace_s) {
        errors.push("server.shutdown_grace_s", "must be between 1 and 3600");
    }
    if server.max_body_bytes < 1024 {
        errors.push("server.max_body_bytes", "must be at least 1024");
    }
    if server.data_dir.as_os_str().is_empty() {
        errors.push("server.data_dir", "must not be empty");
    }
    validate_connections(server, errors);
    if let Some(e) = server.metrics_exposure_error() {
        errors.0.push(e);
    }
    if let Some(token) = &mut server.metrics_token {
        resolve_token(token, "server.metrics_token", env, errors);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{check, env};
    use crate::config::*;

    #[test]
    fn connection_limits_have_safe_defaults_and_are_checked_by_key() {
        let c = load("", &env).unwrap().server;
        assert_eq!(
            (
                c.header_read_timeout_s,
                c.keepalive_idle_s,
                c.max_connections,
                c.max_connections_per_peer,
                c.max_header_bytes,
                c.max_headers,
                c.metrics_max_tenants,
                c.metrics_public,
            ),
            (10, 60, 10_000, 256, 16_384, 100, 1000, false)
        );
        check(
            "[server]\nheader_read_timeout_s = 0\nkeepalive_idle_s = 0\nmax_connections = 0\n\
             max_connections_per_peer = 0\nmax_header_bytes = 100\nmax_headers = 0\n\
             metrics_max_tenants = 100001",
            &[
                "server.header_read_timeout_s: must be between 1 and 300",
                "server.keepalive_idle_s: must be between 1 and 3600",
                "server.max_connections: must be at least 1",
                "server.max_connections_per_peer: must be at least 1",
                "server.max_header_bytes: must be between 8192",
                "server.max_headers: must be between 1 and 1000",
                "server.metrics_max_tenants: must be at most 100000",
            ],
        );
        check(
            "[server]\nmax_connections = 10\nmax_connections_per_peer = 11",
            &["server.max_connections_per_peer: must be at most server.max_connections"],
        );
        let c = load(
            "[server]\nheader_read_timeout_s = 1\nkeepalive_idle_s = 2\nmax_connections = 3\n\
             max_connections_per_peer = 3\nmax_header_bytes = 8192\nmax_headers = 10",
            &env,
        )
        .unwrap()
        .server;
        assert_eq!(
            (c.header_read_timeout_s, c.max_connections_per_peer),
            (1, 3)
        );
    }

    /// Public metrics name tenants: a non-loopback listen needs a token or
    /// the operator's explicit `metrics_public = true`.
    #[test]
    fn a_non_loopback_listen_needs_a_metrics_token_or_metrics_public() {
        for listen in ["0.0.0.0:8080", "10.1.2.3:80", "[::]:8080"] {
            check(
                &format!("[server]\nlisten = \"{listen}\""),
                &["server.metrics_token: is required when listen"],
            );
            load(
                &format!("[server]\nlisten = \"{listen}\"\nmetrics_token = \"env:OP\""),
                &env,
            )
            .unwrap();
            load(
                &format!("[server]\nlisten = \"{listen}\"\nmetrics_public = true"),
                &env,
            )
            .unwrap();
        }
        for listen in ["127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080"] {
            load(&format!("[server]\nlisten = \"{listen}\""), &env).unwrap();
        }
    }
}
