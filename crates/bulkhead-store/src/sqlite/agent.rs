//! The agent runtime's storage in the embedded layout: settings, threads,
//! messages, runs and steps in the tenant's partition; the list of runs in
//! progress in the control database.

use async_trait::async_trait;
use bulkhead_agent::AgentSettings;
use bulkhead_agent::approval::{Approval, ApprovalStatus, Settled};
use bulkhead_agent::store::{
    AgentStore, AgentStoreError, Deletion, RunFailure, RunFilter, RunRecord, RunStatus, Step,
    StepWrite, StoredMessage, ThreadFilter, ThreadSummary,
};
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::AuditAction;
use bulkhead_core::audit::{NewAuditEvent, Outcome};
use bulkhead_core::{ApprovalId, RequestId, RunId, TenantId, TenantUid, ThreadId, Timestamp};
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use super::SqliteStore;
use super::{approval, partition};
use crate::StoreError;

fn ag(e: StoreError) -> AgentStoreError {
    AgentStoreError(Box::new(e))
}

fn corrupt(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Internal(format!("corrupt {what}: {e}"))
}

fn ts(s: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(s).map_err(|e| StoreError::Internal(format!("corrupt timestamp: {e}")))
}

fn next_message_seq(tx: &rusqlite::Connection, thread: &str) -> Result<i64, StoreError> {
    Ok(partition::one(
        tx,
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE thread_id = ?1",
        params![thread],
        |r| r.get(0),
    )?)
}

fn insert_message(
    tx: &rusqlite::Connection,
    owner: TenantUid,
    thread: ThreadId,
    run: RunId,
    message: &Value,
) -> Result<(), StoreError> {
    let thread = thread.to_string();
    let seq = next_message_seq(tx, &thread)?;
    partition::exec(
        tx,
        "INSERT INTO messages (thread_id, seq, owner, run_id, message, time) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            thread,
            seq,
            owner.to_string(),
            run.to_string(),
            message.to_string(),
            Timestamp::now().to_string()
        ],
    )?;
    Ok(())
}

/// Inserts steps in order, with their thread messages and audit events.
fn write_steps(
    tx: &rusqlite::Connection,
    scope: &TenantScope,
    principal: &str,
    run: RunId,
    steps: Vec<StepWrite>,
) -> Result<(), StoreError> {
    let mut thread = None;
    for w in steps {
        partition::exec(
            tx,
            "INSERT INTO run_steps (run_id, seq, kind, data, time) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                run.to_string(),
                w.step.seq,
                w.step.kind,
                w.step.data.to_string(),
                w.step.time.to_string()
            ],
        )?;
        if let Some(m) = &w.message {
            let t = match thread {
                Some(t) => t,
                None => {
                    let text: String = partition::one(
                        tx,
                        "SELECT thread_id FROM runs WHERE id = ?1",
                        params![run.to_string()],
                        |r| r.get(0),
                    )?;
                    let t = ThreadId::parse(&text).map_err(|e| corrupt("run")(e.to_string()))?;
                    thread = Some(t);
                    t
                }
            };
            insert_message(tx, scope.partition(), t, run, m)?;
        }
        if let Some(event) = w.event {
            partition::append_chain(tx, Some(scope.tenant().clone()), principal, event)?;
        }
    }
    Ok(())
}

fn read_run(conn: &rusqlite::Connection, id: RunId) -> Result<Option<RunRecord>, StoreError> {
    read_run_with(conn, id, true)
}

/// A run without its steps (for listings).
fn read_run_head(conn: &rusqlite::Connection, id: RunId) -> Result<Option<RunRecord>, StoreError> {
    read_run_with(conn, id, false)
}

