//! The embedded store: one control database and one database per tenant.
//!
//! Layout under the data directory:
//! ```text
//! control.db                 tenants, API key digests, operator audit chain
//! tenants/<tenant-uid>/      one tenant incarnation's partition
//!     tenant.db              its data and audit chain
//! ```
//! The control plane's tenants and key digests are also held in memory
//! (this process is their only writer in the embedded deployment), so
//! authenticating a request costs a hash-map lookup, not a query. The map is
//! updated under its write lock right after each commit.

mod agent;
mod alerts;
mod approval;
mod canary;
mod commit;
mod gateway;
mod knowledge;
mod outbox;
mod partition;
mod policy;
mod vault;

use bulkhead_core::audit::AuditAction;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bulkhead_auth::{
    ApiKeyDigest, Directory, DirectoryError, FailureAttribution, OperatorScope, TenantScope,
};
use bulkhead_core::audit::{AuditEvent, NewAuditEvent, Outcome};
use bulkhead_core::checkpoint::{AuditSigner, Checkpoint};
use bulkhead_core::tenant::TenantPatch;
use bulkhead_core::{
    ApiKeyId, ApiKeyRecord, Isolation, Region, Role, Tenant, TenantId, TenantStatus, TenantUid,
    Timestamp,
};
use rusqlite::{Connection, params};
use serde_json::json;

use crate::{
    CheckpointRule, ControlStore, NewApiKeyRecord, NewTenant, Page, StoreError, StoreResult,
    TenantStore, migrate,
};
use commit::Writer;
pub use outbox::{OutboxRow, PendingPartition};
use partition::Partition;

const CONTROL_MIGRATIONS: &[&str] = &[
    // v1: tenants, API keys (digests only) and the operator's audit chain.
    "CREATE TABLE tenants (
        id         TEXT PRIMARY KEY,
        uid        TEXT NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        region     TEXT NOT NULL,
        isolation  TEXT NOT NULL,
        status     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE api_keys (
        id         TEXT PRIMARY KEY,
        tenant_uid TEXT NOT NULL REFERENCES tenants(uid) ON DELETE CASCADE,
        digest     BLOB NOT NULL UNIQUE,
        name       TEXT,
        roles      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT
    ) STRICT;
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_uid);
    CREATE TABLE audit (
        seq   INTEGER PRIMARY KEY,
        event TEXT NOT NULL,
        hash  TEXT NOT NULL
    ) STRICT;",
    // v2: wrapped data keys (one row per owner and version; the owner is a
    // tenant uid or 'platform') and the platform's own credentials.
    "CREATE TABLE data_keys (
        owner       TEXT NOT NULL,
        version     INTEGER NOT NULL,
        provider    TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        key_version INTEGER NOT NULL,
        wrapped     BLOB NOT NULL,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (owner, version)
    ) STRICT;
    CREATE TABLE platform_credentials (
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
    // v3: each tenant's canary (also planted in its partition), for the
    // cross-tenant tripwire that scans outbound requests.
    "CREATE TABLE canaries (
        tenant_uid TEXT PRIMARY KEY,
        canary     TEXT NOT NULL
    ) STRICT;",
    // v4: each tenant's quota overrides (JSON), over the configured defaults.
    "ALTER TABLE tenants ADD COLUMN quotas TEXT NOT NULL DEFAULT '{}';",
    // v5: signed checkpoints of the operator's audit chain.
    partition::CHECKPOINTS_TABLE,
];

/// Open partitions, least recently used evicted first. Each open partition
/// holds three file descriptors (database, WAL, shared memory) and a page
/// cache; 512 keeps about 1,500 descriptors open however many tenants
/// exist, while the busy ones stay open. An evicted partition closes when
/// its last in-flight user drops it.
const MAX_OPEN_PARTITIONS: usize = 512;

struct PartitionCache {
    open: HashMap<TenantUid, (Arc<Partition>, u64)>,
    clock: u64,
    capacity: usize,
}

