//! Events a run emits while it progresses (the SSE stream of
//! `POST /v1/agents/{agent}/runs` with `stream: true`).

use serde_json::Value;

/// One event: its SSE name and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    /// `step`, `model_call`, `tool_call`, `tool_result`, `message`, `done` or `error`.
    pub event: &'static str,
    /// Payload.
    pub data: Value,
}

impl RunEvent {
    /// An event.
    pub fn new(event: &'static str, data: Value) -> Self {
        Self { event, data }
    }

    /// Whether the run ends with this event.
    pub fn is_last(&self) -> bool {
        matches!(self.event, "done" | "error")
    }
}
