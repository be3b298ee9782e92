//! The knowledge service's storage in the embedded layout: collections,
//! documents, chunks with their vectors, and an FTS5 index, all in the
//! tenant's own partition (a search cannot reach another tenant's file).

use async_trait::async_trait;
use bulkhead_agent::knowledge::{
    ChunkRow, CollectionInfo, DocumentInfo, Hit, KnowledgeStore, KnowledgeStoreError, StorageLimit,
};
use bulkhead_auth::TenantScope;
use bulkhead_core::Timestamp;
use bulkhead_core::audit::NewAuditEvent;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::SqliteStore;
use super::partition;
use crate::StoreError;

fn ks(e: StoreError) -> KnowledgeStoreError {
    match e {
        StoreError::Quota(m) => KnowledgeStoreError::Quota(m),
        other => KnowledgeStoreError::Backend(Box::new(other)),
    }
}

fn ts(s: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(s).map_err(|e| StoreError::Internal(format!("corrupt timestamp: {e}")))
}

fn json_col(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Internal(format!("corrupt metadata: {e}")))
}

/// `documents` as a JSON array for `json_each`, or NULL for "all".
fn doc_list(documents: Option<&[String]>) -> Option<String> {
    documents.map(|d| Value::from(d.to_vec()).to_string())
}

/// Share of all chunks above which a query term is left out: such a term
/// moves BM25 little (inverse document frequency at most ln 9.5 ≈ 2.3,
/// against ~10 for a rare term) but makes FTS5 score a large part of the
/// index. Measured on the knowledge bench: at a quarter, the full-text p99
/// was 16.7 ms and hybrid 19.9 ms; at a tenth, 9.2 ms and 11.0 ms.
const COMMON_TERM_SHARE: f64 = 0.10;
/// Below this many chunks nothing is pruned.
const PRUNE_FROM_CHUNKS: i64 = 5_000;

/// Drops the query's very common terms (keeping the rarest if all are).
/// `q` is `fts_query`'s output: quoted terms joined by ` OR `.
fn prune_common_terms(conn: &rusqlite::Connection, q: &str) -> Result<String, StoreError> {
    let terms: Vec<&str> = q.split(" OR ").collect();
    if terms.len() < 2 {
        return Ok(q.to_owned());
    }
    let total: i64 = partition::one(conn, "SELECT COALESCE(MAX(id), 0) FROM chunks", [], |r| {
        r.get(0)
    })?;
    // Scoring everything is cheap in a small index, and every term counts.
    if total < PRUNE_FROM_CHUNKS {
        return Ok(q.to_owned());
    }
    let limit = (total as f64 * COMMON_TERM_SHARE) as i64;
    let mut scored = Vec::with_capacity(terms.len());
    for t in &terms {
        let term = t.trim_matches('"').replace("\"\"", "\"");
        let df: i64 = partition::one(
            conn,
            "SELECT COALESCE((SELECT doc FROM chunks_vocab WHERE term = ?1), 0)",
            params![term],
            |r| r.get(0),
        )?;
        scored.push((df, *t));
    }
    let kept: Vec<&str> = scored
        .iter()
        .filter(|(df, _)| *df <= limit)
        .map(|(_, t)| *t)
        .collect();
    if kept.is_empty() {
        let rarest = scored
            .iter()
            .min_by_key(|(df, _)| *df)
            .map(|(_, t)| *t)
            .unwrap_or(q);
        return Ok(rarest.to_owned());
    }
    Ok(kept.join(" OR "))
}

/// Chunks outside the searched collection up to which [`fulltext_fast`]
/// applies.
const FAST_PATH_OTHER_CHUNKS: i64 = 1_000;