impl PartitionCache {
    fn get(&mut self, uid: TenantUid) -> Option<Arc<Partition>> {
        self.clock += 1;
        let clock = self.clock;
        self.open.get_mut(&uid).map(|(p, used)| {
            *used = clock;
            p.clone()
        })
    }

    fn insert(&mut self, uid: TenantUid, p: Arc<Partition>) {
        self.clock += 1;
        if self.open.len() >= self.capacity && !self.open.contains_key(&uid) {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(u, _)| *u);
            if let Some(oldest) = oldest {
                self.open.remove(&oldest);
            }
        }
        self.open.insert(uid, (p, self.clock));
    }

    fn remove(&mut self, uid: TenantUid) {
        self.open.remove(&uid);
    }
}

#[derive(Default)]
struct DirIndex {
    tenants: HashMap<TenantId, Tenant>,
    keys: HashMap<[u8; 32], ApiKeyRecord>,
}

struct Inner {
    root: PathBuf,
    control: Mutex<Connection>,
    index: RwLock<DirIndex>,
    partitions: Mutex<PartitionCache>,
    write_queues: commit::Queues,
    /// This process's identity: a run stored as running under another
    /// boot id was interrupted by a stop.
    boot_id: String,
    /// Every tenant's canary, for the tripwire.
    canaries: Arc<bulkhead_gateway::canary::CanaryScanner>,
    /// The event bus outbox, when `[audit.nats]` is on.
    outbox: Option<Arc<outbox::Outbox>>,
    /// Tenants written since the checkpoint sweep last asked
    /// ([`TenantStore::take_written`]).
    written: Mutex<std::collections::HashSet<TenantId>>,
}

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn internal<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Creates a directory (and parents) readable only by this user.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

fn parse<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> rusqlite::Result<T> {
    r.map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("corrupt {what} in control database: {e}").into(),
        )
    })
}

fn tenant_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    let isolation: String = r.get("isolation")?;
    let status: String = r.get("status")?;
    Ok(Tenant {
        id: parse(TenantId::parse(&r.get::<_, String>("id")?), "tenant id")?,
        uid: parse(TenantUid::parse(&r.get::<_, String>("uid")?), "tenant uid")?,
        name: r.get("name")?,
        region: parse(Region::parse(&r.get::<_, String>("region")?), "region")?,
        isolation: match isolation.as_str() {
            "dedicated" => Isolation::Dedicated,
            _ => Isolation::Shared,
        },
        status: match status.as_str() {
            "active" => TenantStatus::Active,
            _ => TenantStatus::Suspended,
        },
        created_at: parse(
            Timestamp::parse(&r.get::<_, String>("created_at")?),
            "timestamp",
        )?,
        updated_at: parse(
            Timestamp::parse(&r.get::<_, String>("updated_at")?),
            "timestamp",
        )?,
        quotas: parse(
            serde_json::from_str(&r.get::<_, String>("quotas")?),
            "tenant quotas",
        )?,
    })
}

fn opt_time(s: Option<String>) -> rusqlite::Result<Option<Timestamp>> {
    s.map(|s| parse(Timestamp::parse(&s), "timestamp"))
        .transpose()
}

fn key_from_row(
    r: &rusqlite::Row<'_>,
    tenant: &TenantId,
) -> rusqlite::Result<([u8; 32], ApiKeyRecord)> {
    let digest: Vec<u8> = r.get("digest")?;
    let digest: [u8; 32] = parse(digest.try_into().map_err(|_| "bad length"), "key digest")?;
    let roles: String = r.get("roles")?;
    Ok((
        digest,
        ApiKeyRecord {
            id: parse(ApiKeyId::parse(&r.get::<_, String>("id")?), "key id")?,
            tenant: tenant.clone(),
            name: r.get("name")?,
            roles: parse(serde_json::from_str::<Vec<Role>>(&roles), "roles")?,
            created_at: parse(
                Timestamp::parse(&r.get::<_, String>("created_at")?),
                "timestamp",
            )?,
            expires_at: opt_time(r.get("expires_at")?)?,
            revoked_at: opt_time(r.get("revoked_at")?)?,
        },
    ))
}

