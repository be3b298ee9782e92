//! One tenant's partition: a directory with its own SQLite database.
//!
//! The directory is named by the tenant's internal uid (a UUID, so it is a
//! safe path component by construction), and the database records which
//! tenant and uid it belongs to; opening checks both, so a partition can
//! never be served to the wrong tenant even if files were moved by hand.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bulkhead_core::audit::{AuditEvent, GENESIS_HASH, NewAuditEvent};
use bulkhead_core::checkpoint::{AuditSigner, Checkpoint};
use bulkhead_core::{TenantId, TenantUid, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use crate::{CheckpointRule, Page, StoreError, StoreResult, migrate};

/// Schema of a tenant database, one entry per version.
const MIGRATIONS: &[&str] = &[
    // v1: partition identity and the tenant's audit chain. Events are kept
    // whole as their canonical JSON so export and verification read exactly
    // what was hashed.
    "CREATE TABLE partition (
        tenant_id  TEXT NOT NULL,
        tenant_uid TEXT NOT NULL
    ) STRICT;
    CREATE TABLE audit (
        seq   INTEGER PRIMARY KEY,
        event TEXT NOT NULL,
        hash  TEXT NOT NULL
    ) STRICT;",
    // v2: the tenant's credentials, sealed under its data key (which lives
    // in the control database, so deleting it shreds these rows anywhere).
    "CREATE TABLE credentials (
        connection   TEXT PRIMARY KEY,
        kind         TEXT NOT NULL,
        version      INTEGER NOT NULL,
        dek_version  INTEGER NOT NULL,
        ciphertext   BLOB NOT NULL,
        status       TEXT NOT NULL,
        expires_at   TEXT,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        last_used_at TEXT
    ) STRICT;",
    // v3: model usage (one row per call) and tenant settings (JSON values).
    "CREATE TABLE usage (
        id            TEXT PRIMARY KEY,
        time          TEXT NOT NULL,
        ts_micros     INTEGER NOT NULL,
        day           TEXT NOT NULL,
        request_id    TEXT NOT NULL,
        model         TEXT NOT NULL,
        provider      TEXT NOT NULL,
        region        TEXT NOT NULL,
        input_tokens  INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cost_nanos    INTEGER NOT NULL,
        latency_ms    INTEGER NOT NULL,
        status        TEXT NOT NULL,
        stream        INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX usage_by_time ON usage (ts_micros);
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;",
    // v4: agents: the tenant's settings of each agent, threads and their
    // messages (each with the uid of the tenant that wrote it: provenance
    // checked again when a prompt is assembled), runs (with the id of the
    // process running them, so a run left `running` by a stopped process
    // is recognised) and their steps.
    "CREATE TABLE agent_settings (
        agent      TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE threads (
        id         TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE messages (
        thread_id TEXT NOT NULL REFERENCES threads(id),
        seq       INTEGER NOT NULL,
        owner     TEXT NOT NULL,
        run_id    TEXT,
        message   TEXT NOT NULL,
        time      TEXT NOT NULL,
        PRIMARY KEY (thread_id, seq)
    ) STRICT;
    CREATE TABLE runs (
        id            TEXT PRIMARY KEY,
        thread_id     TEXT NOT NULL REFERENCES threads(id),
        agent         TEXT NOT NULL,
        principal     TEXT NOT NULL,
        status        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        finished_at   TEXT,
        output        TEXT,
        error_code    TEXT,
        error_message TEXT,
        input_tokens  INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        boot_id       TEXT NOT NULL
    ) STRICT;
    CREATE TABLE run_steps (
        run_id TEXT NOT NULL REFERENCES runs(id),
        seq    INTEGER NOT NULL,
        kind   TEXT NOT NULL,
        data   TEXT NOT NULL,
        time   TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) STRICT;",
    // v5: knowledge: collections, documents (metadata as JSON; the
    // external id unique per collection), chunks with their vectors
    // (little-endian f32), and an FTS5 index over the chunks kept in step
    // by triggers, so a chunk and its index entry are written or removed
    // in the same transaction.
    "CREATE TABLE collections (
        name       TEXT PRIMARY KEY,
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE documents (
        id              TEXT PRIMARY KEY,
        collection      TEXT NOT NULL REFERENCES collections(name),
        external_id     TEXT,
        title           TEXT,
        metadata        TEXT NOT NULL,
        sha256          TEXT NOT NULL,
        bytes           INTEGER NOT NULL,
        chunks          INTEGER NOT NULL,
        embedding_model TEXT,
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        UNIQUE (collection, external_id)
    ) STRICT;
    CREATE TABLE chunks (
        id          INTEGER PRIMARY KEY,
        document_id TEXT NOT NULL REFERENCES documents(id),
        collection  TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        heading     TEXT,
        text        TEXT NOT NULL,
        tokens      INTEGER NOT NULL,
        embedding   BLOB
    ) STRICT;
    CREATE INDEX chunks_by_document ON chunks (document_id);
    CREATE INDEX chunks_by_collection ON chunks (collection);
    CREATE VIRTUAL TABLE chunks_fts USING fts5(
        text, heading, content = 'chunks', content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row');
    CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, text, heading) VALUES (new.id, new.text, new.heading);
    END;
    CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, text, heading)
        VALUES ('delete', old.id, old.text, old.heading);
    END;",
    // v6: the usage table becomes the cost ledger: what kind of call
    // (model, embed, tool), the agent and run that made it, the tool.
    "ALTER TABLE usage ADD COLUMN kind TEXT NOT NULL DEFAULT 'model';
    ALTER TABLE usage ADD COLUMN agent TEXT;
    ALTER TABLE usage ADD COLUMN run_id TEXT;
    ALTER TABLE usage ADD COLUMN tool TEXT;",
    // v7: approval requests (a paused tool call each: its exact arguments
    // and their hash, who asked, who decided), and the lookups a paused
    // run needs (its thread, its requests).
    "CREATE TABLE approvals (
        id              TEXT PRIMARY KEY,
        run_id          TEXT NOT NULL REFERENCES runs(id),
        round           INTEGER NOT NULL,
        status          TEXT NOT NULL,
        agent           TEXT NOT NULL,
        tool            TEXT NOT NULL,
        tool_call_id    TEXT NOT NULL,
        connection      TEXT,
        arguments       TEXT NOT NULL,
        arguments_hash  TEXT NOT NULL,
        summary         TEXT NOT NULL,
        requested_by    TEXT NOT NULL,
        requested_roles TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        expires_at      TEXT NOT NULL,
        decided_by      TEXT,
        decided_at      TEXT,
        comment         TEXT
    ) STRICT;
    CREATE INDEX approvals_by_status ON approvals (status, created_at);
    CREATE INDEX approvals_by_run ON approvals (run_id);
    CREATE INDEX runs_by_thread ON runs (thread_id, status);",
    // v8: the ledger row of a model call is written before the request is
    // sent (`in_flight`, its estimate, the process running it and the
    // caller) and settled in place; `estimated` marks tokens the gateway
    // counted itself (no usage from the provider, or a call its process
    // died during).
    "ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN boot_id TEXT;
    ALTER TABLE usage ADD COLUMN principal TEXT;
    CREATE INDEX usage_in_flight ON usage (status) WHERE status = 'in_flight';",
    // v9: a document's fingerprint (content, format, title, metadata,
    // embedding model), so that ingesting it again unchanged does nothing.
    "ALTER TABLE documents ADD COLUMN fingerprint TEXT;",
    // v10: stored Responses API responses (the response object and the
    // conversation it ends, as JSON), for `previous_response_id`.
    "CREATE TABLE responses (
        id             TEXT PRIMARY KEY,
        created_micros INTEGER NOT NULL,
        body           TEXT NOT NULL
    ) STRICT;",
    // v11: signed checkpoints of the audit chain, kept whole as their
    // canonical JSON (docs/audit.md), one per checkpointed sequence number.
    CHECKPOINTS_TABLE,
    // v12: the transactional outbox of the event bus (`[audit.nats]`):
    // rows written with their event by a trigger of the store's
    // connection (sqlite/outbox.rs), deleted once acknowledged.
    "CREATE TABLE outbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id  TEXT NOT NULL,
        payload TEXT NOT NULL
    ) STRICT;",
    // v13: the tenant's alert transitions (`alert.fired`, `alert.resolved`),
    // each as the JSON body its webhooks were sent, for `GET
    // /v1/alerts/events`. The rules themselves are a `settings` row.
    "CREATE TABLE alert_events (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        at_micros INTEGER NOT NULL,
        body      TEXT NOT NULL
    ) STRICT;",
];

