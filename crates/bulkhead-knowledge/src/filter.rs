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
