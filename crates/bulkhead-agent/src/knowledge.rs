//! Knowledge: each tenant's collections of documents, chunked and indexed
//! (full text, and vectors when an embedding model serves the tenant's
//! region) in the tenant's own partition, and searched only through the
//! tenant's scope.
//!
//! Ingestion is atomic per document: the text is validated and chunked,
//! every chunk embedded, and only then is the document written, with its
//! chunks and their index entries, in one transaction (replacing the
//! previous version of the same external id). A failure at any point
//! leaves the previous state.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::codes::{self, ErrorCode};
use bulkhead_core::config::QuotaValues;
use bulkhead_core::{Region, Timestamp};
use bulkhead_gateway::{Gateway, GatewayError};
/// The safe full-text expression the store's `fulltext` takes.
pub use bulkhead_knowledge::FtsQuery;
use bulkhead_knowledge::{DocFormat, Filter, KnowledgeError, Limits};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::sized_cache::SizedCache;

/// Chunks embedded per provider call.
const EMBED_BATCH: usize = 64;
/// Largest `top_k` a search may ask for.
pub const MAX_TOP_K: usize = 50;
/// Candidates each ranking contributes to a hybrid search.
const CANDIDATES: usize = 100;

/// A document to ingest.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Collection (created on first use).
    pub collection: String,
    /// Client-supplied id: ingesting it again replaces the document.
    pub external_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// How to read `content`.
    pub format: DocFormat,
    /// The document.
    pub content: String,
    /// Metadata (a JSON object) searches can filter on.
    pub metadata: Value,
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentInfo {
    /// Server id.
    pub id: String,
    /// Collection.
    pub collection: String,
    /// Client id.
    pub external_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Chunks indexed.
    pub chunks: u32,
    /// Size of the content as sent.
    pub bytes: u64,
    /// SHA-256 of the content.
    pub sha256: String,
    /// Embedding model of its vectors (none: full-text only).
    pub embedding_model: Option<String>,
    /// Metadata.
    pub metadata: Value,
    /// First ingestion.
    pub created_at: Timestamp,
    /// Last ingestion.
    pub updated_at: Timestamp,
    /// SHA-256 over everything ingestion made the document from (content,
    /// format, title, metadata, embedding model): a document ingested
    /// again with the same fingerprint is left as it is. `None` for a
    /// document stored before fingerprints were kept.
    #[serde(skip)]
    pub fingerprint: Option<String>,
}

/// What an ingestion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// A new document.
    Created,
    /// Replaced the document with the same external id.
    Replaced,
    /// The document with the same external id was already exactly this
    /// (same fingerprint): nothing was embedded, paid for or written.
    Unchanged,
}

impl Ingested {
    /// `created`, `replaced` or `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ingested::Created => "created",
            Ingested::Replaced => "replaced",
            Ingested::Unchanged => "unchanged",
        }
    }
}

/// One chunk to store.
#[derive(Debug, Clone)]
pub struct ChunkRow {
    /// Position in the document.
    pub seq: u32,
    /// Text.
    pub text: String,
    /// Heading path.
    pub heading: Option<String>,
    /// Token estimate.
    pub tokens: u32,
    /// Little-endian f32 vector.
    pub embedding: Option<Vec<u8>>,
}

/// A collection and its size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectionInfo {
    /// Name.
    pub name: String,
    /// Documents.
    pub documents: u64,
    /// Chunks.
    pub chunks: u64,
    /// First document.
    pub created_at: Timestamp,
}

/// A chunk found by a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Chunk id (stable while the document is not replaced).
    pub chunk_id: i64,
    /// Document id.
    pub document_id: String,
    /// Client id of the document.
    pub external_id: Option<String>,
    /// Document title.
    pub title: Option<String>,
    /// Heading path of the chunk.
    pub heading: Option<String>,
    /// The chunk's text.
    pub text: String,
    /// Document metadata.
    pub metadata: Value,
    /// Fused (hybrid), BM25-derived (full text) or cosine (vector) score; higher is better.
    pub score: f32,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeStoreError {
    /// The store failed: its error, kept whole as the source (its message
    /// is this error's message).
    #[error("{0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The write would take the tenant over its storage quota (nothing
    /// was written).
    #[error("{0}")]
    Quota(String),
}

/// How much a tenant may store: checked in the write's own transaction,
/// so concurrent writes cannot overshoot it together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimit {
    /// Documents across all its collections.
    pub max_documents: u64,
    /// Bytes of document text across all its collections.
    pub max_bytes: u64,
}

