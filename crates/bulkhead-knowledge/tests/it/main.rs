//! The crate through its public API, the way the store and HTTP layers use
//! it: validate, chunk, filter, score, fuse, and build an FTS query.

use bulkhead_knowledge::{
    Chunk, DocFormat, Filter, KnowledgeError, Limits, chunk, collection_name, cosine_top_k,
    decode_vector, encode_vector, estimate_tokens, external_id, fts_query, metadata, rrf, to_text,
};
use serde_json::json;

const GUIDE: &str = "# Guide\n\nBulkhead runs agents for many tenants.\n\n## Install\n\n\
```sh\n# from source\ncargo install bulkhead\n```\n\nThen run `bulkhead serve`.\n\n\
## Configure\n\nEdit the configuration file. Secrets are written as env references.\n";

#[test]
fn ingest_and_search_pipeline() {
    collection_name("handbook").unwrap();
    external_id("docs/guide.md").unwrap();
    let meta = json!({"lang": "en", "year": 2025, "tags": ["ops"]});
    metadata(&meta).unwrap();

    let format = DocFormat::parse("text/markdown").unwrap();
    let chunks: Vec<Chunk> = chunk(GUIDE, format, &Limits::default()).unwrap();
    let headings: Vec<_> = chunks.iter().map(|c| c.heading.clone().unwrap()).collect();
    assert_eq!(headings, ["Guide", "Guide > Install", "Guide > Configure"]);
    assert!(chunks[1].text.contains("# from source"));
    assert!(chunks.iter().all(|c| c.tokens == estimate_tokens(&c.text)));

    // Store: vectors as BLOBs, one per chunk (a toy 3-d "embedding").
    let blobs: Vec<(i64, Vec<u8>)> = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]]
        .iter()
        .zip(1..)
        .map(|(v, id)| (id, encode_vector(v)))
        .collect();

    // Search: filter, then vector and keyword rankings fused.
    let filter =
        Filter::parse(&json!({"$and": [{"lang": "en"}, {"year": {"$gte": 2024}}]})).unwrap();
    assert!(filter.matches(&meta));
    let candidates = blobs.iter().map(|(id, b)| (*id, decode_vector(b).unwrap()));
    let by_vector = cosine_top_k(&[0.0, 1.0, 0.0], candidates, 3);
    assert_eq!(
        by_vector.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [2, 3, 1]
    );
    let by_keyword = vec![3, 1];
    let vector_ids: Vec<i64> = by_vector.iter().map(|(id, _)| *id).collect();
    let fused = rrf(&[vector_ids, by_keyword], 60.0, 2);
    // 3 and 1 appear in both rankings and beat 2, the vector-only winner.
    assert_eq!(fused.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [3, 1]);

    assert_eq!(
        fts_query("install OR \"serve\"").as_deref(),
        Some(r#""install" OR "or" OR "serve""#)
    );
}

#[test]
fn html_ingest() {
    let html = "<h1>FAQ</h1><p>Q &amp; A</p><script>track()</script>";
    assert_eq!(to_text(html, DocFormat::Html), "FAQ\n\nQ & A");
    let chunks = chunk(html, DocFormat::Html, &Limits::default()).unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].heading.as_deref(), Some("FAQ"));
    assert_eq!(chunks[0].text, "Q & A");
}

#[test]
fn errors_map_to_stable_codes() {
    let too_large = chunk(
        "abc",
        DocFormat::Text,
        &Limits {
            max_document_bytes: 2,
            ..Limits::default()
        },
    )
    .unwrap_err();
    let cases: [(KnowledgeError, &str); 5] = [
        (
            chunk(" ", DocFormat::Text, &Limits::default()).unwrap_err(),
            "empty_document",
        ),
        (too_large, "document_too_large"),
        (
            Filter::parse(&json!({"a": {"$bad": 1}})).unwrap_err(),
            "invalid_filter",
        ),
        (collection_name("Bad Name").unwrap_err(), "invalid_name"),
        (metadata(&json!([])).unwrap_err(), "invalid_metadata"),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
}
