//! The gateway's storage in the embedded layout: usage rows and tenant
//! settings in the tenant's own partition, each write with its audit event.

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_gateway::store::{GatewaySettings, GatewayStore, GatewayStoreError, UsageWrite};
use bulkhead_gateway::usage::{UsageRecord, UsageSummary};
use rusqlite::params;

use super::SqliteStore;
use super::partition;
use crate::StoreError;

fn gw(e: StoreError) -> GatewayStoreError {
    GatewayStoreError(e.to_string())
}

/// Settings key of the model allow-list.
const ALLOWED_MODELS: &str = "allowed_models";
/// Settings key of the prompt-audit opt-in.
const AUDIT_PROMPTS: &str = "audit_prompts";

/// One usage row waiting for its batch.
pub(crate) struct PendingUsage {
    scope: TenantScope,
    usage: UsageRecord,
    event: NewAuditEvent,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// A tenant's rows waiting to be written, whether a writer is at work, and
/// readers waiting for the rows queued before them.
#[derive(Default)]
pub(crate) struct PendingBatch {
    rows: Vec<PendingUsage>,
    writing: bool,
    settled: Vec<tokio::sync::oneshot::Sender<()>>,
}

fn insert_usage(tx: &rusqlite::Connection, u: &UsageRecord) -> Result<(), StoreError> {
    partition::exec(tx,
        "INSERT INTO usage (id, time, ts_micros, day, request_id, model, provider, region, input_tokens,
           output_tokens, cached_tokens, cost_nanos, latency_ms, status, stream)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            u.id,
            u.time.to_string(),
            u.time.unix_micros(),
            u.time.day(),
            u.request_id,
            u.model,
            u.provider,
            u.region,
            u.tokens.input as i64,
            u.tokens.output as i64,
            u.tokens.cached as i64,
            u.cost_nanos as i64,
            u.latency_ms as i64,
            u.status,
            u.stream
        ],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Queues one usage row; the caller that finds no writer at work for
    /// the tenant starts one.
    fn queue_usage(&self, row: PendingUsage) -> Result<(), GatewayStoreError> {
        let uid = row.scope.partition();
        let lead = {
            let mut batches = self
                .inner
                .usage_batches
                .lock()
                .map_err(|_| GatewayStoreError("usage batch lock poisoned".into()))?;
            let pending = batches.entry(uid).or_default();
            pending.rows.push(row);
            !std::mem::replace(&mut pending.writing, true)
        };
        if lead {
            // In its own task, so no caller's cancellation can leave the
            // tenant without a writer.
            let this = self.clone();
            tokio::spawn(async move { this.write_usage_batches(uid).await });
        }
        Ok(())
    }

