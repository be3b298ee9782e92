//! Server-sent events: splitting an upstream byte stream into events.

/// One parsed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An event grew beyond the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a server-sent event exceeded the size limit")]
pub struct EventTooLarge;

/// Incremental SSE parser: feed bytes, take complete events.
pub struct Parser {
    buf: Vec<u8>,
    limit: usize,
    /// Bytes of `buf` already searched for a boundary (a separator may
    /// still start in the last three): a large event arriving in many
    /// small reads is scanned once, not once per read.
    scanned: usize,
}

/// Largest event we ever buffer; a provider sending more without a blank
/// line is broken, and we will not grow memory without bound for it.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

impl Default for Parser {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl Parser {
    /// A parser refusing events above `limit` bytes (never above
    /// [`MAX_EVENT_BYTES`]).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit: limit.min(MAX_EVENT_BYTES),
            scanned: 0,
        }
    }

    /// Appends bytes; returns the events completed by them, or `Err` when
    /// an event exceeds the size limit.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, EventTooLarge> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buf, self.scanned.saturating_sub(3)) {
            self.scanned = 0;
            let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
            let text = String::from_utf8_lossy(&raw[..end]);
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                }
            }
            if event.is_some() || !data.is_empty() {
                events.push(Event {
                    event,
                    data: data.join("\n"),
                });
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() > self.limit {
            return Err(EventTooLarge);
        }
        Ok(events)
    }
}

fn find_boundary(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    for i in from..buf.len() {
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
    }
    None
}

/// Formats one `data:` event.
pub fn data(json: &str) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_are_reassembled() {
        let mut p = Parser::default();
        assert!(
            p.feed(b"event: message_start\ndata: {\"a\"")
                .unwrap()
                .is_empty()
        );
        let ev = p.feed(b":1}\n\ndata: [DONE]\r\n\r\n").unwrap();
        assert_eq!(
            ev,
            vec![
                Event {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                Event {
                    event: None,
                    data: "[DONE]".into()
                }
            ]
        );
        assert!(p.feed(b": comment only\n\n").unwrap().is_empty());
    }

    #[test]
    fn an_event_over_the_limit_is_refused_before_it_completes() {
        let mut p = Parser::with_limit(16);
        assert!(p.feed(b"data: 0123456789").unwrap().is_empty());
        assert_eq!(p.feed(b"abcdefgh"), Err(EventTooLarge));
        let p = Parser::with_limit(usize::MAX);
        assert_eq!(p.limit, MAX_EVENT_BYTES, "never above 4 MiB");
    }
}
