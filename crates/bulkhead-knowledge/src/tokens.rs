//! A cheap, deterministic token estimate.
//!
//! Chunk sizes and (later) memory budgets need a token count without
//! loading a model's tokenizer, which would be I/O, large and specific to
//! one provider. The heuristic is deliberately simple and errs towards
//! counting more, because a budget that is exceeded is worse than one that
//! is left slightly unused:
//!
//! - a run of ASCII letters and digits costs one token per started 5
//!   characters (`"the"` 1, `"install"` 2, `"internationalization"` 4);
//! - non-ASCII letters and digits in the same run cost one token per started
//!   2 characters (scripts such as CJK or Cyrillic tokenize far more densely
//!   than English);
//! - every other character that is not whitespace (punctuation, symbols,
//!   emoji) costs one token;
//! - whitespace is free.
//!
//! Two texts joined by whitespace cost exactly the sum of their costs, and
//! joined without a separator at most that sum; the chunker relies on this.

/// ASCII characters per token in a word.
const ASCII_PER_TOKEN: u64 = 5;
/// Non-ASCII word characters per token.
const WIDE_PER_TOKEN: u64 = 2;

/// Estimates the number of tokens of `text` (see the module docs).
pub fn estimate_tokens(text: &str) -> u32 {
    let mut total: u64 = 0;
    let mut ascii: u64 = 0;
    let mut wide: u64 = 0;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_ascii() {
                ascii += 1;
            } else {
                wide += 1;
            }
            continue;
        }
        total += ascii.div_ceil(ASCII_PER_TOKEN) + wide.div_ceil(WIDE_PER_TOKEN);
        ascii = 0;
        wide = 0;
        if !c.is_whitespace() {
            total += 1;
        }
    }
    total += ascii.div_ceil(ASCII_PER_TOKEN) + wide.div_ceil(WIDE_PER_TOKEN);
    u32::try_from(total).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            ("", 0),
            ("   \n\t ", 0),
            ("the", 1),
            ("hello", 1),
            ("install", 2),
            ("internationalization", 4),
            ("Hello, world!", 4),
            ("a b c", 3),
            ("2024-01-01", 5),
            ("naïve", 2),
            ("文档", 1),
            ("文档库", 2),
            ("привет", 3),
            ("🙂🙂", 2),
        ];
        for (text, want) in cases {
            assert_eq!(estimate_tokens(text), want, "{text:?}");
        }
    }

    #[test]
    fn whitespace_joins_are_additive_and_glued_joins_subadditive() {
        let parts = ["Hello, world!", "internationalization", "文档库", "x"];
        for a in parts {
            for b in parts {
                let sum = estimate_tokens(a) + estimate_tokens(b);
                assert_eq!(estimate_tokens(&format!("{a} {b}")), sum);
                assert_eq!(estimate_tokens(&format!("{a}\n\n{b}")), sum);
                assert!(estimate_tokens(&format!("{a}{b}")) <= sum);
            }
        }
    }

    #[test]
    fn deterministic_and_grows_with_text() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        assert_eq!(estimate_tokens(&text), estimate_tokens(&text));
        assert!(estimate_tokens(&text) >= 900);
    }
}
