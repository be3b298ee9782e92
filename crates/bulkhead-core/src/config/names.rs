//! The checks every section shares: resource and connection names, and
//! `http(s)://` URLs.

use std::collections::BTreeSet;

use super::error::Errors;

/// Connection names (vault entries): `[a-z0-9_-]{1,64}`.
pub fn is_connection_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Names of providers, models, tools and agents: `[A-Za-z0-9._-]{1,64}`.
fn is_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn check_unique<'a>(
    names: impl Iterator<Item = &'a str>,
    table: &str,
    errors: &mut Errors,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (i, name) in names.enumerate() {
        if !is_resource_name(name) {
            errors.push(
                format!("{table}[{i}].name"),
                format!("{name:?} is not a valid name (1-64 characters of letters, digits, '.', '_', '-')"),
            );
        }
        if !seen.insert(name.to_owned()) {
            errors.push(
                format!("{table}[{i}].name"),
                format!("duplicate name {name:?}"),
            );
        }
    }
    seen
}

pub(super) fn check_url(url: &str, path: &str, errors: &mut Errors) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace) => {}
        _ => errors.push(path, format!("{url:?} is not an http:// or https:// URL")),
    }
}