    /// Waits until every usage row of the tenant queued before this call
    /// is written (or failed): reads of usage and audit start with it, so
    /// a client sees the calls it has already been answered for.
    pub(crate) async fn settle_usage(&self, uid: bulkhead_core::TenantUid) {
        let waiter = {
            let Ok(mut batches) = self.inner.usage_batches.lock() else {
                return;
            };
            let Some(pending) = batches.get_mut(&uid) else {
                return;
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            pending.settled.push(tx);
            rx
        };
        // An error means the writer is gone; nothing more will be written.
        let _ = waiter.await;
    }

    /// Writes a tenant's pending usage rows batch after batch until none
    /// is left, then steps down as its writer.
    async fn write_usage_batches(&self, uid: bulkhead_core::TenantUid) {
        loop {
            let (rows, settled) = {
                let Ok(mut batches) = self.inner.usage_batches.lock() else {
                    return;
                };
                let Some(pending) = batches.get_mut(&uid) else {
                    return;
                };
                if pending.rows.is_empty() {
                    // Readers that arrived while the last batch was written.
                    let settled = std::mem::take(&mut pending.settled);
                    batches.remove(&uid);
                    drop(batches);
                    for s in settled {
                        let _ = s.send(());
                    }
                    return;
                }
                (
                    std::mem::take(&mut pending.rows),
                    std::mem::take(&mut pending.settled),
                )
            };
            let this = self.clone();
            let written = tokio::task::spawn_blocking(move || {
                let result = this.write_usage_rows(&rows).map_err(|e| e.to_string());
                (rows, result)
            })
            .await;
            match written {
                Ok((rows, result)) => {
                    for row in rows {
                        let _ = row.done.send(result.clone());
                    }
                }
                // The blocking task panicked: its rows' senders are dropped,
                // so their callers see an error instead of waiting forever.
                Err(e) => tracing::error!(error = %e, "usage writer failed"),
            }
            for s in settled {
                let _ = s.send(());
            }
        }
    }

    /// One transaction for a batch: each row with its audit event, in order.
    fn write_usage_rows(&self, rows: &[PendingUsage]) -> Result<(), StoreError> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let p = self.partition(first.scope.tenant(), first.scope.partition())?;
        p.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for row in rows {
                insert_usage(&tx, &row.usage)?;
                partition::append_chain(
                    &tx,
                    Some(row.scope.tenant().clone()),
                    row.scope.principal().id(),
                    row.event.clone(),
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

#[async_trait]
impl GatewayStore for SqliteStore {
    fn record_usage(
        &self,
        scope: &TenantScope,
        usage: UsageRecord,
        event: NewAuditEvent,
    ) -> UsageWrite {
        // Group commit: rows of one tenant that arrive while its previous
        // batch is being written are written together, in one transaction
        // and one fsync.
        let (done, done_rx) = tokio::sync::oneshot::channel();
        let queued = self.queue_usage(PendingUsage {
            scope: scope.clone(),
            usage,
            event,
            done,
        });
        Box::pin(async move {
            queued?;
            match done_rx.await {
                Ok(result) => result.map_err(GatewayStoreError),
                Err(_) => Err(GatewayStoreError("the usage writer stopped".into())),
            }
        })
    }

    async fn append_audit(
        &self,
        scope: &TenantScope,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError> {
        crate::TenantStore::append_audit(self, scope, event)
            .await
            .map(|_| ())
            .map_err(gw)
    }

    async fn usage_summary(
        &self,
        scope: &TenantScope,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<UsageSummary>, GatewayStoreError> {
        self.settle_usage(scope.partition()).await;
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT day, model, COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(cost_nanos)
                     FROM usage WHERE ts_micros >= ?1 AND ts_micros < ?2
                     GROUP BY day, model ORDER BY day, model",
                )?;
                let rows = stmt.query_map(params![from.unix_micros(), to.unix_micros()], |r| {
                    Ok(UsageSummary {
                        day: r.get(0)?,
                        model: r.get(1)?,
                        requests: r.get::<_, i64>(2)? as u64,
                        input_tokens: r.get::<_, i64>(3)? as u64,
                        output_tokens: r.get::<_, i64>(4)? as u64,
                        cached_tokens: r.get::<_, i64>(5)? as u64,
                        cost_nanos: r.get::<_, i64>(6)? as u64,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(StoreError::from)
            })
        })
        .await
        .map_err(gw)
    }

    async fn settings(&self, scope: &TenantScope) -> Result<GatewaySettings, GatewayStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let mut settings = GatewaySettings::default();
                let mut stmt =
                    conn.prepare_cached("SELECT key, value FROM settings WHERE key IN (?1, ?2)")?;
                let rows = stmt.query_map(params![ALLOWED_MODELS, AUDIT_PROMPTS], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                for row in rows {
                    let (key, text) = row?;
                    let corrupt = |e: serde_json::Error| {
                        StoreError::Internal(format!("corrupt setting {key}: {e}"))
                    };
                    if key == ALLOWED_MODELS {
                        settings.allowed_models =
                            Some(serde_json::from_str(&text).map_err(corrupt)?);
                    } else {
                        settings.audit_prompts = serde_json::from_str(&text).map_err(corrupt)?;
                    }
                }
                Ok(settings)
            })
        })
        .await
        .map_err(gw)
    }

    async fn set_audit_prompts(
        &self,
        scope: &TenantScope,
        on: bool,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError> {
        let scope = scope.clone();
        self.tenant_write(&scope.clone(), move |tx, principal| {
            partition::exec(
                tx,
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![AUDIT_PROMPTS, if on { "true" } else { "false" }],
            )?;
            partition::append_chain(tx, Some(scope.tenant().clone()), principal, event)?;
            Ok(())
        })
        .await
        .map_err(gw)
    }

    async fn set_allowed_models(
        &self,
        scope: &TenantScope,
        models: Option<Vec<String>>,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError> {
        let scope = scope.clone();
        self.tenant_write(&scope.clone(), move |tx, principal| {
            match &models {
                Some(list) => {
                    let text = serde_json::to_string(list)
                        .map_err(|e| StoreError::Internal(e.to_string()))?;
                    partition::exec(
                        tx,
                        "INSERT INTO settings (key, value) VALUES (?1, ?2)
                             ON CONFLICT (key) DO UPDATE SET value = ?2",
                        params![ALLOWED_MODELS, text],
                    )?;
                }
                None => {
                    partition::exec(
                        tx,
                        "DELETE FROM settings WHERE key = ?1",
                        params![ALLOWED_MODELS],
                    )?;
                }
            }
            partition::append_chain(tx, Some(scope.tenant().clone()), principal, event)?;
            Ok(())
        })
        .await
        .map_err(gw)
    }
}
