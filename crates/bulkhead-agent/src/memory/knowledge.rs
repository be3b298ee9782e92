//! The knowledge store in memory: collections, documents and chunks per
//! tenant incarnation, with a BM25 ranking standing in for SQLite's FTS5
//! index (the same formula: k1 = 1.2, b = 0.75, document frequencies over
//! every chunk of the tenant). Tokens are runs of letters and digits,
//! lower-cased; unlike FTS5's `unicode61` it does not fold diacritics, and
//! it never prunes very common terms (SQLite does so only past 5,000
//! chunks).

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::NewAuditEvent;
use serde_json::Value;

use crate::knowledge::{
    ChunkRow, CollectionInfo, DocumentInfo, Hit, KnowledgeStore, KnowledgeStoreError, StorageLimit,
};

#[derive(Clone)]
struct Chunk {
    document_id: String,
    collection: String,
    heading: Option<String>,
    text: String,
    embedding: Option<Vec<u8>>,
}

#[derive(Clone, Default)]
struct Partition {
    /// Name → creation time.
    collections: BTreeMap<String, Timestamp>,
    /// In insertion order.
    documents: Vec<DocumentInfo>,
    /// By id (ids only grow, as SQLite's rowids do here).
    chunks: BTreeMap<i64, Chunk>,
    next_chunk: i64,
    audit: Vec<NewAuditEvent>,
}

impl Partition {
    fn remove_document(&mut self, id: &str) {
        self.chunks.retain(|_, c| c.document_id != id);
        self.documents.retain(|d| d.id != id);
    }
}

/// The knowledge service's storage in memory (see the module doc).
#[derive(Clone, Default)]
pub struct MemoryKnowledgeStore {
    partitions: super::Tenants<Partition>,
}

impl std::fmt::Debug for MemoryKnowledgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKnowledgeStore")
            .finish_non_exhaustive()
    }
}

impl From<super::Poisoned> for KnowledgeStoreError {
    fn from(_: super::Poisoned) -> Self {
        backend("the memory store's lock is poisoned")
    }
}

fn backend(message: &str) -> KnowledgeStoreError {
    KnowledgeStoreError::Backend(message.into())
}

/// Words as the index sees them.
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The terms of a `bulkhead_knowledge::fts_query` expression (quoted
/// words joined by ` OR `).
fn query_terms(q: &str) -> Vec<String> {
    q.split(" OR ")
        .map(|t| t.trim().trim_matches('"').replace("\"\"", "\""))
        .filter(|t| !t.is_empty())
        .collect()
}

impl MemoryKnowledgeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tenant's audit events, in the order they were written.
    pub fn audit_events(&self, scope: &TenantScope) -> Vec<NewAuditEvent> {
        self.read(scope, |p| p.audit.clone()).unwrap_or_default()
    }

    fn read<T>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&Partition) -> T,
    ) -> Result<T, KnowledgeStoreError> {
        self.partitions.read(scope, f)
    }

    fn write<T>(
        &self,
        scope: &TenantScope,
        f: impl FnOnce(&mut Partition) -> Result<T, KnowledgeStoreError>,
    ) -> Result<T, KnowledgeStoreError> {
        self.partitions.write(scope, f)
    }
}

#[async_trait]
impl KnowledgeStore for MemoryKnowledgeStore {
    async fn put_document(
        &self,
        scope: &TenantScope,
        doc: &DocumentInfo,
        chunks: Vec<ChunkRow>,
        event: NewAuditEvent,
        limit: StorageLimit,
    ) -> Result<DocumentInfo, KnowledgeStoreError> {
        let mut doc = doc.clone();
        self.write(scope, |p| {
            p.collections
                .entry(doc.collection.clone())
                .or_insert(doc.created_at);
            if let Some(x) = &doc.external_id
                && let Some(old) = p
                    .documents
                    .iter()
                    .find(|d| d.collection == doc.collection && d.external_id.as_ref() == Some(x))
                    .cloned()
            {
                // The same document again: it keeps its id and creation time.
                p.remove_document(&old.id);
                doc.id = old.id;
                doc.created_at = old.created_at;
            }
            if p.documents.iter().any(|d| d.id == doc.id) {
                return Err(backend("the document id exists"));
            }
            let documents = p.documents.len() as u64;
            let bytes: u64 = p.documents.iter().map(|d| d.bytes).sum();
            if let Some(why) = limit.exceeded(documents + 1, bytes + doc.bytes) {
                return Err(KnowledgeStoreError::Quota(why));
            }
            p.documents.push(doc.clone());
            for c in chunks {
                p.next_chunk += 1;
                p.chunks.insert(
                    p.next_chunk,
                    Chunk {
                        document_id: doc.id.clone(),
                        collection: doc.collection.clone(),
                        heading: c.heading,
                        text: c.text,
                        embedding: c.embedding,
                    },
                );
            }
            p.audit.push(event);
            Ok(doc)
        })
    }

    async fn document_by_external_id(
        &self,
        scope: &TenantScope,
        collection: &str,
        external_id: &str,
    ) -> Result<Option<DocumentInfo>, KnowledgeStoreError> {
        self.read(scope, |p| {
            p.documents
                .iter()
                .find(|d| {
                    d.collection == collection && d.external_id.as_deref() == Some(external_id)
                })
                .cloned()
        })
    }

    async fn storage_used(&self, scope: &TenantScope) -> Result<(u64, u64), KnowledgeStoreError> {
        self.read(scope, |p| {
            (
                p.documents.len() as u64,
                p.documents.iter().map(|d| d.bytes).sum(),
            )
        })
    }

