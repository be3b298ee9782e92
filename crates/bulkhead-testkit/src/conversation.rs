//! The parts of a generation request the fake's answers depend on, and the
//! deterministic answers and token counts computed from them.
//!
//! Tokens are whitespace-separated words: predictable in a test, and the
//! same conversation counts the same in both wire formats.

use serde_json::Value;

use crate::script::{Answer, Stop, ToolCall, Usage};

/// Added to every prompt's word count: real prompts carry a few framing
/// tokens (roles, separators), and a prompt is never zero tokens.
pub(crate) const PROMPT_OVERHEAD: u64 = 3;

/// Tool-call arguments count one completion token per this many bytes of
/// their JSON (the usual rule of thumb for English-like text).
const BYTES_PER_ARGUMENT_TOKEN: u64 = 4;

/// What a generation request says, as far as the answer is concerned.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conversation {
    /// Text of the last user message.
    pub last_user_text: String,
    /// Words in every message's text (and Anthropic's `system`).
    pub prompt_words: u64,
    /// The request's completion-token limit.
    pub max_tokens: Option<u64>,
}

impl Conversation {
    /// OpenAI `messages` (system, user, assistant and tool messages alike).
    pub fn openai(messages: &[Value], max_tokens: Option<u64>) -> Self {
        Self::from_messages(None, messages, max_tokens)
    }

    /// Anthropic `system` and `messages`.
    pub fn anthropic(system: Option<&Value>, messages: &[Value], max_tokens: u64) -> Self {
        Self::from_messages(system, messages, Some(max_tokens))
    }

    fn from_messages(system: Option<&Value>, messages: &[Value], max_tokens: Option<u64>) -> Self {
        let mut prompt_words = system.map_or(0, |s| words(&text_of(s)));
        let mut last_user_text = String::new();
        for message in messages {
            let text = message.get("content").map(text_of).unwrap_or_default();
            prompt_words += words(&text);
            if message.get("role").and_then(Value::as_str) == Some("user") {
                last_user_text = text;
            }
        }
        Self {
            last_user_text,
            prompt_words,
            max_tokens,
        }
    }

    /// Prompt tokens of this conversation.
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_words + PROMPT_OVERHEAD
    }

    /// The answer when nothing is scripted: `echo: <last user text>`.
    pub fn default_answer(&self) -> Answer {
        let text = if self.last_user_text.trim().is_empty() {
            "echo:".to_owned()
        } else {
            format!("echo: {}", self.last_user_text)
        };
        self.text_answer(text, None)
    }

    /// A text answer, cut to the request's token limit (stop reason
    /// `length` / `max_tokens`) when it has more words than that.
    pub fn text_answer(&self, text: String, usage: Option<Usage>) -> Answer {
        let (text, stop) = match self.max_tokens {
            Some(max) if words(&text) > max => (first_words(&text, max), Stop::MaxTokens),
            _ => (text, Stop::EndTurn),
        };
        let usage = usage.unwrap_or_else(|| Usage::new(self.prompt_tokens(), words(&text)));
        Answer {
            text,
            calls: Vec::new(),
            usage,
            stop,
        }
    }

    /// A tool-call answer; computed completion tokens are the text's words
    /// plus, per call, one plus a token per four bytes of its arguments.
    pub fn tool_answer(
        &self,
        text: Option<String>,
        calls: Vec<ToolCall>,
        usage: Option<Usage>,
    ) -> Answer {
        let text = text.unwrap_or_default();
        let usage = usage.unwrap_or_else(|| {
            let call_tokens: u64 = calls
                .iter()
                .map(|c| {
                    let len = c.arguments.to_string().len() as u64;
                    1 + len.div_ceil(BYTES_PER_ARGUMENT_TOKEN)
                })
                .sum();
            Usage::new(self.prompt_tokens(), words(&text) + call_tokens)
        });
        Answer {
            text,
            calls,
            usage,
            stop: Stop::ToolUse,
        }
    }
}

