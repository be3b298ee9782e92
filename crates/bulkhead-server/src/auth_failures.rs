//! What failed authentications may cost: a limit per presented credential
//! and per peer address, and audit events aggregated per window.
//!
//! A revoked key used in a loop wrote one `auth.failure` event per attempt
//! into its tenant's chain (3,000 in 3.8 s), and the tenant's requests per
//! minute never applied, since a failed request has no tenant scope. Here:
//! - a presented credential that failed `failures_per_minute_per_credential`
//!   times this minute is refused with 429 before it is looked up;
//! - a peer address that caused `failures_per_minute_per_peer` failures
//!   this minute gets 429 for its further failures (a valid credential from
//!   it is still served: many clients may share one address);
//! - the first attributable failure of a (tenant, principal, reason) in a
//!   window is audited at once; the rest of that window are counted and
//!   written as one `auth.failure` event with `count` when the window is
//!   flushed (every window by a background task, and at shutdown).
//!
//! Memory is bounded: the counters are per fixed one-minute window and
//! cleared when it turns, and each map stops taking new keys past
//! [`MAX_TRACKED`] (beyond that, per-credential counting is skipped for new
//! credentials; the per-peer limit still holds).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bulkhead_auth::FailureAttribution;
use bulkhead_core::TenantUid;
use sha2::{Digest, Sha256};

/// Length of a counting and aggregation window.
pub const WINDOW_S: u64 = 60;

/// Most credentials, peers or aggregated audit keys tracked per window.
pub const MAX_TRACKED: usize = 100_000;

type AuditKey = (TenantUid, String, &'static str);

/// An aggregated audit event due to be written.
#[derive(Debug)]
pub struct Aggregated {
    /// Whose chain records it.
    pub attribution: FailureAttribution,
    /// Failures in the window beyond the one audited at once.
    pub count: u64,
    /// Start of the window (seconds since the epoch).
    pub window_start: u64,
}

#[derive(Default)]
struct Credential {
    failures: u32,
    /// The audit key of the credential's attributed failures, so refusals
    /// before lookup still count in its tenant's aggregate.
    audit: Option<AuditKey>,
}

struct Pending {
    attribution: FailureAttribution,
    suppressed: u64,
}

#[derive(Default)]
struct Window {
    index: u64,
    credentials: HashMap<[u8; 16], Credential>,
    peers: HashMap<IpAddr, u32>,
    audit: HashMap<AuditKey, Pending>,
    /// Aggregates of windows that ended, waiting for the flush.
    due: Vec<Aggregated>,
}

/// What the caller should do with a failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer as usual (401/403).
    Refuse,
    /// Over a failure limit: answer 429 with this `Retry-After`.
    Throttle(u64),
}

