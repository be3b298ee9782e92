//! Knowledge collections: ingest and delete documents, list and delete
//! collections, search. Everything resolves inside the caller's tenant
//! partition; another tenant's collection or document answers 404.
//!
//! The operator can ingest and search for a tenant
//! (`/admin/v1/tenants/{id}/collections/...`, used by `bulkhead kb`): the
//! same bodies and answers, through the same service calls, in a scope
//! minted by `OperatorScope::act_for_tenant`.

use axum::Json as AxumJson;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use bulkhead_agent::knowledge::{
    CollectionInfo, DocumentInfo, Hit, Ingested, KnowledgeServiceError, NewDocument, SearchMode,
};
use bulkhead_auth::{OperatorScope, TenantScope};
use bulkhead_core::TenantId;
use bulkhead_policy::{Action, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Json, OperatorCtx, Path, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(list_collections))
        .tenant(routes!(delete_collection))
        .tenant(routes!(put_document).layer(DefaultBodyLimit::max(DOCUMENT_BODY_LIMIT)))
        .tenant(routes!(delete_document))
        .tenant(routes!(search))
        .operator(routes!(operator_put_document).layer(DefaultBodyLimit::max(DOCUMENT_BODY_LIMIT)))
        .operator(routes!(operator_search))
}

/// Documents can be long: their route takes a larger body than the rest
/// of the API (the content itself is limited by the chunker's own limit).
pub const DOCUMENT_BODY_LIMIT: usize = 4 * 1024 * 1024;

impl From<KnowledgeServiceError> for ApiError {
    fn from(e: KnowledgeServiceError) -> Self {
        match e {
            // A refusal that is the service's own fault (its chunking
            // limits) is a 500 like any other, its detail logged only.
            KnowledgeServiceError::Invalid { code, message }
                if code == bulkhead_core::codes::INTERNAL =>
            {
                ApiError::Internal(message)
            }
            KnowledgeServiceError::Invalid { code, message } => {
                ApiError::Knowledge { code, message }
            }
            KnowledgeServiceError::NotFound => ApiError::NotFound,
            // Over a limit is the tenant's to wait for, not a provider failure.
            KnowledgeServiceError::Embedding(bulkhead_gateway::GatewayError::Limited(r)) => {
                ApiError::Limited(r)
            }
            KnowledgeServiceError::Embedding(g) => ApiError::Knowledge {
                code: bulkhead_core::codes::EMBEDDING_FAILED,
                message: g.to_string(),
            },
            KnowledgeServiceError::Store(
                bulkhead_agent::knowledge::KnowledgeStoreError::Quota(message),
            ) => ApiError::Knowledge {
                code: bulkhead_core::codes::STORAGE_QUOTA_EXCEEDED,
                message,
            },
            KnowledgeServiceError::Store(s) => ApiError::Internal(s.to_string()),
        }
    }
}

/// The body of `POST /v1/collections/{collection}/documents`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutDocument {
    /// The document (at most 2 MiB).
    pub content: String,
    /// The document's media type: `text/plain` (default), `text/markdown`
    /// or `text/html` (parameters such as `; charset=utf-8` are ignored:
    /// the content is a JSON string). Anything else is 400.
    #[schema(example = "text/markdown")]
    pub content_type: Option<String>,
    /// The same as a short name, kept for older clients: `text`,
    /// `markdown` or `html`. Give one of `content_type` and `format`.
    pub format: Option<String>,
    /// Your id: sending it again replaces the document.
    pub external_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Metadata to filter searches on: an object of scalars or arrays of scalars.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// A stored document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DocumentBody {
    /// Server id.
    pub id: String,
    /// Collection.
    pub collection: String,
    /// Your id.
    pub external_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Chunks indexed.
    pub chunks: u32,
    /// Bytes received.
    pub bytes: u64,
    /// SHA-256 of the content.
    pub sha256: String,
    /// Embedding model of its vectors; null when only full-text indexed.
    pub embedding_model: Option<String>,
    /// Metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// What this ingestion did: `created`, `replaced` (the document with
    /// the same `external_id` was re-chunked and re-embedded) or
    /// `unchanged` (that document already had this content, format, title
    /// and metadata, and the same embedding model serves the tenant:
    /// nothing was embedded, paid for, written or audited). Only in answers
    /// to an ingestion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
}

impl From<DocumentInfo> for DocumentBody {
    fn from(d: DocumentInfo) -> Self {
        Self {
            status: None,
            id: d.id,
            collection: d.collection,
            external_id: d.external_id,
            title: d.title,
            chunks: d.chunks,
            bytes: d.bytes,
            sha256: d.sha256,
            embedding_model: d.embedding_model,
            metadata: d.metadata,
            created_at: d.created_at.to_string(),
            updated_at: d.updated_at.to_string(),
        }
    }
}