impl StorageLimit {
    /// Why `documents` and `bytes` (after the write) exceed the limit.
    pub fn exceeded(&self, documents: u64, bytes: u64) -> Option<String> {
        if documents > self.max_documents {
            return Some(format!(
                "the tenant may store at most {} documents (quota max_documents)",
                self.max_documents
            ));
        }
        if bytes > self.max_bytes {
            return Some(format!(
                "the tenant may store at most {} bytes of documents (quota max_stored_bytes)",
                self.max_bytes
            ));
        }
        None
    }
}

/// What the knowledge service needs from storage, in the tenant's partition.
#[async_trait]
pub trait KnowledgeStore: Send + Sync {
    /// Writes a document and its chunks (replacing the document with the
    /// same collection and external id, if any) and its audit event, in
    /// one transaction. Creates the collection if needed.
    /// Refuses with [`KnowledgeStoreError::Quota`], writing nothing, when
    /// the tenant's documents after the write exceed `limit`.
    async fn put_document(
        &self,
        scope: &TenantScope,
        doc: &DocumentInfo,
        chunks: Vec<ChunkRow>,
        event: NewAuditEvent,
        limit: StorageLimit,
    ) -> Result<DocumentInfo, KnowledgeStoreError>;
    /// The collection's document with this external id, if any.
    async fn document_by_external_id(
        &self,
        scope: &TenantScope,
        collection: &str,
        external_id: &str,
    ) -> Result<Option<DocumentInfo>, KnowledgeStoreError>;
    /// The tenant's stored documents and their bytes, across collections.
    async fn storage_used(&self, scope: &TenantScope) -> Result<(u64, u64), KnowledgeStoreError>;
    /// Deletes a document; false when there is none with that id in the collection.
    async fn delete_document(
        &self,
        scope: &TenantScope,
        collection: &str,
        id: &str,
        event: NewAuditEvent,
    ) -> Result<bool, KnowledgeStoreError>;
    /// The tenant's collections.
    async fn collections(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<CollectionInfo>, KnowledgeStoreError>;
    /// Deletes a collection and everything in it; false when it does not exist.
    async fn delete_collection(
        &self,
        scope: &TenantScope,
        name: &str,
        event: NewAuditEvent,
    ) -> Result<bool, KnowledgeStoreError>;
    /// Whether the collection exists.
    async fn collection_exists(
        &self,
        scope: &TenantScope,
        collection: &str,
    ) -> Result<bool, KnowledgeStoreError>;
    /// The collection's documents' ids and metadata (for filtering).
    async fn document_metadata(
        &self,
        scope: &TenantScope,
        collection: &str,
    ) -> Result<Option<Vec<(String, Value)>>, KnowledgeStoreError>;
    /// Full-text ranking (best first, up to `limit`), optionally only in `documents`.
    async fn fulltext(
        &self,
        scope: &TenantScope,
        collection: &str,
        fts_query: &FtsQuery,
        documents: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<(i64, f32)>, KnowledgeStoreError>;
    /// Every chunk vector of the collection made with `model`: chunk id,
    /// document id, little-endian f32 bytes.
    async fn vectors(
        &self,
        scope: &TenantScope,
        collection: &str,
        model: &str,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, KnowledgeStoreError>;
    /// The chunks with these ids (any order), with their documents' data.
    async fn hits(&self, scope: &TenantScope, ids: &[i64])
    -> Result<Vec<Hit>, KnowledgeStoreError>;
}

/// Why a knowledge request failed.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeServiceError {
    /// Bad input; `code` is stable (`empty_document`, `document_too_large`,
    /// `invalid_filter`, `invalid_name`, `invalid_metadata`, `validation_failed`).
    #[error("{message}")]
    Invalid {
        /// Stable code.
        code: ErrorCode,
        /// What is wrong.
        message: String,
    },
    /// No such collection or document (or another tenant's).
    #[error("not found")]
    NotFound,
    /// The embedding call failed (nothing was stored).
    #[error("embedding failed: {0}")]
    Embedding(#[from] GatewayError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] KnowledgeStoreError),
}

impl From<KnowledgeError> for KnowledgeServiceError {
    fn from(e: KnowledgeError) -> Self {
        let code = match e {
            KnowledgeError::Empty => codes::EMPTY_DOCUMENT,
            KnowledgeError::TooLarge { .. } => codes::DOCUMENT_TOO_LARGE,
            KnowledgeError::InvalidFilter(_) => codes::INVALID_FILTER,
            KnowledgeError::InvalidName(_) => codes::INVALID_NAME,
            KnowledgeError::InvalidMetadata(_) => codes::INVALID_METADATA,
            // The chunking limits are the service's own constants, not the
            // caller's input: limits that cannot chunk are a bug.
            KnowledgeError::InvalidLimits(_) => codes::INTERNAL,
        };
        KnowledgeServiceError::Invalid {
            code,
            message: e.to_string(),
        }
    }
}

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Full text and vectors fused by reciprocal rank (full text alone
    /// without an embedding model).
    Hybrid,
    /// BM25 over the chunks.
    Fulltext,
    /// Cosine similarity to the query's embedding.
    Vector,
}

impl SearchMode {
    /// Parses `hybrid`, `fulltext`, `vector`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "hybrid" => SearchMode::Hybrid,
            "fulltext" => SearchMode::Fulltext,
            "vector" => SearchMode::Vector,
            _ => return None,
        })
    }
}

