//! Approval requests in the tenant's partition: rows in and out, and the
//! compare-and-set that decides one (and claims its run when it was the
//! last pending request).

use bulkhead_agent::approval::{Approval, ApprovalStatus, Settled};
use bulkhead_core::{ApprovalId, Role, RunId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::partition;
use crate::StoreError;

const COLUMNS: &str = "id, run_id, round, status, agent, tool, tool_call_id, connection, arguments,
    arguments_hash, summary, requested_by, requested_roles, created_at, expires_at, decided_by,
    decided_at, comment";

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("corrupt approval: {e}"))
}

fn ts(s: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(s).map_err(corrupt)
}

/// The raw row, converted outside rusqlite's closure so errors keep their type.
type RawRow = (
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
        r.get(15)?,
        r.get(16)?,
        r.get(17)?,
    ))
}

fn convert(row: RawRow) -> Result<Approval, StoreError> {
    let (
        id,
        run,
        round,
        status,
        agent,
        tool,
        call,
        connection,
        arguments,
        hash,
        summary,
        by,
        roles,
        created,
        expires,
        decided_by,
        decided_at,
        comment,
    ) = row;
    let roles: Vec<Role> = serde_json::from_str(&roles).map_err(corrupt)?;
    Ok(Approval {
        id: ApprovalId::parse(&id).map_err(corrupt)?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| corrupt(&status))?,
        run_id: RunId::parse(&run).map_err(corrupt)?,
        agent,
        tool,
        tool_call_id: call,
        connection,
        arguments: serde_json::from_str(&arguments).map_err(corrupt)?,
        arguments_hash: hash,
        summary,
        requested_by: by,
        requested_roles: roles,
        round: round as u32,
        created_at: ts(&created)?,
        expires_at: ts(&expires)?,
        decided_by,
        decided_at: decided_at.as_deref().map(ts).transpose()?,
        comment,
    })
}

/// Inserts a new request.
pub(super) fn insert(tx: &Connection, a: &Approval) -> Result<(), StoreError> {
    let roles = serde_json::to_string(&a.requested_roles).map_err(corrupt)?;
    partition::exec(
        tx,
        &format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        ),
        params![
            a.id.to_string(),
            a.run_id.to_string(),
            a.round,
            a.status.as_str(),
            a.agent,
            a.tool,
            a.tool_call_id,
            a.connection,
            a.arguments.to_string(),
            a.arguments_hash,
            a.summary,
            a.requested_by,
            roles,
            a.created_at.to_string(),
            a.expires_at.to_string(),
            a.decided_by,
            a.decided_at.map(|t| t.to_string()),
            a.comment,
        ],
    )?;
    Ok(())
}

/// One request.
pub(super) fn get(conn: &Connection, id: ApprovalId) -> Result<Option<Approval>, StoreError> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            params![id.to_string()],
            raw,
        )
        .optional()?;
    row.map(convert).transpose()
}

/// Requests newest first, optionally by status and run.
pub(super) fn list(
    conn: &Connection,
    status: Option<ApprovalStatus>,
    run: Option<RunId>,
    limit: usize,
) -> Result<Vec<Approval>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM approvals
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR run_id = ?2)
         ORDER BY created_at DESC, id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(
        params![
            status.map(ApprovalStatus::as_str),
            run.map(|r| r.to_string()),
            limit as i64
        ],
        raw,
    )?;
    let mut out = Vec::new();
    for row in rows {
        out.push(convert(row?)?);
    }
    Ok(out)
}

/// The compare-and-set (see `AgentStore::settle_approval`); the event is
/// appended only when the request changed.
#[expect(
    clippy::too_many_arguments,
    reason = "each argument is one part of the settlement; a struct would only rename them"
)]
pub(super) fn settle(
    tx: &Connection,
    tenant: &bulkhead_core::TenantId,
    principal: &str,
    boot: &str,
    id: ApprovalId,
    to: ApprovalStatus,
    comment: Option<String>,
    now: Timestamp,
    event: bulkhead_core::audit::NewAuditEvent,
) -> Result<Option<Settled>, StoreError> {
    let now_text = now.to_string();
    let changed = match to {
        ApprovalStatus::Expired => partition::exec(
            tx,
            "UPDATE approvals SET status = 'expired', decided_at = ?2
             WHERE id = ?1 AND status = 'pending' AND expires_at <= ?2",
            params![id.to_string(), now_text],
        )?,
        ApprovalStatus::Approved | ApprovalStatus::Denied => partition::exec(
            tx,
            "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4, comment = ?5
             WHERE id = ?1 AND status = 'pending' AND expires_at > ?4",
            params![id.to_string(), to.as_str(), principal, now_text, comment],
        )?,
        ApprovalStatus::Pending => 0,
    };
    let Some(approval) = get(tx, id)? else {
        return Ok(None);
    };
    if changed == 0 {
        return Ok(Some(Settled::Unchanged(approval)));
    }
    partition::append_chain(tx, Some(tenant.clone()), principal, event)?;
    let run = approval.run_id.to_string();
    let pending: i64 = partition::one(
        tx,
        "SELECT COUNT(*) FROM approvals WHERE run_id = ?1 AND status = 'pending'",
        params![run],
        |r| r.get(0),
    )?;
    // The last decision claims the run for this process: exactly one
    // caller sees `resume`.
    let resume = pending == 0
        && partition::exec(
            tx,
            "UPDATE runs SET status = 'running', boot_id = ?2
             WHERE id = ?1 AND status = 'awaiting_approval'",
            params![run, boot],
        )? == 1;
    Ok(Some(Settled::Changed { approval, resume }))
}
