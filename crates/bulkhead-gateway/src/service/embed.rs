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

use super::ledger::{Billed, Call, estimate_tokens, openai_tokens};
use super::{Gateway, read_error};
use crate::canary::Channel;
use crate::error::GatewayError;
use crate::upstream::{Endpoint, read_capped};
use crate::usage::Tokens;

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
                Ok(vectors)
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