    async fn delete_document(
        &self,
        scope: &TenantScope,
        collection: &str,
        id: &str,
        event: NewAuditEvent,
    ) -> Result<bool, KnowledgeStoreError> {
        self.write(scope, |p| {
            let found = p
                .documents
                .iter()
                .any(|d| d.id == id && d.collection == collection);
            if found {
                p.remove_document(id);
                p.audit.push(event);
            }
            Ok(found)
        })
    }

    async fn collections(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<CollectionInfo>, KnowledgeStoreError> {
        self.read(scope, |p| {
            // By name (the map's order); `_`-names are internal.
            p.collections
                .iter()
                .filter(|(name, _)| !name.starts_with('_'))
                .map(|(name, created)| CollectionInfo {
                    name: name.clone(),
                    documents: p.documents.iter().filter(|d| &d.collection == name).count() as u64,
                    chunks: p.chunks.values().filter(|c| &c.collection == name).count() as u64,
                    created_at: *created,
                })
                .collect()
        })
    }

    async fn delete_collection(
        &self,
        scope: &TenantScope,
        name: &str,
        event: NewAuditEvent,
    ) -> Result<bool, KnowledgeStoreError> {
        self.write(scope, |p| {
            let found = p.collections.remove(name).is_some();
            if found {
                p.chunks.retain(|_, c| c.collection != name);
                p.documents.retain(|d| d.collection != name);
                p.audit.push(event);
            }
            Ok(found)
        })
    }

    async fn collection_exists(
        &self,
        scope: &TenantScope,
        collection: &str,
    ) -> Result<bool, KnowledgeStoreError> {
        self.read(scope, |p| p.collections.contains_key(collection))
    }

    async fn document_metadata(
        &self,
        scope: &TenantScope,
        collection: &str,
    ) -> Result<Option<Vec<(String, Value)>>, KnowledgeStoreError> {
        self.read(scope, |p| {
            p.collections.contains_key(collection).then(|| {
                p.documents
                    .iter()
                    .filter(|d| d.collection == collection)
                    .map(|d| (d.id.clone(), d.metadata.clone()))
                    .collect()
            })
        })
    }

    async fn fulltext(
        &self,
        scope: &TenantScope,
        collection: &str,
        fts_query: &crate::knowledge::FtsQuery,
        documents: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<(i64, f32)>, KnowledgeStoreError> {
        let terms = query_terms(fts_query.as_str());
        self.read(scope, |p| {
            const K1: f64 = 1.2;
            const B: f64 = 0.75;
            // Statistics over the whole index, as FTS5 keeps them.
            let tokenized: Vec<(i64, &Chunk, Vec<String>)> = p
                .chunks
                .iter()
                .map(|(id, c)| (*id, c, tokens(&c.text).collect()))
                .collect();
            let n = tokenized.len() as f64;
            let avg = tokenized.iter().map(|(_, _, t)| t.len()).sum::<usize>() as f64 / n.max(1.0);
            let idf: HashMap<&str, f64> = terms
                .iter()
                .map(|term| {
                    let df = tokenized
                        .iter()
                        .filter(|(_, _, t)| t.iter().any(|w| w == term))
                        .count() as f64;
                    let idf = ((n - df + 0.5) / (df + 0.5)).ln();
                    (term.as_str(), if idf <= 0.0 { 1e-6 } else { idf })
                })
                .collect();
            let allowed: Option<HashSet<&str>> =
                documents.map(|d| d.iter().map(String::as_str).collect());
            let mut scored: Vec<(i64, f32)> = tokenized
                .iter()
                .filter(|(_, c, _)| c.collection == collection)
                .filter(|(_, c, _)| {
                    allowed
                        .as_ref()
                        .is_none_or(|a| a.contains(c.document_id.as_str()))
                })
                .filter_map(|(id, _, words)| {
                    let len = words.len() as f64;
                    let mut score = 0.0;
                    let mut matched = false;
                    for term in &terms {
                        let f = words.iter().filter(|w| *w == term).count() as f64;
                        if f > 0.0 {
                            matched = true;
                            score += idf[term.as_str()] * (f * (K1 + 1.0))
                                / (f + K1 * (1.0 - B + B * len / avg.max(1e-9)));
                        }
                    }
                    matched.then_some((*id, score as f32))
                })
                .collect();
            // Best first, ties by chunk id.
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            scored.truncate(limit);
            scored
        })
    }

    async fn vectors(
        &self,
        scope: &TenantScope,
        collection: &str,
        model: &str,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, KnowledgeStoreError> {
        self.read(scope, |p| {
            p.chunks
                .iter()
                .filter(|(_, c)| c.collection == collection)
                .filter(|(_, c)| {
                    p.documents.iter().any(|d| {
                        d.id == c.document_id && d.embedding_model.as_deref() == Some(model)
                    })
                })
                .filter_map(|(id, c)| c.embedding.clone().map(|e| (*id, c.document_id.clone(), e)))
                .collect()
        })
    }

    async fn hits(
        &self,
        scope: &TenantScope,
        ids: &[i64],
    ) -> Result<Vec<Hit>, KnowledgeStoreError> {
        self.read(scope, |p| {
            ids.iter()
                .filter_map(|id| {
                    let c = p.chunks.get(id)?;
                    let d = p.documents.iter().find(|d| d.id == c.document_id)?;
                    Some(Hit {
                        chunk_id: *id,
                        document_id: d.id.clone(),
                        external_id: d.external_id.clone(),
                        title: d.title.clone(),
                        heading: c.heading.clone(),
                        text: c.text.clone(),
                        metadata: d.metadata.clone(),
                        score: 0.0,
                    })
                })
                .collect()
        })
    }
}
