//! A run's model answer, streamed: the gateway's OpenAI-format chunks are
//! put back together into the one chat completion the loop works on (text,
//! tool calls by index, finish reason, usage), and each piece of text is
//! sent on as it arrives, as a `delta` event — so a chat UI shows the
//! answer while the model writes it. Deltas are not steps: they are not
//! stored; the `message` event (after its step is stored) carries the
//! whole text as before.

use std::collections::BTreeMap;

use bulkhead_core::codes::{self, ErrorCode};
use bulkhead_gateway::sse;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::event::RunEvent;

/// One tool call as its pieces arrive.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// What the chunks said so far.
#[derive(Default)]
struct Assembly {
    content: String,
    calls: BTreeMap<u64, PartialCall>,
    finish_reason: Option<Value>,
    usage: Option<Value>,
    done: bool,
}

/// Why a streamed answer did not arrive whole.
pub(super) struct StreamFailed {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

impl Assembly {
    /// Takes one chunk; returns the text it adds, if any.
    fn take(&mut self, chunk: &Value) -> Option<String> {
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let choice = chunk.pointer("/choices/0")?;
        if let Some(r) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = Some(r.clone());
        }
        let delta = choice.get("delta")?;
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let partial = self.calls.entry(index).or_default();
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                partial.id.push_str(id);
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                partial.name.push_str(name);
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                partial.arguments.push_str(args);
            }
        }
        let text = delta.get("content").and_then(Value::as_str)?;
        if text.is_empty() {
            return None;
        }
        self.content.push_str(text);
        Some(text.to_owned())
    }

    /// The chat completion the chunks make up.
    fn completion(self) -> Value {
        let calls: Vec<Value> = self
            .calls
            .into_values()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        let mut message = json!({"role": "assistant", "content": self.content});
        if !calls.is_empty() {
            if self.content.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = Value::Array(calls);
        }
        json!({
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message,
                "finish_reason": self.finish_reason.unwrap_or(Value::Null)}],
            "usage": self.usage.unwrap_or(Value::Null),
        })
    }
}

/// Reads the gateway's stream to its end, sending a `delta` event for each
/// piece of text (with the step it belongs to); returns the whole answer,
/// or the error the stream ended with.
pub(super) async fn assemble(
    mut rx: mpsc::Receiver<Vec<u8>>,
    tx: &mpsc::Sender<RunEvent>,
    step: u32,
) -> Result<Value, StreamFailed> {
    let mut parser = sse::Parser::default();
    let mut answer = Assembly::default();
    while let Some(bytes) = rx.recv().await {
        let events = parser.feed(&bytes).map_err(|e| StreamFailed {
            code: codes::UPSTREAM_TOO_LARGE,
            message: e.to_string(),
        })?;
        for ev in events {
            let data = ev.data.trim();
            if data == "[DONE]" {
                answer.done = true;
                continue;
            }
            let Ok(chunk) = serde_json::from_str::<Value>(data) else {
                return Err(StreamFailed {
                    code: codes::UPSTREAM_ERROR,
                    message: "the model's stream carried malformed JSON".into(),
                });
            };
            if let Some(err) = chunk.get("error") {
                let code = err
                    .get("code")
                    .and_then(Value::as_str)
                    .and_then(codes::ErrorCode::find)
                    .copied()
                    .unwrap_or(codes::UPSTREAM_ERROR);
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the model's stream failed")
                    .to_owned();
                return Err(StreamFailed { code, message });
            }
            if let Some(text) = answer.take(&chunk) {
                let _ = tx
                    .send(RunEvent::new(
                        "delta",
                        json!({"step": step, "content": text}),
                    ))
                    .await;
            }
        }
    }
    if !answer.done {
        return Err(StreamFailed {
            code: codes::UPSTREAM_ERROR,
            message: "the model's stream ended before its end".into(),
        });
    }
    Ok(answer.completion())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_make_up_text_tool_calls_and_usage() {
        let mut a = Assembly::default();
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "slack", "arguments": "{\"ch"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": "call_2", "function": {"name": "jira", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": "annel\":\"#ops\"}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}),
        ];
        let texts: Vec<String> = chunks.iter().filter_map(|c| a.take(c)).collect();
        assert_eq!(texts, ["Hel", "lo"]);
        let done = a.completion();
        let m = &done["choices"][0]["message"];
        assert_eq!(m["content"], "Hello");
        assert_eq!(
            m["tool_calls"][0]["function"]["arguments"],
            "{\"channel\":\"#ops\"}"
        );
        assert_eq!(m["tool_calls"][0]["id"], "call_1");
        assert_eq!(m["tool_calls"][1]["function"]["name"], "jira");
        assert_eq!(done["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(done["usage"]["prompt_tokens"], 7);
    }
}
