//! `bulkhead audit verify FILE [--keys KEYS.json]`: checks an exported
//! chain offline, line by line, in constant memory (docs/audit.md
//! "Verifying an export" gives the algorithm).

use std::io::BufRead;

use bulkhead_core::TenantId;
use bulkhead_core::audit::{AuditEvent, GENESIS_HASH};
use bulkhead_core::checkpoint::{AuditPublicKey, Checkpoint, CheckpointError};
use serde_json::Value;

/// What a verified file holds.
#[derive(Debug)]
pub struct Summary {
    /// Number of events.
    pub events: u64,
    /// Sequence number of the first and the last event.
    pub first: u64,
    /// Sequence number of the last event.
    pub last: u64,
    /// Hash of the last event.
    pub head: String,
    /// Number of checkpoints.
    pub checkpoints: u64,
    /// The last checkpoint, verified (signature checked when keys were given).
    pub last_checkpoint: Option<Checkpoint>,
}

/// The first bad line and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// 1-based line number.
    pub line: usize,
    /// Why.
    pub reason: String,
}

fn fail<T>(line: usize, reason: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        line,
        reason: reason.into(),
    })
}

fn tenant_name(t: &Option<TenantId>) -> String {
    t.as_ref()
        .map_or_else(|| "the operator".to_owned(), |t| format!("tenant {t}"))
}

enum Line {
    Event(Box<AuditEvent>),
    Checkpoint(Box<Checkpoint>),
}

/// Parses one line: an event or a checkpoint, in its canonical form.
fn parse(text: &str, n: usize) -> Result<Line, Failure> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return fail(n, "not JSON");
    };
    if value.get("type").and_then(Value::as_str) == Some("checkpoint") {
        let Ok(c) = serde_json::from_value::<Checkpoint>(value.clone()) else {
            return fail(n, "not a checkpoint of a known format");
        };
        if bulkhead_core::jcs::canonicalize(&value) != text {
            return fail(n, "checkpoint not in its canonical (RFC 8785) form");
        }
        return Ok(Line::Checkpoint(Box::new(c)));
    }
    let Ok(e) = serde_json::from_value::<AuditEvent>(value.clone()) else {
        return fail(n, "not an audit event");
    };
    if e.v >= 2 && bulkhead_core::jcs::canonicalize(&value) != text {
        return fail(
            n,
            format!("event {}: not in its canonical (RFC 8785) form", e.seq),
        );
    }
    Ok(Line::Event(Box::new(e)))
}