/// Failure counters and the audit aggregator.
pub struct AuthFailures {
    per_credential: u32,
    per_peer: u32,
    window: Mutex<Window>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn digest(credential: &str) -> [u8; 16] {
    let full = Sha256::digest(credential.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

impl AuthFailures {
    /// Limits per minute, on the system clock.
    pub fn new(per_credential: u32, per_peer: u32) -> Self {
        Self::with_clock(per_credential, per_peer, Box::new(now_s))
    }

    /// The same on an explicit clock (seconds), for tests.
    pub fn with_clock(
        per_credential: u32,
        per_peer: u32,
        clock: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> Self {
        Self {
            per_credential,
            per_peer,
            window: Mutex::new(Window::default()),
            clock,
        }
    }

    /// The current window, turned over if the minute has changed.
    fn current(&self) -> (MutexGuard<'_, Window>, u64) {
        let now = (self.clock)();
        let index = now / WINDOW_S;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.index != index {
            let ended = std::mem::take(&mut w.audit);
            let start = w.index * WINDOW_S;
            w.due.extend(
                ended
                    .into_values()
                    .filter(|p| p.suppressed > 0)
                    .map(|p| Aggregated {
                        attribution: p.attribution,
                        count: p.suppressed,
                        window_start: start,
                    }),
            );
            w.credentials.clear();
            w.peers.clear();
            w.index = index;
        }
        let retry = (index + 1) * WINDOW_S - now;
        (w, retry.max(1))
    }

    /// Before authenticating: whether `credential` already used up its
    /// failures this minute (then answer 429 without looking it up).
    pub fn blocked(&self, credential: Option<&str>) -> Option<u64> {
        let credential = credential?;
        let (mut w, retry) = self.current();
        let key = digest(credential);
        let entry = w.credentials.get(&key)?;
        if entry.failures < self.per_credential {
            return None;
        }
        if let Some(audit) = entry.audit.clone()
            && let Some(p) = w.audit.get_mut(&audit)
        {
            p.suppressed += 1;
        }
        Some(retry)
    }

    /// After a failed authentication: counts it against the credential
    /// and the peer. `attribution` is the tenant's, when the failure
    /// belongs to one. Returns whether to answer 429, and whether the
    /// failure is to be audited now (the first of its kind this window);
    /// otherwise it is counted into the window's aggregate.
    pub fn failed(
        &self,
        credential: Option<&str>,
        peer: Option<IpAddr>,
        attribution: Option<&FailureAttribution>,
    ) -> (Verdict, bool) {
        let (mut w, retry) = self.current();
        let audit_key = attribution.map(|a| (a.partition(), a.principal().to_owned(), a.reason()));
        let mut over = false;
        if let Some(c) = credential {
            let key = digest(c);
            let tracked = w.credentials.len();
            if let Some(entry) = w.credentials.get_mut(&key) {
                entry.failures = entry.failures.saturating_add(1);
                over |= entry.failures > self.per_credential;
                if entry.audit.is_none() {
                    entry.audit = audit_key.clone();
                }
            } else if tracked < MAX_TRACKED {
                w.credentials.insert(
                    key,
                    Credential {
                        failures: 1,
                        audit: audit_key.clone(),
                    },
                );
                over |= 1 > self.per_credential;
            }
        }
        if let Some(ip) = peer {
            let tracked = w.peers.len();
            if let Some(n) = w.peers.get_mut(&ip) {
                *n = n.saturating_add(1);
                over |= *n > self.per_peer;
            } else if tracked < MAX_TRACKED {
                w.peers.insert(ip, 1);
            }
        }
        let audit_now = match (audit_key, attribution) {
            (Some(key), Some(a)) => {
                let tracked = w.audit.len();
                match w.audit.get_mut(&key) {
                    Some(p) => {
                        p.suppressed += 1;
                        false
                    }
                    None if tracked < MAX_TRACKED => {
                        w.audit.insert(
                            key,
                            Pending {
                                attribution: a.clone(),
                                suppressed: 0,
                            },
                        );
                        true
                    }
                    // Past the bound, new keys are not audited one by one.
                    None => false,
                }
            }
            _ => false,
        };
        let verdict = if over {
            Verdict::Throttle(retry)
        } else {
            Verdict::Refuse
        };
        (verdict, audit_now)
    }

    /// Aggregates to write: those of ended windows, and with `all` also the
    /// current window's (at shutdown).
    pub fn take_due(&self, all: bool) -> Vec<Aggregated> {
        let (mut w, _) = self.current();
        let mut due = std::mem::take(&mut w.due);
        if all {
            let start = w.index * WINDOW_S;
            for p in w.audit.values_mut() {
                if p.suppressed > 0 {
                    due.push(Aggregated {
                        attribution: p.attribution.clone(),
                        count: p.suppressed,
                        window_start: start,
                    });
                    p.suppressed = 0;
                }
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn clocked(per_credential: u32, per_peer: u32) -> (AuthFailures, Arc<AtomicU64>) {
        let t = Arc::new(AtomicU64::new(600));
        let c = t.clone();
        (
            AuthFailures::with_clock(
                per_credential,
                per_peer,
                Box::new(move || c.load(Ordering::SeqCst)),
            ),
            t,
        )
    }

    #[test]
    fn a_credential_is_blocked_after_its_failures_until_the_minute_turns() {
        let (f, t) = clocked(3, 1000);
        for _ in 0..3 {
            assert_eq!(f.blocked(Some("bk_x")), None);
            assert_eq!(f.failed(Some("bk_x"), None, None).0, Verdict::Refuse);
        }
        t.store(615, Ordering::SeqCst);
        assert_eq!(f.blocked(Some("bk_x")), Some(45));
        assert_eq!(
            f.blocked(Some("bk_y")),
            None,
            "another credential is its own"
        );
        t.store(660, Ordering::SeqCst);
        assert_eq!(f.blocked(Some("bk_x")), None, "a new minute");
    }

    #[test]
    fn a_peer_over_its_failures_is_throttled() {
        let (f, _) = clocked(1000, 2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(f.failed(Some("a"), Some(ip), None).0, Verdict::Refuse);
        assert_eq!(f.failed(Some("b"), Some(ip), None).0, Verdict::Refuse);
        assert!(matches!(
            f.failed(Some("c"), Some(ip), None).0,
            Verdict::Throttle(_)
        ));
        assert_eq!(f.failed(Some("d"), Some(other), None).0, Verdict::Refuse);
    }

    #[test]
    fn memory_stays_bounded_under_distinct_garbage_credentials() {
        let (f, _) = clocked(5, u32::MAX);
        for i in 0..(MAX_TRACKED + 1000) {
            f.failed(Some(&format!("garbage-{i}")), None, None);
        }
        let w = f.window.lock().unwrap();
        assert_eq!(w.credentials.len(), MAX_TRACKED);
    }
}
