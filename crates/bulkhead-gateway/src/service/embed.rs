//! Embeddings: one call per batch of inputs to an OpenAI-compatible
//! provider in the tenant's region, reserved, recorded and billed like a
//! chat call (`model.embed`), the vectors checked against the model's
//! dimensions and returned in input order.

use std::sync::Mutex;
use std::time::Instant;

use bulkhead_auth::TenantScope;
use bulkhead_core::audit::AuditAction;
use bulkhead_core::config::ProviderKind;
use bulkhead_core::{Deadline, Timestamp};
use serde_json::{Value, json};
use tracing::Instrument;

use super::ledger::{Billed, Call, estimate_tokens, openai_tokens};
use super::{Gateway, read_error};
use crate::canary::Channel;
use crate::error::GatewayError;
use crate::upstream::{Endpoint, read_capped};
use crate::usage::Tokens;

/// Most inputs one `POST /v1/embeddings` request may carry (OpenAI's own
/// limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// A checked `POST /v1/embeddings` request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The embedding model alias.
    pub model: String,
    /// The texts, in order (a single string is one input).
    pub inputs: Vec<String>,
    /// Whether vectors go back as base64 of little-endian f32.
    pub base64: bool,
    /// The vector length asked for (the model's own when unset).
    pub dimensions: Option<u32>,
}

fn invalid(param: &str, reason: impl Into<String>) -> GatewayError {
    GatewayError::InvalidMessage(crate::validate::InvalidMessage {
        param: param.to_owned(),
        reason: reason.into(),
    })
}

impl EmbeddingsRequest {
    /// Checks a request body: `model` (required), `input` (a string or an
    /// array of strings; token arrays are refused: the cross-tenant
    /// tripwire reads text), `encoding_format` (`float` or `base64`),
    /// `dimensions` (a positive integer). `user` is accepted and ignored.
    pub fn parse(body: &Value) -> Result<Self, GatewayError> {
        let Some(obj) = body.as_object() else {
            return Err(GatewayError::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        };
        let Some(model) = obj.get("model").and_then(Value::as_str) else {
            return Err(invalid("model", "is required and must be a string"));
        };
        let token_arrays = "token arrays are not accepted, only text (a string or an array of strings); with LangChain's OpenAIEmbeddings set check_embedding_ctx_length=False";
        let inputs: Vec<String> = match obj.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        Value::Number(_) | Value::Array(_) => {
                            return Err(invalid("input", token_arrays));
                        }
                        _ => return Err(invalid(&format!("input[{i}]"), "must be a string")),
                    }
                }
                out
            }
            Some(Value::Array(_)) => return Err(invalid("input", "must not be empty")),
            None => return Err(invalid("input", "is required")),
            Some(_) => {
                return Err(invalid("input", "must be a string or an array of strings"));
            }
        };
        if inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(invalid(
                "input",
                format!("at most {MAX_EMBEDDING_INPUTS} inputs per request"),
            ));
        }
        if let Some(i) = inputs.iter().position(String::is_empty) {
            return Err(invalid(&format!("input[{i}]"), "must not be empty"));
        }
        let base64 = match obj.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f == "float" => false,
            Some(Value::String(f)) if f == "base64" => true,
            Some(_) => {
                return Err(invalid("encoding_format", "must be `float` or `base64`"));
            }
        };
        let dimensions = match obj.get("dimensions") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|d| u32::try_from(d).ok()) {
                Some(d) if d > 0 => Some(d),
                _ => return Err(invalid("dimensions", "must be a positive integer")),
            },
        };
        Ok(Self {
            model: model.to_owned(),
            inputs,
            base64,
            dimensions,
        })
    }
}

/// What `POST /v1/embeddings` answers with: vectors in input order, the
/// model alias, and the input tokens billed.
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// The model alias.
    pub model: String,
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens (the provider's count, else the gateway's estimate).
    pub tokens: u64,
}

