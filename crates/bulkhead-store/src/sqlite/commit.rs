//! Group commit of a tenant's write transactions.
//!
//! Every commit of a partition waits for an fsync (`synchronous = FULL`:
//! audit events must survive a power cut). A tenant with many runs in
//! flight writes a step, an audit event or a setting for each of them;
//! one fsync per write would serialise them all behind the disk. Instead,
//! writes that arrive while the tenant's previous batch is being committed
//! wait in a queue and are then committed together: one transaction, one
//! fsync, each write in its own savepoint so one failing write rolls back
//! alone. Every caller still gets its answer only once its write is
//! durable (or has failed).
//!
//! A *deferred* write (a model call's usage rows and audit event, which
//! nobody waits for: the call's answer does not depend on them) does not
//! start a commit of its own: it waits up to [`DEFER`] for company, so a
//! busy tenant's calls share one fsync instead of paying one each. Any
//! ordinary write queued meanwhile commits at once and takes the deferred
//! ones with it, so read-your-writes ([`SqliteStore::settle`]) is not
//! slowed. The price is the window a crash can lose: a deferred write is
//! durable at most `DEFER` plus one commit after it was queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_auth::TenantScope;
use bulkhead_core::{TenantId, TenantUid};
use rusqlite::Connection;

use super::SqliteStore;
use crate::{StoreError, StoreResult};

/// One queued write, type-erased.
trait Job: Send {
    /// Runs the write inside the batch's transaction (in its own savepoint).
    fn run(&mut self, conn: &mut rusqlite::Transaction<'_>);
    /// Reports the outcome once the batch has committed (or failed to).
    fn finish(self: Box<Self>, commit: &Result<(), CommitError>);
}

struct Write<T, F> {
    f: Option<F>,
    principal: String,
    out: Option<StoreResult<T>>,
    done: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for Write<T, F>
where
    T: Send,
    F: FnOnce(&Connection, &str) -> StoreResult<T> + Send,
{
    fn run(&mut self, tx: &mut rusqlite::Transaction<'_>) {
        let Some(f) = self.f.take() else { return };
        let out = match tx.savepoint() {
            Ok(sp) => match f(&sp, &self.principal) {
                Ok(v) => sp.commit().map(|()| v).map_err(StoreError::from),
                // Dropping the savepoint rolls this write back, and only it.
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        };
        self.out = Some(out);
    }

    fn finish(self: Box<Self>, commit: &Result<(), CommitError>) {
        let result = match (self.out, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e.to_store()),
            (None, Ok(())) => Err(StoreError::Internal("a write was not run".into())),
        };
        let _ = self.done.send(result);
    }
}

/// Why a whole batch failed (cloned to each of its writers).
#[derive(Debug, Clone)]
enum CommitError {
    /// The partition is gone (the tenant was deleted).
    NotFound,
    /// Anything else; shared, since one failure answers every writer of
    /// the batch.
    Other(Arc<StoreError>),
}

impl CommitError {
    fn to_store(&self) -> StoreError {
        match self {
            CommitError::NotFound => StoreError::NotFound,
            CommitError::Other(e) => StoreError::Backend(Box::new(Arc::clone(e))),
        }
    }
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => CommitError::NotFound,
            other => CommitError::Other(Arc::new(other)),
        }
    }
}

/// Whose partition a queued write goes to, and the principal its audit
/// events name.
pub(crate) struct Writer {
    tenant: TenantId,
    uid: TenantUid,
    principal: String,
}

impl Writer {
    /// The scope's partition and principal: every write made for a request.
    pub(crate) fn of(scope: &TenantScope) -> Self {
        Self::new(
            scope.tenant().clone(),
            scope.partition(),
            scope.principal().id().to_owned(),
        )
    }

    /// A write the tenant's request did not make: an operator's action
    /// mirrored into the tenant's chain, a failure attributed to the
    /// tenant, a security event recorded by the system.
    pub(crate) fn new(tenant: TenantId, uid: TenantUid, principal: String) -> Self {
        Self {
            tenant,
            uid,
            principal,
        }
    }
}

/// The longest a deferred write waits for others before it is committed.
pub const DEFER: Duration = Duration::from_millis(10);

/// A tenant's queued writes and whether a committer is at work.
#[derive(Default)]
pub(crate) struct Queue {
    /// The partition's tenant, set by the first write queued.
    tenant: Option<TenantId>,
    jobs: Vec<Box<dyn Job>>,
    busy: bool,
    /// Set while the queue's committer lingers for deferred writes: an
    /// ordinary write wakes it.
    linger: Option<Arc<tokio::sync::Notify>>,
}

/// When a queued write needs its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// Now: its caller waits for it.
    Now,
    /// Within [`DEFER`]: nobody waits for it.
    Deferred,
}

/// Queues per partition.
pub(crate) type Queues = Mutex<HashMap<TenantUid, Queue>>;

