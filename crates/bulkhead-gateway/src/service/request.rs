//! The chat completion request as the gateway reads it: the members it
//! acts on, typed (serde), and the body as the client sent it, forwarded
//! to the provider.
//!
//! OpenAI clients send members the gateway does not know (`temperature`,
//! `tools`, `response_format`, vendor extensions); they are kept and
//! forwarded, never refused. The members the gateway reads are taken
//! leniently where today's contract is lenient (`stream_options`, the
//! output limits: a value of the wrong type counts as absent) and refused
//! with a fixed message where it is strict (`model`, `messages`, `stream`,
//! `n`), checked in that order so one body always gets the same answer.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::GatewayError;

/// Most choices (`n`) one chat call may ask for.
const MAX_CHOICES: u64 = 128;

/// A member as sent: absent, of the expected type, or of another type.
/// Deserialising it never fails, so which member is at fault is decided
/// by the checks' order, not by the order of the body's keys.
#[derive(Debug, Default, Clone, PartialEq)]
enum Member<T> {
    /// Not in the body.
    #[default]
    Absent,
    /// Present and of type `T`.
    Valid(T),
    /// Present, of another type.
    Invalid,
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Member<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(T::deserialize(value).map_or(Member::Invalid, Member::Valid))
    }
}

impl<T> Member<T> {
    fn valid(self) -> Option<T> {
        match self {
            Member::Valid(v) => Some(v),
            _ => None,
        }
    }
}

/// `stream_options`, of which only `include_usage` is read.
#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Member<bool>,
}

/// The members the gateway acts on; unknown ones are ignored here (they
/// stay in the forwarded body).
#[derive(Debug, Default, Deserialize)]
struct Wire {
    #[serde(default)]
    model: Member<String>,
    #[serde(default)]
    stream: Member<Option<bool>>,
    #[serde(default)]
    // An object (a sequence would deserialize into the struct too, which
    // the contract does not accept): read as `StreamOptions` below.
    stream_options: Member<Map<String, Value>>,
    #[serde(default)]
    n: Member<Option<u64>>,
    #[serde(default)]
    max_completion_tokens: Member<u64>,
    #[serde(default)]
    max_tokens: Member<u64>,
}

/// A checked chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model alias asked for.
    pub model: String,
    /// Whether the answer is streamed.
    pub stream: bool,
    /// Whether the client asked for the usage chunk of a stream.
    pub include_usage: bool,
    /// How many choices (`n`, 1 when unset).
    pub choices: u64,
    /// The output limit of one choice the client set:
    /// `max_completion_tokens`, else `max_tokens` (a member present with
    /// another type than an integer counts as no limit, and does not fall
    /// through to the other).
    pub max_output_tokens: Option<u64>,
    /// Whether either limit member is present at all (Anthropic needs one:
    /// the gateway adds the model's maximum when neither is).
    pub has_output_limit: bool,
    /// The body as sent, forwarded to the provider.
    pub body: Map<String, Value>,
}