/// A search's answer.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// The mode actually used (hybrid falls back to full text without vectors).
    pub mode: SearchMode,
    /// Best first.
    pub results: Vec<Hit>,
}

/// A collection's vectors in memory: read once from the tenant's
/// partition, dropped when the collection changes in this process.
/// Searching it is exact (every vector scored) until an HNSW graph is
/// built for a large collection (feature `ann`, [`ANN_MIN_VECTORS`]).
pub struct VectorIndex {
    items: Vec<(i64, String, Vec<f32>, f32)>,
    /// The HNSW graph over `items`, once built (feature `ann`).
    #[cfg(feature = "ann")]
    ann: std::sync::OnceLock<hnsw_rs::hnsw::Hnsw<'static, f32, hnsw_rs::prelude::DistCosine>>,
}

/// Collections with at least this many vectors get an ANN index (feature
/// `ann`). Measured on clustered 256-dimensional vectors (see
/// `docs/benchmarks.md`): at 100,000 the graph answers in 1.4 ms against
/// 9.8 ms for the exact scan, with recall@10 0.97, and takes ~50 s to build
/// on two cores; below ~50,000 the scan costs a few milliseconds and the
/// build is not worth it.
pub const ANN_MIN_VECTORS: usize = 50_000;

impl VectorIndex {
    /// An index over stored vectors (chunk id, document id, bytes).
    pub fn new(raw: Vec<(i64, String, Vec<u8>)>) -> Self {
        let items = raw
            .into_iter()
            .filter_map(|(id, doc, b)| {
                let v = bulkhead_knowledge::decode_vector(&b)?;
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                (norm.is_finite() && norm > 0.0).then_some((id, doc, v, norm))
            })
            .collect();
        Self {
            items,
            #[cfg(feature = "ann")]
            ann: std::sync::OnceLock::new(),
        }
    }

    /// Builds the HNSW graph (feature `ann`; seconds for 100,000 vectors,
    /// on every core). Searches stay exact until it is ready. Returns
    /// whether a graph is available afterwards.
    pub fn build_ann(&self) -> bool {
        #[cfg(feature = "ann")]
        {
            if self.items.is_empty() {
                return false;
            }
            self.ann.get_or_init(|| {
                let n = self.items.len();
                let layers = 16.min(((n as f32).ln().trunc() as usize).max(1));
                let graph =
                    hnsw_rs::hnsw::Hnsw::new(16, n, layers, 100, hnsw_rs::prelude::DistCosine {});
                let data: Vec<(&[f32], usize)> = self
                    .items
                    .iter()
                    .enumerate()
                    .map(|(i, (_, _, v, _))| (v.as_slice(), i))
                    .collect();
                graph.parallel_insert_slice(&data);
                graph
            });
            true
        }
        #[cfg(not(feature = "ann"))]
        {
            false
        }
    }

    /// Whether searches use the ANN graph.
    pub fn uses_ann(&self) -> bool {
        #[cfg(feature = "ann")]
        {
            self.ann.get().is_some()
        }
        #[cfg(not(feature = "ann"))]
        {
            false
        }
    }

