//! The platform's audit signing key and the checkpoint sweep.
//!
//! Checkpoints are signed with an Ed25519 key: `[audit] signing_key`
//! (`env:NAME`, 64 hex digits), else the newest key of
//! `<data_dir>/audit_signing_keys.json` (mode 0600), generated on first
//! start. Every key of that file stays listed at `GET /v1/audit/keys`, so
//! checkpoints signed before a rotation still verify. A sweep signs each
//! chain's checkpoint when `[audit]` says one is due, one tenant at a time
//! through its own scope.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_auth::OperatorScope;
use bulkhead_core::Timestamp;
use bulkhead_core::checkpoint::{AuditPublicKey, AuditSigner};
use bulkhead_core::config::audit::AuditConfig;
use bulkhead_store::CheckpointRule;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::state::AppState;

/// File name of the generated audit signing keys inside the data directory.
pub const AUDIT_KEY_FILE: &str = "audit_signing_keys.json";

/// The signer of new checkpoints and every public key a checkpoint may name.
#[derive(Debug)]
pub struct AuditKeys {
    /// Signs new checkpoints.
    pub signer: Arc<AuditSigner>,
    /// Every known public key, the current one marked.
    pub public: Vec<AuditPublicKey>,
    /// When checkpoints are due.
    pub rule: CheckpointRule,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    /// Oldest first; the last signs unless `[audit] signing_key` is set.
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    seed: String,
    created_at: Timestamp,
}

/// Why the audit keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct AuditKeyError {
    path: PathBuf,
    message: String,
}

impl AuditKeys {
    /// Loads (or, without a configured key, creates) the audit keys.
    pub fn load(config: &AuditConfig, data_dir: &Path) -> Result<Self, AuditKeyError> {
        let path = data_dir.join(AUDIT_KEY_FILE);
        let err = |message: String| AuditKeyError {
            path: path.clone(),
            message,
        };
        let mut file_keys: Vec<AuditSigner> = Vec::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let file: KeyFile =
                    serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
                if file.format != 1 {
                    return Err(err(format!("unknown key file format {}", file.format)));
                }
                for k in &file.keys {
                    file_keys.push(
                        AuditSigner::from_hex(&k.seed)
                            .ok_or_else(|| err("a key is not 64 hex digits".into()))?,
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e.to_string())),
        }
        let configured = config
            .signing_key
            .as_ref()
            .and_then(|k| AuditSigner::from_hex(k.value().expose()));
        let signer = match configured {
            Some(s) => s,
            None => match file_keys.pop() {
                Some(s) => s,
                None => {
                    let mut seed = Zeroizing::new([0u8; 32]);
                    getrandom::fill(seed.as_mut_slice())
                        .map_err(|e| err(format!("random source failed: {e}")))?;
                    write_key_file(&path, &seed).map_err(|e| err(e.to_string()))?;
                    tracing::info!(path = %path.display(), "generated the audit signing key (mode 0600)");
                    AuditSigner::from_seed(&seed)
                }
            },
        };
        let mut public: Vec<AuditPublicKey> = file_keys
            .iter()
            .filter(|k| k.id() != signer.id())
            .map(|k| k.public(false))
            .collect();
        public.push(signer.public(true));
        Ok(Self {
            signer: Arc::new(signer),
            public,
            rule: CheckpointRule {
                events: config.checkpoint_events,
                interval_s: config.checkpoint_interval_s,
            },
        })
    }
}

fn write_key_file(path: &Path, seed: &Zeroizing<[u8; 32]>) -> std::io::Result<()> {
    let file = KeyFile {
        format: 1,
        keys: vec![KeyEntry {
            seed: bulkhead_core::audit::hex(seed.as_slice()),
            created_at: Timestamp::now(),
        }],
    };
    replace_key_file(path, &file)
}