impl SqliteStore {
    /// Opens (creating if needed) the store under `root`, applies
    /// migrations, loads the directory index and removes partitions left
    /// behind by an interrupted tenant deletion.
    pub fn open(root: &Path) -> StoreResult<Self> {
        Self::open_with_limit(root, MAX_OPEN_PARTITIONS)
    }

    /// [`SqliteStore::open`] keeping at most `max_open_partitions` tenant
    /// databases open at once.
    pub fn open_with_limit(root: &Path, max_open_partitions: usize) -> StoreResult<Self> {
        Self::open_inner(root, max_open_partitions, None)
    }

    /// [`SqliteStore::open`] writing an outbox row with every tenant audit
    /// event, for the event bus publisher (sqlite/outbox.rs).
    pub fn open_with_outbox(root: &Path) -> StoreResult<Self> {
        Self::open_inner(
            root,
            MAX_OPEN_PARTITIONS,
            Some(Arc::new(outbox::Outbox::default())),
        )
    }

    fn open_inner(
        root: &Path,
        max_open_partitions: usize,
        outbox: Option<Arc<outbox::Outbox>>,
    ) -> StoreResult<Self> {
        create_private_dir(&root.join("tenants"))?;
        let mut conn = Connection::open(root.join("control.db"))?;
        partition::configure(&conn)?;
        migrate::apply(&mut conn, "control", CONTROL_MIGRATIONS)?;
        let index = load_index(&conn)?;
        let store = Self {
            inner: Arc::new(Inner {
                root: root.to_owned(),
                control: Mutex::new(conn),
                index: RwLock::new(index),
                write_queues: Mutex::new(HashMap::new()),
                boot_id: bulkhead_core::RequestId::generate().to_string(),
                canaries: Arc::new(bulkhead_gateway::canary::CanaryScanner::new()),
                outbox,
                written: Mutex::new(std::collections::HashSet::new()),
                partitions: Mutex::new(PartitionCache {
                    open: HashMap::new(),
                    clock: 0,
                    capacity: max_open_partitions.max(1),
                }),
            }),
        };
        store.sweep_orphans()?;
        store.load_canaries()?;
        Ok(store)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Removes partition directories whose tenant no longer exists (a
    /// deletion that committed but crashed before removing the files, or a
    /// creation that crashed before committing).
    fn sweep_orphans(&self) -> StoreResult<()> {
        let live: Vec<String> = self
            .read_index()?
            .tenants
            .values()
            .map(|t| t.uid.to_string())
            .collect();
        for entry in std::fs::read_dir(self.inner.root.join("tenants"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) && entry.file_type()?.is_dir() {
                tracing::warn!(partition = %name, "removing orphaned tenant partition");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    fn read_index(&self) -> StoreResult<std::sync::RwLockReadGuard<'_, DirIndex>> {
        self.inner
            .index
            .read()
            .map_err(|_| StoreError::Internal("directory index poisoned".into()))
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&SqliteStore) -> StoreResult<T> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(internal)?
    }

    /// Runs `f` in a control-database transaction holding the index write
    /// lock, so the in-memory index changes in the same order as the database.
    fn control_tx<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &mut DirIndex) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self
            .inner
            .control
            .lock()
            .map_err(|_| StoreError::Internal("control lock poisoned".into()))?;
        let mut index = self
            .inner
            .index
            .write()
            .map_err(|_| StoreError::Internal("directory index poisoned".into()))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Work on a copy of the affected entries: the index is only changed
        // by `f` after every statement succeeded, and only kept if the
        // commit succeeds.
        let mut staged = DirIndex {
            tenants: index.tenants.clone(),
            keys: index.keys.clone(),
        };
        let out = f(&tx, &mut staged)?;
        tx.commit()?;
        *index = staged;
        Ok(out)
    }

    /// Checkpoints the control database's WAL and truncates it.
    fn checkpoint(&self) -> StoreResult<()> {
        let conn = self.control()?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn control(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.inner
            .control
            .lock()
            .map_err(|_| StoreError::Internal("control lock poisoned".into()))
    }

    fn partition(&self, tenant: &TenantId, uid: TenantUid) -> StoreResult<Arc<Partition>> {
        let mut cache = self
            .inner
            .partitions
            .lock()
            .map_err(|_| StoreError::Internal("partition cache poisoned".into()))?;
        if let Some(p) = cache.get(uid) {
            return Ok(p);
        }
        let p = Arc::new(Partition::open(&self.inner.root, tenant, uid)?);
        self.install_outbox(&p, tenant, uid)?;
        // Calls a dead process left in flight are billed before anything
        // here reads the ledger.
        let recovered =
            p.with_conn(|conn| gateway::recover_interrupted(conn, tenant, &self.inner.boot_id))?;
        if recovered > 0 {
            tracing::warn!(tenant = %tenant, calls = recovered, "billed model calls interrupted by a stopped process at their estimate");
        }
        cache.insert(uid, p.clone());
        Ok(p)
    }

    fn install_outbox(&self, p: &Partition, tenant: &TenantId, uid: TenantUid) -> StoreResult<()> {
        match &self.inner.outbox {
            Some(outbox) => p.with_conn(|conn| {
                outbox::install(conn, outbox, tenant, uid).map_err(StoreError::from)
            }),
            None => Ok(()),
        }
    }

    fn live_tenant(&self, id: &TenantId) -> StoreResult<Tenant> {
        self.read_index()?
            .tenants
            .get(id)
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    /// Mirrors an operator action into the tenant's own chain, through the
    /// tenant's write queue like every other write of its partition.
    fn mirror(&self, tenant: &Tenant, event: NewAuditEvent) -> StoreResult<()> {
        let id = tenant.id.clone();
        let writer = Writer::new(
            tenant.id.clone(),
            tenant.uid,
            bulkhead_auth::scope::OPERATOR_PRINCIPAL.to_owned(),
        );
        self.partition_write_blocking(writer, move |tx, principal| {
            partition::append_chain(tx, Some(id), principal, event)
        })?;
        Ok(())
    }
}

fn load_index(conn: &Connection) -> StoreResult<DirIndex> {
    let mut index = DirIndex::default();
    let mut by_uid = HashMap::new();
    let mut stmt = conn.prepare("SELECT * FROM tenants")?;
    for t in stmt.query_map([], tenant_from_row)? {
        let t = t?;
        by_uid.insert(t.uid.to_string(), t.id.clone());
        index.tenants.insert(t.id.clone(), t);
    }
    let mut stmt = conn.prepare("SELECT * FROM api_keys")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let uid: String = r.get("tenant_uid")?;
        let Some(tenant) = by_uid.get(&uid) else {
            continue;
        };
        let (digest, record) = key_from_row(r, tenant)?;
        index.keys.insert(digest, record);
    }
    Ok(index)
}

fn op_event(
    op: &OperatorScope,
    action: AuditAction,
    target: String,
    details: serde_json::Value,
) -> NewAuditEvent {
    NewAuditEvent::new(action, target, Outcome::Success, op.request_id().clone())
        .with_details(details)
}

fn tenant_json(t: &Tenant) -> serde_json::Value {
    json!({
        "name": t.name, "region": t.region, "isolation": t.isolation, "status": t.status,
    })
}

#[async_trait]
impl Directory for SqliteStore {
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, DirectoryError> {
        let index = self
            .read_index()
            .map_err(|e| DirectoryError(e.to_string()))?;
        Ok(index.tenants.get(id).cloned())
    }

    async fn api_key(
        &self,
        digest: &ApiKeyDigest,
    ) -> Result<Option<(ApiKeyRecord, Tenant)>, DirectoryError> {
        let index = self
            .read_index()
            .map_err(|e| DirectoryError(e.to_string()))?;
        Ok(index
            .keys
            .get(digest.as_bytes())
            .and_then(|k| index.tenants.get(&k.tenant).map(|t| (k.clone(), t.clone()))))
    }
}

#[async_trait]
impl ControlStore for SqliteStore {
    async fn create_tenant(&self, op: &OperatorScope, new: NewTenant) -> StoreResult<Tenant> {
        let op = op.clone();
        self.blocking(move |s| {
            if s.read_index()?.tenants.contains_key(&new.id) {
                return Err(StoreError::Conflict(format!("tenant {} already exists", new.id)));
            }
            let now = Timestamp::now();
            let tenant = Tenant {
                id: new.id,
                uid: TenantUid::generate(),
                name: new.name,
                region: new.region,
                isolation: new.isolation,
                status: TenantStatus::Active,
                created_at: now,
                updated_at: now,
                quotas: Default::default(),
            };
            // The partition exists before the tenant row: a crash in between
            // leaves an orphan directory (swept on open), never a tenant
            // without a partition.
            let part = Arc::new(Partition::create(&s.inner.root, &tenant.id, tenant.uid)?);
            s.install_outbox(&part, &tenant.id, tenant.uid)?;
            let canary = canary::new_canary()?;
            part.with_conn(|conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                canary::plant(&tx, tenant.uid, &canary)?;
                tx.commit()?;
                Ok(())
            })?;
            let event = op_event(&op, AuditAction::TenantCreate, format!("tenant:{}", tenant.id), tenant_json(&tenant));
            let result = s.control_tx(|tx, index| {
                tx.execute(
                    "INSERT INTO tenants (id, uid, name, region, isolation, status, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        tenant.id.as_str(),
                        tenant.uid.to_string(),
                        tenant.name,
                        tenant.region.as_str(),
                        tenant.isolation.as_str(),
                        tenant.status.as_str(),
                        tenant.created_at.to_string(),
                        tenant.updated_at.to_string()
                    ],
                )?;
                tx.execute(
                    "INSERT INTO canaries (tenant_uid, canary) VALUES (?1, ?2)",
                    params![tenant.uid.to_string(), canary],
                )?;
                partition::append_chain(tx, Some(tenant.id.clone()), op.principal_id(), event.clone())?;
                index.tenants.insert(tenant.id.clone(), tenant.clone());
                Ok(())
            });
            if let Err(e) = result {
                drop(part);
                let _ = std::fs::remove_dir_all(partition::dir(&s.inner.root, tenant.uid));
                return Err(match e {
                    e if e.is_unique_violation() => {
                        StoreError::Conflict(format!("tenant {} already exists", tenant.id))
                    }
                    other => other,
                });
            }
            s.inner
                .partitions
                .lock()
                .map_err(|_| StoreError::Internal("partition cache poisoned".into()))?
                .insert(tenant.uid, part);
            s.inner.canaries.insert(tenant.uid, canary);
            s.mirror(&tenant, event)?;
            Ok(tenant)
        })
        .await
    }

