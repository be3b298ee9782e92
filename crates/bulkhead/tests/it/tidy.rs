//! The house rules that a reviewer would otherwise have to remember,
//! checked over the workspace's own sources:
//! - every Rust file starts with a `//!` doc saying what it is for;
//! - no `#[allow(...)]`: a lint is silenced only by `#[expect(...)]` with
//!   a `reason`, so a stale exception fails the build;
//! - the store never assembles SQL with `format!`, except in the listed places,
//!   each of which interpolates only constants or generated placeholders;
//! - tests never sleep: they wait for a condition through
//!   `bulkhead_testkit::wait` (the listed exception cannot depend on it).

use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `crates/`, relative to the root, with its text.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = root();
    let mut files = Vec::new();
    walk(&root.join("crates"), &mut files);
    files.sort();
    assert!(files.len() > 100, "found only {} sources", files.len());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, text)
        })
        .collect()
}

/// Places that build SQL with `format!`, by file and function, and why it
/// is safe there.
const SQL_FORMAT_EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "crates/bulkhead-store/src/migrate.rs",
        "apply",
        "PRAGMA user_version takes no parameter; the value is the migration's index",
    ),
    (
        "crates/bulkhead-store/src/sqlite/agent.rs",
        "busy",
        "the filter is one of two constant column conditions",
    ),
    (
        "crates/bulkhead-store/src/sqlite/agent.rs",
        "delete_thread",
        "the IN list is generated `?` placeholders, the values are bound",
    ),
    (
        "crates/bulkhead-store/src/sqlite/approval.rs",
        "insert",
        "COLUMNS is a constant",
    ),
    (
        "crates/bulkhead-store/src/sqlite/approval.rs",
        "get",
        "COLUMNS is a constant",
    ),
    (
        "crates/bulkhead-store/src/sqlite/approval.rs",
        "list",
        "COLUMNS is a constant",
    ),
    (
        "crates/bulkhead-store/src/sqlite/gateway.rs",
        "usage_summary",
        "the grouping columns come from a fixed enum, the values are bound",
    ),
];

/// Test files that may sleep, and why.
const SLEEP_EXCEPTIONS: &[(&str, &str)] = &[(
    "crates/bulkhead-vault/tests/it/aws_kms.rs",
    "polls, with a bound, for the moto process to listen or exit; the vault does not depend on the testkit",
)];

/// The name of the last `fn` declared before `at`.
fn enclosing_fn(text: &str, at: usize) -> &str {
    text[..at]
        .rmatch_indices("fn ")
        .find_map(|(i, _)| {
            let rest = &text[i + 3..at];
            let name: &str = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default();
            let before = text[..i].chars().last();
            (!name.is_empty() && before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')))
                .then_some(name)
        })
        .unwrap_or("?")
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| {
            !text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "no `//!` doc at the top of: {missing:#?}"
    );
}

#[test]
fn lints_are_silenced_only_by_expect_with_a_reason() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        for (n, line) in text.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("#[allow(") || l.starts_with("#![allow(") {
                found.push(format!("{path}:{}: {l}", n + 1));
            }
        }
        // An expect's reason may sit on a later line of the attribute.
        for (at, _) in text.match_indices("expect(") {
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let head = text[start..at].trim_start();
            if head != "#[" && head != "#![" {
                continue;
            }
            let attr = &text[at..];
            let end = attr.find(")]").unwrap_or(attr.len());
            if !attr[..end].contains("reason = \"") {
                let line = text[..at].lines().count();
                found.push(format!("{path}:{line}: an expect without a reason"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn sql_is_not_built_with_format_outside_the_listed_places() {
    const KEYWORDS: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP", "PRAGMA", "WITH",
        "REPLACE",
    ];
    let mut found = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (path, text) in sources() {
        // SQL lives in the store crate only.
        if !path.starts_with("crates/bulkhead-store/src/") {
            continue;
        }
        for (at, _) in text.match_indices("format!(") {
            let rest = text[at + "format!(".len()..].trim_start();
            let rest = rest.trim_start_matches(['r', '#']);
            let Some(literal) = rest.strip_prefix('"') else {
                continue;
            };
            let first = literal.trim_start();
            // The store writes SQL keywords in capitals.
            let is_sql = KEYWORDS.iter().any(|k| {
                first.starts_with(k)
                    && first
                        .as_bytes()
                        .get(k.len())
                        .is_some_and(|c| !c.is_ascii_alphanumeric())
            });
            if !is_sql {
                continue;
            }
            let func = enclosing_fn(&text, at);
            match SQL_FORMAT_EXCEPTIONS
                .iter()
                .find(|(f, name, _)| *f == path && *name == func)
            {
                Some(e) => {
                    used.insert((e.0, e.1));
                }
                None => {
                    let line = text[..at].lines().count();
                    found.push(format!("{path}:{line} (fn {func})"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL built with format! (bind the values, or add a reasoned exception): {found:#?}"
    );
    let stale: Vec<_> = SQL_FORMAT_EXCEPTIONS
        .iter()
        .filter(|(f, name, _)| !used.contains(&(*f, *name)))
        .collect();
    assert!(
        stale.is_empty(),
        "exceptions that match nothing: {stale:#?}"
    );
}

#[test]
fn tests_wait_for_conditions_instead_of_sleeping() {
    let mut found = Vec::new();
    for (path, text) in sources() {
        if !path.contains("/tests/") || SLEEP_EXCEPTIONS.iter().any(|(f, _)| *f == path) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            // Spelled in two parts so this file does not match itself.
            if code.contains(concat!("sle", "ep(")) {
                found.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "tests wait through bulkhead_testkit::wait, not sleep: {found:#?}"
    );
}
