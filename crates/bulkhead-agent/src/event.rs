//! Events a run emits while it progresses (the SSE stream of
//! `POST /v1/agents/{agent}/runs` with `stream: true`).

use serde_json::Value;

/// One event: its SSE name and JSON payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    /// `step`, `model_call`, `tool_call`, `tool_result`,
    /// `approval_requested`, `message`, then `done`, `error` or
    /// `awaiting_approval` (the run paused; it goes on after a decision,
    /// without this stream).
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
        matches!(self.event, "done" | "error" | "awaiting_approval")
    }
}