    async fn get_tenant(&self, _op: &OperatorScope, id: &TenantId) -> StoreResult<Tenant> {
        self.live_tenant(id)
    }

    async fn list_tenants(&self, _op: &OperatorScope) -> StoreResult<Vec<Tenant>> {
        let mut all: Vec<Tenant> = self.read_index()?.tenants.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn update_tenant(
        &self,
        op: &OperatorScope,
        id: &TenantId,
        patch: TenantPatch,
    ) -> StoreResult<Tenant> {
        let op = op.clone();
        let id = id.clone();
        self.blocking(move |s| {
            let (tenant, event) = s.control_tx(|tx, index| {
                let mut t = index.tenants.get(&id).cloned().ok_or(StoreError::NotFound)?;
                let mut changed = serde_json::Map::new();
                if let Some(name) = patch.name {
                    changed.insert("name".into(), json!({"from": t.name, "to": name}));
                    t.name = name;
                }
                if let Some(region) = patch.region {
                    changed.insert("region".into(), json!({"from": t.region, "to": region}));
                    t.region = region;
                }
                if let Some(isolation) = patch.isolation {
                    changed.insert("isolation".into(), json!({"from": t.isolation, "to": isolation}));
                    t.isolation = isolation;
                }
                if let Some(status) = patch.status {
                    changed.insert("status".into(), json!({"from": t.status, "to": status}));
                    t.status = status;
                }
                if let Some(quotas) = patch.quotas {
                    changed.insert("quotas".into(), json!({"from": t.quotas, "to": quotas}));
                    t.quotas = quotas;
                }
                t.updated_at = Timestamp::now();
                let quotas = serde_json::to_string(&t.quotas).map_err(internal)?;
                let n = tx.execute(
                    "UPDATE tenants SET name = ?2, region = ?3, isolation = ?4, status = ?5, updated_at = ?6,
                       quotas = ?7
                     WHERE uid = ?1",
                    params![
                        t.uid.to_string(),
                        t.name,
                        t.region.as_str(),
                        t.isolation.as_str(),
                        t.status.as_str(),
                        t.updated_at.to_string(),
                        quotas
                    ],
                )?;
                if n != 1 {
                    return Err(StoreError::NotFound);
                }
                let event = op_event(&op, AuditAction::TenantUpdate, format!("tenant:{}", t.id), changed.into());
                partition::append_chain(tx, Some(t.id.clone()), op.principal_id(), event.clone())?;
                // Keys carry the tenant id only; they follow the tenant entry.
                index.tenants.insert(t.id.clone(), t.clone());
                Ok((t, event))
            })?;
            s.mirror(&tenant, event)?;
            Ok(tenant)
        })
        .await
    }

    async fn delete_tenant(&self, op: &OperatorScope, id: &TenantId) -> StoreResult<Tenant> {
        let op = op.clone();
        let id = id.clone();
        self.blocking(move |s| {
            let tenant = s.control_tx(|tx, index| {
                let t = index.tenants.remove(&id).ok_or(StoreError::NotFound)?;
                // Crypto-shredding: the wrapped data keys go first, in the same
                // transaction; without them nothing the tenant stored can be
                // decrypted, wherever copies of its files may be.
                tx.execute("DELETE FROM data_keys WHERE owner = ?1", params![t.uid.to_string()])?;
                // api_keys rows go with the tenant row (ON DELETE CASCADE).
                tx.execute("DELETE FROM tenants WHERE uid = ?1", params![t.uid.to_string()])?;
                tx.execute("DELETE FROM canaries WHERE tenant_uid = ?1", params![t.uid.to_string()])?;
                index.keys.retain(|_, k| k.tenant != t.id);
                let event = op_event(&op, AuditAction::TenantDelete, format!("tenant:{}", t.id), tenant_json(&t));
                partition::append_chain(tx, Some(t.id.clone()), op.principal_id(), event)?;
                Ok(t)
            })?;
            s.inner.canaries.remove(tenant.uid);
            // Push the deletion out of the write-ahead log too, so no older
            // frame still holds the wrapped keys.
            s.checkpoint()?;
            s.inner
                .partitions
                .lock()
                .map_err(|_| StoreError::Internal("partition cache poisoned".into()))?
                .remove(tenant.uid);
            let dir = partition::dir(&s.inner.root, tenant.uid);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                // The tenant is gone from the control plane; the directory is
                // unreachable (its uid is never reused) and the next start
                // sweeps it.
                tracing::error!(error = %e, partition = %dir.display(), "could not remove tenant partition");
            }
            Ok(tenant)
        })
        .await
    }