/// Full-text ranking without joining the chunks table, which halves the
/// cost on a large index: when the tenant's other collections hold at
/// most [`FAST_PATH_OTHER_CHUNKS`] chunks, the index is asked for `limit`
/// plus that many best matches over all collections, and the searched
/// collection's are kept — exact, since at most that many can be ranked
/// above them. `None`: not applicable, use the joined query.
fn fulltext_fast(
    conn: &rusqlite::Connection,
    q: &str,
    collection: &str,
    limit: usize,
) -> Result<Option<Vec<(i64, f32)>>, StoreError> {
    let (mine, all): (i64, i64) = partition::one(
        conn,
        "SELECT (SELECT COALESCE(SUM(chunks), 0) FROM documents WHERE collection = ?1),
                (SELECT COALESCE(SUM(chunks), 0) FROM documents)",
        params![collection],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let others = all - mine;
    if others > FAST_PATH_OTHER_CHUNKS {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?1
         ORDER BY bm25(chunks_fts), rowid LIMIT ?2",
    )?;
    let ranked: Vec<(i64, f32)> = stmt
        .query_map(params![q, limit as i64 + others], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)? as f32))
        })?
        .collect::<Result<_, _>>()?;
    if others == 0 {
        return Ok(Some(ranked.into_iter().take(limit).collect()));
    }
    let ids = Value::from(ranked.iter().map(|(id, _)| *id).collect::<Vec<_>>()).to_string();
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM chunks WHERE collection = ?1 AND id IN (SELECT value FROM json_each(?2))",
    )?;
    let keep: std::collections::HashSet<i64> = stmt
        .query_map(params![collection, ids], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(Some(
        ranked
            .into_iter()
            .filter(|(id, _)| keep.contains(id))
            .take(limit)
            .collect(),
    ))
}

