//! Grammars of collection names and external document ids.
//!
//! Collection names appear in URLs and logs, so they are a short, lowercase
//! ASCII label. External ids are the caller's own keys (a path, a URL, a
//! database id), so they are free-form but bounded and free of control
//! characters, which could forge log lines or break terminals.

use crate::KnowledgeError;

/// Longest collection name: long enough for descriptive names, short enough
/// for a URL segment and an index key.
const MAX_COLLECTION: usize = 64;
/// Longest external id in bytes: fits URLs and file paths callers use as
/// keys while keeping the unique index small.
const MAX_EXTERNAL_ID: usize = 256;

/// Checks a collection name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn collection_name(s: &str) -> Result<(), KnowledgeError> {
    let mut bytes = s.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if first_ok && rest_ok && s.len() <= MAX_COLLECTION {
        Ok(())
    } else {
        Err(KnowledgeError::InvalidName(format!(
            "collection name must be 1-{MAX_COLLECTION} characters of lowercase letters, digits, '_' and '-', starting with a letter or digit"
        )))
    }
}

/// Checks an external id: 1..=256 bytes of UTF-8 without control characters.
pub fn external_id(s: &str) -> Result<(), KnowledgeError> {
    if s.is_empty() || s.len() > MAX_EXTERNAL_ID || s.chars().any(char::is_control) {
        Err(KnowledgeError::InvalidName(format!(
            "external id must be 1-{MAX_EXTERNAL_ID} bytes without control characters"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names() {
        let max = "a".repeat(64);
        for ok in ["a", "0", "docs", "my-docs_2", "9lives", max.as_str()] {
            assert_eq!(collection_name(ok), Ok(()), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "docs!",
            "my docs",
            "é",
            "a/b",
            "../x",
            long.as_str(),
        ] {
            let err = collection_name(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_name", "{bad}");
            assert!(err.to_string().contains("collection name"), "{err}");
        }
    }

    #[test]
    fn external_ids() {
        let max = "x".repeat(256);
        for ok in [
            "a",
            "docs/guide.md",
            "https://example.com/a?b=c",
            "naïve 文档 id",
            max.as_str(),
        ] {
            assert_eq!(external_id(ok), Ok(()), "{ok}");
        }
        let long = "x".repeat(257);
        // 86 three-byte characters: 258 bytes although only 86 characters.
        let long_bytes = "文".repeat(86);
        for bad in [
            "",
            "a\nb",
            "a\tb",
            "\u{7f}",
            "a\u{0}",
            long.as_str(),
            long_bytes.as_str(),
        ] {
            let err = external_id(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_name", "{bad:?}");
            assert!(err.to_string().contains("external id"), "{err}");
        }
    }
}
