//! Document metadata and the filter language over it.
//!
//! Metadata is a small flat JSON object per document (`{"lang": "en",
//! "year": 2024, "tags": ["a", "b"]}`); search can be restricted with a
//! [`Filter`]. Both are validated here so the store can trust them.
//!
//! # Filter language
//!
//! A filter is a JSON object. Each key names a metadata key, and its value
//! is either a scalar (string, number, boolean, `null`), meaning equality,
//! or an object with exactly one operator:
//!
//! | operator | argument | matches when the metadata value... |
//! |---|---|---|
//! | `$eq` | scalar | equals it |
//! | `$ne` | scalar | is missing or does not equal it |
//! | `$in` | array of scalars | equals one of them |
//! | `$nin` | array of scalars | is missing or equals none of them |
//! | `$gt` `$gte` `$lt` `$lte` | number | is a number in that relation |
//! | `$exists` | boolean | is present (even `null`) / is absent |
//!
//! Several keys in one object must all match. At the top level of any
//! filter object, `{"$and": [filters]}` and `{"$or": [filters]}` combine
//! non-empty lists of filters. `{}` matches every document.
//!
//! Semantics: numbers compare by value (`1` equals `1.0`) and never equal
//! strings (`"1"` is not `1`); `$gt` and friends never match strings,
//! booleans or missing keys. When the metadata value is an array, a
//! condition matches if it holds for any element (`{"tags": "a"}` matches
//! `"tags": ["a", "b"]`), and `$ne`/`$nin` match if it holds for none.
//!
//! Limits: nesting at most 8 objects deep, at most 64 conditions, at most
//! 256 values per `$in`/`$nin`. Anything else is
//! [`KnowledgeError::InvalidFilter`] with a message naming the key or
//! operator.

use serde_json::{Map, Value};

use crate::KnowledgeError;

/// Deepest nesting of filter objects: real filters are two or three
/// levels; the bound keeps evaluation and error recursion shallow.
const MAX_DEPTH: usize = 8;
/// Most conditions in one filter: each is evaluated per candidate chunk.
const MAX_CONDITIONS: usize = 64;
/// Most values in one `$in`/`$nin` list, for the same reason.
const MAX_IN_VALUES: usize = 256;
/// Most keys in document metadata: metadata is for filtering, not storage.
const MAX_METADATA_KEYS: usize = 64;
/// Largest serialized metadata: it is stored with every document and
/// parsed for every filtered candidate.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest key quoted in an error message, so errors stay short.
const MAX_KEY_IN_MESSAGE: usize = 64;

/// A parsed, validated metadata filter (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Cond { key: String, op: Op },
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Exists(bool),
}

fn invalid(message: String) -> KnowledgeError {
    KnowledgeError::InvalidFilter(message)
}

/// A key for an error message, shortened if long.
fn shown(key: &str) -> String {
    if key.chars().count() <= MAX_KEY_IN_MESSAGE {
        key.to_owned()
    } else {
        let short: String = key.chars().take(MAX_KEY_IN_MESSAGE).collect();
        format!("{short}...")
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

struct Parser {
    conditions: usize,
}

impl Parser {
    fn object(&mut self, value: &Value, depth: usize) -> Result<Node, KnowledgeError> {
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "filters are nested more than {MAX_DEPTH} levels deep"
            )));
        }
        let Value::Object(map) = value else {
            return Err(invalid("a filter must be a JSON object".into()));
        };
        let mut nodes = Vec::with_capacity(map.len());
        for (key, value) in map {
            let node = match key.as_str() {
                op @ ("$and" | "$or") => {
                    let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
                        return Err(invalid(format!(
                            "`{op}` takes a non-empty array of filter objects"
                        )));
                    };
                    let children = items
                        .iter()
                        .map(|item| self.object(item, depth + 1))
                        .collect::<Result<Vec<_>, _>>()?;
                    if op == "$and" {
                        Node::All(children)
                    } else {
                        Node::Any(children)
                    }
                }
                op if op.starts_with('$') => {
                    return Err(invalid(format!(
                        "unknown operator `{}` where a metadata key is expected (only `$and` and `$or` combine filters)",
                        shown(op)
                    )));
                }
                "" => return Err(invalid("a metadata key must not be empty".into())),
                key => {
                    self.conditions += 1;
                    if self.conditions > MAX_CONDITIONS {
                        return Err(invalid(format!(
                            "a filter has at most {MAX_CONDITIONS} conditions"
                        )));
                    }
                    Node::Cond {
                        key: key.to_owned(),
                        op: condition(key, value)?,
                    }
                }
            };
            nodes.push(node);
        }
        Ok(match nodes.pop() {
            Some(only) if nodes.is_empty() => only,
            Some(last) => {
                nodes.push(last);
                Node::All(nodes)
            }
            None => Node::All(Vec::new()),
        })
    }
}

