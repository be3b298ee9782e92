//! The knowledge base's domain logic, shared by the store and HTTP layers.
//!
//! This crate does no I/O: no files, no sockets, no database, no async. The
//! store persists what it computes and the HTTP layer validates requests
//! with it, so every rule about documents, chunks, metadata filters,
//! ranking and full-text queries lives in exactly one place and can be
//! tested with plain tables.
//!
//! - [`to_text`] and [`chunk`] turn a document (text, Markdown or HTML) into
//!   section-aware, overlapping [`Chunk`]s bounded by [`Limits`].
//! - [`estimate_tokens`] is the one token heuristic (also for memory budgets).
//! - [`collection_name`], [`external_id`] and [`metadata`] validate input.
//! - [`Filter`] is the metadata filter language.
//! - [`cosine_top_k`], [`rrf`], [`encode_vector`] and [`decode_vector`] score
//!   and store embeddings.
//! - [`fts_query`] is the only way to build an SQLite FTS5 `MATCH` expression
//!   from user text.

pub mod chunk;
pub mod error;
pub mod filter;
pub mod format;
pub mod fts;
pub mod names;
pub mod tokens;
pub mod vector;

pub use chunk::{Chunk, Limits, chunk};
pub use error::KnowledgeError;
pub use filter::{Filter, metadata};
pub use format::{DocFormat, to_text};
pub use fts::{FtsQuery, fts_query};
pub use names::{collection_name, external_id};
pub use tokens::estimate_tokens;
pub use vector::{cosine_top_k, decode_vector, encode_vector, rrf};
