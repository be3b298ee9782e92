//! Canary tokens: each tenant's secret canary, kept in the control
//! database (for the scanner) and planted in the tenant's own partition (a
//! document chunk and a thread message), and the alarm a tripped canary
//! raises in the chains of both tenants and the operator's.

use bulkhead_core::audit::AuditAction;
use std::sync::Arc;

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use bulkhead_core::{RequestId, TenantId, TenantUid, ThreadId, Timestamp};
use bulkhead_gateway::canary::{CanaryScanner, Channel, LeakAlarm};
use rusqlite::{Connection, params};
use serde_json::json;

use super::commit::Writer;
use super::{SqliteStore, partition};
use crate::{StoreError, StoreResult};

/// The reserved collection holding the canary chunk (user collection
/// names cannot start with `_`).
pub(crate) const CANARY_COLLECTION: &str = "_canary";

/// A fresh canary: 128 random bits, so no tenant can guess another's and
/// trip its alarm on purpose.
pub(crate) fn new_canary() -> StoreResult<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| StoreError::Internal(format!("random source failed: {e}")))?;
    Ok(format!("bkc-{}", bulkhead_core::audit::hex(&b)))
}

/// Plants `canary` in a partition: one chunk in the reserved collection
/// (indexed like any other) and one thread message.
pub(crate) fn plant(conn: &Connection, owner: TenantUid, canary: &str) -> StoreResult<()> {
    let now = Timestamp::now().to_string();
    let text = format!("Internal reference {canary}.");
    let doc = RequestId::generate().to_string();
    partition::exec(
        conn,
        "INSERT OR IGNORE INTO collections (name, created_at) VALUES (?1, ?2)",
        params![CANARY_COLLECTION, now],
    )?;
    partition::exec(
        conn,
        "INSERT INTO documents (id, collection, external_id, title, metadata, sha256, bytes, chunks,
           embedding_model, created_at, updated_at)
         VALUES (?1, ?2, ?2, 'canary', '{}', '', ?3, 1, NULL, ?4, ?4)",
        params![doc, CANARY_COLLECTION, text.len() as i64, now],
    )?;
    partition::exec(
        conn,
        "INSERT INTO chunks (document_id, collection, seq, heading, text, tokens, embedding)
         VALUES (?1, ?2, 0, NULL, ?3, 3, NULL)",
        params![doc, CANARY_COLLECTION, text],
    )?;
    let thread = ThreadId::generate().to_string();
    partition::exec(
        conn,
        "INSERT INTO threads (id, created_at) VALUES (?1, ?2)",
        params![thread, now],
    )?;
    partition::exec(
        conn,
        "INSERT INTO messages (thread_id, seq, owner, run_id, message, time) VALUES (?1, 1, ?2, NULL, ?3, ?4)",
        params![
            thread,
            owner.to_string(),
            json!({"role": "system", "content": text}).to_string(),
            now
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// The scanner over every tenant's canary (kept up to date as tenants
    /// are created and deleted by this store).
    pub fn canary_scanner(&self) -> Arc<CanaryScanner> {
        self.inner.canaries.clone()
    }

    /// At open: loads every canary, planting one for tenants that have none
    /// (created before canaries existed).
    pub(crate) fn load_canaries(&self) -> StoreResult<()> {
        let tenants: Vec<(bulkhead_core::TenantId, TenantUid)> = self
            .read_index()?
            .tenants
            .values()
            .map(|t| (t.id.clone(), t.uid))
            .collect();
        let mut known: Vec<(TenantUid, String)> = {
            let conn = self.control()?;
            let mut stmt = conn.prepare("SELECT tenant_uid, canary FROM canaries")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (uid, c) = row?;
                if let Ok(uid) = TenantUid::parse(&uid) {
                    out.push((uid, c));
                }
            }
            out
        };
        for (id, uid) in tenants {
            if known.iter().any(|(u, _)| *u == uid) {
                continue;
            }
            let canary = new_canary()?;
            let p = self.partition(&id, uid)?;
            p.with_conn(|conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                plant(&tx, uid, &canary)?;
                tx.commit()?;
                Ok(())
            })?;
            self.control()?.execute(
                "INSERT INTO canaries (tenant_uid, canary) VALUES (?1, ?2)",
                params![uid.to_string(), canary],
            )?;
            known.push((uid, canary));
        }
        self.inner.canaries.set(known);
        Ok(())
    }

    fn tenant_by_uid(&self, uid: TenantUid) -> Option<bulkhead_core::TenantId> {
        self.read_index()
            .ok()?
            .tenants
            .values()
            .find(|t| t.uid == uid)
            .map(|t| t.id.clone())
    }

    fn record_leak(
        &self,
        scope: &TenantScope,
        victim: TenantUid,
        channel: Channel,
    ) -> StoreResult<()> {
        let victim_id = self.tenant_by_uid(victim);
        let details = json!({
            "channel": channel.as_str(),
            "sending_tenant": scope.tenant().as_str(),
            "data_of_tenant": victim_id.as_ref().map(|t| t.as_str()),
        });
        let event = |target: String| {
            NewAuditEvent::new(
                AuditAction::SecurityCrossTenantLeak,
                target,
                Outcome::Denied,
                scope.request_id().clone(),
            )
            .with_details(details.clone())
        };
        // The operator's chain first: it must learn of it even if a
        // tenant partition cannot be written.
        self.control_tx(|tx, _| {
            partition::append_chain(
                tx,
                None,
                "system",
                event(format!("tenant:{}", scope.tenant())),
            )?;
            Ok(())
        })?;
        let append = |tenant: TenantId, uid: TenantUid, event: NewAuditEvent| {
            let writer = Writer::new(tenant.clone(), uid, "system".to_owned());
            self.partition_write_blocking(writer, move |tx, principal| {
                partition::append_chain(tx, Some(tenant), principal, event)
            })
        };
        append(
            scope.tenant().clone(),
            scope.partition(),
            event(format!("tenant:{}", scope.tenant())),
        )?;
        if let Some(v) = victim_id {
            append(v.clone(), victim, event(format!("tenant:{v}")))?;
        }
        Ok(())
    }
}

#[async_trait]
impl LeakAlarm for SqliteStore {
    async fn raise(&self, scope: &TenantScope, victim: TenantUid, channel: Channel) {
        let scope = scope.clone();
        let result = self
            .blocking(move |s| s.record_leak(&scope, victim, channel))
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not record a tripped canary in every audit chain");
        }
    }
}
