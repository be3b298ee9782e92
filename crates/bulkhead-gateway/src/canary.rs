//! The cross-tenant tripwire: every tenant has a secret canary planted in
//! its own data (a document chunk, a thread message). Every outbound model
//! and tool request is scanned, with one Aho-Corasick automaton over all
//! tenants' canaries, for a canary of a tenant *other* than the one the
//! request is for. A hit means one tenant's data is on its way out under
//! another tenant's name: the request is blocked and the alarm raised.

use std::sync::{Arc, RwLock};

use aho_corasick::AhoCorasick;
use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::TenantUid;

/// Where an alarm came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A model call (chat or embeddings).
    Model,
    /// A tool's outbound request.
    Tool,
}

impl Channel {
    /// `model` or `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Model => "model",
            Channel::Tool => "tool",
        }
    }
}

/// Records a tripped canary: a security event in the chains of both
/// tenants and the operator's (implemented by the store).
#[async_trait]
pub trait LeakAlarm: Send + Sync {
    /// `scope`'s request carried `victim`'s canary.
    async fn raise(&self, scope: &TenantScope, victim: TenantUid, channel: Channel);
}

struct Automaton {
    matcher: Option<AhoCorasick>,
    owners: Vec<TenantUid>,
    canaries: Vec<(TenantUid, String)>,
}

/// The scanner. Cheap to share; rebuilt when tenants come and go.
pub struct CanaryScanner {
    automaton: RwLock<Arc<Automaton>>,
    on_leak: RwLock<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for CanaryScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the canaries themselves.
        f.debug_struct("CanaryScanner").finish_non_exhaustive()
    }
}

impl Default for CanaryScanner {
    fn default() -> Self {
        Self::new()
    }
}

/// One automaton over every form of every canary: the text itself and the
/// encodings redaction also looks for (base64 at each offset, URL and JSON
/// escapes, hex, reversed, halves), in any letter case, so a leak that a
/// model or tool re-encoded still trips.
fn build(canaries: Vec<(TenantUid, String)>) -> Automaton {
    let mut owners = Vec::new();
    let mut patterns = Vec::new();
    for (uid, canary) in &canaries {
        for form in bulkhead_vault::redact::variants(canary) {
            // Very short forms (the base64 core of a tiny canary) would
            // match ordinary text; real canaries are far longer.
            if form.len() >= 8 {
                owners.push(*uid);
                patterns.push(form);
            }
        }
    }
    let matcher = if patterns.is_empty() {
        None
    } else {
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&patterns)
            .ok()
    };
    Automaton {
        matcher,
        owners,
        canaries,
    }
}

impl CanaryScanner {
    /// A scanner with no canaries.
    pub fn new() -> Self {
        Self {
            automaton: RwLock::new(Arc::new(build(Vec::new()))),
            on_leak: RwLock::new(None),
        }
    }

    /// Replaces every canary.
    pub fn set(&self, canaries: Vec<(TenantUid, String)>) {
        let a = Arc::new(build(canaries));
        if let Ok(mut slot) = self.automaton.write() {
            *slot = a;
        }
    }

    /// Adds or replaces one tenant's canary.
    pub fn insert(&self, uid: TenantUid, canary: String) {
        let mut all = self.current().canaries.clone();
        all.retain(|(u, _)| *u != uid);
        all.push((uid, canary));
        self.set(all);
    }

    /// Forgets a tenant's canary (the tenant was deleted).
    pub fn remove(&self, uid: TenantUid) {
        let mut all = self.current().canaries.clone();
        all.retain(|(u, _)| *u != uid);
        self.set(all);
    }

    /// Called on every hit (the server counts them in a metric).
    pub fn set_on_leak(&self, f: Box<dyn Fn() + Send + Sync>) {
        if let Ok(mut slot) = self.on_leak.write() {
            *slot = Some(f);
        }
    }

    fn current(&self) -> Arc<Automaton> {
        match self.automaton.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How many canaries are loaded.
    pub fn len(&self) -> usize {
        self.current().canaries.len()
    }

    /// Whether none are loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first tenant other than `owner` whose canary `bytes` contain.
    pub fn check(&self, owner: TenantUid, bytes: &[u8]) -> Option<TenantUid> {
        let a = self.current();
        let matcher = a.matcher.as_ref()?;
        let victim = matcher
            .find_iter(bytes)
            .filter_map(|m| a.owners.get(m.pattern().as_usize()).copied())
            .find(|u| *u != owner)?;
        if let Ok(f) = self.on_leak.read()
            && let Some(f) = f.as_ref()
        {
            f();
        }
        Some(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_another_tenants_canary_trips() {
        let (a, b) = (TenantUid::generate(), TenantUid::generate());
        let s = CanaryScanner::new();
        assert_eq!(s.check(a, b"anything"), None);
        s.set(vec![(a, "bkc-aaaa".into()), (b, "bkc-bbbb".into())]);
        assert_eq!(s.check(a, b"my own bkc-aaaa is fine"), None);
        assert_eq!(s.check(a, b"leak: bkc-bbbb!"), Some(b));
        assert_eq!(s.check(b, b"x bkc-aaaa bkc-bbbb"), Some(a));
        s.remove(b);
        assert_eq!(s.check(a, b"bkc-bbbb"), None);
        s.insert(b, "bkc-cccc".into());
        assert_eq!(s.check(a, b"bkc-cccc"), Some(b));
        assert!(!format!("{s:?}").contains("bkc-"));
    }

    #[test]
    fn a_re_encoded_canary_still_trips() {
        let (a, b) = (TenantUid::generate(), TenantUid::generate());
        let canary = "bkc-0123456789abcdef0123456789abcdef";
        let s = CanaryScanner::new();
        s.set(vec![
            (a, "bkc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
            (b, canary.into()),
        ]);
        let hex: String = canary.bytes().map(|x| format!("{x:02X}")).collect();
        // base64 of "xy" followed by the canary (a mid-stream offset).
        let b64 = "eHlia2MtMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned();
        for leaked in [
            canary.to_uppercase(),
            canary.chars().rev().collect::<String>(),
            hex,
            b64,
        ] {
            assert_eq!(s.check(a, leaked.as_bytes()), Some(b), "{leaked}");
        }
        assert_eq!(s.check(a, b"nothing of anyone's"), None);
    }
}
