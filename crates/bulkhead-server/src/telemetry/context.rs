//! What a log line or an outbound request needs to know about the work it
//! belongs to — tenant, request id, trace id, and the caller's
//! `traceparent` — kept on each span and inherited by its children, so a
//! line logged deep inside a run still names its tenant and request.

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Span, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The context a span carries: its own fields, else its parent's.
#[derive(Debug, Clone, Default)]
pub struct SpanContext {
    /// `tenant.id`
    pub tenant: Option<Box<str>>,
    /// `request_id`
    pub request_id: Option<Box<str>>,
    /// `trace_id` (32 hex digits)
    pub trace_id: Option<Box<str>>,
    /// The caller's validated `traceparent`, passed on unchanged to
    /// providers and tools when spans are not exported.
    pub traceparent: Option<Box<str>>,
}

impl Visit for SpanContext {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "tenant.id" => &mut self.tenant,
            "request_id" => &mut self.request_id,
            "trace_id" => &mut self.trace_id,
            "traceparent" => &mut self.traceparent,
            _ => return,
        };
        *slot = Some(value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` fields arrive here; only the four names above matter.
        if matches!(
            field.name(),
            "tenant.id" | "request_id" | "trace_id" | "traceparent"
        ) {
            self.record_str(field, format!("{value:?}").trim_matches('"'));
        }
    }
}

/// Keeps a [`SpanContext`] in every span's extensions.
pub struct ContextLayer;

impl<S> Layer<S> for ContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut c = span
            .parent()
            .and_then(|p| p.extensions().get::<SpanContext>().cloned())
            .unwrap_or_default();
        attrs.record(&mut c);
        span.extensions_mut().insert(c);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(c) = ext.get_mut::<SpanContext>() {
            values.record(c);
        }
    }
}

/// The context of the current span, if the process's subscriber keeps
/// one (it does once [`super::init`] ran).
pub fn current() -> Option<SpanContext> {
    let id = Span::current().id()?;
    tracing::dispatcher::get_default(|d| {
        let registry = d.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(&id)?;
        span.extensions().get::<SpanContext>().cloned()
    })
}