impl ChatRequest {
    /// Checks a request body. Malformed messages are refused here, before
    /// the model is resolved, a limit is counted or anything is sent or
    /// billed; the messages stay in [`ChatRequest::body`] as sent.
    pub fn parse(body: Value) -> Result<Self, GatewayError> {
        if !body.is_object() {
            return Err(GatewayError::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        }
        // `Member` never fails and unknown members are ignored, so on an
        // object this cannot fail; the default is only for the type.
        let wire = Wire::deserialize(&body).unwrap_or_default();
        let Value::Object(body) = body else {
            return Err(GatewayError::InvalidRequest(
                "the body must be a JSON object".into(),
            ));
        };
        let Member::Valid(model) = wire.model else {
            return Err(GatewayError::InvalidRequest(
                "`model` is required and must be a string".into(),
            ));
        };
        crate::validate::messages(body.get("messages"))?;
        let stream = match wire.stream {
            Member::Absent | Member::Valid(None) => false,
            Member::Valid(Some(b)) => b,
            Member::Invalid => {
                return Err(GatewayError::InvalidRequest(
                    "`stream` must be a boolean".into(),
                ));
            }
        };
        let include_usage = wire
            .stream_options
            .valid()
            .and_then(|o| StreamOptions::deserialize(&Value::Object(o)).ok())
            .and_then(|o| o.include_usage.valid())
            .unwrap_or(false);
        let choices = match wire.n {
            Member::Absent | Member::Valid(None) => 1,
            Member::Valid(Some(n)) if (1..=MAX_CHOICES).contains(&n) => n,
            _ => {
                return Err(GatewayError::InvalidRequest(format!(
                    "`n` must be an integer between 1 and {MAX_CHOICES}"
                )));
            }
        };
        let has_output_limit =
            body.contains_key("max_completion_tokens") || body.contains_key("max_tokens");
        let max_output_tokens = match wire.max_completion_tokens {
            Member::Absent => wire.max_tokens.valid(),
            other => other.valid(),
        };
        Ok(Self {
            model,
            stream,
            include_usage,
            choices,
            max_output_tokens,
            has_output_limit,
            body,
        })
    }

    /// The request's messages, as sent.
    pub fn messages(&self) -> Option<&Value> {
        self.body.get("messages")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(body: Value) -> (String, Option<String>) {
        let e = ChatRequest::parse(body).unwrap_err();
        (e.to_string(), e.param().map(str::to_owned))
    }

    #[test]
    fn malformed_bodies_get_todays_messages_in_todays_order() {
        let m = json!([{"role": "user", "content": "hi"}]);
        let cases = [
            (json!([1]), "the body must be a JSON object"),
            (
                json!({"messages": m}),
                "`model` is required and must be a string",
            ),
            (
                json!({"model": 3, "messages": m}),
                "`model` is required and must be a string",
            ),
            // `model` is checked before everything else, whatever the key order.
            (
                json!({"stream": "yes", "n": 0, "model": null, "messages": m}),
                "`model` is required and must be a string",
            ),
            (
                json!({"model": "m", "messages": m, "stream": "yes"}),
                "`stream` must be a boolean",
            ),
            (
                json!({"model": "m", "messages": m, "stream": 1, "n": 0}),
                "`stream` must be a boolean",
            ),
            (
                json!({"model": "m", "messages": m, "n": 0}),
                "`n` must be an integer between 1 and 128",
            ),
            (
                json!({"model": "m", "messages": m, "n": 129}),
                "`n` must be an integer between 1 and 128",
            ),
            (
                json!({"model": "m", "messages": m, "n": 2.5}),
                "`n` must be an integer between 1 and 128",
            ),
            (
                json!({"model": "m", "messages": m, "n": "2"}),
                "`n` must be an integer between 1 and 128",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(refused(body.clone()), (message.to_owned(), None), "{body}");
        }
        // Messages are checked after `model`, before `stream` and `n`.
        let (message, param) = refused(json!({"model": "m", "messages": [], "stream": 1}));
        assert_eq!(
            (message.as_str(), param.as_deref()),
            ("messages: must not be empty", Some("messages"))
        );
        let e = ChatRequest::parse(json!({"model": "m"})).unwrap_err();
        assert_eq!((e.status(), e.code()), (400, "invalid_request"));
    }

    #[test]
    fn lenient_members_and_unknown_ones_are_kept() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2, "x-vendor": {"a": [1]}, "stream": null, "n": null,
            "stream_options": {"include_usage": "yes"}, "max_tokens": 50});
        let r = ChatRequest::parse(body.clone()).unwrap();
        assert_eq!(r.model, "m");
        assert!(!r.stream && !r.include_usage);
        assert_eq!(
            (r.choices, r.max_output_tokens, r.has_output_limit),
            (1, Some(50), true)
        );
        assert_eq!(Value::Object(r.body.clone()), body, "forwarded as sent");
        assert_eq!(r.messages(), body.get("messages"));

        let r = ChatRequest::parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "stream": true, "n": 3, "stream_options": {"include_usage": true},
            "max_completion_tokens": 7, "max_tokens": 9}),
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!((r.choices, r.max_output_tokens), (3, Some(7)));

        // A limit of the wrong type counts as none and does not fall
        // through to the other; it still counts as present.
        let r = ChatRequest::parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": null, "max_tokens": 9}),
        )
        .unwrap();
        assert_eq!((r.max_output_tokens, r.has_output_limit), (None, true));
        // `stream_options` that is not an object asks for nothing.
        let r = ChatRequest::parse(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "stream_options": [true]}),
        )
        .unwrap();
        assert!(!r.include_usage && !r.has_output_limit);
        assert_eq!(r.max_output_tokens, None);
    }
}
