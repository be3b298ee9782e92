//! The transactional outbox of a partition: what is still to be published
//! to the event bus (`[audit.nats]`).
//!
//! A store opened with [`SqliteStore::open_with_outbox`] installs, on each
//! tenant database connection it opens, a temporary trigger: every row
//! inserted into `audit` inserts an `outbox` row (the event's id as the
//! message id, its stored JSON as the payload) in the same statement, so
//! the event and its outbox row commit or roll back together, whatever
//! code path wrote the event. The trigger also calls a function that marks
//! the partition dirty and wakes the publisher, which then reads only that
//! partition. Without the outbox (the default) no trigger exists and no
//! outbox row is written.
//!
//! The publisher deletes a row once the bus has acknowledged it. A row is
//! never skipped: rows of a partition are sent in `id` order, one at a time,
//! and the first failure stops that partition until the next attempt.
//! Checkpoints (or any other record) can be published the same way by
//! inserting a row with their own message id and payload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bulkhead_core::{TenantId, TenantUid};
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use super::SqliteStore;
use super::partition::exec;
use crate::{StoreError, StoreResult};

/// Partitions with rows to publish, and the publisher's wake-up.
#[derive(Default)]
pub(crate) struct Outbox {
    dirty: Mutex<HashMap<TenantUid, TenantId>>,
    wake: tokio::sync::Notify,
}

impl Outbox {
    fn mark(&self, tenant: &TenantId, uid: TenantUid) {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.insert(uid, tenant.clone());
        }
        self.wake.notify_one();
    }
}

/// Installs the trigger on a freshly opened tenant connection.
pub(crate) fn install(
    conn: &Connection,
    outbox: &Arc<Outbox>,
    tenant: &TenantId,
    uid: TenantUid,
) -> rusqlite::Result<()> {
    let (outbox, tenant) = (outbox.clone(), tenant.clone());
    conn.create_scalar_function(
        "bulkhead_outbox_wake",
        0,
        FunctionFlags::SQLITE_UTF8,
        move |_| {
            outbox.mark(&tenant, uid);
            Ok(0)
        },
    )?;
    conn.execute_batch(
        "CREATE TEMP TRIGGER IF NOT EXISTS audit_outbox AFTER INSERT ON main.audit
         BEGIN
             INSERT INTO outbox (msg_id, payload) VALUES (json_extract(NEW.event, '$.id'), NEW.event);
             SELECT bulkhead_outbox_wake();
         END;
         -- A signed checkpoint follows the events it covers on the same
         -- subject; its message id is its chain head, unique per chain.
         CREATE TEMP TRIGGER IF NOT EXISTS checkpoint_outbox AFTER INSERT ON main.audit_checkpoints
         BEGIN
             INSERT INTO outbox (msg_id, payload)
                 VALUES ('checkpoint-' || json_extract(NEW.body, '$.head'), NEW.body);
             SELECT bulkhead_outbox_wake();
         END;",
    )
}

/// One row to publish.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Position in the partition's outbox (publication order).
    pub id: i64,
    /// The bus message id (an event's id): redelivery is deduplicated on it.
    pub msg_id: String,
    /// The message body (an event's stored JSON).
    pub payload: String,
}

/// A partition with rows to publish, as the publisher sees it: its tenant
/// (which names the subject) and nothing that reaches another partition.
pub struct PendingPartition {
    tenant: TenantId,
    uid: TenantUid,
}

impl PendingPartition {
    /// The tenant whose partition this is.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}

impl SqliteStore {
    fn outbox(&self) -> StoreResult<&Arc<Outbox>> {
        self.inner
            .outbox
            .as_ref()
            .ok_or_else(|| StoreError::Internal("the store was opened without an outbox".into()))
    }

    /// Marks every partition dirty (at boot: rows left by a stopped
    /// process are published before anything else of their partition).
    pub fn outbox_mark_all(&self) -> StoreResult<()> {
        let outbox = self.outbox()?;
        let tenants: Vec<(TenantId, TenantUid)> = self
            .read_index()?
            .tenants
            .values()
            .map(|t| (t.id.clone(), t.uid))
            .collect();
        for (id, uid) in tenants {
            outbox.mark(&id, uid);
        }
        Ok(())
    }

    /// Waits until a partition may have rows to publish.
    pub async fn outbox_wait(&self) -> StoreResult<()> {
        self.outbox()?.wake.notified().await;
        Ok(())
    }

    /// Takes the set of dirty partitions (each is marked again by its next
    /// event, or by [`SqliteStore::outbox_retry`]).
    pub fn outbox_take_dirty(&self) -> StoreResult<Vec<PendingPartition>> {
        let mut dirty = self
            .outbox()?
            .dirty
            .lock()
            .map_err(|_| StoreError::Internal("outbox lock poisoned".into()))?;
        Ok(dirty
            .drain()
            .map(|(uid, tenant)| PendingPartition { tenant, uid })
            .collect())
    }

    /// Puts a partition back in the dirty set (its rows were not all sent).
    pub fn outbox_retry(&self, p: &PendingPartition) -> StoreResult<()> {
        let mut dirty = self
            .outbox()?
            .dirty
            .lock()
            .map_err(|_| StoreError::Internal("outbox lock poisoned".into()))?;
        dirty.insert(p.uid, p.tenant.clone());
        Ok(())
    }

    /// The first `limit` rows of a partition's outbox, in order. A deleted
    /// tenant has none.
    pub async fn outbox_pending(
        &self,
        p: &PendingPartition,
        limit: usize,
    ) -> StoreResult<Vec<OutboxRow>> {
        let (tenant, uid) = (p.tenant.clone(), p.uid);
        self.blocking(move |s| {
            let part = match s.partition(&tenant, uid) {
                Ok(part) => part,
                Err(StoreError::NotFound) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            part.with_conn(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, msg_id, payload FROM outbox ORDER BY id LIMIT ?1",
                )?;
                let rows = stmt.query_map([limit as i64], |r| {
                    Ok(OutboxRow {
                        id: r.get(0)?,
                        msg_id: r.get(1)?,
                        payload: r.get(2)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(StoreError::from)
            })
        })
        .await
    }

    /// Removes a row the bus has acknowledged.
    pub async fn outbox_sent(&self, p: &PendingPartition, id: i64) -> StoreResult<()> {
        let (tenant, uid) = (p.tenant.clone(), p.uid);
        self.blocking(move |s| {
            let part = match s.partition(&tenant, uid) {
                Ok(part) => part,
                Err(StoreError::NotFound) => return Ok(()),
                Err(e) => return Err(e),
            };
            part.with_conn(|conn| {
                exec(conn, "DELETE FROM outbox WHERE id = ?1", [id])?;
                Ok(())
            })
        })
        .await
    }
}
