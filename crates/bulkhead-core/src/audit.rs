//! The audit event model and its hash chain.
//!
//! Each tenant has its own append-only chain, and so does the operator. An
//! event's `hash` is the SHA-256 of its canonical bytes, which include the
//! previous event's hash; changing, removing or reordering any event breaks
//! every hash after it. Since format version 2 the canonical bytes are the
//! RFC 8785 (JCS) canonical JSON of the event without `hash` ([`crate::jcs`]);
//! version 1 events, written before, keep their form: the compact JSON of
//! the fields in the fixed order of [`AuditEvent`] without `hash`. Both are
//! specified in `docs/audit.md`, so a tenant can verify an export with any
//! JSON library and SHA-256.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::{EventId, RequestId, TenantId, Timestamp};

/// Format version of the canonical bytes of new events: 2, RFC 8785.
/// Events of version 1 (fixed field order) still verify as they were.
pub const AUDIT_FORMAT_VERSION: u32 = 2;

/// `prev_hash` of the first event of every chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action took effect.
    Success,
    /// The action was attempted and failed.
    Failure,
    /// The action was refused (authentication, authorisation, residency…).
    Denied,
}

/// Defines [`AuditAction`] from one list: each kind with its dotted name.
macro_rules! audit_actions {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Every kind of audit event there is, by its dotted name. One list:
        /// `docs/audit.md` documents each (a test compares the two), and no
        /// event can be recorded under a name that is not here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AuditAction {
            $($(#[doc = $doc])* $variant,)*
        }

        impl AuditAction {
            /// Every action, in the order of the list.
            pub const ALL: &'static [AuditAction] = &[$(AuditAction::$variant,)*];

            /// The dotted name events carry, e.g. `tenant.create`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditAction::$variant => $name,)*
                }
            }

            /// The action of a dotted name, if there is one.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|a| a.as_str() == name)
            }
        }
    };
}

audit_actions! {
    /// The operator created a tenant.
    TenantCreate => "tenant.create",
    /// The operator changed a tenant (name, status, quotas…).
    TenantUpdate => "tenant.update",
    /// The operator deleted a tenant.
    TenantDelete => "tenant.delete",
    /// The operator changed a tenant's settings (audit prompts, retention…).
    TenantSettings => "tenant.settings",
    /// The operator set which models a tenant may use.
    TenantModels => "tenant.models",
    /// An API key was created.
    ApiKeyCreate => "api_key.create",
    /// An API key was revoked.
    ApiKeyRevoke => "api_key.revoke",
    /// A credential was stored.
    CredentialPut => "credential.put",
    /// A credential was deleted.
    CredentialDelete => "credential.delete",
    /// A credential was used for a call.
    CredentialUse => "credential.use",
    /// An OAuth credential was refreshed.
    CredentialRefresh => "credential.refresh",
    /// A credential was sealed again under a new data key.
    CredentialReencrypt => "credential.reencrypt",
    /// A tenant's data key was created.
    DataKeyCreate => "data_key.create",
    /// A tenant's old data key was retired.
    DataKeyRetire => "data_key.retire",
    /// The operator rotated the key-encryption key.
    KmsRotate => "kms.rotate",
    /// The operator re-wrapped data keys under the current KEK.
    KmsRewrap => "kms.rewrap",
    /// A model call through the gateway.
    ModelCall => "model.call",
    /// An embeddings call through the gateway.
    ModelEmbed => "model.embed",
    /// A tenant admin changed an agent's settings.
    AgentSettingsUpdate => "agent.settings.update",
    /// A run started.
    RunStart => "run.start",
    /// A run ended.
    RunFinish => "run.finish",
    /// A restart found a run left running.
    RunInterrupted => "run.interrupted",
    /// A run was deleted.
    RunDelete => "run.delete",
    /// A thread was deleted.
    ThreadDelete => "thread.delete",
    /// A tool call was made.
    ToolCall => "tool.call",
    /// A tool call the model asked for was refused before anything was sent.
    ToolRefused => "tool.refused",
    /// A tool call waits for a person's approval.
    ApprovalRequest => "approval.request",
    /// An approval request was approved.
    ApprovalApprove => "approval.approve",
    /// An approval request was denied.
    ApprovalDeny => "approval.deny",
    /// An approval request expired.
    ApprovalExpire => "approval.expire",
    /// The approval webhook was told of a request.
    ApprovalNotify => "approval.notify",
    /// A tenant's policies were replaced.
    PoliciesUpdate => "policies.update",
    /// A document was ingested.
    DocumentPut => "document.put",
    /// A document was deleted.
    DocumentDelete => "document.delete",
    /// A collection was deleted.
    CollectionDelete => "collection.delete",
    /// Retention deleted old messages and runs.
    RetentionApply => "retention.apply",
    /// A request, call or run was refused over a limit.
    LimitExceeded => "limit.exceeded",
    /// A budget alert threshold was crossed.
    BudgetAlert => "budget.alert",
    /// An alert rule started firing.
    AlertFired => "alert.fired",
    /// A firing alert rule resolved.
    AlertResolved => "alert.resolved",
    /// A tenant's alert rules or webhook were replaced.
    AlertRulesUpdate => "alert.rules_update",
    /// The operator read every tenant's usage.
    UsageReport => "usage.report",
    /// An authentication failure.
    AuthFailure => "auth.failure",
    /// A prompt held a fragment owned by another tenant.
    SecurityForeignFragment => "security.foreign_fragment",
    /// A request carried another tenant's canary.
    SecurityCrossTenantLeak => "security.cross_tenant_leak",
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<AuditAction> for String {
    fn eq(&self, other: &AuditAction) -> bool {
        self == other.as_str()
    }
}

/// What a caller asks to record; the store adds id, time, sequence, tenant,
/// principal and hashes at append time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// What kind of event it is.
    pub action: AuditAction,
    /// What was acted on, e.g. `tenant:acme`, `api_key:<id>`.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Structured details; never secret material.
    pub details: serde_json::Value,
    /// Request that caused it.
    pub request_id: RequestId,
    /// Agent involved, if any.
    pub agent: Option<String>,
    /// Run involved, if any.
    pub run_id: Option<String>,
}