/// Verifies an export read from `input`. `keys`: the public keys
/// checkpoints must be signed with; without them signatures are not
/// checked (everything else is). `operator`: the file is the operator's
/// chain, whose events may name any tenant and whose checkpoints name none.
pub fn verify(
    input: impl BufRead,
    keys: Option<&[AuditPublicKey]>,
    operator: bool,
) -> Result<Option<Summary>, Failure> {
    let mut lines = Lines {
        input,
        next: None,
        n: 0,
    };
    let mut tenant: Option<Option<TenantId>> = operator.then_some(None);
    let mut prev_hash = String::new();
    let mut expected: Option<u64> = None;
    let mut summary: Option<Summary> = None;
    let mut checkpoints = 0;
    let mut last_checkpoint: Option<Checkpoint> = None;
    while let Some(read) = lines.next_line() {
        let n = lines.n;
        let Ok((raw, complete)) = read else {
            return fail(n, "cannot be read");
        };
        let Ok(text) = String::from_utf8(raw) else {
            return fail(n, "not UTF-8");
        };
        // Every line of an export ends with a newline: one that does not
        // is the end of a cut file.
        if !complete {
            return fail(n, "truncated last line (no newline at the end of the file)");
        }
        match parse(&text, n)? {
            Line::Event(e) => {
                match &tenant {
                    None => tenant = Some(e.tenant.clone()),
                    Some(_) if operator => {}
                    Some(t) if *t != e.tenant => {
                        return fail(
                            n,
                            format!(
                                "event {}: an event of {} in the chain of {}",
                                e.seq,
                                tenant_name(&e.tenant),
                                tenant_name(t)
                            ),
                        );
                    }
                    Some(_) => {}
                }
                match expected {
                    None => {
                        // A whole chain starts at the genesis; a range is
                        // checked from its first event on.
                        if e.seq == 1 && e.prev_hash != GENESIS_HASH {
                            return fail(n, "event 1: prev_hash is not the genesis hash");
                        }
                        prev_hash = e.prev_hash.clone();
                    }
                    Some(want) if e.seq == want => {}
                    Some(want) if e.seq < want => {
                        return fail(
                            n,
                            format!("event {}: reordered (expected event {want})", e.seq),
                        );
                    }
                    Some(want) => {
                        // The expected event on the next line: two swapped.
                        let next_is_it = lines
                            .peek()
                            .and_then(|r| serde_json::from_slice::<Value>(r).ok())
                            .and_then(|v| v.get("seq").and_then(Value::as_u64))
                            == Some(want);
                        let why = if next_is_it {
                            format!("event {}: reordered (expected event {want})", e.seq)
                        } else {
                            format!("event {}: sequence gap (expected event {want})", e.seq)
                        };
                        return fail(n, why);
                    }
                }
                if e.prev_hash != prev_hash {
                    return fail(
                        n,
                        format!(
                            "event {}: prev_hash does not match the previous event's hash",
                            e.seq
                        ),
                    );
                }
                if e.compute_hash() != e.hash {
                    return fail(
                        n,
                        format!("event {}: hash mismatch (content changed)", e.seq),
                    );
                }
                prev_hash = e.hash.clone();
                expected = Some(e.seq + 1);
                let s = summary.get_or_insert(Summary {
                    events: 0,
                    first: e.seq,
                    last: e.seq,
                    head: String::new(),
                    checkpoints: 0,
                    last_checkpoint: None,
                });
                s.events += 1;
                s.last = e.seq;
                s.head = e.hash.clone();
            }
            Line::Checkpoint(c) => {
                checkpoints += 1;
                let last = summary.as_ref().map(|s| s.last);
                if let Some(t) = &tenant
                    && *t != c.tenant
                {
                    return fail(
                        n,
                        format!(
                            "checkpoint {}: of {}, not {}",
                            c.seq,
                            tenant_name(&c.tenant),
                            tenant_name(t)
                        ),
                    );
                }
                match last {
                    Some(l) if c.seq > l => {
                        return fail(
                            n,
                            format!(
                                "checkpoint {}: events missing (the file has events only up to {l})",
                                c.seq
                            ),
                        );
                    }
                    Some(l) if c.seq < l => {
                        return fail(
                            n,
                            format!("checkpoint {}: not after the event it covers", c.seq),
                        );
                    }
                    None => {
                        return fail(n, format!("checkpoint {}: events missing before it", c.seq));
                    }
                    Some(_) => {}
                }
                if c.head != prev_hash {
                    return fail(
                        n,
                        format!(
                            "checkpoint {}: head does not match event {}'s hash (chain rewritten)",
                            c.seq, c.seq
                        ),
                    );
                }
                if let Some(keys) = keys {
                    match c.verify(keys) {
                        Ok(()) => {}
                        Err(CheckpointError::UnknownKey(k)) => {
                            return fail(
                                n,
                                format!("checkpoint {}: signed by unknown key {k}", c.seq),
                            );
                        }
                        Err(e) => return fail(n, format!("checkpoint {}: {e}", c.seq)),
                    }
                }
                last_checkpoint = Some(*c);
            }
        }
    }
    Ok(summary.map(|mut s| {
        s.checkpoints = checkpoints;
        s.last_checkpoint = last_checkpoint;
        s
    }))
}

/// The lines of the input, each with whether it ended with a newline, and
/// a look at the next one.
struct Lines<R> {
    input: R,
    next: Option<std::io::Result<(Vec<u8>, bool)>>,
    n: usize,
}

impl<R: BufRead> Lines<R> {
    fn read(&mut self) -> Option<std::io::Result<(Vec<u8>, bool)>> {
        let mut buf = Vec::new();
        match self.input.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                let complete = buf.last() == Some(&b'\n');
                if complete {
                    buf.pop();
                }
                Some(Ok((buf, complete)))
            }
            Err(e) => Some(Err(e)),
        }
    }

    fn next_line(&mut self) -> Option<std::io::Result<(Vec<u8>, bool)>> {
        let line = self.next.take().or_else(|| self.read());
        if line.is_some() {
            self.n += 1;
        }
        line
    }

    /// The next line's bytes, without consuming it.
    fn peek(&mut self) -> Option<&[u8]> {
        if self.next.is_none() {
            self.next = self.read();
        }
        match &self.next {
            Some(Ok((b, _))) => Some(b.as_slice()),
            _ => None,
        }
    }
}

/// Reads a keys file: the body of `GET /v1/audit/keys` (`{"keys": [...]}`)
/// or a bare array of keys.
pub fn parse_keys(text: &str) -> anyhow::Result<Vec<AuditPublicKey>> {
    let v: Value = serde_json::from_str(text)?;
    let list = v.get("keys").cloned().unwrap_or(v);
    Ok(serde_json::from_value(list)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_has_no_events_and_a_cut_one_fails() {
        assert!(verify(&b""[..], None, false).unwrap().is_none());
        assert_eq!(verify(&b"{\"v\":2"[..], None, false).unwrap_err().line, 1);
    }
}
