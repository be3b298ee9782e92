//! A tenant's own alert rules (one JSON document in its settings) and its
//! alert events (`alert.fired`, `alert.resolved`), each written in one
//! transaction with its audit event.

use rusqlite::{Connection, params};

use super::partition;
use crate::{Page, StoreResult, StoredAlert};

/// Settings key of the tenant's alert rules.
pub(super) const ALERT_RULES: &str = "alert_rules";

pub(super) fn read_rules(conn: &Connection) -> StoreResult<Option<String>> {
    let mut stmt = conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")?;
    let mut rows = stmt.query(params![ALERT_RULES])?;
    match rows.next()? {
        Some(row) => Ok(Some(row.get::<_, String>(0)?)),
        None => Ok(None),
    }
}

pub(super) fn write_rules(tx: &Connection, rules: Option<&str>) -> StoreResult<()> {
    match rules {
        Some(r) => partition::exec(
            tx,
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = ?2",
            params![ALERT_RULES, r],
        )?,
        None => partition::exec(
            tx,
            "DELETE FROM settings WHERE key = ?1",
            params![ALERT_RULES],
        )?,
    };
    Ok(())
}

pub(super) fn insert_event(tx: &Connection, at_micros: i64, body: &str) -> StoreResult<u64> {
    partition::exec(
        tx,
        "INSERT INTO alert_events (at_micros, body) VALUES (?1, ?2)",
        params![at_micros, body],
    )?;
    Ok(tx.last_insert_rowid() as u64)
}

pub(super) fn page(conn: &Connection, page: Page) -> StoreResult<Vec<StoredAlert>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, body FROM alert_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![page.after as i64, page.limit], |r| {
        Ok(StoredAlert {
            seq: r.get::<_, i64>(0)? as u64,
            body: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