    /// The `k` most similar chunks: through the ANN graph when it is built
    /// and no document filter applies (a filtered search stays exact, so a
    /// selective filter cannot empty the result), else exact.
    pub fn search(
        &self,
        query: &[f32],
        allowed: Option<&std::collections::HashSet<&str>>,
        k: usize,
    ) -> Vec<(i64, f32)> {
        #[cfg(feature = "ann")]
        if allowed.is_none()
            && let Some(graph) = self.ann.get()
        {
            // The beam: at least 128 (recall@10 0.97 on 100,000 clustered
            // vectors, measured), twice `k` for the 100 candidates of a
            // hybrid search — eight times `k` made those slower than the
            // exact scan.
            let ef = (k * 2).max(128);
            return graph
                .search(query, k, ef)
                .into_iter()
                .filter_map(|n| {
                    self.items
                        .get(n.d_id)
                        .map(|(id, ..)| (*id, 1.0 - n.distance))
                })
                .collect();
        }
        self.top_k(query, allowed, k)
    }

    /// About how much memory the index holds: the vectors, their document
    /// ids and, with an ANN graph, its copy of the vectors and links.
    pub fn approx_bytes(&self) -> u64 {
        let per_item: u64 = self
            .items
            .first()
            .map(|(_, doc, v, _)| (v.len() * 4 + doc.len() + 64) as u64)
            .unwrap_or(0);
        let graph = if cfg!(feature = "ann") && self.items.len() >= ANN_MIN_VECTORS {
            2
        } else {
            1
        };
        per_item * self.items.len() as u64 * graph
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The `k` most similar chunks (cosine), best first, ties by id; only
    /// chunks of `allowed` documents when given.
    pub fn top_k(
        &self,
        query: &[f32],
        allowed: Option<&std::collections::HashSet<&str>>,
        k: usize,
    ) -> Vec<(i64, f32)> {
        let qn = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        if k == 0 || !(qn.is_finite() && qn > 0.0) {
            return Vec::new();
        }
        let mut scored: Vec<(i64, f32)> = self
            .items
            .iter()
            .filter(|(_, doc, v, _)| {
                v.len() == query.len() && allowed.is_none_or(|a| a.contains(doc.as_str()))
            })
            .map(|(id, _, v, n)| (*id, dot(v, query) / (n * qn)))
            .collect();
        let by_score = |a: &(i64, f32), b: &(i64, f32)| {
            b.1.partial_cmp(&a.1)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.0.cmp(&b.0))
        };
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, by_score);
            scored.truncate(k);
        }
        scored.sort_by(by_score);
        scored
    }
}

type IndexKey = (bulkhead_core::TenantUid, String, String);

/// Queues `index` for its HNSW graph. One background thread builds the
/// graphs one at a time (a build takes both cores for tens of seconds), and
/// skips indexes that were dropped meanwhile (their collection changed):
/// a tenant writing documents to a large collection cannot start a build
/// per write.
fn queue_ann_build(index: &Arc<VectorIndex>) {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::Sender<std::sync::Weak<VectorIndex>>> =
        std::sync::OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<std::sync::Weak<VectorIndex>>();
        std::thread::spawn(move || {
            while let Ok(weak) = rx.recv() {
                if let Some(index) = weak.upgrade() {
                    index.build_ann();
                }
            }
        });
        tx
    });
    let _ = queue.send(Arc::downgrade(index));
}

/// A dot product the compiler can vectorise: eight independent running
/// sums (a single `sum()` over floats must keep its order, which forbids
/// SIMD).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Extra hits a search returns, for fault-injection tests.
type FaultHook = Arc<dyn Fn(&TenantScope) -> Vec<Hit> + Send + Sync>;

/// Who a search is for: the tenant, and the agent run it is part of, if
/// any (agent name, run id) — the embedding call's ledger row and audit
/// event then name them.
#[derive(Clone, Copy)]
pub struct SearchFor<'a> {
    /// The tenant.
    pub scope: &'a TenantScope,
    /// (agent, run id) when the search is part of a run.
    pub run: Option<(&'a str, &'a str)>,
}

/// The knowledge service.
pub struct Knowledge {
    gateway: Arc<Gateway>,
    store: Arc<dyn KnowledgeStore>,
    fault: std::sync::RwLock<Option<FaultHook>>,
    /// Decoded vectors per collection, within `[limits] vector_cache_mb`.
    indexes: SizedCache<IndexKey, VectorIndex>,
    /// Embedding model (name, dimensions) per tenant region.
    embedders: HashMap<Region, String>,
    limits: Limits,
    /// `[quotas.default]`: the storage quotas a tenant's overrides refine.
    quotas: QuotaValues,
}

/// Documents a tenant may store when neither `[quotas.default]` nor its
/// own quotas say.
pub const DEFAULT_MAX_DOCUMENTS: u64 = 100_000;

/// Bytes of document text a tenant may store when neither
/// `[quotas.default]` nor its own quotas say (10 GiB).
pub const DEFAULT_MAX_STORED_BYTES: u64 = 10 * 1024 * 1024 * 1024;