fn condition(key: &str, value: &Value) -> Result<Op, KnowledgeError> {
    let key = shown(key);
    let map = match value {
        Value::Array(_) => {
            return Err(invalid(format!(
                "key `{key}`: an array is not a value to compare with; use {{\"$in\": [...]}}"
            )));
        }
        Value::Object(map) => map,
        scalar => return Ok(Op::Eq(scalar.clone())),
    };
    let mut entries = map.iter();
    let (Some((op, arg)), None) = (entries.next(), entries.next()) else {
        return Err(invalid(format!(
            "key `{key}`: an operator object must have exactly one operator, like {{\"$eq\": 1}}"
        )));
    };
    let scalar = |make: fn(Value) -> Op| {
        if is_scalar(arg) {
            Ok(make(arg.clone()))
        } else {
            Err(invalid(format!(
                "key `{key}`: `{op}` takes a string, number, boolean or null"
            )))
        }
    };
    let list = |make: fn(Vec<Value>) -> Op| match arg.as_array() {
        Some(items) if items.len() > MAX_IN_VALUES => Err(invalid(format!(
            "key `{key}`: `{op}` takes at most {MAX_IN_VALUES} values"
        ))),
        Some(items) if items.iter().all(is_scalar) => Ok(make(items.clone())),
        _ => Err(invalid(format!(
            "key `{key}`: `{op}` takes an array of strings, numbers, booleans or nulls"
        ))),
    };
    let number = |make: fn(f64) -> Op| {
        arg.as_f64()
            .map(make)
            .ok_or_else(|| invalid(format!("key `{key}`: `{op}` takes a number")))
    };
    match op.as_str() {
        "$eq" => scalar(Op::Eq),
        "$ne" => scalar(Op::Ne),
        "$in" => list(Op::In),
        "$nin" => list(Op::Nin),
        "$gt" => number(Op::Gt),
        "$gte" => number(Op::Gte),
        "$lt" => number(Op::Lt),
        "$lte" => number(Op::Lte),
        "$exists" => arg
            .as_bool()
            .map(Op::Exists)
            .ok_or_else(|| invalid(format!("key `{key}`: `$exists` takes true or false"))),
        other if other.starts_with('$') => Err(invalid(format!(
            "key `{key}`: unknown operator `{}`",
            shown(other)
        ))),
        other => Err(invalid(format!(
            "key `{key}`: expected an operator such as `$eq`, found `{}` (metadata values are not nested)",
            shown(other)
        ))),
    }
}

/// Scalar equality; numbers by value, integers exactly.
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

/// The value's elements if it is an array, else the value itself.
fn elements(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    }
}

fn has_equal(v: &Value, x: &Value) -> bool {
    elements(v).iter().any(|e| scalar_eq(e, x))
}

fn has_number(v: &Value, test: impl Fn(f64) -> bool) -> bool {
    elements(v).iter().any(|e| e.as_f64().is_some_and(&test))
}

