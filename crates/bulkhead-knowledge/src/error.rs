//! The one error type of the crate, with stable codes for the API layer.
//!
//! Messages are safe to show to the caller: they name the offending key,
//! operator or limit but never echo large input back.

use thiserror::Error;

/// Why a document, name, filter or metadata value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KnowledgeError {
    /// The document has no text once converted (empty or whitespace only).
    #[error("the document is empty")]
    Empty,
    /// The raw document is larger than [`crate::Limits::max_document_bytes`].
    #[error("the document is {bytes} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Size of the raw input.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The metadata filter is not in the filter language.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A collection name or external id does not follow its grammar.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// Document metadata is not a small flat JSON object.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// The chunking limits cannot produce chunks (zero size, overlap too big).
    #[error("invalid chunking limits: {0}")]
    InvalidLimits(String),
}

impl KnowledgeError {
    /// A stable snake_case code clients can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_document",
            Self::TooLarge { .. } => "document_too_large",
            Self::InvalidFilter(_) => "invalid_filter",
            Self::InvalidName(_) => "invalid_name",
            Self::InvalidMetadata(_) => "invalid_metadata",
            Self::InvalidLimits(_) => "invalid_limits",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (KnowledgeError::Empty, "empty_document"),
            (
                KnowledgeError::TooLarge { bytes: 2, limit: 1 },
                "document_too_large",
            ),
            (
                KnowledgeError::InvalidFilter(String::new()),
                "invalid_filter",
            ),
            (KnowledgeError::InvalidName(String::new()), "invalid_name"),
            (
                KnowledgeError::InvalidMetadata(String::new()),
                "invalid_metadata",
            ),
            (
                KnowledgeError::InvalidLimits(String::new()),
                "invalid_limits",
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn too_large_message_names_both_sizes() {
        let msg = KnowledgeError::TooLarge {
            bytes: 10,
            limit: 4,
        }
        .to_string();
        assert!(msg.contains("10") && msg.contains('4'), "{msg}");
    }
}