/// Writes the key file whole to a temporary file (mode 0600) and renames
/// it over the old one, so a crash leaves the old file or the new one.
fn replace_key_file(path: &Path, file: &KeyFile) -> std::io::Result<()> {
    let text = Zeroizing::new(serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = options.open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Adds a newly generated key to `<data_dir>/audit_signing_keys.json`
/// (creating the file if need be) and returns its public half. The new
/// key signs from the server's next start; the older keys stay in the
/// file, so the checkpoints they signed still verify. Refused when
/// `[audit] signing_key` is configured, since that key would still sign.
pub fn rotate(config: &AuditConfig, data_dir: &Path) -> Result<AuditPublicKey, AuditKeyError> {
    let path = data_dir.join(AUDIT_KEY_FILE);
    let err = |message: String| AuditKeyError {
        path: path.clone(),
        message,
    };
    if config.signing_key.is_some() {
        return Err(err(
            "[audit] signing_key is configured and would still sign; rotate by configuring a new signing_key".into(),
        ));
    }
    let mut file = match std::fs::read(&path) {
        Ok(bytes) => {
            let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
            if file.format != 1 {
                return Err(err(format!("unknown key file format {}", file.format)));
            }
            file
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile {
            format: 1,
            keys: Vec::new(),
        },
        Err(e) => return Err(err(e.to_string())),
    };
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| err(format!("random source failed: {e}")))?;
    file.keys.push(KeyEntry {
        seed: bulkhead_core::audit::hex(seed.as_slice()),
        created_at: Timestamp::now(),
    });
    replace_key_file(&path, &file).map_err(|e| err(e.to_string()))?;
    Ok(AuditSigner::from_seed(&seed).public(true))
}

/// What the periodic sweep remembers between passes: the tenants written
/// since their last checkpoint, and when it last visited every tenant.
#[derive(Default)]
pub struct Sweep {
    pending: std::collections::HashSet<bulkhead_core::TenantId>,
    last_full: Option<std::time::Instant>,
}

/// One pass of the periodic sweep. The first pass, and one every
/// `checkpoint_interval_s` after, visit every tenant ([`checkpoint_once`]);
/// the others only the tenants written since they were last checkpointed,
/// so an idle tenant costs the sweep nothing between full passes (its
/// time-based checkpoint comes with the next full pass at the latest).
pub async fn checkpoint_sweep(state: &AppState, op: &OperatorScope, sweep: &mut Sweep) -> u64 {
    let interval = Duration::from_secs(state.audit_keys.rule.interval_s);
    let written = state.tenants.take_written();
    if sweep.last_full.is_none_or(|at| at.elapsed() >= interval) {
        sweep.last_full = Some(std::time::Instant::now());
        sweep.pending.clear();
        let signed = checkpoint_once(state, op).await;
        // Written while the pass ran: looked at again next time.
        sweep.pending.extend(state.tenants.take_written());
        return signed;
    }
    sweep.pending.extend(written);
    let keys = &state.audit_keys;
    let mut signed = 0;
    match state
        .control
        .operator_checkpoint(op, keys.signer.clone(), keys.rule)
        .await
    {
        Ok(Some(_)) => signed += 1,
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "audit checkpoint: operator chain"),
    }
    let visit: Vec<_> = sweep.pending.iter().cloned().collect();
    for id in visit {
        let tenant = match state.control.get_tenant(op, &id).await {
            Ok(t) => t,
            // Deleted since it was written: nothing left to sign.
            Err(_) => {
                sweep.pending.remove(&id);
                continue;
            }
        };
        let scope = op.act_for_tenant(&tenant);
        match state
            .tenants
            .checkpoint(&scope, keys.signer.clone(), keys.rule)
            .instrument(bulkhead_telemetry::background_span(
                &scope,
                "audit_checkpoint",
            ))
            .await
        {
            // Signed up to its head: nothing pending until it is written again.
            Ok(Some(_)) => {
                signed += 1;
                sweep.pending.remove(&id);
            }
            // Not due yet (or nothing unsigned): looked at again next pass.
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, tenant = %scope.tenant(), "audit checkpoint: could not sign")
            }
        }
    }
    signed
}

/// Signs every due checkpoint once: the operator's chain, then each
/// tenant's through its scope. Returns how many were signed.
pub async fn checkpoint_once(state: &AppState, op: &OperatorScope) -> u64 {
    let keys = &state.audit_keys;
    let mut signed = 0;
    match state
        .control
        .operator_checkpoint(op, keys.signer.clone(), keys.rule)
        .await
    {
        Ok(Some(_)) => signed += 1,
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "audit checkpoint: operator chain"),
    }
    let tenants = match state.control.list_tenants(op).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "audit checkpoint: could not list tenants");
            return signed;
        }
    };
    for t in &tenants {
        let scope = op.act_for_tenant(t);
        match state
            .tenants
            .checkpoint(&scope, keys.signer.clone(), keys.rule)
            .await
        {
            Ok(Some(_)) => signed += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, tenant = %scope.tenant(), "audit checkpoint: could not sign")
            }
        }
    }
    signed
}

/// How often the sweep looks for due checkpoints: every 5 seconds (or
/// `checkpoint_interval_s`, if shorter), so a chain is checkpointed within
/// seconds of its N-th event.
pub fn sweep_interval(rule: CheckpointRule) -> Duration {
    Duration::from_secs(rule.interval_s.clamp(1, 5))
}
