//! The event bus publisher: tenants' audit events, from each partition's
//! outbox (sqlite/outbox.rs) to NATS JetStream, on `<prefix>.<tenant>`.
//!
//! Each message carries the event id as `Nats-Msg-Id`, and an outbox row is
//! deleted only once JetStream has acknowledged it: a row sent again (the
//! process stopped between the ack and the delete, or an ack was lost) is
//! dropped by the stream's duplicate window. A partition's rows are sent
//! one at a time, in order; the first failure stops that partition until
//! the next attempt (after a back-off), so nothing is sent out of order
//! and nothing is skipped while the server is away.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bulkhead_core::SecretString;

use crate::StoreResult;
use crate::sqlite::{PendingPartition, SqliteStore};

/// Rows read from a partition at a time.
const BATCH: usize = 256;

/// How long the stream remembers message ids: redelivery within it is
/// deduplicated.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// Where and how to publish (`[audit.nats]`).
#[derive(Clone)]
pub struct NatsTarget {
    /// `nats://host:port`.
    pub url: String,
    /// The JetStream stream (created if missing).
    pub stream: String,
    /// Subjects are `<subject_prefix>.<tenant>`.
    pub subject_prefix: String,
    /// User name and password, if the server requires them.
    pub auth: Option<(String, SecretString)>,
}

impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("url", &self.url)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

/// Why publishing stopped for a while.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bus refused or did not answer.
    #[error("nats: {0}")]
    Nats(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

fn nats<E: std::fmt::Display>(e: E) -> PublishError {
    PublishError::Nats(e.to_string())
}

/// The subject of a tenant's events.
pub fn subject(prefix: &str, tenant: &bulkhead_core::TenantId) -> String {
    format!("{prefix}.{tenant}")
}

/// Connects (retrying until the server answers) and makes sure the stream
/// exists, with subjects `<prefix>.>` and the duplicate window.
async fn connect(target: &NatsTarget) -> Result<jetstream::Context, PublishError> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    if let Some((user, password)) = &target.auth {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    let client = options.connect(target.url.as_str()).await.map_err(nats)?;
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(5));
    js.get_or_create_stream(stream::Config {
        name: target.stream.clone(),
        subjects: vec![format!("{}.>", target.subject_prefix)],
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(nats)?;
    Ok(js)
}

/// Sends a partition's pending rows, in order, until it has none left or
/// one fails. Returns how many were sent.
async fn drain(
    store: &SqliteStore,
    js: &jetstream::Context,
    prefix: &str,
    p: &PendingPartition,
) -> Result<u64, PublishError> {
    let subject = subject(prefix, p.tenant());
    let mut sent = 0;
    loop {
        let rows = store.outbox_pending(p, BATCH).await?;
        if rows.is_empty() {
            return Ok(sent);
        }
        for row in rows {
            let ack = js
                .send_publish(
                    subject.clone(),
                    PublishMessage::build()
                        .payload(row.payload.into())
                        .message_id(&row.msg_id),
                )
                .await
                .map_err(nats)?
                .await
                .map_err(nats)?;
            if ack.duplicate {
                tracing::debug!(msg_id = %row.msg_id, "event already in the stream");
            }
            store.outbox_sent(p, row.id).await?;
            sent += 1;
        }
    }
}

/// Publishes every tenant's outbox for as long as the process runs: rows
/// left by a previous process first, then each partition as its events
/// are written. Returns only if the store fails; NATS failures are logged
/// and retried (a new connection) after a back-off of at most 5 s.
pub async fn run(store: SqliteStore, target: NatsTarget) -> StoreResult<()> {
    store.outbox_mark_all()?;
    let mut backoff = Duration::from_millis(100);
    let mut js = None;
    loop {
        let context = match &js {
            Some(c) => c,
            None => match connect(&target).await {
                Ok(c) => js.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "audit event bus unavailable; events wait in the outbox");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut failed = false;
        for p in store.outbox_take_dirty()? {
            if failed {
                store.outbox_retry(&p)?;
                continue;
            }
            if let Err(e) = drain(&store, context, &target.subject_prefix, &p).await {
                tracing::warn!(tenant = %p.tenant(), error = %e, "publishing audit events failed; retrying");
                store.outbox_retry(&p)?;
                failed = true;
            }
        }
        if failed {
            // Connect again (and make sure the stream exists) before the
            // next attempt; the old connection closes when dropped.
            js = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
            store.outbox_wait().await?;
        }
    }
}
