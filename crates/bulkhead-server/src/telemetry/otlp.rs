//! The OTLP/HTTP span export: the SDK's exporter given our own HTTP client
//! (reqwest on the server's runtime, so no second client or runtime is
//! built), behind a wrapper that puts attributes in the shape the
//! conventions ask for before they leave.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// The most bytes of a collector's answer that are read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends export requests with reqwest, on the server's runtime: the SDK's
/// batch processor runs its exports on a thread of its own, without a
/// reactor, so each request is spawned onto the runtime and awaited.
#[derive(Debug)]
pub struct RuntimeClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl RuntimeClient {
    /// A client whose requests run on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Self, reqwest::Error> {
        // The process's TLS provider, as every other client installs it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, runtime })
    }
}

#[async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let res = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = res.status();
            let headers = res.headers().clone();
            let mut res = res;
            let mut answer = Vec::new();
            while let Some(chunk) = res.chunk().await? {
                let room = MAX_ANSWER_BYTES.saturating_sub(answer.len());
                answer.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            let mut out = Response::new(Bytes::from(answer));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, reqwest::Error>(out)
        });
        Ok(task.await??)
    }
}

/// Span fields that serve the logs and the propagation only.
const LOCAL_FIELDS: &[&str] = &["trace_id", "traceparent"];

/// Puts each span's attributes in their exported shape: the finish
/// reasons as a string array, `request_id` as `bulkhead.request_id`,
/// local-only fields dropped.
#[derive(Debug)]
pub struct Shaped<E>(pub E);

/// One span's attributes in their exported shape. A field recorded more
/// than once is sent once, with its last value.
pub fn shape(mut span: SpanData) -> SpanData {
    let mut attrs = std::mem::take(&mut span.attributes);
    let mut seen = std::collections::HashSet::new();
    attrs.reverse();
    attrs.retain(|kv| seen.insert(kv.key.clone()));
    attrs.reverse();
    span.attributes = attrs
        .into_iter()
        .filter(|kv| !LOCAL_FIELDS.contains(&kv.key.as_str()))
        .map(|kv| match kv.key.as_str() {
            "gen_ai.response.finish_reasons" => {
                let list: Vec<StringValue> = kv
                    .value
                    .as_str()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| StringValue::from(s.to_owned()))
                    .collect();
                KeyValue::new(kv.key, Value::Array(Array::String(list)))
            }
            "request_id" => KeyValue::new("bulkhead.request_id", kv.value),
            _ => kv,
        })
        .collect();
    // A request span is named when it starts, before routing; once it has
    // children its name can no longer change, so it is named here from
    // its method and matched route ("POST /v1/agents/{agent}/runs").
    if span.span_kind == opentelemetry::trace::SpanKind::Server {
        let get = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.as_str().into_owned())
        };
        if let (Some(method), Some(route)) = (get("http.request.method"), get("http.route")) {
            span.name = format!("{method} {route}").into();
        }
    }
    span
}

impl<E: SpanExporter> SpanExporter for Shaped<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.export(batch.into_iter().map(shape).collect()).await
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// The export headers, from `[telemetry] headers`.
pub fn headers(config: &bulkhead_core::config::TelemetryConfig) -> HashMap<String, String> {
    config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.value().expose().to_owned()))
        .collect()
}