fn sha256_hex(bytes: &[u8]) -> String {
    bulkhead_core::audit::hex(&Sha256::digest(bytes))
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> KnowledgeServiceError {
    KnowledgeServiceError::Invalid {
        code,
        message: message.into(),
    }
}

impl Knowledge {
    /// A service embedding with `embedders` (region → embedding model).
    pub fn new(
        gateway: Arc<Gateway>,
        store: Arc<dyn KnowledgeStore>,
        embedders: HashMap<Region, String>,
        limits: Limits,
        vector_cache_bytes: u64,
        quotas: QuotaValues,
    ) -> Self {
        Self {
            gateway,
            store,
            fault: std::sync::RwLock::new(None),
            indexes: SizedCache::new(vector_cache_bytes),
            embedders,
            limits,
            quotas,
        }
    }

    /// Drops everything cached for a tenant incarnation (it was deleted).
    pub fn forget_tenant(&self, uid: bulkhead_core::TenantUid) {
        self.indexes.forget_tenant(uid);
    }

    /// Bytes and collections held in the vector cache.
    pub fn cache_usage(&self) -> (u64, usize) {
        self.indexes.usage()
    }

    /// The tenant's storage quota: (documents, bytes).
    fn storage_limit(&self, scope: &TenantScope) -> StorageLimit {
        let q = self.quotas.overridden_by(scope.quota_overrides());
        StorageLimit {
            max_documents: q.max_documents.unwrap_or(DEFAULT_MAX_DOCUMENTS),
            max_bytes: q.max_stored_bytes.unwrap_or(DEFAULT_MAX_STORED_BYTES),
        }
    }

    /// **Tests only.** Makes every search also return what `hook` gives:
    /// the way to simulate a bug that hands one tenant another tenant's
    /// chunks, so the tests can show the canary tripwire catching it.
    /// Nothing in configuration or the API can set it.
    #[doc(hidden)]
    pub fn inject_search_fault(&self, hook: Option<FaultHook>) {
        if let Ok(mut slot) = self.fault.write() {
            *slot = hook;
        }
    }

    /// The collection's vector index, read from the store on first use.
    pub async fn vector_index(
        &self,
        scope: &TenantScope,
        collection: &str,
        model: &str,
    ) -> Result<Arc<VectorIndex>, KnowledgeServiceError> {
        let key = (scope.partition(), collection.to_owned(), model.to_owned());
        if let Some(i) = self.indexes.get(&key) {
            return Ok(i);
        }
        let raw = self.store.vectors(scope, collection, model).await?;
        let index = Arc::new(VectorIndex::new(raw));
        if index.len() >= ANN_MIN_VECTORS && cfg!(feature = "ann") {
            // Built in the background; exact until then.
            queue_ann_build(&index);
        }
        let bytes = index.approx_bytes();
        self.indexes.insert(key, index.clone(), bytes);
        Ok(index)
    }

    /// Drops the cached vectors of a collection (it changed).
    fn invalidate(&self, scope: &TenantScope, collection: &str) {
        let uid = scope.partition();
        self.indexes
            .remove_where(|(u, coll, _)| *u == uid && coll == collection);
    }

    /// The embedding model serving the tenant's region, if any.
    pub fn embedder(&self, scope: &TenantScope) -> Option<&str> {
        self.embedders.get(scope.region()).map(String::as_str)
    }

    async fn embed(
        &self,
        scope: &TenantScope,
        run: Option<(&str, &str)>,
        model: &str,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, KnowledgeServiceError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            out.extend(match run {
                None => self.gateway.embed(scope, model, batch).await?,
                Some((agent, run_id)) => {
                    self.gateway
                        .embed_for_run(scope, model, batch, agent, run_id)
                        .await?
                }
            });
        }
        Ok(out)
    }

    /// Ingests a document (atomically; replacing the same external id).
    /// A document whose external id names one stored with the same
    /// fingerprint is [`Ingested::Unchanged`]: nothing is embedded (or
    /// paid for), written or audited.
    pub async fn ingest(
        &self,
        scope: &TenantScope,
        doc: NewDocument,
    ) -> Result<(DocumentInfo, Ingested), KnowledgeServiceError> {
        bulkhead_knowledge::collection_name(&doc.collection)?;
        if let Some(x) = &doc.external_id {
            bulkhead_knowledge::external_id(x)?;
        }
        if doc.title.as_ref().is_some_and(|t| t.len() > 1024) {
            return Err(invalid(
                codes::VALIDATION_FAILED,
                "title: longer than 1024 bytes",
            ));
        }
        bulkhead_knowledge::metadata(&doc.metadata)?;
        let model = self.embedder(scope).map(str::to_owned);
        let fingerprint = fingerprint(&doc, model.as_deref());
        if let Some(x) = &doc.external_id
            && let Some(stored) = self
                .store
                .document_by_external_id(scope, &doc.collection, x)
                .await?
            && stored.fingerprint.as_deref() == Some(fingerprint.as_str())
        {
            return Ok((stored, Ingested::Unchanged));
        }
        // Before anything is embedded (and paid for): would a new document
        // of this size fit? The write checks again in its transaction.
        let limit = self.storage_limit(scope);
        let (documents, bytes) = self.store.storage_used(scope).await?;
        if let Some(why) = limit.exceeded(documents + 1, bytes + doc.content.len() as u64)
            && doc.external_id.is_none()
        {
            return Err(KnowledgeStoreError::Quota(why).into());
        }
        let chunks = bulkhead_knowledge::chunk(&doc.content, doc.format, &self.limits)?;
        let vectors = match &model {
            Some(m) => {
                let texts: Vec<String> = chunks.iter().map(|c| c.text.clone()).collect();
                Some(self.embed(scope, None, m, &texts).await?)
            }
            None => None,
        };
        let rows: Vec<ChunkRow> = chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| ChunkRow {
                seq: c.seq,
                tokens: c.tokens,
                embedding: vectors
                    .as_ref()
                    .and_then(|v| v.get(i))
                    .map(|v| bulkhead_knowledge::encode_vector(v)),
                text: c.text,
                heading: c.heading,
            })
            .collect();
        let now = Timestamp::now();
        let info = DocumentInfo {
            id: bulkhead_core::RequestId::generate().to_string(),
            collection: doc.collection.clone(),
            external_id: doc.external_id.clone(),
            title: doc.title.clone(),
            chunks: rows.len() as u32,
            bytes: doc.content.len() as u64,
            sha256: sha256_hex(doc.content.as_bytes()),
            embedding_model: model,
            metadata: doc.metadata.clone(),
            created_at: now,
            updated_at: now,
            fingerprint: Some(fingerprint),
        };
        let event = NewAuditEvent::new(
            AuditAction::DocumentPut,
            format!("collection:{}", doc.collection),
            Outcome::Success,
            scope.request_id().clone(),
        )
        .with_details(json!({
            "document_id": info.id, "external_id": info.external_id, "chunks": info.chunks,
            "bytes": info.bytes, "sha256": info.sha256, "embedding_model": info.embedding_model,
        }));
        let stored = self
            .store
            .put_document(scope, &info, rows, event, limit)
            .await;
        self.invalidate(scope, &doc.collection);
        let stored = stored?;
        let outcome = if stored.created_at == stored.updated_at {
            Ingested::Created
        } else {
            Ingested::Replaced
        };
        Ok((stored, outcome))
    }

    /// Deletes a document of a collection.
    pub async fn delete_document(
        &self,
        scope: &TenantScope,
        collection: &str,
        id: &str,
    ) -> Result<(), KnowledgeServiceError> {
        if bulkhead_knowledge::collection_name(collection).is_err() {
            return Err(KnowledgeServiceError::NotFound);
        }
        let event = NewAuditEvent::new(
            AuditAction::DocumentDelete,
            format!("collection:{collection}"),
            Outcome::Success,
            scope.request_id().clone(),
        )
        .with_details(json!({"document_id": id}));
        let deleted = self
            .store
            .delete_document(scope, collection, id, event)
            .await;
        self.invalidate(scope, collection);
        if deleted? {
            Ok(())
        } else {
            Err(KnowledgeServiceError::NotFound)
        }
    }

    /// The tenant's collections.
    pub async fn collections(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<CollectionInfo>, KnowledgeServiceError> {
        Ok(self.store.collections(scope).await?)
    }

    /// Deletes a collection and its documents.
    pub async fn delete_collection(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<(), KnowledgeServiceError> {
        if bulkhead_knowledge::collection_name(name).is_err() {
            return Err(KnowledgeServiceError::NotFound);
        }
        let event = NewAuditEvent::new(
            AuditAction::CollectionDelete,
            format!("collection:{name}"),
            Outcome::Success,
            scope.request_id().clone(),
        );
        let deleted = self.store.delete_collection(scope, name, event).await;
        self.invalidate(scope, name);
        if deleted? {
            Ok(())
        } else {
            Err(KnowledgeServiceError::NotFound)
        }
    }

    /// Searches a collection of the scope's tenant.
    pub async fn search(
        &self,
        scope: &TenantScope,
        collection: &str,
        query: &str,
        top_k: usize,
        filter: Option<&Value>,
        mode: SearchMode,
    ) -> Result<SearchResult, KnowledgeServiceError> {
        let caller = SearchFor { scope, run: None };
        self.search_for(caller, collection, query, top_k, filter, mode)
            .await
    }

    /// [`Knowledge::search`] for a caller that may be an agent run: the
    /// query's embedding call is then billed to the agent and the run.
    pub async fn search_for(
        &self,
        caller: SearchFor<'_>,
        collection: &str,
        query: &str,
        top_k: usize,
        filter: Option<&Value>,
        mode: SearchMode,
    ) -> Result<SearchResult, KnowledgeServiceError> {
        let scope = caller.scope;
        // A name no client may create cannot exist: reserved collections
        // (the canary's) are not searchable.
        if bulkhead_knowledge::collection_name(collection).is_err() {
            return Err(KnowledgeServiceError::NotFound);
        }
        if query.trim().is_empty() {
            return Err(invalid(
                codes::VALIDATION_FAILED,
                "query: must not be empty",
            ));
        }
        if query.len() > 8192 {
            return Err(invalid(
                codes::VALIDATION_FAILED,
                "query: longer than 8192 bytes",
            ));
        }
        if top_k == 0 || top_k > MAX_TOP_K {
            return Err(invalid(
                codes::VALIDATION_FAILED,
                format!("top_k: must be between 1 and {MAX_TOP_K}"),
            ));
        }
        let filter = filter.map(Filter::parse).transpose()?;
        // Filtered before ranking, so a selective filter never empties the
        // top k the way filtering an index's results afterwards would. The
        // documents' metadata is read only when there is a filter.
        let allowed: Option<Vec<String>> = match filter {
            None => {
                if !self.store.collection_exists(scope, collection).await? {
                    return Err(KnowledgeServiceError::NotFound);
                }
                None
            }
            Some(f) => {
                let docs = self
                    .store
                    .document_metadata(scope, collection)
                    .await?
                    .ok_or(KnowledgeServiceError::NotFound)?;
                Some(
                    docs.iter()
                        .filter(|(_, m)| f.matches(m))
                        .map(|(id, _)| id.clone())
                        .collect(),
                )
            }
        };
        if allowed.as_ref().is_some_and(Vec::is_empty) {
            return Ok(SearchResult {
                mode,
                results: Vec::new(),
            });
        }
        let model = self.embedder(scope).map(str::to_owned);
        let mode = match (mode, &model) {
            (SearchMode::Vector, None) => {
                return Err(invalid(
                    codes::VALIDATION_FAILED,
                    "mode: no embedding model serves this tenant's region; use fulltext",
                ));
            }
            (SearchMode::Hybrid, None) => SearchMode::Fulltext,
            (m, _) => m,
        };
        let want = if mode == SearchMode::Hybrid {
            CANDIDATES
        } else {
            top_k
        };
        // The two rankings are independent: computed at the same time.
        let fulltext = async {
            if mode == SearchMode::Vector {
                return Ok::<_, KnowledgeServiceError>(Vec::new());
            }
            match bulkhead_knowledge::fts_query(query) {
                Some(q) => Ok(self
                    .store
                    .fulltext(scope, collection, &q, allowed.as_deref(), want)
                    .await?),
                None => Ok(Vec::new()),
            }
        };
        let vector = async {
            let (Some(m), SearchMode::Vector | SearchMode::Hybrid) = (&model, mode) else {
                return Ok::<_, KnowledgeServiceError>(Vec::new());
            };
            let q = self
                .embed(scope, caller.run, m, &[query.to_owned()])
                .await?;
            let qv = q.into_iter().next().unwrap_or_default();
            let index = self.vector_index(scope, collection, m).await?;
            let allowed = allowed.clone();
            // Milliseconds of arithmetic on a large collection: off the
            // async workers.
            tokio::task::spawn_blocking(move || {
                let allowed: Option<std::collections::HashSet<&str>> = allowed
                    .as_ref()
                    .map(|a| a.iter().map(String::as_str).collect());
                index.search(&qv, allowed.as_ref(), want)
            })
            .await
            .map_err(|e| KnowledgeServiceError::Store(KnowledgeStoreError::Backend(Box::new(e))))
        };
        let (fulltext, vector) = tokio::join!(fulltext, vector);
        let (fulltext, vector) = (fulltext?, vector?);
        let ranked: Vec<(i64, f32)> = match mode {
            SearchMode::Fulltext => fulltext.into_iter().take(top_k).collect(),
            SearchMode::Vector => vector.into_iter().take(top_k).collect(),
            SearchMode::Hybrid => bulkhead_knowledge::rrf(
                &[
                    fulltext.iter().map(|(id, _)| *id).collect(),
                    vector.iter().map(|(id, _)| *id).collect(),
                ],
                60.0,
                top_k,
            ),
        };
        let ids: Vec<i64> = ranked.iter().map(|(id, _)| *id).collect();
        let mut hits: HashMap<i64, Hit> = self
            .store
            .hits(scope, &ids)
            .await?
            .into_iter()
            .map(|h| (h.chunk_id, h))
            .collect();
        let mut results: Vec<Hit> = ranked
            .into_iter()
            .filter_map(|(id, score)| {
                hits.remove(&id).map(|mut h| {
                    h.score = score;
                    h
                })
            })
            .collect();
        let hook = self.fault.read().ok().and_then(|f| f.clone());
        if let Some(hook) = hook {
            results.extend(hook(scope));
        }
        Ok(SearchResult { mode, results })
    }
}

/// The document's fingerprint (see [`DocumentInfo::fingerprint`]): each
/// part length-prefixed, so no two different inputs run together.
fn fingerprint(doc: &NewDocument, model: Option<&str>) -> String {
    let format = format!("{:?}", doc.format);
    let title = doc.title.as_deref().unwrap_or_default();
    let metadata = doc.metadata.to_string();
    let parts: [(&str, &[u8]); 5] = [
        ("content", doc.content.as_bytes()),
        ("format", format.as_bytes()),
        ("title", title.as_bytes()),
        ("metadata", metadata.as_bytes()),
        ("model", model.unwrap_or_default().as_bytes()),
    ];
    let mut buf = Vec::with_capacity(doc.content.len() + 256);
    for (name, value) in parts {
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value);
    }
    // A title of None and of "" differ.
    buf.push(u8::from(doc.title.is_some()));
    sha256_hex(&buf)
}

