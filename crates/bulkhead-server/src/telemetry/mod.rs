//! The process's logs and traces: the `tracing` subscriber (text or JSON
//! lines on stderr, each JSON line naming its tenant, request and trace),
//! and — with `[telemetry] otlp_endpoint` — the OpenTelemetry pipeline
//! that exports bulkhead's spans (`bulkhead_telemetry`) over OTLP/HTTP
//! with protobuf. Also the W3C `traceparent` taken from callers
//! ([`accept`]) and given to outbound requests.

pub mod context;
pub mod json;
pub mod otlp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use bulkhead_core::config::TelemetryConfig;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// Human-readable, coloured when `colour`.
    Text {
        /// ANSI colours.
        colour: bool,
    },
    /// One JSON object per line.
    Json,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter could not be built.
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
    /// A subscriber was already installed.
    #[error("logging was already set up")]
    AlreadySet,
}

/// Whether spans are exported (OTLP on): then trace ids and outbound
/// `traceparent`s come from the OpenTelemetry context.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The running pipeline; [`Telemetry::shutdown`] sends what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered and stops the exporter. Call it
    /// outside the runtime's `block_on` (the export runs on the runtime).
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("telemetry: could not flush the last spans: {e}");
        }
    }
}

/// The log filter: `RUST_LOG`, else `default_level`; bulkhead's spans are
/// always on (they are cheap, and the traces need them whatever the log
/// level).
fn filter(default_level: &str) -> EnvFilter {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    match format!("{}=info", bulkhead_telemetry::TARGET).parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// Installs logging only, for commands that serve nothing.
pub fn init_logs(style: LogStyle, default_level: &str) -> Result<Telemetry, TelemetryError> {
    install(style, default_level, None)
}

/// Installs logging and, with `[telemetry] otlp_endpoint`, the span
/// export. Must run inside the Tokio runtime the exporter's requests use.
pub fn init(
    style: LogStyle,
    default_level: &str,
    config: &TelemetryConfig,
) -> Result<Telemetry, TelemetryError> {
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(provider(endpoint, config)?),
        None => None,
    };
    install(style, default_level, provider)
}

fn provider(endpoint: &str, config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let client =
        otlp::RuntimeClient::new(tokio::runtime::Handle::current(), Duration::from_secs(10))
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(10))
        .with_headers(otlp::headers(config))
        .with_http_client(client)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let processor = BatchSpanProcessor::builder(otlp::Shaped(exporter))
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(8192)
                .with_scheduled_delay(Duration::from_secs(2))
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

fn install(
    style: LogStyle,
    default_level: &str,
    provider: Option<SdkTracerProvider>,
) -> Result<Telemetry, TelemetryError> {
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("bulkhead"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            // Only bulkhead's own spans are exported.
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.target() == bulkhead_telemetry::TARGET || !m.is_span()
            }))
    });
    let registry = tracing_subscriber::registry()
        .with(filter(default_level))
        .with(context::ContextLayer)
        .with(otel);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = match style {
        LogStyle::Text { colour } => registry.with(fmt.with_ansi(colour)).try_init(),
        LogStyle::Json => registry
            .with(
                fmt.with_ansi(false)
                    .fmt_fields(json::NoFields)
                    .event_format(json::JsonLines),
            )
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadySet)?;
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    bulkhead_telemetry::set_exporting(provider.is_some());
    bulkhead_telemetry::install_traceparent(outbound_traceparent);
    Ok(Telemetry { provider })
}

/// A `traceparent` a caller sent, if it is well-formed (W3C Trace Context
/// level 1: version `00`, non-zero ids, lowercase hex).
pub fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let ok = parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    ok.then_some((trace, parent))
}

/// Joins the request span to the caller's trace (a valid `traceparent`)
/// and records its trace id. Exporting, the span's parent is the caller's
/// span; otherwise the caller's `traceparent` is kept to pass on to
/// providers and tools, and a request without one gets a fresh trace id,
/// so its log lines can still be found together.
pub fn accept(span: &Span, headers: &HeaderMap) {
    if EXPORTING.load(Ordering::Relaxed) {
        let parent =
            TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
        let _ = span.set_parent(parent);
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", trace_id.to_string().as_str());
        return;
    }
    let given = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| parse_traceparent(v).is_some());
    match given {
        Some(tp) => {
            span.record("trace_id", &tp[3..35]);
            span.record("traceparent", tp);
        }
        None => {
            span.record("trace_id", local_trace_id().as_str());
        }
    }
}

/// A fresh trace id for a request's log lines when nothing is exported:
/// unique enough to find them together, from a per-thread generator
/// seeded once from the system (no system call per request).
fn local_trace_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    // splitmix64: two outputs make the 128-bit id.
    let next = || {
        STATE.with(|s| {
            let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    };
    format!("{:016x}{:016x}", next(), next())
}

/// The outbound `traceparent` of the current span: its own context when
/// exporting, else the caller's header passed on unchanged.
fn outbound_traceparent() -> Option<String> {
    if EXPORTING.load(Ordering::Relaxed) {
        let cx = Span::current().context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = std::collections::HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        return carrier.remove("traceparent");
    }
    context::current().and_then(|c| c.traceparent.map(String::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_checked() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(good),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
