//! The gateway's storage in the embedded layout: usage rows and tenant
//! settings in the tenant's own partition, each write with its audit event.

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::AuditAction;
use bulkhead_core::audit::NewAuditEvent;
use bulkhead_gateway::store::{
    GatewaySettings, GatewayStore, GatewayStoreError, SettingsChange, UsageWrite,
};
use bulkhead_gateway::usage::{UsageGroup, UsageRecord, UsageSummary};
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use super::commit::{Urgency, Writer};
use super::partition;
use crate::StoreError;

fn gw(e: StoreError) -> GatewayStoreError {
    GatewayStoreError(Box::new(e))
}

/// Settings key of the model allow-list.
const ALLOWED_MODELS: &str = "allowed_models";
/// Settings key of the prompt-audit opt-in.
const AUDIT_PROMPTS: &str = "audit_prompts";
/// Settings key of the message retention (days).
const RETENTION: &str = "message_retention_days";
const APPROVAL_WEBHOOK: &str = "approval_webhook";

/// Writes a ledger row, or settles the call's `in_flight` row of the same
/// id in place.
fn insert_usage(
    tx: &rusqlite::Connection,
    u: &UsageRecord,
    pending: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    let (boot, principal) = pending.unzip();
    partition::exec(tx,
        "INSERT INTO usage (id, time, ts_micros, day, request_id, model, provider, region, input_tokens,
           output_tokens, cached_tokens, cost_nanos, latency_ms, status, stream, kind, agent, run_id, tool,
           estimated, boot_id, principal)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
         ON CONFLICT (id) DO UPDATE SET input_tokens = excluded.input_tokens,
           output_tokens = excluded.output_tokens, cached_tokens = excluded.cached_tokens,
           cost_nanos = excluded.cost_nanos, latency_ms = excluded.latency_ms,
           status = excluded.status, estimated = excluded.estimated, boot_id = NULL",
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
            u.stream,
            u.kind,
            u.agent,
            u.run_id,
            u.tool,
            u.estimated,
            boot,
            principal
        ],
    )?;
    Ok(())
}

/// Bills every call a dead process left `in_flight` in this partition:
/// the row keeps its estimate, becomes `interrupted` and `estimated`, and
/// gets the `model.call` audit event the call never wrote (as the caller
/// who made it). Rows of this process (`boot`) are live calls and left
/// alone. Runs when a process first opens the partition, before anything
/// reads its ledger, so budgets seeded from it count these rows once.
pub(super) fn recover_interrupted(
    conn: &mut rusqlite::Connection,
    tenant: &bulkhead_core::TenantId,
    boot: &str,
) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let rows = {
        let mut stmt = tx.prepare(
            "SELECT id, request_id, model, provider, region, input_tokens, output_tokens,
                    cached_tokens, cost_nanos, stream, kind, agent, run_id, principal
             FROM usage WHERE status = 'in_flight' AND (boot_id IS NULL OR boot_id != ?1)",
        )?;
        let rows = stmt.query_map(params![boot], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                [
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                ],
                r.get::<_, bool>(9)?,
                r.get::<_, String>(10)?,
                r.get::<_, Option<String>>(11)?,
                r.get::<_, Option<String>>(12)?,
                r.get::<_, Option<String>>(13)?,
            ))
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    for (
        id,
        request_id,
        model,
        provider,
        region,
        [input, output, cached, cost],
        stream,
        kind,
        agent,
        run,
        principal,
    ) in &rows
    {
        partition::exec(
            &tx,
            "UPDATE usage SET status = 'interrupted', estimated = 1, boot_id = NULL WHERE id = ?1",
            params![id],
        )?;
        let action = if kind == "embed" {
            AuditAction::ModelEmbed
        } else {
            AuditAction::ModelCall
        };
        let request_id = bulkhead_core::RequestId::parse(request_id)
            .unwrap_or_else(|_| bulkhead_core::RequestId::generate());
        let event = NewAuditEvent::new(
            action,
            format!("model:{model}"),
            bulkhead_core::audit::Outcome::Failure,
            request_id,
        )
        .with_details(serde_json::json!({
            "provider": provider, "region": region,
            "input_tokens": input, "output_tokens": output, "cached_tokens": cached,
            "cost_usd": bulkhead_gateway::usage::nanos_to_usd((*cost).max(0) as u64),
            "status": "interrupted", "stream": stream, "usage_estimated": true, "recovered": true,
        }));
        let event = match (agent, run) {
            (Some(a), Some(r)) => event.with_run(a.clone(), r.clone()),
            _ => event,
        };
        let principal = principal.as_deref().unwrap_or("unknown");
        partition::append_chain(&tx, Some(tenant.clone()), principal, event)?;
    }
    tx.commit()?;
    Ok(rows.len())
}
/// The outcome of a queued ledger write, as the gateway awaits it.
fn usage_write(
    queued: Result<tokio::sync::oneshot::Receiver<Result<(), StoreError>>, StoreError>,
) -> UsageWrite {
    Box::pin(async move {
        match queued {
            Ok(rx) => match rx.await {
                Ok(result) => result.map_err(gw),
                Err(_) => Err(GatewayStoreError("the usage writer stopped".into())),
            },
            Err(e) => Err(gw(e)),
        }
    })
}

