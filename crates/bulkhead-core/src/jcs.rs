//! RFC 8785 JSON Canonicalization Scheme (JCS) for `serde_json` values.
//!
//! The canonical form of a JSON value is its serialisation with no
//! whitespace, object members sorted by their names compared as UTF-16
//! code units, strings escaped as ECMAScript's `JSON.stringify` does
//! (`"`, `\`, `\b`, `\f`, `\n`, `\r`, `\t` by their short escapes, other
//! control characters as `\u00xx` with lowercase hex, everything else
//! verbatim UTF-8), and every number written as an IEEE 754 double in
//! ECMAScript's `Number.prototype.toString` form (shortest round-trip
//! digits; `1e+21`, `1e-7`, `0.000001`, `-0` as `0`). Integers beyond
//! ±2^53 are therefore written as the nearest double, as RFC 8785 requires.

use serde_json::Value;

/// The RFC 8785 canonical serialisation of `v`.
pub fn canonicalize(v: &Value) -> String {
    let mut out = String::new();
    write_value(v, &mut out);
    out
}

/// Appends the canonical serialisation of `v` to `out`.
pub fn write_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

/// Largest integer every double below it represents exactly.
const EXACT: u64 = 1 << 53;

fn write_number(n: &serde_json::Number, out: &mut String) {
    if let Some(u) = n.as_u64()
        && u <= EXACT
    {
        out.push_str(&u.to_string());
    } else if let Some(i) = n.as_i64()
        && i.unsigned_abs() <= EXACT
    {
        out.push_str(&i.to_string());
    } else {
        // Anything else is (or becomes, as RFC 8785 says) a double.
        write_double(n.as_f64().unwrap_or(0.0), out);
    }
}

/// ECMAScript `Number.prototype.toString` of a finite double.
pub fn write_double(x: f64, out: &mut String) {
    if x == 0.0 || !x.is_finite() {
        // -0 is `0`; JSON has no NaN or infinities (serde_json holds none).
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` is the shortest representation that round-trips.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).unsigned_abs().to_string());
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: f64) -> String {
        let mut s = String::new();
        write_double(x, &mut s);
        s
    }

    /// The number examples of RFC 8785 (appendix B and section 3.2.2.3).
    #[test]
    fn numbers_are_written_as_ecmascript_does() {
        let cases: &[(&str, &str)] = &[
            ("0.0", "0"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("1e-27", "1e-27"),
            ("0.000001", "0.000001"),
            ("1e-7", "1e-7"),
            ("-1e-7", "-1e-7"),
            ("1e20", "100000000000000000000"),
            ("1e21", "1e+21"),
            ("1e30", "1e+30"),
            ("333333333.33333329", "333333333.3333333"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("9007199254740992.0", "9007199254740992"),
            ("295147905179352830000.0", "295147905179352830000"),
            ("-1.5e300", "-1.5e+300"),
            ("123.456", "123.456"),
        ];
        for (x, want) in cases {
            assert_eq!(double(x.parse().unwrap()), *want, "{x}");
        }
        let big: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(canonicalize(&big), "18446744073709552000");
        let n: Value = serde_json::from_str("-9007199254740993").unwrap();
        assert_eq!(canonicalize(&n), "-9007199254740992");
        let n: Value = serde_json::from_str("[9007199254740992,-42,1.0,1e2]").unwrap();
        assert_eq!(canonicalize(&n), "[9007199254740992,-42,1,100]");
    }

    #[test]
    fn strings_are_escaped_as_json_stringify_does() {
        let v = Value::String("a\"\\\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}/é€😀".into());
        assert_eq!(
            canonicalize(&v),
            "\"a\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}/é€😀\""
        );
    }

    /// RFC 8785 section 3.2.3: names sort as UTF-16 code units, so U+1F600
    /// (surrogates D83D DE00) comes before U+FB33 though its code point is
    /// larger.
    #[test]
    fn members_sort_by_utf16_code_units() {
        let v = serde_json::json!({"\u{fb33}": 1, "😀": 2, "b": {"z": null, "a": [true, false]}, "a": "x"});
        assert_eq!(
            canonicalize(&v),
            "{\"a\":\"x\",\"b\":{\"a\":[true,false],\"z\":null},\"😀\":2,\"\u{fb33}\":1}"
        );
    }
}