/// Whitespace-separated words in `s`.
pub(crate) fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// `s` up to the end of its `n`-th word.
fn first_words(s: &str, n: u64) -> String {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if in_word && seen == n {
                return s[..i].to_owned();
            }
            in_word = false;
        } else if !in_word {
            in_word = true;
            seen += 1;
            if seen > n {
                return s[..i].trim_end().to_owned();
            }
        }
    }
    s.to_owned()
}

/// The text of a message `content` (or Anthropic `system`): a string, or
/// the text of its blocks joined by spaces — `text` blocks, and the content
/// of `tool_result` blocks. Images and other blocks have no text.
pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let parts: Vec<String> = blocks
                .iter()
                .filter_map(|block| {
                    if let Some(text) = block.get("text").and_then(Value::as_str) {
                        Some(text.to_owned())
                    } else if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                        block.get("content").map(text_of)
                    } else {
                        None
                    }
                })
                .filter(|t| !t.is_empty())
                .collect();
            parts.join(" ")
        }
        _ => String::new(),
    }
}

/// `text` cut before the whitespace that precedes each word (`"a b  c"` →
/// `"a"`, `" b"`, `"  c"`), so a streamed answer arrives in several deltas
/// that concatenate back to it.
pub(crate) fn text_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_word = false;
    for (i, c) in text.char_indices() {
        // A piece ends where the whitespace before the next word begins.
        if c.is_whitespace() && prev_word {
            pieces.push(&text[start..i]);
            start = i;
        }
        prev_word = !c.is_whitespace();
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Streamed tool arguments come in fragments of at most this many bytes,
/// so that even small arguments take several deltas, as with real models.
const ARGUMENT_FRAGMENT_BYTES: usize = 8;

/// `json` in fragments of at most [`ARGUMENT_FRAGMENT_BYTES`], cut on
/// character boundaries.
pub(crate) fn json_fragments(json: &str) -> Vec<&str> {
    let mut fragments = Vec::new();
    let mut start = 0;
    while start < json.len() {
        let mut end = (start + ARGUMENT_FRAGMENT_BYTES).min(json.len());
        while !json.is_char_boundary(end) {
            end += 1;
        }
        fragments.push(&json[start..end]);
        start = end;
    }
    fragments
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pieces_concatenate_back() {
        for text in ["", "one", "echo: hello  world ", " lead", "a\nb\tc"] {
            assert_eq!(text_pieces(text).concat(), text);
        }
        assert_eq!(text_pieces("echo: a b"), ["echo:", " a", " b"]);
        assert_eq!(
            json_fragments("{\"é\":\"ééééé\"}").concat(),
            "{\"é\":\"ééééé\"}"
        );
        assert!(json_fragments("{\"city\":\"Paris\"}").len() > 1);
    }

    #[test]
    fn first_words_cuts_after_the_nth_word() {
        assert_eq!(first_words("a b c", 2), "a b");
        assert_eq!(first_words("a  b   c", 2), "a  b");
        assert_eq!(first_words("a b", 5), "a b");
        assert_eq!(first_words("a b", 0), "");
        assert_eq!(first_words(" a b", 1), " a");
    }

    #[test]
    fn counts_words_across_formats() {
        let openai = Conversation::openai(
            &[
                json!({"role": "system", "content": "be brief"}),
                json!({"role": "user", "content": [{"type": "text", "text": "hi there"}]}),
            ],
            None,
        );
        let anthropic = Conversation::anthropic(
            Some(&json!("be brief")),
            &[json!({"role": "user", "content": "hi there"})],
            100,
        );
        assert_eq!(openai.prompt_tokens(), 4 + PROMPT_OVERHEAD);
        assert_eq!(anthropic.prompt_tokens(), openai.prompt_tokens());
        assert_eq!(openai.default_answer().text, "echo: hi there");
        assert_eq!(anthropic.default_answer().usage.output, 3);
    }
}
