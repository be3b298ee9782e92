//! [`ToolError`]: why a tool could not be built or called, with a stable
//! code per variant.
//!
//! Messages go back to the model (so that it can fix its call) and into
//! logs, so they never carry a credential: [`ToolBox::call`] scrubs every
//! secret value (and its common encodings) out of them before returning,
//! even one an upstream echoed back in its error body.
//!
//! [`ToolBox::call`]: crate::ToolBox::call

use bulkhead_core::codes;
use bulkhead_vault::Redactor;

/// Why a tool could not be built or called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The tool's configuration is unusable (named by key path, e.g.
    /// `tools[2].url: ...`).
    #[error("tool configuration: {0}")]
    Config(String),
    /// The model's arguments do not fit the tool; nothing was sent.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The rendered URL's `host:port` is not in the tool's allow-list;
    /// nothing was sent.
    #[error("host {host} is not allowed for this tool")]
    HostNotAllowed {
        /// The refused `host:port`.
        host: String,
    },
    /// The egress guard refused where the call would go (scheme, or an
    /// address outbound requests may not reach, after resolution or on a
    /// redirect); nothing was sent there.
    #[error("refused by the egress guard: {0}")]
    EgressRefused(String),
    /// The tool needs a credential and none was given; nothing was sent.
    #[error("this tool needs a credential and none is connected")]
    MissingCredential,
    /// The upstream answered with a failure.
    #[error("upstream answered {status}: {message}")]
    Upstream {
        /// HTTP status (200 for Slack's `{"ok": false}`).
        status: u16,
        /// A short snippet of the answer, credentials removed.
        message: String,
    },
    /// The response body exceeded the tool's `max_response_bytes`.
    #[error("the response is larger than {limit} bytes")]
    ResponseTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The call did not finish within the tool's `timeout_s`.
    #[error("no complete answer within {seconds} s")]
    Timeout {
        /// The timeout in seconds.
        seconds: u64,
    },
    /// The request could not be made (connection refused, TLS, a broken
    /// body…).
    #[error("request failed: {0}")]
    Request(String),
}

impl ToolError {
    /// The entry of the code table this error answers with, one per
    /// variant.
    pub fn error_code(&self) -> codes::ErrorCode {
        match self {
            ToolError::Config(_) => codes::TOOL_CONFIG,
            ToolError::InvalidArguments(_) => codes::INVALID_ARGUMENTS,
            ToolError::HostNotAllowed { .. } => codes::HOST_NOT_ALLOWED,
            ToolError::EgressRefused(_) => codes::EGRESS_REFUSED,
            ToolError::MissingCredential => codes::MISSING_CREDENTIAL,
            ToolError::Upstream { .. } => codes::UPSTREAM,
            ToolError::ResponseTooLarge { .. } => codes::RESPONSE_TOO_LARGE,
            ToolError::Timeout { .. } => codes::TIMEOUT,
            ToolError::Request(_) => codes::REQUEST,
        }
    }

    /// A stable snake_case code, one per variant, for callers to branch on
    /// and to put in audit events and API errors: its `bulkhead_core::codes`
    /// entry's.
    pub fn code(&self) -> &'static str {
        self.error_code().code
    }

    /// The same error with every `secrets` value replaced in its text.
    pub(crate) fn scrubbed(self, secrets: &Redactor) -> Self {
        if secrets.is_empty() {
            return self;
        }
        let s = |text: String| scrub(&text, secrets);
        match self {
            ToolError::Config(m) => ToolError::Config(s(m)),
            ToolError::InvalidArguments(m) => ToolError::InvalidArguments(s(m)),
            ToolError::HostNotAllowed { host } => ToolError::HostNotAllowed { host: s(host) },
            ToolError::Upstream { status, message } => ToolError::Upstream {
                status,
                message: s(message),
            },
            ToolError::Request(m) => ToolError::Request(s(m)),
            ToolError::EgressRefused(m) => ToolError::EgressRefused(s(m)),
            other @ (ToolError::MissingCredential
            | ToolError::ResponseTooLarge { .. }
            | ToolError::Timeout { .. }) => other,
        }
    }
}

/// `text` with every occurrence of each secret, in any common encoding,
/// replaced by `[redacted]` (one pass; overlapping occurrences are covered
/// as one span).
pub(crate) fn scrub(text: &str, secrets: &Redactor) -> String {
    secrets.redact(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let all = [
            ToolError::Config(String::new()),
            ToolError::InvalidArguments(String::new()),
            ToolError::HostNotAllowed {
                host: String::new(),
            },
            ToolError::MissingCredential,
            ToolError::Upstream {
                status: 500,
                message: String::new(),
            },
            ToolError::ResponseTooLarge { limit: 1 },
            ToolError::Timeout { seconds: 1 },
            ToolError::Request(String::new()),
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(ToolError::code).collect();
        assert_eq!(codes.len(), all.len());
        assert!(
            codes
                .iter()
                .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    #[test]
    fn scrubbing_replaces_every_occurrence() {
        let secrets = Redactor::new(["s3cret", ""], []);
        let e = ToolError::Upstream {
            status: 401,
            message: "bad token s3cret (s3cret)".into(),
        }
        .scrubbed(&secrets);
        assert_eq!(
            e.to_string(),
            "upstream answered 401: bad token [redacted] ([redacted])"
        );
        let secrets = Redactor::new(["abcdef", "defghi", "e"], []);
        assert_eq!(scrub("xabcdefghix e é", &secrets), "x[redacted]x e é");
        assert_eq!(scrub("nothing", &secrets), "nothing");
    }
}
