//! Safe SQLite FTS5 `MATCH` expressions from free text.
//!
//! FTS5 has its own query language (`AND`, `OR`, `NOT`, `NEAR(...)`, prefix
//! `*`, initial-token `^`, `column:` filters, quoted phrases). Passing user
//! text to `MATCH` unmodified lets a caller change the query's meaning or
//! make it fail with a syntax error. [`fts_query`] is therefore the only
//! way the store may build a `MATCH` argument: it keeps only the words and
//! quotes each one, so every token is a plain string literal.

/// At most this many tokens: a query is a handful of words, and each token
/// is one more term for FTS5 to look up.
const MAX_TOKENS: usize = 32;

/// An FTS5 `MATCH` expression that is safe by construction: the only way
/// to make one is [`fts_query`], so a store method taking an `&FtsQuery`
/// cannot be handed raw user text by mistake. It reads as the expression
/// (`Deref<Target = str>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FtsQuery(String);

impl FtsQuery {
    /// The expression, for `MATCH ?`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for FtsQuery {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Turns free text into an FTS5 expression: the distinct words (runs of
/// Unicode letters and digits, lower-cased), each double-quoted, joined with
/// `OR`, at most 32 of them. `None` if the text has no word.
///
/// Quoting is sound because a token never contains `"`, and every FTS5
/// operator or special character (`*`, `^`, `:`, `(`, `+`, `-`) is a
/// separator here; operator words such as `OR` become quoted literals.
pub fn fts_query(user_query: &str) -> Option<FtsQuery> {
    let mut tokens: Vec<String> = Vec::new();
    for word in user_query.split(|c: char| !c.is_alphanumeric()) {
        if tokens.len() == MAX_TOKENS {
            break;
        }
        if word.is_empty() {
            continue;
        }
        // FTS5's default tokenizer folds case, so folding here only removes
        // duplicates and changes no result.
        let word = word.to_lowercase();
        if !tokens.contains(&word) {
            tokens.push(word);
        }
    }
    if tokens.is_empty() {
        return None;
    }
    Some(FtsQuery(
        tokens
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words() {
        assert_eq!(
            fts_query("hello world").as_deref(),
            Some(r#""hello" OR "world""#)
        );
        assert_eq!(fts_query("  Rust  ").as_deref(), Some(r#""rust""#));
        assert_eq!(fts_query("Rust rust RUST").as_deref(), Some(r#""rust""#));
        assert_eq!(
            fts_query("naïve 文档 café2").as_deref(),
            Some(r#""naïve" OR "文档" OR "café2""#)
        );
    }

    #[test]
    fn hostile_inputs_become_quoted_literals() {
        let cases = [
            (r#"a" OR b"#, Some(r#""a" OR "or" OR "b""#)),
            ("NEAR(a b)", Some(r#""near" OR "a" OR "b""#)),
            ("col:x", Some(r#""col" OR "x""#)),
            ("^start pre*", Some(r#""start" OR "pre""#)),
            ("a AND NOT b", Some(r#""a" OR "and" OR "not" OR "b""#)),
            ("-x +y {c d}: e", Some(r#""x" OR "y" OR "c" OR "d" OR "e""#)),
            ("\"\"\"", None),
            ("*", None),
            ("", None),
            ("   \t\n", None),
            ("(*:^\"-+)", None),
        ];
        for (input, want) in cases {
            assert_eq!(fts_query(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn output_has_only_quoted_tokens_and_or() {
        let hostile = r#"x" OR y* NEAR(a b, 3) title:z ^q "phrase here" AND) (OR"#;
        let q = fts_query(hostile).unwrap();
        for part in q.split(" OR ") {
            assert!(
                part.len() >= 3 && part.starts_with('"') && part.ends_with('"'),
                "{part}"
            );
            let inner = &part[1..part.len() - 1];
            assert!(inner.chars().all(char::is_alphanumeric), "{inner}");
        }
    }

    #[test]
    fn at_most_32_tokens() {
        let text = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let q = fts_query(&text).unwrap();
        assert_eq!(q.split(" OR ").count(), 32);
        assert!(q.starts_with(r#""w0""#) && q.ends_with(r#""w31""#));
    }
}