fn read_run_with(
    conn: &rusqlite::Connection,
    id: RunId,
    with_steps: bool,
) -> Result<Option<RunRecord>, StoreError> {
    let row = conn
        .query_row(
            "SELECT thread_id, agent, principal, status, created_at, finished_at, output, error_code,
                    error_message, input_tokens, output_tokens FROM runs WHERE id = ?1",
            params![id.to_string()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, i64>(10)?,
                ))
            },
        )
        .optional()?;
    let Some((
        thread,
        agent,
        principal,
        status,
        created,
        finished,
        output,
        code,
        message,
        input,
        out,
    )) = row
    else {
        return Ok(None);
    };
    let mut steps = Vec::new();
    if with_steps {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, kind, data, time FROM run_steps WHERE run_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![id.to_string()], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (seq, kind, data, time) = row?;
            steps.push(Step {
                seq: seq as u32,
                kind,
                data: serde_json::from_str(&data).map_err(|e| corrupt("step")(e.to_string()))?,
                time: ts(&time)?,
            });
        }
    }
    Ok(Some(RunRecord {
        id,
        thread_id: ThreadId::parse(&thread).map_err(|e| corrupt("run")(e.to_string()))?,
        agent,
        principal,
        status: RunStatus::parse(&status).ok_or_else(|| corrupt("run status")(status.clone()))?,
        created_at: ts(&created)?,
        finished_at: finished.as_deref().map(ts).transpose()?,
        output,
        error: code.map(|code| RunFailure {
            code,
            message: message.unwrap_or_default(),
        }),
        input_tokens: input as u64,
        output_tokens: out as u64,
        steps,
    }))
}

/// What a run left `running` by a stopped process becomes.
const INTERRUPTED: &str =
    "the server stopped while the run was in progress; it was not resumed (no step was repeated)";

/// Marks one run that a stopped process left running as failed, with an
/// error step and a `run.interrupted` event; false if it was not running.
fn fail_interrupted(
    conn: &rusqlite::Connection,
    tenant: &TenantId,
    run: RunId,
) -> Result<bool, StoreError> {
    let id = run.to_string();
    let now = Timestamp::now().to_string();
    let changed = partition::exec(conn,
        "UPDATE runs SET status = 'failed', finished_at = ?2, error_code = 'interrupted', error_message = ?3
         WHERE id = ?1 AND status = 'running'",
        params![id, now, INTERRUPTED],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    let seq: i64 = partition::one(
        conn,
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM run_steps WHERE run_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    partition::exec(
        conn,
        "INSERT INTO run_steps (run_id, seq, kind, data, time) VALUES (?1, ?2, 'error', ?3, ?4)",
        params![
            id,
            seq,
            json!({"code": "interrupted", "message": INTERRUPTED}).to_string(),
            now
        ],
    )?;
    let event = NewAuditEvent::new(
        AuditAction::RunInterrupted,
        format!("run:{id}"),
        Outcome::Failure,
        RequestId::generate(),
    );
    // The restart that found the run is the actor, not whoever asked.
    partition::append_chain(conn, Some(tenant.clone()), "system", event)?;
    Ok(true)
}

impl SqliteStore {
    /// Whether `sql` (one `?1`: the thread id) finds a row in the scope's
    /// partition.
    async fn thread_has(
        &self,
        scope: &TenantScope,
        sql: &'static str,
        thread: ThreadId,
    ) -> Result<bool, AgentStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                Ok(conn
                    .query_row(sql, params![thread.to_string()], |_| Ok(()))
                    .optional()?
                    .is_some())
            })
        })
        .await
        .map_err(ag)
    }
}