impl NewAuditEvent {
    /// An event with no details, agent or run.
    pub fn new(
        action: AuditAction,
        target: impl Into<String>,
        outcome: Outcome,
        request_id: RequestId,
    ) -> Self {
        Self {
            action,
            target: target.into(),
            outcome,
            details: serde_json::Value::Null,
            request_id,
            agent: None,
            run_id: None,
        }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Names the agent and the run the event belongs to.
    pub fn with_run(mut self, agent: impl Into<String>, run_id: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self.run_id = Some(run_id.into());
        self
    }
}

/// One event of a chain, as stored and exported. Field order is part of
/// the version 1 canonical form: do not reorder. Serialises as its
/// [`AuditEvent::line`], the form the hash covers plus `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// Canonical format version.
    pub v: u32,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Event id.
    pub id: EventId,
    /// When it was recorded.
    pub time: Timestamp,
    /// Tenant whose chain holds it; `None` in the operator chain for
    /// actions that concern no single tenant.
    pub tenant: Option<TenantId>,
    /// Who acted.
    pub principal: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Request id.
    pub request_id: RequestId,
    /// Agent, if any.
    pub agent: Option<String>,
    /// Run, if any.
    pub run_id: Option<String>,
    /// Structured details. Serialised with every object's keys sorted, at
    /// every level, so what is served and exported is byte for byte the
    /// form the hash covers (docs/audit.md), whatever order the map holds.
    pub details: serde_json::Value,
    /// Hash of the previous event ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// SHA-256 over the canonical bytes, lowercase hex.
    pub hash: String,
}

#[derive(Serialize)]
struct Canonical<'a> {
    v: u32,
    seq: u64,
    id: &'a EventId,
    time: &'a Timestamp,
    tenant: &'a Option<TenantId>,
    principal: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: Outcome,
    request_id: &'a RequestId,
    agent: &'a Option<String>,
    run_id: &'a Option<String>,
    details: &'a serde_json::Value,
    prev_hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
}

impl AuditEvent {
    /// Seals a new event onto a chain whose last event has `prev_seq` and
    /// `prev_hash` (0 and [`GENESIS_HASH`] for an empty chain).
    pub fn seal(
        new: NewAuditEvent,
        tenant: Option<TenantId>,
        principal: &str,
        prev_seq: u64,
        prev_hash: &str,
    ) -> Self {
        let mut event = AuditEvent {
            v: AUDIT_FORMAT_VERSION,
            seq: prev_seq + 1,
            id: EventId::generate(),
            time: Timestamp::now(),
            tenant,
            principal: principal.to_owned(),
            action: new.action.as_str().to_owned(),
            target: new.target,
            outcome: new.outcome,
            request_id: new.request_id,
            agent: new.agent,
            run_id: new.run_id,
            details: new.details,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }

    /// The canonical bytes the hash is computed over: the event without
    /// `hash`, in the form of its version (docs/audit.md).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.form(false).into_bytes()
    }

    /// The event as served and exported: its canonical form with `hash`
    /// (for version 2, the RFC 8785 form of the whole event; for version 1,
    /// `hash` appended last).
    pub fn line(&self) -> String {
        self.form(true)
    }

