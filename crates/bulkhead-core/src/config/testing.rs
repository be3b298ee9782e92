//! Helpers the configuration tests share: a fixed environment and one
//! table-driven check of the error lines an input yields.

use super::load;
pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".into()),
        "OP" => Some("operator-token-0123456789".into()),
        "SHORT" => Some("short".into()),
        "EMPTY" => Some(String::new()),
        "KEY" => Some("sk-test".into()),
        _ => None,
    }
}

pub(super) fn errors(text: &str) -> Vec<String> {
    match load(text, &env) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

/// One table-driven check: each input yields exactly these error lines
/// (each line's prefix up to the message start).
pub(super) fn check(text: &str, expected: &[&str]) {
    let got = errors(text);
    assert_eq!(got.len(), expected.len(), "input:\n{text}\ngot: {got:#?}");
    for (g, e) in got.iter().zip(expected) {
        assert!(g.starts_with(e), "expected {e:?}, got {g:?}");
    }
}