    async fn create_api_key(
        &self,
        op: &OperatorScope,
        tenant: &TenantId,
        key: NewApiKeyRecord,
    ) -> StoreResult<ApiKeyRecord> {
        let op = op.clone();
        let tenant_id = tenant.clone();
        self.blocking(move |s| {
            let (tenant, record, event) = s.control_tx(|tx, index| {
                let t = index.tenants.get(&tenant_id).cloned().ok_or(StoreError::NotFound)?;
                let record = ApiKeyRecord {
                    id: key.id,
                    tenant: t.id.clone(),
                    name: key.name,
                    roles: key.roles,
                    created_at: Timestamp::now(),
                    expires_at: key.expires_at,
                    revoked_at: None,
                };
                let roles = serde_json::to_string(&record.roles).map_err(internal)?;
                tx.execute(
                    "INSERT INTO api_keys (id, tenant_uid, digest, name, roles, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        record.id.to_string(),
                        t.uid.to_string(),
                        key.digest.as_bytes().as_slice(),
                        record.name,
                        roles,
                        record.created_at.to_string(),
                        record.expires_at.map(|e| e.to_string())
                    ],
                )?;
                let event = op_event(
                    &op,
                    AuditAction::ApiKeyCreate,
                    format!("api_key:{}", record.id),
                    json!({"roles": record.roles, "name": record.name, "expires_at": record.expires_at}),
                );
                partition::append_chain(tx, Some(t.id.clone()), op.principal_id(), event.clone())?;
                index.keys.insert(*key.digest.as_bytes(), record.clone());
                Ok((t, record, event))
            })?;
            s.mirror(&tenant, event)?;
            Ok(record)
        })
        .await
    }

    async fn list_api_keys(
        &self,
        _op: &OperatorScope,
        tenant: &TenantId,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        let index = self.read_index()?;
        if !index.tenants.contains_key(tenant) {
            return Err(StoreError::NotFound);
        }
        let mut keys: Vec<ApiKeyRecord> = index
            .keys
            .values()
            .filter(|k| &k.tenant == tenant)
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.id);
        Ok(keys)
    }

    async fn revoke_api_key(
        &self,
        op: &OperatorScope,
        tenant: &TenantId,
        key: ApiKeyId,
    ) -> StoreResult<ApiKeyRecord> {
        let op = op.clone();
        let tenant_id = tenant.clone();
        self.blocking(move |s| {
            let (tenant, record, event) = s.control_tx(|tx, index| {
                let t = index
                    .tenants
                    .get(&tenant_id)
                    .cloned()
                    .ok_or(StoreError::NotFound)?;
                let (digest, mut record) = index
                    .keys
                    .iter()
                    .find(|(_, k)| k.id == key && k.tenant == t.id)
                    .map(|(d, k)| (*d, k.clone()))
                    .ok_or(StoreError::NotFound)?;
                let first = record.revoked_at.is_none();
                if first {
                    let now = Timestamp::now();
                    tx.execute(
                        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND tenant_uid = ?3",
                        params![key.to_string(), now.to_string(), t.uid.to_string()],
                    )?;
                    record.revoked_at = Some(now);
                    index.keys.insert(digest, record.clone());
                }
                let event = op_event(
                    &op,
                    AuditAction::ApiKeyRevoke,
                    format!("api_key:{}", record.id),
                    json!({"already_revoked": !first}),
                );
                partition::append_chain(tx, Some(t.id.clone()), op.principal_id(), event.clone())?;
                Ok((t, record, event))
            })?;
            s.mirror(&tenant, event)?;
            Ok(record)
        })
        .await
    }

    async fn append_operator_audit(
        &self,
        op: &OperatorScope,
        tenant: Option<&TenantId>,
        event: NewAuditEvent,
    ) -> StoreResult<AuditEvent> {
        let principal = op.principal_id();
        let tenant = tenant.cloned();
        self.blocking(move |s| {
            s.control_tx(|tx, _| partition::append_chain(tx, tenant, principal, event))
        })
        .await
    }

    async fn operator_audit(
        &self,
        _op: &OperatorScope,
        page: Page,
    ) -> StoreResult<Vec<AuditEvent>> {
        self.blocking(move |s| {
            let conn = s
                .inner
                .control
                .lock()
                .map_err(|_| StoreError::Internal("control lock poisoned".into()))?;
            partition::read_page(&conn, page)
        })
        .await
    }

    async fn operator_checkpoint(
        &self,
        _op: &OperatorScope,
        signer: Arc<AuditSigner>,
        rule: CheckpointRule,
    ) -> StoreResult<Option<Checkpoint>> {
        self.blocking(move |s| {
            let mut conn = s
                .inner
                .control
                .lock()
                .map_err(|_| StoreError::Internal("control lock poisoned".into()))?;
            partition::checkpoint_if_due(&mut conn, None, &signer, rule)
        })
        .await
    }

    async fn operator_checkpoints(
        &self,
        _op: &OperatorScope,
        from: u64,
        limit: u32,
    ) -> StoreResult<Vec<Checkpoint>> {
        self.blocking(move |s| {
            let conn = s
                .inner
                .control
                .lock()
                .map_err(|_| StoreError::Internal("control lock poisoned".into()))?;
            partition::read_checkpoints(&conn, from, limit)
        })
        .await
    }
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn append_audit(
        &self,
        scope: &TenantScope,
        event: NewAuditEvent,
    ) -> StoreResult<AuditEvent> {
        let tenant = scope.tenant().clone();
        self.tenant_write(scope, move |tx, principal| {
            partition::append_chain(tx, Some(tenant), principal, event)
        })
        .await
    }

    async fn append_failure(
        &self,
        failure: &FailureAttribution,
        event: NewAuditEvent,
    ) -> StoreResult<AuditEvent> {
        let tenant = failure.tenant().clone();
        let writer = Writer::new(
            tenant.clone(),
            failure.partition(),
            failure.principal().to_owned(),
        );
        self.partition_write(writer, move |tx, principal| {
            partition::append_chain(tx, Some(tenant), principal, event)
        })
        .await
    }

    async fn audit(&self, scope: &TenantScope, page: Page) -> StoreResult<Vec<AuditEvent>> {
        let tenant = scope.tenant().clone();
        let uid = scope.partition();
        // Model calls already answered are in the chain the caller reads.
        self.settle(scope).await;
        self.blocking(move |s| s.partition(&tenant, uid)?.page(page))
            .await
    }

    async fn checkpoint(
        &self,
        scope: &TenantScope,
        signer: Arc<AuditSigner>,
        rule: CheckpointRule,
    ) -> StoreResult<Option<Checkpoint>> {
        let tenant = scope.tenant().clone();
        let uid = scope.partition();
        self.blocking(move |s| {
            s.partition(&tenant, uid)?.with_conn(|conn| {
                partition::checkpoint_if_due(conn, Some(tenant.clone()), &signer, rule)
            })
        })
        .await
    }

    fn take_written(&self) -> Vec<TenantId> {
        self.inner
            .written
            .lock()
            .map(|mut w| w.drain().collect())
            .unwrap_or_default()
    }

    async fn checkpoints(
        &self,
        scope: &TenantScope,
        from: u64,
        limit: u32,
    ) -> StoreResult<Vec<Checkpoint>> {
        let tenant = scope.tenant().clone();
        let uid = scope.partition();
        self.blocking(move |s| {
            s.partition(&tenant, uid)?
                .with_conn(|conn| partition::read_checkpoints(conn, from, limit))
        })
        .await
    }

    async fn alert_rules(&self, scope: &TenantScope) -> StoreResult<Option<String>> {
        let tenant = scope.tenant().clone();
        let uid = scope.partition();
        self.blocking(move |s| {
            s.partition(&tenant, uid)?
                .with_conn(|c| alerts::read_rules(c))
        })
        .await
    }

    async fn set_alert_rules(
        &self,
        scope: &TenantScope,
        rules: Option<String>,
        event: NewAuditEvent,
    ) -> StoreResult<()> {
        let tenant = scope.tenant().clone();
        self.tenant_write(scope, move |tx, principal| {
            alerts::write_rules(tx, rules.as_deref())?;
            partition::append_chain(tx, Some(tenant), principal, event)?;
            Ok(())
        })
        .await
    }

    async fn record_alert(
        &self,
        scope: &TenantScope,
        body: String,
        event: NewAuditEvent,
    ) -> StoreResult<u64> {
        let tenant = scope.tenant().clone();
        self.tenant_write(scope, move |tx, principal| {
            let seq = alerts::insert_event(tx, Timestamp::now().unix_micros(), &body)?;
            partition::append_chain(tx, Some(tenant), principal, event)?;
            Ok(seq)
        })
        .await
    }

    async fn alert_events(
        &self,
        scope: &TenantScope,
        page: Page,
    ) -> StoreResult<Vec<crate::StoredAlert>> {
        let tenant = scope.tenant().clone();
        let uid = scope.partition();
        self.blocking(move |s| {
            s.partition(&tenant, uid)?
                .with_conn(|c| alerts::page(c, page))
        })
        .await
    }
}