    fn form(&self, with_hash: bool) -> String {
        let details = sorted(&self.details);
        let c = Canonical {
            v: self.v,
            seq: self.seq,
            id: &self.id,
            time: &self.time,
            tenant: &self.tenant,
            principal: &self.principal,
            action: &self.action,
            target: &self.target,
            outcome: self.outcome,
            request_id: &self.request_id,
            agent: &self.agent,
            run_id: &self.run_id,
            details: &details,
            prev_hash: &self.prev_hash,
            hash: with_hash.then_some(self.hash.as_str()),
        };
        // Serialising plain strings, integers and a `Value` cannot fail.
        if self.v < 2 {
            serde_json::to_string(&c).unwrap_or_default()
        } else {
            crate::jcs::canonicalize(&serde_json::to_value(&c).unwrap_or_default())
        }
    }

    /// SHA-256 of the canonical bytes, lowercase hex.
    pub fn compute_hash(&self) -> String {
        hex(&Sha256::digest(self.canonical_bytes()))
    }
}

/// A copy of `v` with every object's keys in sorted order, so the
/// canonical bytes do not depend on how a JSON map happens to be ordered
/// (serde_json's `preserve_order` feature, another language's library).
fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted).collect())
        }
        other => other.clone(),
    }
}

impl Serialize for AuditEvent {
    /// Writes exactly [`AuditEvent::line`], the form the hash covers.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.line())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why a chain failed verification; `seq` names the first bad event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    /// The event's hash does not match its content.
    #[error("event {seq}: hash does not match its content")]
    HashMismatch {
        /// Sequence number.
        seq: u64,
    },
    /// The event does not point at its predecessor.
    #[error("event {seq}: prev_hash does not match the previous event's hash")]
    Broken {
        /// Sequence number.
        seq: u64,
    },
    /// Sequence numbers are not consecutive.
    #[error("event {seq}: expected sequence number {expected}")]
    Gap {
        /// Sequence number found.
        seq: u64,
        /// Sequence number expected.
        expected: u64,
    },
    /// The event belongs to another tenant's chain.
    #[error("event {seq}: belongs to another chain")]
    ForeignTenant {
        /// Sequence number.
        seq: u64,
    },
}