impl Node {
    fn matches(&self, meta: &Map<String, Value>) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|n| n.matches(meta)),
            Node::Any(nodes) => nodes.iter().any(|n| n.matches(meta)),
            Node::Cond { key, op } => {
                let value = meta.get(key);
                match op {
                    Op::Eq(x) => value.is_some_and(|v| has_equal(v, x)),
                    Op::Ne(x) => !value.is_some_and(|v| has_equal(v, x)),
                    Op::In(xs) => value.is_some_and(|v| xs.iter().any(|x| has_equal(v, x))),
                    Op::Nin(xs) => !value.is_some_and(|v| xs.iter().any(|x| has_equal(v, x))),
                    Op::Gt(n) => value.is_some_and(|v| has_number(v, |f| f > *n)),
                    Op::Gte(n) => value.is_some_and(|v| has_number(v, |f| f >= *n)),
                    Op::Lt(n) => value.is_some_and(|v| has_number(v, |f| f < *n)),
                    Op::Lte(n) => value.is_some_and(|v| has_number(v, |f| f <= *n)),
                    Op::Exists(want) => value.is_some() == *want,
                }
            }
        }
    }
}

impl Filter {
    /// Parses and validates a filter (see the module docs).
    pub fn parse(v: &Value) -> Result<Filter, KnowledgeError> {
        Parser { conditions: 0 }.object(v, 1).map(Filter)
    }

    /// Whether a document's metadata matches. Metadata that is not an
    /// object is treated as empty (every key missing).
    pub fn matches(&self, metadata: &Value) -> bool {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let meta = match metadata {
            Value::Object(map) => map,
            _ => EMPTY.get_or_init(Map::new),
        };
        self.0.matches(meta)
    }
}