/// Whether a run matching `filter` (on `runs`, with `?1` = `value`) is
/// still running or awaiting approval: such runs are not deleted under
/// their process or approvers.
fn busy(tx: &rusqlite::Connection, filter: &str, value: &str) -> Result<bool, StoreError> {
    Ok(partition::one(
        tx,
        &format!(
            "SELECT 1 FROM runs WHERE {filter} AND status IN ('running', 'awaiting_approval') LIMIT 1"
        ),
        params![value],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

#[async_trait]
impl AgentStore for SqliteStore {
    async fn agent_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
    ) -> Result<Option<AgentSettings>, AgentStoreError> {
        let scope = scope.clone();
        let agent = agent.to_owned();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let text: Option<String> = conn
                    .query_row(
                        "SELECT value FROM agent_settings WHERE agent = ?1",
                        params![agent],
                        |r| r.get(0),
                    )
                    .optional()?;
                text.map(|t| {
                    serde_json::from_str(&t).map_err(|e| corrupt("agent settings")(e.to_string()))
                })
                .transpose()
            })
        })
        .await
        .map_err(ag)
    }

    async fn put_agent_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
        settings: &AgentSettings,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError> {
        let scope2 = scope.clone();
        let agent = agent.to_owned();
        let text = serde_json::to_string(settings).map_err(|e| AgentStoreError(Box::new(e)))?;
        self.tenant_write(&scope2.clone(), move |tx, principal| {
                partition::exec(tx,
                    "INSERT INTO agent_settings (agent, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (agent) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![agent, text, Timestamp::now().to_string()],
                )?;
                partition::append_chain(tx, Some(scope2.tenant().clone()), principal, event)?;
                Ok(())
        })
        .await
        .map_err(ag)
    }

    async fn thread_exists(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<bool, AgentStoreError> {
        self.thread_has(scope, "SELECT 1 FROM threads WHERE id = ?1", thread)
            .await
    }

    async fn messages(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<Option<Vec<StoredMessage>>, AgentStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let id = thread.to_string();
                let exists = conn
                    .query_row("SELECT 1 FROM threads WHERE id = ?1", params![id], |_| Ok(()))
                    .optional()?
                    .is_some();
                if !exists {
                    return Ok(None);
                }
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, owner, run_id, message, time FROM messages WHERE thread_id = ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map(params![id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (seq, owner, run, message, time) = row?;
                    out.push(StoredMessage {
                        seq: seq as u64,
                        owner: TenantUid::parse(&owner).map_err(|e| corrupt("message owner")(e.to_string()))?,
                        run_id: run
                            .as_deref()
                            .map(RunId::parse)
                            .transpose()
                            .map_err(|e| corrupt("message run")(e.to_string()))?,
                        message: serde_json::from_str(&message).map_err(|e| corrupt("message")(e.to_string()))?,
                        time: ts(&time)?,
                    });
                }
                Ok(Some(out))
            })
        })
        .await
        .map_err(ag)
    }

    async fn begin_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        new_thread: bool,
        input: &Value,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError> {
        let scope2 = scope.clone();
        let run = run.clone();
        let input = input.clone();
        let boot = self.inner.boot_id.clone();
        self.tenant_write(&scope2.clone(), move |tx, principal| {
            let thread = run.thread_id.to_string();
            if new_thread {
                partition::exec(
                    tx,
                    "INSERT INTO threads (id, created_at) VALUES (?1, ?2)",
                    params![thread, run.created_at.to_string()],
                )?;
            }
            partition::exec(
                tx,
                "INSERT INTO runs (id, thread_id, agent, principal, status, created_at, boot_id)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                params![
                    run.id.to_string(),
                    thread,
                    run.agent,
                    run.principal,
                    run.created_at.to_string(),
                    boot
                ],
            )?;
            insert_message(tx, scope2.partition(), run.thread_id, run.id, &input)?;
            partition::append_chain(tx, Some(scope2.tenant().clone()), principal, event)?;
            Ok(())
        })
        .await
        .map_err(ag)
    }

    async fn append_steps(
        &self,
        scope: &TenantScope,
        run: RunId,
        steps: Vec<StepWrite>,
    ) -> Result<(), AgentStoreError> {
        let scope2 = scope.clone();
        self.tenant_write(scope, move |tx, principal| {
            write_steps(tx, &scope2, principal, run, steps)
        })
        .await
        .map_err(ag)
    }

    async fn finish_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: Vec<StepWrite>,
        event: NewAuditEvent,
    ) -> Result<(), AgentStoreError> {
        let scope2 = scope.clone();
        let run = run.clone();
        self.tenant_write(&scope2.clone(), move |tx, principal| {
            write_steps(tx, &scope2, principal, run.id, steps)?;
                partition::exec(tx,
                    "UPDATE runs SET status = ?2, finished_at = ?3, output = ?4, error_code = ?5, error_message = ?6,
                       input_tokens = ?7, output_tokens = ?8 WHERE id = ?1",
                    params![
                        run.id.to_string(),
                        run.status.as_str(),
                        run.finished_at.map(|t| t.to_string()),
                        run.output,
                        run.error.as_ref().map(|e| e.code.clone()),
                        run.error.as_ref().map(|e| e.message.clone()),
                        run.input_tokens as i64,
                        run.output_tokens as i64
                    ],
                )?;
                partition::append_chain(tx, Some(scope2.tenant().clone()), principal, event)?;
                Ok(())
        })
        .await
        .map_err(ag)
    }

    async fn delete_thread(
        &self,
        scope: &TenantScope,
        id: ThreadId,
        event: NewAuditEvent,
    ) -> Result<Deletion, AgentStoreError> {
        let tenant = scope.tenant().clone();
        let id = id.to_string();
        self.tenant_write(scope, move |tx, principal| {
            let exists = partition::one(tx, "SELECT 1 FROM threads WHERE id = ?1", params![id], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
            // The canary's thread (a message of no run) is not the tenant's
            // to delete: it answers like a missing one.
            let canary = partition::one(
                tx,
                "SELECT 1 FROM messages WHERE thread_id = ?1 AND run_id IS NULL LIMIT 1",
                params![id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
            if !exists || canary {
                return Ok(Deletion::NotFound);
            }
            if busy(tx, "thread_id = ?1", &id)? {
                return Ok(Deletion::InProgress);
            }
            let runs = "SELECT id FROM runs WHERE thread_id = ?1";
            let steps = partition::exec(
                tx,
                &format!("DELETE FROM run_steps WHERE run_id IN ({runs})"),
                params![id],
            )?;
            partition::exec(
                tx,
                &format!("DELETE FROM approvals WHERE run_id IN ({runs})"),
                params![id],
            )?;
            let messages =
                partition::exec(tx, "DELETE FROM messages WHERE thread_id = ?1", params![id])?;
            let deleted_runs =
                partition::exec(tx, "DELETE FROM runs WHERE thread_id = ?1", params![id])?;
            partition::exec(tx, "DELETE FROM threads WHERE id = ?1", params![id])?;
            let mut event = event;
            event.details = json!({"thread_id": id, "messages": messages, "runs": deleted_runs, "steps": steps});
            partition::append_chain(tx, Some(tenant), principal, event)?;
            Ok(Deletion::Deleted)
        })
        .await
        .map_err(ag)
    }

    async fn delete_run(
        &self,
        scope: &TenantScope,
        id: RunId,
        event: NewAuditEvent,
    ) -> Result<Deletion, AgentStoreError> {
        let tenant = scope.tenant().clone();
        let id = id.to_string();
        self.tenant_write(scope, move |tx, principal| {
            let exists =
                partition::one(tx, "SELECT 1 FROM runs WHERE id = ?1", params![id], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if !exists {
                return Ok(Deletion::NotFound);
            }
            if busy(tx, "id = ?1", &id)? {
                return Ok(Deletion::InProgress);
            }
            let steps =
                partition::exec(tx, "DELETE FROM run_steps WHERE run_id = ?1", params![id])?;
            partition::exec(tx, "DELETE FROM approvals WHERE run_id = ?1", params![id])?;
            let messages =
                partition::exec(tx, "DELETE FROM messages WHERE run_id = ?1", params![id])?;
            partition::exec(tx, "DELETE FROM runs WHERE id = ?1", params![id])?;
            let mut event = event;
            event.details = json!({"run_id": id, "messages": messages, "steps": steps});
            partition::append_chain(tx, Some(tenant), principal, event)?;
            Ok(Deletion::Deleted)
        })
        .await
        .map_err(ag)
    }

    async fn apply_retention(
        &self,
        scope: &TenantScope,
        cutoff: Timestamp,
        event: NewAuditEvent,
    ) -> Result<u64, AgentStoreError> {
        let tenant = scope.tenant().clone();
        self.tenant_write(scope, move |tx, principal| {
            // Times are RFC 3339 UTC with a fixed layout, so they compare as
            // text. Messages without a run (the canary's) are not memory.
            let cutoff_micros = cutoff.unix_micros();
            let cutoff = cutoff.to_string();
            let deleted = partition::exec(
                tx,
                "DELETE FROM messages WHERE time < ?1 AND run_id IS NOT NULL",
                params![cutoff],
            )?;
            // What a model or tool produced for runs that ended before the
            // cutoff; the run's metadata stays for usage and audit.
            let ended = "SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ?1
                 AND (output IS NOT NULL OR error_message IS NOT NULL
                      OR id IN (SELECT run_id FROM run_steps)
                      OR id IN (SELECT run_id FROM approvals WHERE status <> 'pending'))";
            let purged: Vec<String> = {
                let mut stmt = tx.prepare(ended)?;
                let rows = stmt.query_map(params![cutoff], |r| r.get::<_, String>(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for run in &purged {
                partition::exec(tx, "DELETE FROM run_steps WHERE run_id = ?1", params![run])?;
                partition::exec(
                    tx,
                    "DELETE FROM approvals WHERE run_id = ?1 AND status <> 'pending'",
                    params![run],
                )?;
                partition::exec(
                    tx,
                    "UPDATE runs SET output = NULL, error_message = NULL WHERE id = ?1",
                    params![run],
                )?;
            }
            // Stored Responses API responses are conversations too.
            let responses = partition::exec(
                tx,
                "DELETE FROM responses WHERE created_micros < ?1",
                params![cutoff_micros],
            )?;
            if deleted > 0 || !purged.is_empty() || responses > 0 {
                let mut event = event;
                event.details = json!({
                    "deleted_messages": deleted,
                    "purged_runs": purged.len(),
                    "deleted_responses": responses,
                    "older_than": cutoff,
                });
                partition::append_chain(tx, Some(tenant), principal, event)?;
            }
            Ok(deleted as u64 + purged.len() as u64 + responses as u64)
        })
        .await
        .map_err(ag)
    }

    async fn run(
        &self,
        scope: &TenantScope,
        id: RunId,
    ) -> Result<Option<RunRecord>, AgentStoreError> {
        let scope2 = scope.clone();
        let boot = self.inner.boot_id.clone();
        let (record, stale) = self
            .blocking(move |s| {
                let p = s.partition(scope2.tenant(), scope2.partition())?;
                p.with_conn(|conn| {
                    let record = read_run(conn, id)?;
                    let owner: Option<String> = conn
                        .query_row(
                            "SELECT boot_id FROM runs WHERE id = ?1",
                            params![id.to_string()],
                            |r| r.get(0),
                        )
                        .optional()?;
                    let stale = record
                        .as_ref()
                        .is_some_and(|r| r.status == RunStatus::Running)
                        && owner.is_some_and(|b| b != boot);
                    Ok((record, stale))
                })
            })
            .await
            .map_err(ag)?;
        if !stale {
            return Ok(record);
        }
        // Left running by a process that stopped: it is failed from now on.
        let tenant = scope.tenant().clone();
        self.tenant_write(scope, move |tx, _| fail_interrupted(tx, &tenant, id))
            .await
            .map_err(ag)?;
        self.stored_run(scope, id).await
    }

    async fn stored_run(
        &self,
        scope: &TenantScope,
        id: RunId,
    ) -> Result<Option<RunRecord>, AgentStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| read_run(conn, id))
        })
        .await
        .map_err(ag)
    }

    async fn list_runs(
        &self,
        scope: &TenantScope,
        filter: &RunFilter,
    ) -> Result<Vec<RunRecord>, AgentStoreError> {
        let scope = scope.clone();
        let filter = filter.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                // UUIDv7 ids in their lowercase text form sort by time.
                let mut stmt = conn.prepare_cached(
                    "SELECT id FROM runs
                     WHERE (?1 IS NULL OR agent = ?1) AND (?2 IS NULL OR status = ?2)
                       AND (?3 IS NULL OR id < ?3)
                     ORDER BY id DESC LIMIT ?4",
                )?;
                let ids = stmt
                    .query_map(
                        params![
                            filter.agent,
                            filter.status.map(RunStatus::as_str),
                            filter.after.map(|a| a.to_string()),
                            filter.limit as i64
                        ],
                        |r| r.get::<_, String>(0),
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let id = RunId::parse(&id).map_err(|e| corrupt("run id")(e.to_string()))?;
                    if let Some(mut r) = read_run_head(conn, id)? {
                        r.steps = Vec::new();
                        out.push(r);
                    }
                }
                Ok(out)
            })
        })
        .await
        .map_err(ag)
    }

    async fn list_threads(
        &self,
        scope: &TenantScope,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadSummary>, AgentStoreError> {
        let scope = scope.clone();
        let filter = filter.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                // Threads with a run (the canary's has none); the agent
                // filter keeps threads any run of that agent is on.
                let mut stmt = conn.prepare_cached(
                    "SELECT thread_id, MIN(created_at), MAX(created_at), COUNT(*),
                            group_concat(DISTINCT agent)
                     FROM runs
                     WHERE (?2 IS NULL OR thread_id < ?2)
                     GROUP BY thread_id
                     HAVING ?1 IS NULL OR SUM(agent = ?1) > 0
                     ORDER BY thread_id DESC LIMIT ?3",
                )?;
                let rows = stmt
                    .query_map(
                        params![
                            filter.agent,
                            filter.after.map(|a| a.to_string()),
                            filter.limit as i64
                        ],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, i64>(3)?,
                                r.get::<_, Option<String>>(4)?,
                            ))
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut out = Vec::with_capacity(rows.len());
                for (id, first, last, runs, agents) in rows {
                    let mut agents: Vec<String> = agents
                        .unwrap_or_default()
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect();
                    agents.sort();
                    out.push(ThreadSummary {
                        id: ThreadId::parse(&id)
                            .map_err(|e| corrupt("thread id")(e.to_string()))?,
                        created_at: ts(&first)?,
                        last_run_at: ts(&last)?,
                        agents,
                        runs: runs as u64,
                    });
                }
                Ok(out)
            })
        })
        .await
        .map_err(ag)
    }

    async fn thread_paused(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<bool, AgentStoreError> {
        self.thread_has(
            scope,
            "SELECT 1 FROM runs WHERE thread_id = ?1 AND status = 'awaiting_approval' LIMIT 1",
            thread,
        )
        .await
    }

    async fn pause_run(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        steps: Vec<StepWrite>,
        approvals: &[Approval],
    ) -> Result<(), AgentStoreError> {
        let scope2 = scope.clone();
        let run = run.clone();
        let approvals = approvals.to_vec();
        self.tenant_write(scope, move |tx, principal| {
            write_steps(tx, &scope2, principal, run.id, steps)?;
            for a in &approvals {
                approval::insert(tx, a)?;
            }
            let changed = partition::exec(
                tx,
                "UPDATE runs SET status = 'awaiting_approval', input_tokens = ?2, output_tokens = ?3
                 WHERE id = ?1 AND status = 'running'",
                params![run.id.to_string(), run.input_tokens as i64, run.output_tokens as i64],
            )?;
            if changed != 1 {
                return Err(StoreError::Conflict("the run is no longer running".into()));
            }
            Ok(())
        })
        .await
        .map_err(ag)
    }

    async fn approvals(
        &self,
        scope: &TenantScope,
        status: Option<ApprovalStatus>,
        run: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<Approval>, AgentStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| approval::list(conn, status, run, limit))
        })
        .await
        .map_err(ag)
    }

    async fn approval(
        &self,
        scope: &TenantScope,
        id: ApprovalId,
    ) -> Result<Option<Approval>, AgentStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| approval::get(conn, id))
        })
        .await
        .map_err(ag)
    }

    async fn settle_approval(
        &self,
        scope: &TenantScope,
        id: ApprovalId,
        to: ApprovalStatus,
        comment: Option<String>,
        now: Timestamp,
        event: NewAuditEvent,
    ) -> Result<Option<Settled>, AgentStoreError> {
        let tenant = scope.tenant().clone();
        let boot = self.inner.boot_id.clone();
        self.tenant_write(scope, move |tx, principal| {
            approval::settle(tx, &tenant, principal, &boot, id, to, comment, now, event)
        })
        .await
        .map_err(ag)
    }

    async fn cancel_paused(
        &self,
        scope: &TenantScope,
        run: &RunRecord,
        event: NewAuditEvent,
    ) -> Result<bool, AgentStoreError> {
        let tenant = scope.tenant().clone();
        let run = run.clone();
        self.tenant_write(scope, move |tx, principal| {
            let id = run.id.to_string();
            let changed = partition::exec(
                tx,
                "UPDATE runs SET status = ?2, finished_at = ?3, error_code = ?4, error_message = ?5
                 WHERE id = ?1 AND status = 'awaiting_approval'",
                params![
                    id,
                    run.status.as_str(),
                    run.finished_at.map(|t| t.to_string()),
                    run.error.as_ref().map(|e| e.code.clone()),
                    run.error.as_ref().map(|e| e.message.clone())
                ],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            partition::exec(
                tx,
                "UPDATE approvals SET status = 'expired', decided_at = ?2, comment = 'the run was cancelled'
                 WHERE run_id = ?1 AND status = 'pending'",
                params![id, Timestamp::now().to_string()],
            )?;
            partition::append_chain(tx, Some(tenant), principal, event)?;
            Ok(true)
        })
        .await
        .map_err(ag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{reaches_sqlite, sqlite_error};

    #[test]
    fn the_runtime_sees_the_store_error_with_its_chain() {
        let e = StoreError::from(sqlite_error());
        let text = e.to_string();
        let e = ag(e);
        assert_eq!(e.to_string(), text);
        assert!(reaches_sqlite(&e));
    }
}