impl SqliteStore {
    /// Runs `f` in a write transaction on the scope's partition (with the
    /// scope's principal for its audit events), group-committed with the
    /// tenant's other concurrent writes. Returns once the write is durable.
    pub(crate) async fn tenant_write<T, F>(&self, scope: &TenantScope, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> StoreResult<T> + Send + 'static,
    {
        self.partition_write(Writer::of(scope), f).await
    }

    /// Runs `f` in a write transaction on `writer`'s partition, queued and
    /// group-committed like [`SqliteStore::tenant_write`].
    pub(crate) async fn partition_write<T, F>(&self, writer: Writer, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> StoreResult<T> + Send + 'static,
    {
        self.queue_write(writer, f)?
            .await
            .map_err(|_| StoreError::Internal("the tenant's committer stopped".into()))?
    }

    /// [`SqliteStore::partition_write`] for code already on a blocking
    /// thread (inside [`SqliteStore::blocking`]): waits for the commit
    /// without an async context.
    pub(crate) fn partition_write_blocking<T, F>(&self, writer: Writer, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> StoreResult<T> + Send + 'static,
    {
        self.queue_write(writer, f)?
            .blocking_recv()
            .map_err(|_| StoreError::Internal("the tenant's committer stopped".into()))?
    }

    /// Queues a write and returns at once; the receiver answers once it is
    /// committed. Writes of one tenant commit in the order they were
    /// queued, so a write queued later sees every earlier one.
    pub(crate) fn queue_write<T, F>(
        &self,
        writer: Writer,
        f: F,
    ) -> StoreResult<tokio::sync::oneshot::Receiver<StoreResult<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> StoreResult<T> + Send + 'static,
    {
        self.queue_write_with(writer, Urgency::Now, f)
    }

    /// [`SqliteStore::queue_write`] with an [`Urgency`]: a deferred write
    /// is committed within [`DEFER`], with whatever else the tenant wrote
    /// meanwhile.
    pub(crate) fn queue_write_with<T, F>(
        &self,
        writer: Writer,
        urgency: Urgency,
        f: F,
    ) -> StoreResult<tokio::sync::oneshot::Receiver<StoreResult<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> StoreResult<T> + Send + 'static,
    {
        let (done, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(Write {
            f: Some(f),
            principal: writer.principal,
            out: None,
            done,
        });
        let uid = writer.uid;
        // The checkpoint sweep looks at the chains written since its last
        // pass (an over-approximation: any write, event or not).
        if let Ok(mut written) = self.inner.written.lock()
            && !written.contains(&writer.tenant)
        {
            written.insert(writer.tenant.clone());
        }
        let lead = {
            let mut queues = self
                .inner
                .write_queues
                .lock()
                .map_err(|_| StoreError::Internal("write queue poisoned".into()))?;
            let q = queues.entry(uid).or_default();
            q.tenant.get_or_insert(writer.tenant);
            q.jobs.push(job);
            let lead = !std::mem::replace(&mut q.busy, true);
            match (lead, urgency) {
                (true, Urgency::Deferred) => {
                    let wake = Arc::new(tokio::sync::Notify::new());
                    q.linger = Some(wake.clone());
                    Some(Some(wake))
                }
                (true, Urgency::Now) => Some(None),
                (false, Urgency::Now) => {
                    // A lingering committer starts now.
                    if let Some(wake) = q.linger.take() {
                        wake.notify_one();
                    }
                    None
                }
                (false, Urgency::Deferred) => None,
            }
        };
        match lead {
            // A blocking thread of its own: no caller's cancellation can
            // leave the queue without its committer.
            Some(None) => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.commit_batches(uid));
            }
            // Lingers on a timer (not a thread), then commits the same way.
            Some(Some(wake)) => {
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(DEFER) => {}
                        () = wake.notified() => {}
                    }
                    if let Ok(mut queues) = this.inner.write_queues.lock()
                        && let Some(q) = queues.get_mut(&uid)
                    {
                        q.linger = None;
                    }
                    tokio::task::spawn_blocking(move || this.commit_batches(uid));
                });
            }
            None => {}
        }
        Ok(rx)
    }

    /// Waits until every write of the tenant queued before this call is
    /// committed (or has failed): reads that must include writes answered
    /// before them (usage rows, their audit events) start with it.
    pub(crate) async fn settle(&self, scope: &TenantScope) {
        // Writes commit in queue order: once this empty write is through,
        // so is everything before it.
        let _ = self.tenant_write(scope, |_, _| Ok(())).await;
    }

    /// Commits the tenant's queued writes batch after batch until none is
    /// left.
    fn commit_batches(&self, uid: TenantUid) {
        loop {
            let (tenant, jobs) = {
                let Ok(mut queues) = self.inner.write_queues.lock() else {
                    return;
                };
                let Some(q) = queues.get_mut(&uid) else {
                    return;
                };
                let Some(tenant) = q.tenant.clone().filter(|_| !q.jobs.is_empty()) else {
                    queues.remove(&uid);
                    return;
                };
                (tenant, std::mem::take(&mut q.jobs))
            };
            self.commit_batch(&tenant, uid, jobs);
        }
    }

    fn commit_batch(&self, tenant: &TenantId, uid: TenantUid, mut jobs: Vec<Box<dyn Job>>) {
        let commit = (|| -> Result<(), CommitError> {
            let p = self.partition(tenant, uid)?;
            p.with_conn(|conn| {
                let mut tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                for job in &mut jobs {
                    job.run(&mut tx);
                }
                tx.commit()?;
                Ok(())
            })?;
            Ok(())
        })();
        for job in jobs {
            job.finish(&commit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{reaches_sqlite, sqlite_error};

    /// A failed batch answers each of its writers with the same message as
    /// when it was shared as text, and with the chain down to SQLite.
    #[test]
    fn a_failed_batch_answers_every_writer_with_the_chain() {
        let e = StoreError::from(sqlite_error());
        let text = e.to_string();
        let batch = CommitError::from(e);
        for _ in 0..2 {
            let answer = batch.to_store();
            assert_eq!(answer.to_string(), format!("storage failure: {text}"));
            assert!(reaches_sqlite(&answer));
        }
        assert!(matches!(
            CommitError::from(StoreError::NotFound).to_store(),
            StoreError::NotFound
        ));
    }
}