/// The checkpoints table, in tenant.db and control.db alike.
pub(crate) const CHECKPOINTS_TABLE: &str = "CREATE TABLE audit_checkpoints (
        seq  INTEGER PRIMARY KEY,
        body TEXT NOT NULL
    ) STRICT;";

/// File name of the tenant database inside its partition directory.
pub(crate) const DB_FILE: &str = "tenant.db";

/// An open partition.
pub(crate) struct Partition {
    conn: Mutex<Connection>,
}

/// The directory of partition `uid` under `root`.
pub(crate) fn dir(root: &Path, uid: TenantUid) -> PathBuf {
    root.join("tenants").join(uid.to_string())
}

pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL lets readers proceed during a write; FULL makes every commit
    // durable before we answer (audit events must survive a power cut).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted rows (credentials, keys) are overwritten rather than left in
    // free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

impl Partition {
    /// Creates the partition of a new tenant (the directory must not exist).
    pub(crate) fn create(root: &Path, tenant: &TenantId, uid: TenantUid) -> StoreResult<Self> {
        let dir = dir(root, uid);
        super::create_private_dir(&dir)?;
        let mut conn = Connection::open(dir.join(DB_FILE))?;
        configure(&conn)?;
        migrate::apply(&mut conn, "tenant", MIGRATIONS)?;
        conn.execute(
            "INSERT INTO partition (tenant_id, tenant_uid) VALUES (?1, ?2)",
            params![tenant.as_str(), uid.to_string()],
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Opens an existing partition, checking that it belongs to `tenant`/`uid`.
    pub(crate) fn open(root: &Path, tenant: &TenantId, uid: TenantUid) -> StoreResult<Self> {
        let path = dir(root, uid).join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::NotFound);
        }
        let mut conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        migrate::apply(&mut conn, "tenant", MIGRATIONS)?;
        let owner: Option<(String, String)> = conn
            .query_row("SELECT tenant_id, tenant_uid FROM partition", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match owner {
            Some((t, u)) if t == tenant.as_str() && u == uid.to_string() => Ok(Self {
                conn: Mutex::new(conn),
            }),
            _ => Err(StoreError::Internal(format!(
                "partition {} does not belong to tenant {tenant}",
                path.display()
            ))),
        }
    }

    /// Runs `f` on the partition's connection.
    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.lock()?;
        f(&mut conn)
    }

