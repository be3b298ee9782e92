//! Redaction: finding a tenant's secret values, and the common encodings
//! of each, in text bound for a model, a thread, a run's steps, an audit
//! event or an error message, and replacing them with `[redacted]`.
//!
//! A tool or an upstream that echoes a secret rarely echoes it verbatim:
//! it base64-encodes it (an `Authorization: Basic` header, a JWT-like
//! blob), URL-encodes it (a query string), JSON-escapes it, hex-dumps it,
//! changes its case or reverses it. Each secret is expanded into those
//! forms once, and one Aho-Corasick automaton over every form of every
//! secret scans the text in a single pass, so the cost stays linear in the
//! text whatever the number of secrets.
//!
//! Base64 depends on where in the stream the secret starts: the secret's
//! bytes at offset 0, 1 or 2 of a 3-byte group give three different
//! encodings. For each offset the characters that depend only on the
//! secret's own bits are a pattern, so a secret embedded mid-stream (after
//! `user:` in a Basic header, inside an encoded JSON document) is found.
//!
//! Splitting cannot be caught in general (any two fragments could be
//! recombined); a secret of at least [`SPLIT_MIN`] bytes has each half as a
//! pattern of its own.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::credential::CredentialSecret;

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not redacted: they would redact ordinary
/// words, and real secrets are longer.
pub const MIN_SECRET: usize = 6;

/// Secrets at least this long also have each half redacted on its own.
pub const SPLIT_MIN: usize = 16;