impl Gateway {
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
        self.embed_in(scope, name, inputs, None, None).await
    }

    /// [`Gateway::embed`] on behalf of an agent run (retrieval), within the
    /// run's deadline: the usage row and the audit event name the agent and
    /// the run, so the agent's cost includes what its retrieval paid.
    pub async fn embed_for_run(
        &self,
        scope: &TenantScope,
        name: &str,
        inputs: &[String],
        (agent, run_id): (&str, &str),
        deadline: Option<Deadline>,
    ) -> Result<Vec<Vec<f32>>, GatewayError> {
        self.embed_in(
            scope,
            name,
            inputs,
            Some((agent.to_owned(), run_id.to_owned())),
            deadline,
        )
        .await
    }

    /// The call, in the caller's task: a caller that goes away after the
    /// request was sent leaves its row `cancelled` (see [`Unsettled`]).
    async fn embed_in(
        &self,
        scope: &TenantScope,
        name: &str,
        inputs: &[String],
        run: Option<(String, String)>,
        deadline: Option<Deadline>,
    ) -> Result<Vec<Vec<f32>>, GatewayError> {
        let (model, dimensions) = self
            .catalog
            .embedding(name)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))?;
        self.embed_call(scope, model, dimensions, inputs, run, deadline)
            .await
            .map(|(v, _)| v)
    }

    /// `POST /v1/embeddings` for the scope's tenant: the model must be an
    /// embedding model the tenant may use (its allow-list, when it has
    /// one, names it; indistinguishable from an unknown one otherwise)
    /// served from its region. Billed, limited and audited like
    /// [`Gateway::embed`], within the request's `deadline`.
    pub async fn embeddings(
        &self,
        scope: &TenantScope,
        request: &EmbeddingsRequest,
        deadline: Option<Deadline>,
    ) -> Result<Embeddings, GatewayError> {
        let name = &request.model;
        let (model, dimensions) = self
            .catalog
            .embedding(name)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound(name.clone()))?;
        let settings = self.settings(scope).await?;
        if settings
            .allowed_models
            .as_ref()
            .is_some_and(|a| !a.contains(name))
        {
            return Err(GatewayError::ModelNotFound(name.clone()));
        }
        let dimensions = request.dimensions.unwrap_or(dimensions);
        let (vectors, tokens) = self
            .embed_call(scope, model, dimensions, &request.inputs, None, deadline)
            .await?;
        Ok(Embeddings {
            model: name.clone(),
            vectors,
            tokens,
        })
    }

    /// One embedding call, in its span (`embeddings <model>`).
    async fn embed_call(
        &self,
        scope: &TenantScope,
        model: crate::catalog::Model,
        dimensions: u32,
        inputs: &[String],
        run: Option<(String, String)>,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<Vec<f32>>, u64), GatewayError> {
        let span = bulkhead_telemetry::model_span(
            scope,
            super::chat::model_ref("embeddings", &model, false),
            run.as_ref()
                .map(|(agent, run_id)| bulkhead_telemetry::RunRef { agent, run_id }),
        );
        let result = self
            .embed_call_in(scope, model, dimensions, inputs, run, deadline)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            bulkhead_telemetry::record_outcome(&span, e.code());
        }
        result
    }

    async fn embed_call_in(
        &self,
        scope: &TenantScope,
        model: crate::catalog::Model,
        dimensions: u32,
        inputs: &[String],
        run: Option<(String, String)>,
        deadline: Option<Deadline>,
    ) -> Result<(Vec<Vec<f32>>, u64), GatewayError> {
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
            #[expect(
                clippy::disallowed_methods,
                reason = "the ledger row's latency is elapsed time on the monotonic clock"
            )]
            started: Instant::now(),
            time: Timestamp::now(),
            stream: false,
            prompt: None,
            run,
            reservation: Mutex::new(Some(reservation)),
            span: tracing::Span::current(),
        };
        let body = json!({"model": model.upstream, "input": inputs, "dimensions": dimensions});
        let permit = model
            .provider
            .permits
            .acquire(&scope.partition().to_string(), self.weight(scope))
            .await;
        call.begin(&self.recorder).await?;
        let mut unsettled = Unsettled {
            call: &call,
            recorder: &self.recorder,
            armed: true,
        };
        let result = async {
            let res = self
                .upstream
                .send(
                    &model.provider,
                    Endpoint::Embeddings,
                    &model.upstream,
                    key.as_ref(),
                    &body,
                    deadline,
                )
                .await?;
            let provider = &model.provider;
            let limit = Deadline::cap(deadline, provider.timeout);
            let bytes = read_capped(res, provider.max_response_bytes, limit)
                .await
                .map_err(|e| read_error(provider, e))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
                GatewayError::Upstream("the provider answered with malformed JSON".into())
            })?;
            let tokens = openai_tokens(value.get("usage").unwrap_or(&Value::Null));
            if let Some(m) = value["model"].as_str() {
                bulkhead_telemetry::record_response(&call.span, None, Some(m), &[]);
            }
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
        unsettled.armed = false;
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
                Ok((vectors, billed.tokens.input))
            }
            Err(e) => {
                call.finish(&self.recorder, Billed::default(), e.usage_status());
                Err(e)
            }
        }
    }
}

/// A call whose request may be with the provider: dropped while armed (its
/// caller went away — a run cancelled or out of time), it settles the row
/// as `cancelled`, billed at its estimate.
struct Unsettled<'a> {
    call: &'a Call,
    recorder: &'a super::ledger::Recorder,
    armed: bool,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.call
                .finish(self.recorder, self.call.estimate(), "cancelled");
        }
    }
}