#[async_trait]
impl GatewayStore for SqliteStore {
    fn begin_usage(&self, scope: &TenantScope, usage: UsageRecord) -> UsageWrite {
        let boot = self.inner.boot_id.clone();
        let queued = self.queue_write_with(
            Writer::of(scope),
            Urgency::Deferred,
            move |tx, principal| insert_usage(tx, &usage, Some((&boot, principal))),
        );
        usage_write(queued)
    }

    fn record_usage(
        &self,
        scope: &TenantScope,
        usage: UsageRecord,
        event: NewAuditEvent,
    ) -> UsageWrite {
        // Queued now (reads that follow include it), committed with the
        // tenant's other writes.
        let tenant = scope.tenant().clone();
        let queued = self.queue_write_with(
            Writer::of(scope),
            Urgency::Deferred,
            move |tx, principal| {
                insert_usage(tx, &usage, None)?;
                partition::append_chain(tx, Some(tenant), principal, event)?;
                Ok(())
            },
        );
        usage_write(queued)
    }

    fn record_usage_row(&self, scope: &TenantScope, usage: UsageRecord) -> UsageWrite {
        let queued = self.queue_write_with(
            Writer::of(scope),
            Urgency::Deferred,
            move |tx, _principal| insert_usage(tx, &usage, None),
        );
        usage_write(queued)
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

    async fn save_response(
        &self,
        scope: &TenantScope,
        id: &str,
        stored: String,
    ) -> Result<(), GatewayStoreError> {
        let id = id.to_owned();
        let now = Timestamp::now().unix_micros();
        self.tenant_write(scope, move |tx, _principal| {
            partition::exec(
                tx,
                "INSERT INTO responses (id, created_micros, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET body = ?3",
                params![id, now, stored],
            )?;
            Ok(())
        })
        .await
        .map_err(gw)
    }

    async fn load_response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<String>, GatewayStoreError> {
        let scope = scope.clone();
        let id = id.to_owned();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                partition::one(
                    conn,
                    "SELECT body FROM responses WHERE id = ?1",
                    params![id],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(StoreError::from)
            })
        })
        .await
        .map_err(gw)
    }

    async fn delete_response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<bool, GatewayStoreError> {
        let id = id.to_owned();
        self.tenant_write(scope, move |tx, _principal| {
            Ok(partition::exec(tx, "DELETE FROM responses WHERE id = ?1", params![id])? > 0)
        })
        .await
        .map_err(gw)
    }

    async fn usage_summary(
        &self,
        scope: &TenantScope,
        from: Timestamp,
        to: Timestamp,
        group: &[UsageGroup],
    ) -> Result<Vec<UsageSummary>, GatewayStoreError> {
        self.settle(scope).await;
        let scope = scope.clone();
        // Only these fixed column expressions reach the SQL text.
        let cols: Vec<&'static str> = group
            .iter()
            .map(|g| match g {
                UsageGroup::Day => "day",
                UsageGroup::Agent => "agent",
                UsageGroup::Model => "NULLIF(model, '')",
                UsageGroup::Tool => "tool",
            })
            .collect();
        let group = group.to_vec();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let select = if cols.is_empty() {
                    String::new()
                } else {
                    format!("{}, ", cols.join(", "))
                };
                let by = if cols.is_empty() {
                    String::new()
                } else {
                    let n: Vec<String> = (1..=cols.len()).map(|i| i.to_string()).collect();
                    format!("GROUP BY {0} ORDER BY {0}", n.join(", "))
                };
                let sql = format!(
                    "SELECT {select}COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
                       COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(cost_nanos), 0)
                     FROM usage WHERE ts_micros >= ?1 AND ts_micros < ?2 AND status != 'in_flight' {by}"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![from.unix_micros(), to.unix_micros()], |r| {
                    let mut line = UsageSummary::default();
                    for (i, g) in group.iter().enumerate() {
                        let v: Option<String> = r.get(i)?;
                        match g {
                            UsageGroup::Day => line.day = v,
                            UsageGroup::Agent => line.agent = v,
                            UsageGroup::Model => line.model = v,
                            UsageGroup::Tool => line.tool = v,
                        }
                    }
                    let n = group.len();
                    line.requests = r.get::<_, i64>(n)? as u64;
                    line.input_tokens = r.get::<_, i64>(n + 1)? as u64;
                    line.output_tokens = r.get::<_, i64>(n + 2)? as u64;
                    line.cached_tokens = r.get::<_, i64>(n + 3)? as u64;
                    line.cost_nanos = r.get::<_, i64>(n + 4)? as u64;
                    Ok(line)
                })?;
                let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                // No row in the period: no lines (an empty group, not zeros).
                if group.is_empty() && out.first().is_some_and(|l| l.requests == 0) {
                    out.clear();
                }
                Ok(out)
            })
        })
        .await
        .map_err(gw)
    }

    async fn spent_since(
        &self,
        scope: &TenantScope,
        from: Timestamp,
    ) -> Result<u64, GatewayStoreError> {
        self.settle(scope).await;
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                partition::one(
                    conn,
                    // In-flight calls are counted by their live reservations.
                    "SELECT COALESCE(SUM(cost_nanos), 0) FROM usage
                     WHERE ts_micros >= ?1 AND status != 'in_flight'",
                    params![from.unix_micros()],
                    |r| r.get::<_, i64>(0),
                )
                .map(|v| v.max(0) as u64)
                .map_err(StoreError::from)
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
                let mut stmt = conn.prepare_cached(
                    "SELECT key, value FROM settings WHERE key IN (?1, ?2, ?3, ?4)",
                )?;
                let rows = stmt.query_map(
                    params![ALLOWED_MODELS, AUDIT_PROMPTS, RETENTION, APPROVAL_WEBHOOK],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )?;
                for row in rows {
                    let (key, text) = row?;
                    let corrupt = |e: serde_json::Error| {
                        StoreError::Internal(format!("corrupt setting {key}: {e}"))
                    };
                    if key == ALLOWED_MODELS {
                        settings.allowed_models =
                            Some(serde_json::from_str(&text).map_err(corrupt)?);
                    } else if key == APPROVAL_WEBHOOK {
                        settings.approval_webhook = Some(text);
                    } else if key == RETENTION {
                        settings.message_retention_days =
                            serde_json::from_str(&text).map_err(corrupt)?;
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

    async fn update_settings(
        &self,
        scope: &TenantScope,
        change: &SettingsChange,
        event: NewAuditEvent,
    ) -> Result<(), GatewayStoreError> {
        let tenant = scope.tenant().clone();
        let change = change.clone();
        self.tenant_write(scope, move |tx, principal| {
            // A key set to a value, or (None) removed.
            let put = |key: &str, value: Option<String>| match value {
                Some(v) => partition::exec(
                    tx,
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = ?2",
                    params![key, v],
                ),
                None => partition::exec(tx, "DELETE FROM settings WHERE key = ?1", params![key]),
            };
            if let Some(on) = change.audit_prompts {
                put(
                    AUDIT_PROMPTS,
                    Some(if on { "true" } else { "false" }.to_owned()),
                )?;
            }
            if let Some(days) = change.message_retention_days {
                put(RETENTION, days.map(|d| d.to_string()))?;
            }
            if let Some(url) = change.approval_webhook {
                put(APPROVAL_WEBHOOK, url)?;
            }
            partition::append_chain(tx, Some(tenant), principal, event)?;
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
                        .map_err(|e| StoreError::Backend(Box::new(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{reaches_sqlite, sqlite_error};

    #[test]
    fn the_gateway_sees_the_store_error_with_its_chain() {
        let e = StoreError::from(sqlite_error());
        let text = e.to_string();
        let e = gw(e);
        assert_eq!(e.to_string(), text);
        assert!(reaches_sqlite(&e));
    }
}