/// Finds every form of a set of secrets. Holds the secrets' forms, so it
/// has no `Debug` and lives only as long as one redaction pass needs it.
pub struct Redactor {
    automaton: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor of `values` (each with its encodings) and of `extra`
    /// (exact strings such as an encoded `user:password`, each with its
    /// case and URL/JSON forms).
    pub fn new<'a>(
        values: impl IntoIterator<Item = &'a str>,
        extra: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for v in values.into_iter().filter(|v| v.len() >= MIN_SECRET) {
            patterns.extend(variants(v));
        }
        for e in extra.into_iter().filter(|e| e.len() >= MIN_SECRET) {
            patterns.extend(text_forms(&e));
            patterns.push(e);
        }
        patterns.retain(|p| p.len() >= MIN_SECRET);
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.is_empty() {
            return Self { automaton: None };
        }
        // Standard semantics, so that overlapping matches can all be
        // found: two secrets sharing bytes are both covered.
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(&patterns)
            .ok();
        Self { automaton }
    }

    /// A redactor of every secret value the credentials hold; for HTTP
    /// Basic also the encoded `user:password` that travels in the header.
    pub fn for_credentials<'a>(
        credentials: impl IntoIterator<Item = &'a CredentialSecret>,
    ) -> Self {
        let credentials: Vec<&CredentialSecret> = credentials.into_iter().collect();
        let extra = credentials.iter().filter_map(|c| match c {
            CredentialSecret::Basic { username, password } => {
                Some(STANDARD.encode(format!("{username}:{}", password.expose())))
            }
            _ => None,
        });
        let extra: Vec<String> = extra.collect();
        Self::new(credentials.iter().flat_map(|c| c.secret_values()), extra)
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// `text` with every span covered by a form of a secret replaced by
    /// one `[redacted]` (overlapping or adjacent matches become one).
    pub fn redact(&self, text: &str) -> String {
        let Some(ac) = &self.automaton else {
            return text.to_owned();
        };
        let mut spans: Vec<(usize, usize)> = ac
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect();
        if spans.is_empty() {
            return text.to_owned();
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut i = 0;
        while i < spans.len() {
            let (start, mut end) = spans[i];
            i += 1;
            while i < spans.len() && spans[i].0 <= end {
                end = end.max(spans[i].1);
                i += 1;
            }
            // Patterns are whole UTF-8 strings matched ASCII-case-
            // insensitively, so spans start and end on char boundaries.
            out.push_str(text.get(at..start).unwrap_or_default());
            out.push_str(REDACTED);
            at = end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        out
    }
}

/// Every form of `secret` that redaction looks for.
pub fn variants(secret: &str) -> Vec<String> {
    let mut out = vec![secret.to_owned()];
    out.push(secret.chars().rev().collect());
    if secret.len() >= SPLIT_MIN {
        let mut mid = secret.len() / 2;
        while !secret.is_char_boundary(mid) {
            mid -= 1;
        }
        out.push(secret[..mid].to_owned());
        out.push(secret[mid..].to_owned());
    }
    out.extend(text_forms(secret));
    let bytes = secret.as_bytes();
    out.push(STANDARD.encode(bytes));
    out.push(URL_SAFE.encode(bytes));
    for offset in 0..3 {
        out.push(base64_core(bytes, offset, false));
        out.push(base64_core(bytes, offset, true));
    }
    out.push(hex(bytes));
    out
}

/// The URL-encoded and JSON-escaped forms of `s` (those that differ).
fn text_forms(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    out.push(percent(s, false));
    out.push(percent(s, true));
    let json = json_escape(s, false, false);
    out.push(json.clone());
    out.push(json.replace('/', "\\/"));
    let ascii = json_escape(s, true, false);
    out.push(ascii.clone());
    out.push(ascii.replace('/', "\\/"));
    out.push(json_escape(s, true, true));
    out.retain(|f| f != s);
    out
}

/// The base64 characters that depend only on `bytes` when they start at
/// `offset` (0–2) of a 3-byte group.
fn base64_core(bytes: &[u8], offset: usize, url_safe: bool) -> String {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(bytes);
    let encoded = if url_safe {
        URL_SAFE_NO_PAD.encode(&padded)
    } else {
        STANDARD_NO_PAD.encode(&padded)
    };
    // Character k covers bits [6k, 6k + 6); the secret covers
    // [8·offset, 8·(offset + len)).
    let first = (8 * offset).div_ceil(6);
    let last = (8 * (offset + bytes.len())) / 6;
    encoded.get(first..last).unwrap_or_default().to_owned()
}

/// Lowercase hex (matching is case-insensitive, so uppercase is found too).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encoding of every byte outside the unreserved set; `form`
/// writes a space as `+` (`application/x-www-form-urlencoded`).
fn percent(s: &str, form: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' if form => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The inside of a JSON string holding `s`: `ascii` escapes non-ASCII
/// characters as `\uXXXX` (UTF-16, as `ensure_ascii` encoders do), `all`
/// escapes every character that way.
fn json_escape(s: &str, ascii: bool, all: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if all || (ascii && !c.is_ascii()) {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
            continue;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "xoxb-acme/canary+7f3a 9c2e51d0é";

    fn caught(text: &str) {
        let r = Redactor::new([SECRET], []);
        let out = r.redact(text);
        assert!(out.contains(REDACTED), "{text} -> {out}");
        assert!(!out.contains("7f3a"), "{text} -> {out}");
    }

    #[test]
    fn every_common_encoding_is_found() {
        caught(&format!("plain {SECRET} end"));
        caught(&SECRET.to_uppercase());
        caught(&SECRET.chars().rev().collect::<String>());
        for prefix in ["", "a", "ab", "abc"] {
            let blob = format!("{prefix}{SECRET}!!");
            caught(&STANDARD.encode(&blob));
            caught(&URL_SAFE_NO_PAD.encode(&blob));
        }
        caught(&hex(SECRET.as_bytes()).to_uppercase());
        caught(&percent(SECRET, false).to_lowercase());
        caught(&format!("q={}&x=1", percent(SECRET, true)));
        caught(&serde_json::to_string(SECRET).unwrap().replace('/', "\\/"));
        caught(&json_escape(SECRET, true, false));
        caught(&json_escape(SECRET, true, true));
    }

    #[test]
    fn halves_of_a_long_secret_are_found_apart() {
        let r = Redactor::new([SECRET], []);
        let (a, b) = SECRET.split_at(SECRET.len() / 2);
        let out = r.redact(&format!("{{\"a\": \"{a}\", \"b\": \"{b}\"}}"));
        assert_eq!(out, "{\"a\": \"[redacted]\", \"b\": \"[redacted]\"}");
    }

    #[test]
    fn overlapping_secrets_are_covered_as_one_span() {
        let r = Redactor::new(["abcdef", "defghi"], []);
        assert_eq!(r.redact("xabcdefghix é"), "x[redacted]x é");
        assert_eq!(r.redact("nothing"), "nothing");
        assert!(Redactor::new(["short"], []).is_empty());
    }
}
