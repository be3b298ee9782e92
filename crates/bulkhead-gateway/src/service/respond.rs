//! The Responses API over the gateway's chat call: the conversation (the
//! stored one named by `previous_response_id`, then this input) becomes
//! chat messages, the chat call runs as any other (resolved, limited,
//! billed, audited), and its answer — whole or streamed — becomes a
//! `response`, stored in the tenant's partition unless `store: false`.

use bulkhead_auth::TenantScope;
use bulkhead_core::Deadline;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::chat::ChatOutcome;
use super::{Gateway, now_unix};
use crate::error::GatewayError;
use crate::responses::{self, ResponsesRequest, Stored, StreamTranslator};

/// What a Responses API call returns.
pub enum ResponseOutcome {
    /// A whole `response` object.
    Complete(Value),
    /// SSE bytes: the Responses event sequence.
    Stream(mpsc::Receiver<Vec<u8>>),
}

/// Events buffered for a slow client (as for chat streams).
const STREAM_BUFFER: usize = 32;

impl Gateway {
    /// Runs one Responses API request for the scope's tenant, its chat
    /// call within the request's `deadline` (as [`Gateway::chat_until`]).
    pub async fn respond(
        &self,
        scope: &TenantScope,
        body: &Value,
        deadline: Option<Deadline>,
    ) -> Result<ResponseOutcome, GatewayError> {
        let request = ResponsesRequest::parse(body)?;
        let mut items = match &request.previous_response_id {
            Some(id) => {
                self.stored(scope, id, Some("previous_response_id"))
                    .await?
                    .items
            }
            None => Vec::new(),
        };
        items.extend(request.input.iter().cloned());
        let messages = responses::to_messages(request.instructions.as_deref(), &items)?;
        let id = responses::new_id("resp");
        let skeleton = request.skeleton(&id, now_unix());
        match self
            .chat_in(scope, request.chat_body(messages), None, deadline)
            .await?
        {
            ChatOutcome::Complete(completion) => {
                let response = responses::from_completion(skeleton, &completion);
                if request.store {
                    self.keep(scope, &id, &response, items).await?;
                }
                Ok(ResponseOutcome::Complete(response))
            }
            ChatOutcome::Stream(mut rx) => {
                let (tx, out) = mpsc::channel(STREAM_BUFFER);
                let store = request.store.then(|| self.store.clone());
                let scope = scope.clone();
                self.recorder.tasks.spawn(async move {
                    let mut t = StreamTranslator::new(skeleton);
                    // A client that went away stops being written to; the
                    // chat call underneath is billed either way, and the
                    // response is still kept.
                    let mut open = tx.send(t.start()).await.is_ok();
                    while !t.ended {
                        let Some(bytes) = rx.recv().await else {
                            break;
                        };
                        let events = t.feed(&bytes);
                        if open && !events.is_empty() {
                            open = tx.send(events).await.is_ok();
                        }
                    }
                    let (mut events, response) = t.finish();
                    if let Some(store) = store
                        && response["status"] != "failed"
                    {
                        let mut all = items;
                        all.extend(response["output"].as_array().cloned().unwrap_or_default());
                        let stored = Stored {
                            response: response.clone(),
                            items: all,
                        };
                        if let Err(e) = store.save_response(&scope, &id, stored.to_json()).await {
                            tracing::error!(error = %e, "could not store a response");
                        }
                    }
                    events.extend(t.last(&response));
                    if open {
                        let _ = tx.send(events).await;
                    }
                });
                Ok(ResponseOutcome::Stream(out))
            }
        }
    }

    /// A stored response object of the tenant (`GET /v1/responses/{id}`).
    pub async fn response(&self, scope: &TenantScope, id: &str) -> Result<Value, GatewayError> {
        Ok(self.stored(scope, id, None).await?.response)
    }

    /// Deletes a stored response of the tenant.
    pub async fn delete_response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Value, GatewayError> {
        let deleted = self
            .store
            .delete_response(scope, id)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        if !deleted {
            return Err(GatewayError::ResponseNotFound {
                id: id.to_owned(),
                param: None,
            });
        }
        Ok(json!({"id": id, "object": "response", "deleted": true}))
    }

    async fn stored(
        &self,
        scope: &TenantScope,
        id: &str,
        param: Option<&'static str>,
    ) -> Result<Stored, GatewayError> {
        let text = self
            .store
            .load_response(scope, id)
            .await
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        match text {
            Some(t) => Stored::from_json(&t),
            None => Err(GatewayError::ResponseNotFound {
                id: id.to_owned(),
                param,
            }),
        }
    }

    async fn keep(
        &self,
        scope: &TenantScope,
        id: &str,
        response: &Value,
        mut items: Vec<Value>,
    ) -> Result<(), GatewayError> {
        items.extend(response["output"].as_array().cloned().unwrap_or_default());
        let stored = Stored {
            response: response.clone(),
            items,
        };
        self.store
            .save_response(scope, id, stored.to_json())
            .await
            .map_err(|e| GatewayError::Internal(format!("could not store the response: {e}")))
    }
}