/// Ingests a document into a collection of the caller's tenant (created
/// on first use). 201 when new, 200 when it replaced the document with the
/// same `external_id` or found it unchanged (`status` says which; an
/// unchanged document is not embedded again). Atomic: a failure leaves no
/// partial document.
#[utoipa::path(post, path = "/v1/collections/{collection}/documents", operation_id = "put_document", tag = "knowledge", security(("bearer" = [])),
    params(("collection" = String, Path, description = "Collection, [a-z0-9][a-z0-9_-]{0,63}")),
    request_body = PutDocument,
    responses((status = 201, description = "A new document", body = DocumentBody),
        (status = 200, description = "Replaced the document with the same `external_id`, or found it unchanged", body = DocumentBody),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 502, response = problems::BadGateway),
        problems::Timeout))]
pub async fn put_document(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(collection): Path<String>,
    Json(body): Json<PutDocument>,
) -> Result<(StatusCode, AxumJson<DocumentBody>), ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageDocuments,
        Resource::Collection(&collection),
    )
    .await?;
    ingest_in(&state, &scope, collection, body).await
}

/// The document format from `content_type` (a media type) or the older
/// `format` (a short name); both at once only if they agree.
fn doc_format(
    content_type: Option<&str>,
    format: Option<&str>,
) -> Result<bulkhead_knowledge::DocFormat, ApiError> {
    let from_type = content_type
        .map(|t| {
            let essence = t.split(';').next().unwrap_or_default().trim();
            // Only media types here: the short names belong to `format`.
            essence
                .contains('/')
                .then(|| bulkhead_knowledge::DocFormat::parse(essence))
                .flatten()
                .ok_or_else(|| {
                    ApiError::Validation(format!(
                        "content_type: {t:?} is not text/plain, text/markdown or text/html"
                    ))
                })
        })
        .transpose()?;
    let from_format = format
        .map(|f| {
            bulkhead_knowledge::DocFormat::parse(f).ok_or_else(|| {
                ApiError::Validation(format!("format: {f:?} is not text, markdown or html"))
            })
        })
        .transpose()?;
    match (from_type, from_format) {
        (Some(a), Some(b)) if a != b => Err(ApiError::Validation(format!(
            "content_type: {:?} contradicts format {:?}; give one of them",
            content_type.unwrap_or_default(),
            format.unwrap_or_default()
        ))),
        (Some(f), _) | (None, Some(f)) => Ok(f),
        (None, None) => Ok(bulkhead_knowledge::DocFormat::Text),
    }
}

async fn ingest_in(
    state: &AppState,
    scope: &TenantScope,
    collection: String,
    body: PutDocument,
) -> Result<(StatusCode, AxumJson<DocumentBody>), ApiError> {
    let format = doc_format(body.content_type.as_deref(), body.format.as_deref())?;
    let doc = state
        .knowledge
        .ingest(
            scope,
            NewDocument {
                collection,
                external_id: body.external_id,
                title: body.title,
                format,
                content: body.content,
                metadata: body
                    .metadata
                    .unwrap_or_else(|| Value::Object(Default::default())),
            },
        )
        .await?;
    let (doc, outcome) = doc;
    let status = if outcome == Ingested::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = DocumentBody::from(doc);
    body.status = Some(outcome.as_str());
    Ok((status, AxumJson(body)))
}