fn collection_exists(conn: &rusqlite::Connection, name: &str) -> Result<bool, StoreError> {
    Ok(partition::one(
        conn,
        "SELECT 1 FROM collections WHERE name = ?1",
        params![name],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// Deletes a document's chunks (the trigger removes their index entries)
/// and the document row.
fn remove_document(tx: &rusqlite::Connection, id: &str) -> Result<(), StoreError> {
    partition::exec(tx, "DELETE FROM chunks WHERE document_id = ?1", params![id])?;
    partition::exec(tx, "DELETE FROM documents WHERE id = ?1", params![id])?;
    Ok(())
}

#[async_trait]
impl KnowledgeStore for SqliteStore {
    async fn put_document(
        &self,
        scope: &TenantScope,
        doc: &DocumentInfo,
        chunks: Vec<ChunkRow>,
        event: NewAuditEvent,
        limit: StorageLimit,
    ) -> Result<DocumentInfo, KnowledgeStoreError> {
        let tenant = scope.tenant().clone();
        let mut doc = doc.clone();
        self.tenant_write(scope, move |tx, principal| {
            partition::exec(
                tx,
                "INSERT OR IGNORE INTO collections (name, created_at) VALUES (?1, ?2)",
                params![doc.collection, doc.created_at.to_string()],
            )?;
            if let Some(x) = &doc.external_id {
                let old: Option<(String, String)> = partition::one(
                    tx,
                    "SELECT id, created_at FROM documents WHERE collection = ?1 AND external_id = ?2",
                    params![doc.collection, x],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
                if let Some((old_id, created)) = old {
                    // The same document again: it keeps its id and creation time.
                    remove_document(tx, &old_id)?;
                    doc.id = old_id;
                    doc.created_at = ts(&created)?;
                }
            }
            // In the write's own transaction (after a replaced document is
            // gone), so concurrent writes cannot overshoot the quota.
            let (documents, bytes): (i64, i64) = partition::one(
                tx,
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM documents",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if let Some(why) =
                limit.exceeded(documents as u64 + 1, bytes as u64 + doc.bytes)
            {
                return Err(StoreError::Quota(why));
            }
            partition::exec(
                tx,
                "INSERT INTO documents (id, collection, external_id, title, metadata, sha256, bytes, chunks,
                   embedding_model, created_at, updated_at, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    doc.id,
                    doc.collection,
                    doc.external_id,
                    doc.title,
                    doc.metadata.to_string(),
                    doc.sha256,
                    doc.bytes as i64,
                    doc.chunks,
                    doc.embedding_model,
                    doc.created_at.to_string(),
                    doc.updated_at.to_string(),
                    doc.fingerprint
                ],
            )?;
            for c in &chunks {
                partition::exec(
                    tx,
                    "INSERT INTO chunks (document_id, collection, seq, heading, text, tokens, embedding)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![doc.id, doc.collection, c.seq, c.heading, c.text, c.tokens, c.embedding],
                )?;
            }
            partition::append_chain(tx, Some(tenant), principal, event)?;
            Ok(doc)
        })
        .await
        .map_err(ks)
    }

    async fn document_by_external_id(
        &self,
        scope: &TenantScope,
        collection: &str,
        external_id: &str,
    ) -> Result<Option<DocumentInfo>, KnowledgeStoreError> {
        let scope = scope.clone();
        let (collection, external_id) = (collection.to_owned(), external_id.to_owned());
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let row = partition::one(
                    conn,
                    "SELECT id, title, metadata, sha256, bytes, chunks, embedding_model, created_at,
                       updated_at, fingerprint
                     FROM documents WHERE collection = ?1 AND external_id = ?2",
                    params![collection, external_id],
                    |r| {
                        Ok((
                            (
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<String>>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, i64>(4)?,
                            ),
                            (
                                r.get::<_, u32>(5)?,
                                r.get::<_, Option<String>>(6)?,
                                r.get::<_, String>(7)?,
                                r.get::<_, String>(8)?,
                                r.get::<_, Option<String>>(9)?,
                            ),
                        ))
                    },
                )
                .optional()?;
                let Some((
                    (id, title, metadata, sha256, bytes),
                    (chunks, model, created, updated, fingerprint),
                )) = row
                else {
                    return Ok(None);
                };
                Ok(Some(DocumentInfo {
                    id,
                    collection: collection.clone(),
                    external_id: Some(external_id.clone()),
                    title,
                    chunks,
                    bytes: bytes as u64,
                    sha256,
                    embedding_model: model,
                    metadata: json_col(&metadata)?,
                    created_at: ts(&created)?,
                    updated_at: ts(&updated)?,
                    fingerprint,
                }))
            })
        })
        .await
        .map_err(ks)
    }

    async fn storage_used(&self, scope: &TenantScope) -> Result<(u64, u64), KnowledgeStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let (documents, bytes): (i64, i64) = partition::one(
                    conn,
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM documents",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Ok((documents as u64, bytes as u64))
            })
        })
        .await
        .map_err(ks)
    }

    async fn delete_document(
        &self,
        scope: &TenantScope,
        collection: &str,
        id: &str,
        event: NewAuditEvent,
    ) -> Result<bool, KnowledgeStoreError> {
        let tenant = scope.tenant().clone();
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.tenant_write(scope, move |tx, principal| {
            let found = partition::one(
                tx,
                "SELECT 1 FROM documents WHERE id = ?1 AND collection = ?2",
                params![id, collection],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
            if found {
                remove_document(tx, &id)?;
                partition::append_chain(tx, Some(tenant), principal, event)?;
            }
            Ok(found)
        })
        .await
        .map_err(ks)
    }

    async fn collections(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<CollectionInfo>, KnowledgeStoreError> {
        let scope = scope.clone();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT c.name, c.created_at,
                       (SELECT COUNT(*) FROM documents d WHERE d.collection = c.name),
                       (SELECT COUNT(*) FROM chunks k WHERE k.collection = c.name)
                     FROM collections c WHERE substr(c.name, 1, 1) <> '_' ORDER BY c.name",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (name, created, documents, chunks) = row?;
                    out.push(CollectionInfo {
                        name,
                        documents: documents as u64,
                        chunks: chunks as u64,
                        created_at: ts(&created)?,
                    });
                }
                Ok(out)
            })
        })
        .await
        .map_err(ks)
    }

    async fn delete_collection(
        &self,
        scope: &TenantScope,
        name: &str,
        event: NewAuditEvent,
    ) -> Result<bool, KnowledgeStoreError> {
        let tenant = scope.tenant().clone();
        let name = name.to_owned();
        self.tenant_write(scope, move |tx, principal| {
            let found = partition::one(
                tx,
                "SELECT 1 FROM collections WHERE name = ?1",
                params![name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
            if found {
                partition::exec(
                    tx,
                    "DELETE FROM chunks WHERE collection = ?1",
                    params![name],
                )?;
                partition::exec(
                    tx,
                    "DELETE FROM documents WHERE collection = ?1",
                    params![name],
                )?;
                partition::exec(tx, "DELETE FROM collections WHERE name = ?1", params![name])?;
                partition::append_chain(tx, Some(tenant), principal, event)?;
            }
            Ok(found)
        })
        .await
        .map_err(ks)
    }

    async fn collection_exists(
        &self,
        scope: &TenantScope,
        collection: &str,
    ) -> Result<bool, KnowledgeStoreError> {
        let scope = scope.clone();
        let collection = collection.to_owned();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| collection_exists(conn, &collection))
        })
        .await
        .map_err(ks)
    }

    async fn document_metadata(
        &self,
        scope: &TenantScope,
        collection: &str,
    ) -> Result<Option<Vec<(String, Value)>>, KnowledgeStoreError> {
        let scope = scope.clone();
        let collection = collection.to_owned();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                if !collection_exists(conn, &collection)? {
                    return Ok(None);
                }
                let mut stmt = conn
                    .prepare_cached("SELECT id, metadata FROM documents WHERE collection = ?1")?;
                let rows = stmt.query_map(params![collection], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (id, meta) = row?;
                    out.push((id, json_col(&meta)?));
                }
                Ok(Some(out))
            })
        })
        .await
        .map_err(ks)
    }

    async fn fulltext(
        &self,
        scope: &TenantScope,
        collection: &str,
        fts_query: &bulkhead_agent::knowledge::FtsQuery,
        documents: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<(i64, f32)>, KnowledgeStoreError> {
        let scope = scope.clone();
        let (collection, q) = (collection.to_owned(), fts_query.as_str().to_owned());
        let docs = doc_list(documents);
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let q = prune_common_terms(conn, &q)?;
                if docs.is_none()
                    && let Some(hits) = fulltext_fast(conn, &q, &collection, limit)?
                {
                    return Ok(hits);
                }
                // bm25() is lower for better matches; the score returned is
                // its negation, so higher is better everywhere.
                let mut stmt = conn.prepare_cached(
                    "SELECT c.id, -bm25(chunks_fts) AS score
                     FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid
                     WHERE chunks_fts MATCH ?1 AND c.collection = ?2
                       AND (?3 IS NULL OR c.document_id IN (SELECT value FROM json_each(?3)))
                     ORDER BY bm25(chunks_fts), c.id LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![q, collection, docs, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)? as f32))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
        .map_err(ks)
    }

    async fn vectors(
        &self,
        scope: &TenantScope,
        collection: &str,
        model: &str,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, KnowledgeStoreError> {
        let scope = scope.clone();
        let (collection, model) = (collection.to_owned(), model.to_owned());
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT c.id, c.document_id, c.embedding FROM chunks c JOIN documents d ON d.id = c.document_id
                     WHERE c.collection = ?1 AND d.embedding_model = ?2 AND c.embedding IS NOT NULL",
                )?;
                let rows = stmt.query_map(params![collection, model], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
        })
        .await
        .map_err(ks)
    }

    async fn hits(
        &self,
        scope: &TenantScope,
        ids: &[i64],
    ) -> Result<Vec<Hit>, KnowledgeStoreError> {
        let scope = scope.clone();
        let list = Value::from(ids.to_vec()).to_string();
        self.blocking(move |s| {
            let p = s.partition(scope.tenant(), scope.partition())?;
            p.with_conn(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT c.id, c.document_id, d.external_id, d.title, c.heading, c.text, d.metadata
                     FROM chunks c JOIN documents d ON d.id = c.document_id
                     WHERE c.id IN (SELECT value FROM json_each(?1))",
                )?;
                let rows = stmt.query_map(params![list], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (chunk_id, document_id, external_id, title, heading, text, meta) = row?;
                    out.push(Hit {
                        chunk_id,
                        document_id,
                        external_id,
                        title,
                        heading,
                        text,
                        metadata: json_col(&meta)?,
                        score: 0.0,
                    });
                }
                Ok(out)
            })
        })
        .await
        .map_err(ks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{reaches_sqlite, sqlite_error};

    #[test]
    fn the_knowledge_service_sees_the_store_error_with_its_chain() {
        let e = StoreError::from(sqlite_error());
        let text = e.to_string();
        let e = ks(e);
        assert!(matches!(e, KnowledgeStoreError::Backend(_)));
        assert_eq!(e.to_string(), text);
        assert!(reaches_sqlite(&e));
        let quota = ks(StoreError::Quota("over".into()));
        assert!(matches!(quota, KnowledgeStoreError::Quota(ref m) if m == "over"));
    }
}