#[cfg(test)]
mod tests {
    use super::VectorIndex;

    fn index(n: usize, dims: usize) -> (VectorIndex, Vec<Vec<f32>>) {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2001) as f32 / 1000.0 - 1.0
        };
        let vectors: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..dims).map(|_| next()).collect())
            .collect();
        let raw = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    i as i64,
                    format!("d{}", i % 7),
                    bulkhead_knowledge::encode_vector(v),
                )
            })
            .collect();
        (VectorIndex::new(raw), vectors)
    }

    #[test]
    fn exact_search_ranks_a_vector_first_for_itself_and_honours_the_filter() {
        let (idx, vectors) = index(500, 16);
        let top = idx.search(&vectors[42], None, 3);
        assert_eq!(top[0].0, 42);
        assert!((top[0].1 - 1.0).abs() < 1e-5);
        let allowed: std::collections::HashSet<&str> = ["d1"].into_iter().collect();
        let filtered = idx.search(&vectors[42], Some(&allowed), 10);
        assert_eq!(filtered.len(), 10);
        assert!(filtered.iter().all(|(id, _)| id % 7 == 1));
    }

    #[cfg(feature = "ann")]
    #[test]
    fn the_ann_graph_finds_what_the_exact_scan_finds() {
        let (idx, vectors) = index(3000, 32);
        assert!(!idx.uses_ann());
        assert!(idx.build_ann());
        assert!(idx.uses_ann());
        let mut found = 0;
        let queries = 50;
        for q in vectors.iter().step_by(61).take(queries) {
            let exact: std::collections::HashSet<i64> = idx
                .top_k(q, None, 10)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let approx = idx.search(q, None, 10);
            assert_eq!(approx.len(), 10);
            found += approx.iter().filter(|(id, _)| exact.contains(id)).count();
        }
        let recall = found as f64 / (queries * 10) as f64;
        assert!(recall >= 0.9, "recall@10 {recall}");
        // A filtered search stays exact.
        let allowed: std::collections::HashSet<&str> = ["d3"].into_iter().collect();
        assert!(
            idx.search(&vectors[0], Some(&allowed), 10)
                .iter()
                .all(|(id, _)| id % 7 == 3)
        );
    }
}