/// Deletes a document.
#[utoipa::path(delete, path = "/v1/collections/{collection}/documents/{id}", operation_id = "delete_document", tag = "knowledge", security(("bearer" = [])),
    params(("collection" = String, Path, description = "Collection"), ("id" = String, Path, description = "Document id")),
    responses((status = 204, description = "Deleted"),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn delete_document(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path((collection, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageDocuments,
        Resource::Collection(&collection),
    )
    .await?;
    state
        .knowledge
        .delete_document(&scope, &collection, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One collection.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CollectionBody {
    /// Name.
    pub name: String,
    /// Documents.
    pub documents: u64,
    /// Chunks.
    pub chunks: u64,
    /// RFC 3339.
    pub created_at: String,
}

impl From<CollectionInfo> for CollectionBody {
    fn from(c: CollectionInfo) -> Self {
        Self {
            name: c.name,
            documents: c.documents,
            chunks: c.chunks,
            created_at: c.created_at.to_string(),
        }
    }
}

/// The collections.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CollectionList {
    /// By name.
    pub collections: Vec<CollectionBody>,
}

/// Lists the caller's tenant's collections.
#[utoipa::path(get, path = "/v1/collections", operation_id = "list_collections", tag = "knowledge", security(("bearer" = [])),
    responses((status = 200, body = CollectionList),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn list_collections(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<AxumJson<CollectionList>, ApiError> {
    authorize(&state, &scope, Action::Search, Resource::Collection("*")).await?;
    let list = state.knowledge.collections(&scope).await?;
    Ok(AxumJson(CollectionList {
        collections: list.into_iter().map(CollectionBody::from).collect(),
    }))
}

/// Deletes a collection and all its documents (tenant admins).
#[utoipa::path(delete, path = "/v1/collections/{collection}", operation_id = "delete_collection", tag = "knowledge", security(("bearer" = [])),
    params(("collection" = String, Path, description = "Collection")),
    responses((status = 204, description = "Deleted"),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn delete_collection(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(collection): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageCollections,
        Resource::Collection(&collection),
    )
    .await?;
    state
        .knowledge
        .delete_collection(&scope, &collection)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of a search.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// What to look for.
    pub query: String,
    /// Results wanted (1–50, default 5).
    pub top_k: Option<usize>,
    /// Metadata filter: `{"key": value}`, operators `$eq $ne $in $nin $gt $gte $lt $lte $exists`, `$and`/`$or`.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// `hybrid` (default), `fulltext` or `vector`.
    pub mode: Option<String>,
}

/// One result.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HitBody {
    /// Chunk id.
    pub chunk_id: i64,
    /// Document id.
    pub document_id: String,
    /// The document's external id.
    pub external_id: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Heading path.
    pub heading: Option<String>,
    /// Chunk text.
    pub text: String,
    /// Score (higher is better; comparable within one search).
    pub score: f32,
    /// Document metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl From<Hit> for HitBody {
    fn from(h: Hit) -> Self {
        Self {
            chunk_id: h.chunk_id,
            document_id: h.document_id,
            external_id: h.external_id,
            title: h.title,
            heading: h.heading,
            text: h.text,
            score: h.score,
            metadata: h.metadata,
        }
    }
}

/// Search results.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// The mode used (`hybrid` becomes `fulltext` without an embedding model).
    pub mode: String,
    /// Best first.
    pub results: Vec<HitBody>,
}

/// Searches one of the caller's tenant's collections.
#[utoipa::path(post, path = "/v1/collections/{collection}/search", operation_id = "search_collection", tag = "knowledge", security(("bearer" = [])),
    params(("collection" = String, Path, description = "Collection")),
    request_body = SearchBody,
    responses((status = 200, body = SearchResponse),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        (status = 502, response = problems::BadGateway),
        problems::Timeout))]
pub async fn search(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(collection): Path<String>,
    Json(body): Json<SearchBody>,
) -> Result<AxumJson<SearchResponse>, ApiError> {
    authorize(
        &state,
        &scope,
        Action::Search,
        Resource::Collection(&collection),
    )
    .await?;
    search_in(&state, &scope, &collection, body).await
}

async fn search_in(
    state: &AppState,
    scope: &TenantScope,
    collection: &str,
    body: SearchBody,
) -> Result<AxumJson<SearchResponse>, ApiError> {
    let mode = match body.mode.as_deref() {
        None => SearchMode::Hybrid,
        Some(m) => SearchMode::parse(m).ok_or_else(|| {
            ApiError::Validation(format!("mode: {m:?} is not hybrid, fulltext or vector"))
        })?,
    };
    let result = state
        .knowledge
        .search(
            scope,
            collection,
            &body.query,
            body.top_k.unwrap_or(5),
            body.filter.as_ref(),
            mode,
        )
        .await?;
    Ok(AxumJson(SearchResponse {
        mode: serde_json::to_value(result.mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        results: result.results.into_iter().map(HitBody::from).collect(),
    }))
}

/// The tenant the operator acts for; an unknown or malformed id is a 404.
async fn tenant_scope(
    state: &AppState,
    op: &OperatorScope,
    id: &str,
) -> Result<TenantScope, ApiError> {
    let id = TenantId::parse(id).map_err(|_| ApiError::NotFound)?;
    let tenant = state.control.get_tenant(op, &id).await?;
    Ok(op.act_for_tenant(&tenant))
}

/// The operator ingests a document into a tenant's collection (created on
/// first use): the body and answers of `POST /v1/collections/{collection}/documents`.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/collections/{collection}/documents", operation_id = "operator_put_document", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("collection" = String, Path, description = "Collection, [a-z0-9][a-z0-9_-]{0,63}")),
    request_body = PutDocument,
    responses((status = 201, description = "A new document", body = DocumentBody),
        (status = 200, description = "Replaced the document with the same `external_id`, or found it unchanged", body = DocumentBody),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 403, response = problems::Forbidden),
        (status = 404, response = problems::NotFound),
        (status = 502, response = problems::BadGateway),
        (status = 503, response = problems::ServiceUnavailable),
        problems::Timeout))]
pub async fn operator_put_document(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path((id, collection)): Path<(String, String)>,
    Json(body): Json<PutDocument>,
) -> Result<(StatusCode, AxumJson<DocumentBody>), ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    ingest_in(&state, &scope, collection, body).await
}

/// The operator searches a tenant's collection: the body and answer of
/// `POST /v1/collections/{collection}/search`.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/collections/{collection}/search", operation_id = "operator_search_collection", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("collection" = String, Path, description = "Collection")),
    request_body = SearchBody,
    responses((status = 200, body = SearchResponse),
        problems::OperatorAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        (status = 502, response = problems::BadGateway),
        (status = 503, response = problems::ServiceUnavailable),
        problems::Timeout))]
pub async fn operator_search(
    State(state): State<AppState>,
    OperatorCtx(op): OperatorCtx,
    Path((id, collection)): Path<(String, String)>,
    Json(body): Json<SearchBody>,
) -> Result<AxumJson<SearchResponse>, ApiError> {
    let scope = tenant_scope(&state, &op, &id).await?;
    search_in(&state, &scope, &collection, body).await
}
