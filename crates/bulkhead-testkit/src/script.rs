//! What the fake provider answers: scripted [`Reply`]s, and the [`Answer`]
//! a generation request gets, whichever wire format renders it.

use std::time::Duration;

use serde_json::Value;

/// Token counts of one answer.
///
/// `input` is every prompt token, cached ones included (OpenAI's
/// `prompt_tokens`); `cached` is the part of it read from the prompt cache.
/// The Anthropic format reports them the way Anthropic bills them:
/// `input_tokens = input - cached`, `cache_read_input_tokens = cached`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Prompt tokens read from the cache (a part of `input`).
    pub cached: u64,
}

impl Usage {
    /// `input` prompt and `output` completion tokens, nothing cached.
    pub fn new(input: u64, output: u64) -> Self {
        Self {
            input,
            output,
            cached: 0,
        }
    }

    /// The same usage with `cached` of the prompt tokens read from the cache.
    pub fn with_cached(self, cached: u64) -> Self {
        Self { cached, ..self }
    }
}

impl From<(u64, u64, u64)> for Usage {
    /// `(input, output, cached)`.
    fn from((input, output, cached): (u64, u64, u64)) -> Self {
        Self {
            input,
            output,
            cached,
        }
    }
}

/// One tool call the fake model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function (tool) name.
    pub name: String,
    /// The arguments (OpenAI sends them as a JSON string, Anthropic as the
    /// `input` object; streaming sends them in fragments).
    pub arguments: Value,
}

impl ToolCall {
    /// A call of `name` with `arguments`.
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        Self {
            name: name.into(),
            arguments,
        }
    }

    /// A call whose OpenAI `arguments` string is `raw`, verbatim: lets a
    /// test play a model that emits malformed JSON. (Anthropic's format has
    /// no string form; there `raw` arrives as a JSON string value.)
    pub fn raw(name: impl Into<String>, raw: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arguments: Value::String(raw.into()),
        }
    }

    /// The OpenAI `arguments` string: a JSON string value is sent verbatim
    /// (see [`ToolCall::raw`]), anything else serialised.
    pub(crate) fn arguments_text(&self) -> String {
        match &self.arguments {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A scripted answer to the next generation request
/// (`/v1/chat/completions` or `/v1/messages`).
///
/// `GET /v1/models` and `POST /v1/embeddings` are never scripted: they are
/// deterministic and do not consume replies. Neither does a request the
/// fake rejects (missing key or header, invalid body).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An assistant text message. Without `usage`, usage is computed as for
    /// the default answer; with `usage`, exactly those numbers are reported.
    Text {
        /// The message text.
        text: String,
        /// Token counts to report instead of the computed ones.
        usage: Option<Usage>,
    },
    /// One or several tool calls, optionally after some text; the stop
    /// reason is `tool_calls` (OpenAI) / `tool_use` (Anthropic).
    ToolCalls {
        /// Text before the calls (OpenAI `content`, an Anthropic text block).
        text: Option<String>,
        /// The calls, in order.
        calls: Vec<ToolCall>,
        /// Token counts to report instead of the computed ones.
        usage: Option<Usage>,
    },
    /// An HTTP error in the provider's error shape, with a `Retry-After`
    /// header (seconds) when set. A status that is not a valid HTTP status
    /// becomes 500.
    Error {
        /// HTTP status.
        status: u16,
        /// `Retry-After` header value in seconds.
        retry_after: Option<u64>,
        /// The error message.
        message: String,
    },
    /// Wait `duration` (after reading the request, before answering), then
    /// answer with `then`.
    Delay {
        /// How long to wait.
        duration: Duration,
        /// The answer after the wait.
        then: Box<Reply>,
    },
    /// 200 with a body that is not valid JSON. For a streaming request: an
    /// event stream whose first event's data is not valid JSON, then the
    /// format's terminator (`data: [DONE]` / `message_stop`).
    Malformed,
    /// For a streaming request: the default answer's first `after_chunks`
    /// SSE events, then the connection is dropped without the terminator
    /// (`data: [DONE]` / `message_stop`, which is never sent even when
    /// `after_chunks` is larger). For a non-streaming request: the
    /// connection is dropped before any byte of the response.
    CutStream {
        /// How many SSE events to send before dropping the connection.
        after_chunks: usize,
    },
}

impl Reply {
    /// A text answer with computed usage.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            usage: None,
        }
    }

    /// One tool call.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::tool_calls([ToolCall::new(name, arguments)])
    }

    /// Several tool calls in one answer.
    pub fn tool_calls(calls: impl IntoIterator<Item = ToolCall>) -> Self {
        Self::ToolCalls {
            text: None,
            calls: calls.into_iter().collect(),
            usage: None,
        }
    }

    /// An error with `status` and `message`, no `Retry-After`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::Error {
            status,
            retry_after: None,
            message: message.into(),
        }
    }

    /// Wait `duration`, then answer with `then`.
    pub fn delay(duration: Duration, then: Reply) -> Self {
        Self::Delay {
            duration,
            then: Box::new(then),
        }
    }

    /// 200 with a body that is not JSON.
    pub fn malformed() -> Self {
        Self::Malformed
    }

    /// Drop the connection after `after_chunks` SSE events (before the
    /// response for a non-streaming request).
    pub fn cut_stream(after_chunks: usize) -> Self {
        Self::CutStream { after_chunks }
    }

    /// Report exactly `usage` (`(input, output, cached)` or a [`Usage`]).
    /// Applies to `Text` and `ToolCalls`, and to the answer after a `Delay`;
    /// other replies are returned unchanged.
    pub fn with_usage(self, usage: impl Into<Usage>) -> Self {
        let usage = usage.into();
        match self {
            Self::Text { text, .. } => Self::Text {
                text,
                usage: Some(usage),
            },
            Self::ToolCalls { text, calls, .. } => Self::ToolCalls {
                text,
                calls,
                usage: Some(usage),
            },
            Self::Delay { duration, then } => Self::Delay {
                duration,
                then: Box::new(then.with_usage(usage)),
            },
            other => other,
        }
    }

    /// Text before the tool calls of a `ToolCalls` reply (the text of a
    /// `Text` reply); other replies are returned unchanged.
    pub fn with_text(self, text: impl Into<String>) -> Self {
        match self {
            Self::Text { usage, .. } => Self::Text {
                text: text.into(),
                usage,
            },
            Self::ToolCalls { calls, usage, .. } => Self::ToolCalls {
                text: Some(text.into()),
                calls,
                usage,
            },
            Self::Delay { duration, then } => Self::Delay {
                duration,
                then: Box::new(then.with_text(text)),
            },
            other => other,
        }
    }

    /// A `Retry-After: seconds` header on an `Error` reply; other replies
    /// are returned unchanged.
    pub fn with_retry_after(self, seconds: u64) -> Self {
        match self {
            Self::Error {
                status, message, ..
            } => Self::Error {
                status,
                retry_after: Some(seconds),
                message,
            },
            Self::Delay { duration, then } => Self::Delay {
                duration,
                then: Box::new(then.with_retry_after(seconds)),
            },
            other => other,
        }
    }
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The model finished (`stop` / `end_turn`).
    EndTurn,
    /// The model called tools (`tool_calls` / `tool_use`).
    ToolUse,
    /// The request's token limit cut the text (`length` / `max_tokens`).
    MaxTokens,
}

/// A successful answer, before a wire format renders it.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub usage: Usage,
    pub stop: Stop,
}