    fn lock(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Internal("partition lock poisoned".into()))
    }

    /// A page of this tenant's chain.
    pub(crate) fn page(&self, page: Page) -> StoreResult<Vec<AuditEvent>> {
        let conn = self.lock()?;
        read_page(&conn, page)
    }
}

/// `execute` through the connection's statement cache: the hot writes
/// (steps, messages, audit events, usage) are parsed once per connection.
pub(crate) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache.
pub(crate) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// Appends to the `audit` table of the database `tx` belongs to.
pub(crate) fn append_chain(
    tx: &Connection,
    tenant: Option<TenantId>,
    principal: &str,
    event: NewAuditEvent,
) -> StoreResult<AuditEvent> {
    let last: Option<(i64, String)> = one(
        tx,
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    let (seq, hash) = last
        .map(|(s, h)| (s as u64, h))
        .unwrap_or((0, GENESIS_HASH.to_owned()));
    let sealed = AuditEvent::seal(event, tenant, principal, seq, &hash);
    let text = serde_json::to_string(&sealed).map_err(|e| StoreError::Backend(Box::new(e)))?;
    exec(
        tx,
        "INSERT INTO audit (seq, event, hash) VALUES (?1, ?2, ?3)",
        params![sealed.seq as i64, text, sealed.hash],
    )?;
    Ok(sealed)
}

/// Signs a checkpoint of the chain in `conn`'s database if `rule` says one
/// is due: events were added since the last checkpoint, and either
/// `rule.events` of them or the oldest of them is `rule.interval_s` old.
pub(crate) fn checkpoint_if_due(
    conn: &mut Connection,
    tenant: Option<TenantId>,
    signer: &AuditSigner,
    rule: CheckpointRule,
) -> StoreResult<Option<Checkpoint>> {
    let tx = conn.transaction()?;
    let head: Option<(i64, String)> = one(
        &tx,
        "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?;
    let Some((head_seq, head_hash)) = head else {
        return Ok(None);
    };
    let last: i64 = one(
        &tx,
        "SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints",
        [],
        |r| r.get(0),
    )?;
    if last >= head_seq {
        return Ok(None);
    }
    let now = Timestamp::now();
    let mut due = (head_seq - last) as u64 >= rule.events;
    if !due {
        let oldest: String = one(
            &tx,
            "SELECT event FROM audit WHERE seq = ?1",
            [last + 1],
            |r| r.get(0),
        )?;
        let oldest: AuditEvent = serde_json::from_str(&oldest)
            .map_err(|e| StoreError::Internal(format!("corrupt audit event: {e}")))?;
        let age_us = now.unix_micros() - oldest.time.unix_micros();
        due = age_us >= (rule.interval_s as i64).saturating_mul(1_000_000);
    }
    if !due {
        return Ok(None);
    }
    let checkpoint = signer.sign(tenant, head_seq as u64, &head_hash, now);
    exec(
        &tx,
        "INSERT INTO audit_checkpoints (seq, body) VALUES (?1, ?2)",
        params![head_seq, checkpoint.line()],
    )?;
    tx.commit()?;
    Ok(Some(checkpoint))
}

/// The checkpoints of `conn`'s chain with `from <= seq`, oldest first, at
/// most `limit`.
pub(crate) fn read_checkpoints(
    conn: &Connection,
    from: u64,
    limit: u32,
) -> StoreResult<Vec<Checkpoint>> {
    let mut stmt = conn.prepare_cached(
        "SELECT body FROM audit_checkpoints WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![from as i64, limit as i64], |r| {
        r.get::<_, String>(0)
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.push(
            serde_json::from_str(&row?)
                .map_err(|e| StoreError::Internal(format!("corrupt checkpoint: {e}")))?,
        );
    }
    Ok(out)
}

/// Reads a page of the `audit` table of `conn`.
pub(crate) fn read_page(conn: &Connection, page: Page) -> StoreResult<Vec<AuditEvent>> {
    let mut stmt =
        conn.prepare_cached("SELECT event FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows = stmt.query_map(params![page.after as i64, page.limit as i64], |r| {
        r.get::<_, String>(0)
    })?;
    let mut out = Vec::new();
    for row in rows {
        let text = row?;
        out.push(
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Internal(format!("corrupt audit event: {e}")))?,
        );
    }
    Ok(out)
}