/// Verifies a whole chain from its first event. `first_prev` is the hash the
/// first event must point at ([`GENESIS_HASH`] for a full chain).
pub fn verify_chain<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    first_prev: &str,
) -> Result<u64, ChainError> {
    let mut prev_hash = first_prev.to_owned();
    let mut expected_seq: Option<u64> = None;
    let mut tenant: Option<Option<TenantId>> = None;
    let mut count = 0;
    for e in events {
        if let Some(expected) = expected_seq
            && e.seq != expected
        {
            return Err(ChainError::Gap {
                seq: e.seq,
                expected,
            });
        }
        match &tenant {
            None => tenant = Some(e.tenant.clone()),
            Some(t) if *t != e.tenant => return Err(ChainError::ForeignTenant { seq: e.seq }),
            Some(_) => {}
        }
        if e.prev_hash != prev_hash {
            return Err(ChainError::Broken { seq: e.seq });
        }
        if e.compute_hash() != e.hash {
            return Err(ChainError::HashMismatch { seq: e.seq });
        }
        prev_hash = e.hash.clone();
        expected_seq = Some(e.seq + 1);
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/audit.md`'s table of what is recorded names every action in
    /// its first column: exactly the actions of [`AuditAction`].
    #[test]
    fn every_audit_action_is_documented_and_nothing_else_is() {
        let doc = include_str!("../../../docs/audit.md");
        let table = doc
            .split("## What is recorded")
            .nth(1)
            .and_then(|t| t.split("\n## ").next())
            .expect("docs/audit.md has a section \"What is recorded\"");
        let mut documented = std::collections::BTreeSet::new();
        for row in table.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split('|').nth(1).unwrap_or_default();
            // The action names; "(outcome `denied`)" and the like are not.
            let names = first.split(" (").next().unwrap_or_default();
            for name in names.split('`').skip(1).step_by(2) {
                documented.insert(name.to_owned());
            }
        }
        let actions: std::collections::BTreeSet<String> = AuditAction::ALL
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        assert_eq!(documented, actions, "docs/audit.md and AuditAction differ");
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::from_name(a.as_str()), Some(*a));
        }
    }

    fn chain(n: usize) -> Vec<AuditEvent> {
        let tenant = Some(TenantId::parse("acme").unwrap());
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let (seq, prev) = out
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.to_owned()));
            let new = NewAuditEvent::new(
                AuditAction::PoliciesUpdate,
                format!("t:{i}"),
                Outcome::Success,
                RequestId::generate(),
            )
            .with_details(serde_json::json!({"i": i}));
            out.push(AuditEvent::seal(new, tenant.clone(), "key:1", seq, &prev));
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5), GENESIS_HASH), Ok(5));
    }

    #[test]
    fn every_kind_of_tampering_is_caught() {
        let mut c = chain(4);
        c[2].target = "t:evil".into();
        assert_eq!(
            verify_chain(&c, GENESIS_HASH),
            Err(ChainError::HashMismatch { seq: 3 })
        );

        let mut c = chain(4);
        c.remove(1);
        assert_eq!(
            verify_chain(&c, GENESIS_HASH),
            Err(ChainError::Gap {
                seq: 3,
                expected: 2
            })
        );

        let mut c = chain(4);
        c[1].target = "t:evil".into();
        c[1].hash = c[1].compute_hash();
        assert_eq!(
            verify_chain(&c, GENESIS_HASH),
            Err(ChainError::Broken { seq: 3 })
        );

        let mut c = chain(3);
        c[1].tenant = Some(TenantId::parse("other").unwrap());
        assert_eq!(
            verify_chain(&c, GENESIS_HASH),
            Err(ChainError::ForeignTenant { seq: 2 })
        );
    }

    #[test]
    fn canonical_bytes_sort_object_keys() {
        let mut e = chain(1).remove(0);
        e.details = serde_json::json!({"b": 1, "a": {"d": 2, "c": [{"z": 0, "y": 1}]}});
        let text = String::from_utf8(e.canonical_bytes()).unwrap();
        assert!(
            text.contains(r#""details":{"a":{"c":[{"y":1,"z":0}],"d":2},"b":1}"#),
            "{text}"
        );
    }

    #[test]
    fn version_1_served_form_has_sorted_details_and_hashes_as_documented() {
        let mut e = chain(1).remove(0);
        e.v = 1;
        e.details = serde_json::json!({"b": 1, "a": {"d": 2, "c": [{"z": 0, "y": 1}]}});
        e.hash = e.compute_hash();
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            text.contains(r#""details":{"a":{"c":[{"y":1,"z":0}],"d":2},"b":1}"#),
            "{text}"
        );
        // docs/audit.md: the hash is over the served event without `hash`.
        let without_hash = text
            .strip_suffix(&format!(r#","hash":"{}"}}"#, e.hash))
            .map(|s| format!("{s}}}"))
            .unwrap();
        assert_eq!(hex(&Sha256::digest(without_hash.as_bytes())), e.hash);
    }

    /// Version 2: the served line is RFC 8785 canonical as a whole, and the
    /// hash is the SHA-256 of the RFC 8785 form of the line's object
    /// without `hash` — what an outside program recomputes (docs/audit.md).
    #[test]
    fn version_2_line_is_rfc8785_and_hash_is_recomputable_from_it() {
        let mut e = chain(1).remove(0);
        e.details = serde_json::json!({"b": 1.0, "a": {"d": 1e-7, "c": [{"z": 0, "y": "\u{1}é"}]}});
        e.hash = e.compute_hash();
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(line, e.line());
        let mut parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(crate::jcs::canonicalize(&parsed), line);
        assert!(line.starts_with(r#"{"action":"policies.update","agent":null,"details":{"a":{"c":[{"y":"\u0001é","z":0}],"d":1e-7},"b":1},"hash":""#), "{line}");
        let hash = parsed.as_object_mut().unwrap().remove("hash").unwrap();
        let recomputed = hex(&Sha256::digest(
            crate::jcs::canonicalize(&parsed).as_bytes(),
        ));
        assert_eq!(hash, serde_json::Value::String(recomputed));
        let back: AuditEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back.compute_hash(), e.hash);
    }

    /// Chains that began in version 1 and continue in version 2 verify;
    /// a version 1 event is not rehashed.
    #[test]
    fn mixed_version_chains_verify() {
        let mut c = chain(3);
        c[0].v = 1;
        c[0].hash = c[0].compute_hash();
        c[1].prev_hash = c[0].hash.clone();
        c[1].hash = c[1].compute_hash();
        c[2].prev_hash = c[1].hash.clone();
        c[2].hash = c[2].compute_hash();
        let back: Vec<AuditEvent> = c
            .iter()
            .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
            .collect();
        assert_eq!(verify_chain(&back, GENESIS_HASH), Ok(3));
        assert!(
            serde_json::to_string(&c[0])
                .unwrap()
                .starts_with(r#"{"v":1,"seq":1,"#)
        );
    }

    #[test]
    fn serialised_events_verify_after_a_round_trip() {
        let c = chain(3);
        let text: Vec<String> = c
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let back: Vec<AuditEvent> = text
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect();
        assert_eq!(verify_chain(&back, GENESIS_HASH), Ok(3));
    }
}
