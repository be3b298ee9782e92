//! The small subset of JSON Schema that tool parameters may use, and a
//! validator for it.
//!
//! Supported keywords: `type` (one name or a list of them), `properties`,
//! `required`, `additionalProperties` (a boolean), `enum`, `items`,
//! `minLength`, `maxLength`, `minimum`, `maximum`, and the annotations
//! `description`, `title`, `default`. Anything else is refused by
//! [`check`] rather than ignored: a schema keyword that silently does
//! nothing (`pattern`, `format`, `oneOf`…) would let through arguments the
//! operator believes are refused.
//!
//! Messages name the argument path in backticks (`` `channel`: expected a
//! string ``) because they are returned to the model, which must be able to
//! fix its call.

use serde_json::{Map, Value};

const TYPES: [&str; 7] = [
    "string", "integer", "number", "boolean", "object", "array", "null",
];

const KEYWORDS: [&str; 13] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "items",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "description",
    "title",
    "default",
];

/// Nesting deeper than this is refused: no tool argument needs it, and the
/// validator recurses once per level.
const MAX_DEPTH: usize = 32;

/// Checks that `schema` is an object using only the supported keywords,
/// each with a value of the right shape. The error names the keyword's
/// path inside the schema (`properties.channel.pattern`).
pub fn check(schema: &Value) -> Result<(), String> {
    check_at(schema, "", 0)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check_at(schema: &Value, path: &str, depth: usize) -> Result<(), String> {
    let here = if path.is_empty() { "the schema" } else { path };
    let Value::Object(map) = schema else {
        return Err(format!("{here}: a schema must be an object"));
    };
    if depth > MAX_DEPTH {
        return Err(format!("{here}: nested deeper than {MAX_DEPTH} levels"));
    }
    for (key, value) in map {
        let at = join(path, key);
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(format!(
                "{at}: unsupported keyword {key:?} (supported: {})",
                KEYWORDS.join(", ")
            ));
        }
        match key.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(list) if !list.is_empty() => list.iter().collect(),
                    Value::Array(_) => return Err(format!("{at}: list at least one type")),
                    other => vec![other],
                };
                for name in names {
                    if !name.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(format!("{at}: {name} is not one of {}", TYPES.join(", ")));
                    }
                }
            }
            "properties" => {
                let Value::Object(props) = value else {
                    return Err(format!("{at}: must be an object"));
                };
                for (name, sub) in props {
                    check_at(sub, &join(&at, name), depth + 1)?;
                }
            }
            "items" => check_at(value, &at, depth + 1)?,
            "required" => {
                let ok = value
                    .as_array()
                    .is_some_and(|list| list.iter().all(Value::is_string));
                if !ok {
                    return Err(format!("{at}: must be a list of property names"));
                }
            }
            "additionalProperties" if !value.is_boolean() => {
                return Err(format!("{at}: must be true or false"));
            }
            "enum" if value.as_array().is_none_or(Vec::is_empty) => {
                return Err(format!("{at}: must be a non-empty list"));
            }
            "minLength" | "maxLength" if !value.is_u64() => {
                return Err(format!("{at}: must be a non-negative integer"));
            }
            "minimum" | "maximum" if !value.is_number() => {
                return Err(format!("{at}: must be a number"));
            }
            "description" | "title" if !value.is_string() => {
                return Err(format!("{at}: must be a string"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validates tool-call arguments against a schema accepted by [`check`].
/// The arguments must be an object whatever the schema says: a tool call
/// is named arguments.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    if !value.is_object() {
        return Err(format!(
            "the arguments must be a JSON object, not {}",
            type_name(value)
        ));
    }
    validate_at(schema, value, "")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "string" => value.is_string(),
        // 3.0 is an integer for JSON Schema; serde_json keeps it a float.
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn article(name: &str) -> &'static str {
    match name {
        "integer" | "object" | "array" => "an",
        "null" => "",
        _ => "a",
    }
}

/// The path for messages: `` `a.b[2]` ``, or "the arguments" at the top.
fn show(path: &str) -> String {
    if path.is_empty() {
        "the arguments".to_owned()
    } else {
        format!("`{path}`")
    }
}

fn validate_at(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    let at = show(path);
    if let Some(t) = schema.get("type") {
        let names: Vec<&str> = match t {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => vec![],
        };
        if !names.is_empty() && !names.iter().any(|n| has_type(value, n)) {
            let expected: Vec<String> = names
                .iter()
                .map(|n| format!("{} {n}", article(n)).trim().to_owned())
                .collect();
            return Err(format!(
                "{at}: expected {}, got {}",
                expected.join(" or "),
                type_name(value)
            ));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!("{at}: must be one of {}", list.join(", ")));
    }
    match value {
        Value::String(s) => check_length(schema, s, &at)?,
        Value::Number(n) => check_range(schema, n.as_f64().unwrap_or(f64::NAN), &at)?,
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_at(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        Value::Object(map) => validate_object(schema, map, path)?,
        _ => {}
    }
    Ok(())
}

fn check_length(schema: &Map<String, Value>, s: &str, at: &str) -> Result<(), String> {
    // Characters, not bytes, as JSON Schema counts them.
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        return Err(if min == 1 {
            format!("{at}: must not be empty")
        } else {
            format!("{at}: must be at least {min} characters long")
        });
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        return Err(format!("{at}: must be at most {max} characters long"));
    }
    Ok(())
}

fn check_range(schema: &Map<String, Value>, n: f64, at: &str) -> Result<(), String> {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && n < min
    {
        return Err(format!("{at}: must be at least {min}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && n > max
    {
        return Err(format!("{at}: must be at most {max}"));
    }
    Ok(())
}

fn validate_object(
    schema: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
) -> Result<(), String> {
    let props = schema.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                return Err(format!("{}: required", show(&join(path, name))));
            }
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, value) in map {
        let sub_path = join(path, name);
        match props.and_then(|p| p.get(name)) {
            Some(sub) => validate_at(sub, value, &sub_path)?,
            None if closed => return Err(format!("{}: unknown argument", show(&sub_path))),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn slack() -> Value {
        json!({
            "type": "object",
            "properties": {
                "channel": {"type": "string", "minLength": 1, "maxLength": 80},
                "text": {"type": "string", "minLength": 1, "maxLength": 40000},
            },
            "required": ["channel", "text"],
            "additionalProperties": false,
        })
    }

    #[test]
    fn supported_schemas_pass_the_check() {
        check(&slack()).unwrap();
        check(&json!({
            "type": "object",
            "title": "t",
            "description": "d",
            "properties": {
                "n": {"type": ["integer", "null"], "minimum": 0, "maximum": 10, "default": 1},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                "nested": {"type": "object", "properties": {"x": {"type": "boolean"}}},
            },
            "additionalProperties": true,
        }))
        .unwrap();
    }

    #[test]
    fn unsupported_or_malformed_schemas_are_refused_with_their_path() {
        let cases = [
            (json!([]), "the schema: a schema must be an object"),
            (
                json!({"properties": {"a": {"type": "string", "pattern": "^x"}}}),
                "properties.a.pattern: unsupported keyword \"pattern\"",
            ),
            (json!({"oneOf": []}), "oneOf: unsupported keyword"),
            (json!({"type": "text"}), "type: \"text\" is not one of"),
            (json!({"type": []}), "type: list at least one type"),
            (json!({"type": ["string", 3]}), "type: 3 is not one of"),
            (json!({"required": "a"}), "required: must be a list"),
            (
                json!({"additionalProperties": {}}),
                "additionalProperties: must be true or false",
            ),
            (json!({"enum": []}), "enum: must be a non-empty list"),
            (
                json!({"minLength": -1}),
                "minLength: must be a non-negative integer",
            ),
            (json!({"maximum": "9"}), "maximum: must be a number"),
            (json!({"items": 3}), "items: a schema must be an object"),
            (json!({"properties": []}), "properties: must be an object"),
            (json!({"title": 1}), "title: must be a string"),
        ];
        for (schema, expected) in cases {
            let err = check(&schema).unwrap_err();
            assert!(err.starts_with(expected), "{schema}: {err}");
        }
        let mut deep = json!({"type": "string"});
        for _ in 0..40 {
            deep = json!({"items": deep});
        }
        assert!(check(&deep).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn arguments_are_validated_with_messages_naming_the_path() {
        let s = slack();
        validate(&s, &json!({"channel": "C1", "text": "hi"})).unwrap();
        let cases = [
            (
                json!({"channel": 1, "text": "hi"}),
                "`channel`: expected a string, got an integer",
            ),
            (json!({"channel": "C1"}), "`text`: required"),
            (
                json!({"channel": "C1", "text": "hi", "extra": 1}),
                "`extra`: unknown argument",
            ),
            (
                json!({"channel": "", "text": "hi"}),
                "`channel`: must not be empty",
            ),
            (
                json!({"channel": "x".repeat(81), "text": "hi"}),
                "`channel`: must be at most 80 characters long",
            ),
            (
                json!("C1"),
                "the arguments must be a JSON object, not a string",
            ),
            (json!(null), "the arguments must be a JSON object, not null"),
            (
                json!([1]),
                "the arguments must be a JSON object, not an array",
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(validate(&s, &args).unwrap_err(), expected, "{args}");
        }
    }

    #[test]
    fn nested_types_enums_and_ranges() {
        let s = json!({
            "type": "object",
            "properties": {
                "n": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
                "f": {"type": "number", "minimum": 0.5},
                "mode": {"enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 2}},
                "o": {"type": "object", "properties": {"b": {"type": "boolean"}}, "required": ["b"]},
            },
        });
        validate(
            &s,
            &json!({"n": 3, "f": 0.5, "mode": "a", "tags": ["xy"], "o": {"b": true}}),
        )
        .unwrap();
        validate(&s, &json!({"n": null, "n2": "open by default"})).unwrap();
        validate(&s, &json!({"n": 2.0})).unwrap();
        let cases = [
            (json!({"n": 0}), "`n`: must be at least 1"),
            (json!({"n": 6}), "`n`: must be at most 5"),
            (
                json!({"n": 1.5}),
                "`n`: expected an integer or null, got a number",
            ),
            (json!({"f": 0.25}), "`f`: must be at least 0.5"),
            (json!({"mode": "c"}), "`mode`: must be one of \"a\", \"b\""),
            (
                json!({"tags": ["xy", "z"]}),
                "`tags[1]`: must be at least 2 characters long",
            ),
            (
                json!({"tags": "xy"}),
                "`tags`: expected an array, got a string",
            ),
            (json!({"o": {}}), "`o.b`: required"),
            (
                json!({"o": {"b": "yes"}}),
                "`o.b`: expected a boolean, got a string",
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(validate(&s, &args).unwrap_err(), expected, "{args}");
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let s = json!({"type": "object", "properties": {"t": {"type": "string", "maxLength": 2}}});
        validate(&s, &json!({"t": "éé"})).unwrap();
        assert!(validate(&s, &json!({"t": "ééé"})).is_err());
    }
}