/// Validates document metadata: a JSON object of at most 64 keys (not
/// empty, not starting with `$`, which filters reserve for operators), whose
/// values are scalars or arrays of scalars, at most 16 KiB serialized.
pub fn metadata(v: &Value) -> Result<(), KnowledgeError> {
    let bad = KnowledgeError::InvalidMetadata;
    let Value::Object(map) = v else {
        return Err(bad("metadata must be a JSON object".into()));
    };
    if map.len() > MAX_METADATA_KEYS {
        return Err(bad(format!(
            "metadata has {} keys; the limit is {MAX_METADATA_KEYS}",
            map.len()
        )));
    }
    for (key, value) in map {
        if key.is_empty() {
            return Err(bad("a metadata key must not be empty".into()));
        }
        if key.starts_with('$') {
            return Err(bad(format!(
                "metadata key `{}` must not start with `$`",
                shown(key)
            )));
        }
        if !elements(value).iter().all(is_scalar) {
            return Err(bad(format!(
                "metadata key `{}`: values must be strings, numbers, booleans, null or flat arrays of those",
                shown(key)
            )));
        }
    }
    let bytes = serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
    if bytes > MAX_METADATA_BYTES {
        return Err(bad(format!(
            "metadata is {bytes} bytes serialized; the limit is {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(v: Value) -> Filter {
        Filter::parse(&v).unwrap()
    }

    fn parse_err(v: Value) -> String {
        match Filter::parse(&v) {
            Err(KnowledgeError::InvalidFilter(msg)) => msg,
            other => panic!("expected InvalidFilter for {v}, got {other:?}"),
        }
    }

    fn nested(depth: usize) -> Value {
        let mut v = json!({"k": 1});
        for _ in 1..depth {
            v = json!({"$and": [v]});
        }
        v
    }

    #[test]
    fn valid_filters_parse() {
        let cases = [
            json!({}),
            json!({"lang": "en"}),
            json!({"n": 1, "ok": true, "none": null, "x": 1.5}),
            json!({"lang": {"$eq": "en"}}),
            json!({"lang": {"$ne": null}}),
            json!({"lang": {"$in": ["en", "de", 1, true, null]}}),
            json!({"lang": {"$nin": []}}),
            json!({"year": {"$gt": 2020}, "score": {"$lte": 0.5}}),
            json!({"year": {"$gte": -1}, "score": {"$lt": 1e9}}),
            json!({"draft": {"$exists": false}}),
            json!({"$and": [{"a": 1}, {"$or": [{"b": 2}, {"c": {"$exists": true}}]}]}),
            json!({"$or": [{"a": 1}], "b": 2}),
            nested(8),
        ];
        for v in cases {
            assert!(Filter::parse(&v).is_ok(), "{v}");
        }
        let sixty_four: Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(Filter::parse(&Value::Object(sixty_four)).is_ok());
    }

    #[test]
    fn every_error_path_names_its_cause() {
        let sixty_five: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
        let many_in: Vec<Value> = (0..257).map(|i| json!(i)).collect();
        let cases = [
            (json!([]), "a filter must be a JSON object"),
            (json!("lang"), "a filter must be a JSON object"),
            (json!(null), "a filter must be a JSON object"),
            (json!({"$and": [1]}), "a filter must be a JSON object"),
            (
                json!({"$and": {}}),
                "`$and` takes a non-empty array of filter objects",
            ),
            (
                json!({"$or": []}),
                "`$or` takes a non-empty array of filter objects",
            ),
            (
                json!({"$not": {"a": 1}}),
                "unknown operator `$not` where a metadata key is expected",
            ),
            (json!({"": 1}), "a metadata key must not be empty"),
            (
                json!({"tags": ["a"]}),
                "key `tags`: an array is not a value to compare with; use {\"$in\": [...]}",
            ),
            (
                json!({"a": {}}),
                "key `a`: an operator object must have exactly one operator",
            ),
            (
                json!({"a": {"$gt": 1, "$lt": 5}}),
                "key `a`: an operator object must have exactly one operator",
            ),
            (
                json!({"a": {"$eq": [1]}}),
                "key `a`: `$eq` takes a string, number, boolean or null",
            ),
            (
                json!({"a": {"$ne": {"x": 1}}}),
                "key `a`: `$ne` takes a string, number, boolean or null",
            ),
            (
                json!({"a": {"$in": "x"}}),
                "key `a`: `$in` takes an array of strings, numbers, booleans or nulls",
            ),
            (
                json!({"a": {"$nin": [[1]]}}),
                "key `a`: `$nin` takes an array of strings, numbers, booleans or nulls",
            ),
            (
                json!({"a": {"$in": many_in}}),
                "key `a`: `$in` takes at most 256 values",
            ),
            (json!({"a": {"$gt": "5"}}), "key `a`: `$gt` takes a number"),
            (
                json!({"a": {"$gte": null}}),
                "key `a`: `$gte` takes a number",
            ),
            (json!({"a": {"$lt": true}}), "key `a`: `$lt` takes a number"),
            (
                json!({"a": {"$lte": [1]}}),
                "key `a`: `$lte` takes a number",
            ),
            (
                json!({"a": {"$exists": 1}}),
                "key `a`: `$exists` takes true or false",
            ),
            (
                json!({"a": {"$regex": ".*"}}),
                "key `a`: unknown operator `$regex`",
            ),
            (
                json!({"a": {"b": 1}}),
                "key `a`: expected an operator such as `$eq`, found `b`",
            ),
            (nested(9), "filters are nested more than 8 levels deep"),
            (
                Value::Object(sixty_five),
                "a filter has at most 64 conditions",
            ),
        ];
        for (v, want) in cases {
            let msg = parse_err(v.clone());
            assert!(msg.starts_with(want), "{v}: got {msg:?}, want {want:?}");
            let err = Filter::parse(&v).unwrap_err();
            assert_eq!(err.code(), "invalid_filter");
            assert!(err.to_string().starts_with("invalid filter: "));
        }
    }

    #[test]
    fn conditions_are_counted_across_nesting() {
        let half: Map<String, Value> = (0..40).map(|i| (format!("k{i}"), json!(i))).collect();
        let v = json!({"$or": [Value::Object(half.clone()), Value::Object(half)]});
        assert_eq!(parse_err(v), "a filter has at most 64 conditions");
    }

    #[test]
    fn long_keys_are_shortened_in_messages() {
        let key = "k".repeat(1000);
        let msg = parse_err(json!({ key: [1] }));
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.contains("..."));
    }

    #[test]
    fn equality_and_types() {
        let meta = json!({"lang": "en", "n": 1, "x": 2.5, "ok": true, "none": null, "s": "1"});
        let yes = [
            json!({}),
            json!({"lang": "en"}),
            json!({"n": 1}),
            json!({"n": 1.0}),
            json!({"x": 2.5}),
            json!({"ok": true}),
            json!({"none": null}),
            json!({"s": "1"}),
            json!({"lang": "en", "n": 1}),
            json!({"lang": {"$eq": "en"}}),
            json!({"lang": {"$ne": "de"}}),
            json!({"missing": {"$ne": "de"}}),
        ];
        let no = [
            json!({"lang": "EN"}),
            json!({"n": "1"}),
            json!({"s": 1}),
            json!({"ok": "true"}),
            json!({"ok": 1}),
            json!({"missing": null}),
            json!({"missing": "x"}),
            json!({"lang": "en", "n": 2}),
            json!({"lang": {"$ne": "en"}}),
        ];
        for v in yes {
            assert!(f(v.clone()).matches(&meta), "{v} should match");
        }
        for v in no {
            assert!(!f(v.clone()).matches(&meta), "{v} should not match");
        }
    }

    #[test]
    fn large_integers_compare_exactly() {
        let meta = json!({"id": 9_007_199_254_740_993_i64, "u": u64::MAX});
        assert!(f(json!({"id": 9_007_199_254_740_993_i64})).matches(&meta));
        assert!(!f(json!({"id": 9_007_199_254_740_992_i64})).matches(&meta));
        assert!(f(json!({"u": u64::MAX})).matches(&meta));
        assert!(!f(json!({"u": u64::MAX - 1})).matches(&meta));
    }

    #[test]
    fn in_and_nin() {
        let meta = json!({"lang": "de", "n": 3, "tags": ["rust", "db"]});
        let cases = [
            (json!({"lang": {"$in": ["en", "de"]}}), true),
            (json!({"lang": {"$in": ["en"]}}), false),
            (json!({"lang": {"$in": []}}), false),
            (json!({"n": {"$in": [3.0]}}), true),
            (json!({"n": {"$in": ["3"]}}), false),
            (json!({"missing": {"$in": [null]}}), false),
            (json!({"lang": {"$nin": ["en"]}}), true),
            (json!({"lang": {"$nin": ["en", "de"]}}), false),
            (json!({"lang": {"$nin": []}}), true),
            (json!({"missing": {"$nin": ["x"]}}), true),
            // Array metadata: any element.
            (json!({"tags": "rust"}), true),
            (json!({"tags": "go"}), false),
            (json!({"tags": {"$in": ["go", "db"]}}), true),
            (json!({"tags": {"$nin": ["go", "db"]}}), false),
            (json!({"tags": {"$nin": ["go"]}}), true),
            (json!({"tags": {"$ne": "db"}}), false),
        ];
        for (v, want) in cases {
            assert_eq!(f(v.clone()).matches(&meta), want, "{v}");
        }
    }

    #[test]
    fn numeric_comparisons() {
        let meta = json!({"year": 2021, "score": 0.5, "s": "2021", "ok": true, "list": [1, 10]});
        let cases = [
            (json!({"year": {"$gt": 2020}}), true),
            (json!({"year": {"$gt": 2021}}), false),
            (json!({"year": {"$gte": 2021}}), true),
            (json!({"year": {"$lt": 2021.5}}), true),
            (json!({"year": {"$lte": 2020}}), false),
            (json!({"score": {"$lt": 1}}), true),
            (json!({"score": {"$gte": 0.5}}), true),
            (json!({"score": {"$gt": 0.5}}), false),
            (json!({"s": {"$gt": 0}}), false),
            (json!({"ok": {"$gte": 0}}), false),
            (json!({"missing": {"$lt": 1e300}}), false),
            (json!({"list": {"$gt": 5}}), true),
            (json!({"list": {"$gt": 50}}), false),
        ];
        for (v, want) in cases {
            assert_eq!(f(v.clone()).matches(&meta), want, "{v}");
        }
    }

    #[test]
    fn exists_and_missing_keys() {
        let meta = json!({"a": null, "b": 0});
        assert!(f(json!({"a": {"$exists": true}})).matches(&meta));
        assert!(f(json!({"b": {"$exists": true}})).matches(&meta));
        assert!(!f(json!({"c": {"$exists": true}})).matches(&meta));
        assert!(f(json!({"c": {"$exists": false}})).matches(&meta));
        assert!(!f(json!({"a": {"$exists": false}})).matches(&meta));
    }

    #[test]
    fn and_or() {
        let meta = json!({"lang": "en", "year": 2020});
        let cases = [
            (json!({"$and": [{"lang": "en"}, {"year": 2020}]}), true),
            (json!({"$and": [{"lang": "en"}, {"year": 2021}]}), false),
            (json!({"$or": [{"lang": "de"}, {"year": 2020}]}), true),
            (json!({"$or": [{"lang": "de"}, {"year": 2021}]}), false),
            (
                json!({"$or": [{"lang": "de"}, {"$and": [{"lang": "en"}, {"year": {"$lt": 2021}}]}]}),
                true,
            ),
            (json!({"$or": [{"lang": "en"}], "year": 1999}), false),
        ];
        for (v, want) in cases {
            assert_eq!(f(v.clone()).matches(&meta), want, "{v}");
        }
    }

    #[test]
    fn non_object_metadata_has_no_keys() {
        for meta in [json!(null), json!([1]), json!("en")] {
            assert!(f(json!({})).matches(&meta));
            assert!(!f(json!({"lang": "en"})).matches(&meta));
            assert!(f(json!({"lang": {"$exists": false}})).matches(&meta));
            assert!(f(json!({"lang": {"$ne": "en"}})).matches(&meta));
        }
    }

    #[test]
    fn metadata_validation() {
        let ok = [
            json!({}),
            json!({"lang": "en", "n": 1, "x": 1.5, "b": false, "z": null, "tags": ["a", 1, null]}),
            json!({"empty": []}),
        ];
        for v in ok {
            assert_eq!(metadata(&v), Ok(()), "{v}");
        }
        let too_many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
        let cases = [
            (json!([]), "metadata must be a JSON object"),
            (json!("x"), "metadata must be a JSON object"),
            (json!(null), "metadata must be a JSON object"),
            (
                Value::Object(too_many),
                "metadata has 65 keys; the limit is 64",
            ),
            (json!({"": 1}), "a metadata key must not be empty"),
            (
                json!({"$and": 1}),
                "metadata key `$and` must not start with `$`",
            ),
            (json!({"a": {"b": 1}}), "metadata key `a`: values must be"),
            (json!({"a": [[1]]}), "metadata key `a`: values must be"),
            (json!({"a": [{"b": 1}]}), "metadata key `a`: values must be"),
            (
                json!({"big": "x".repeat(16 * 1024)}),
                "metadata is 16394 bytes serialized; the limit is 16384",
            ),
        ];
        for (v, want) in cases {
            let err = metadata(&v).unwrap_err();
            assert_eq!(err.code(), "invalid_metadata");
            let KnowledgeError::InvalidMetadata(msg) = &err else {
                panic!("{err:?}");
            };
            assert!(msg.starts_with(want), "got {msg:?}, want {want:?}");
        }
        let just_fits = json!({"big": "x".repeat(16 * 1024 - 10)});
        assert_eq!(metadata(&just_fits), Ok(()));
    }
}
