//! `cargo xtask bench-knowledge`: knowledge search and ingestion in-process
//! on the embedded store (no HTTP), with the fake provider for the query
//! embeddings, plus the idle-tenant memory and the canary scan.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use bulkhead_agent::knowledge::{ChunkRow, DocumentInfo, Knowledge, KnowledgeStore, SearchMode};
use bulkhead_auth::{OperatorAuthenticator, TenantScope};
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{Isolation, Region, RequestId, SecretString, TenantId, Timestamp};
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{ControlStore, NewTenant};
use bulkhead_testkit::FakeProvider;
use bulkhead_vault::Vault;
use bulkhead_vault::kms::LocalKeyProvider;
use bulkhead_vault::oauth::HttpRefresher;
use serde_json::json;

struct Opts {
    tenants: usize,
    chunks: usize,
    idle: usize,
    queries: usize,
    dims: usize,
    ann_vectors: usize,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        tenants: 1000,
        chunks: 100_000,
        idle: 10_000,
        queries: 200,
        dims: 256,
        ann_vectors: 20_000,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut v = |n: &str| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{n} needs a value"))?
                .parse()
                .with_context(|| n.to_owned())
        };
        match a.as_str() {
            "--tenants" => o.tenants = v("--tenants")?,
            "--chunks" => o.chunks = v("--chunks")?,
            "--idle-tenants" => o.idle = v("--idle-tenants")?,
            "--queries" => o.queries = v("--queries")?,
            "--dims" => o.dims = v("--dims")?,
            "--ann-vectors" => o.ann_vectors = v("--ann-vectors")?,
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench-knowledge [--tenants N] [--chunks N] [--idle-tenants N] [--queries N] [--dims N] [--ann-vectors N]"
            ),
        }
    }
    Ok(o)
}

/// A deterministic pseudo-random stream (xorshift), so runs compare.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self) -> String {
        // A Zipf-ish vocabulary of 5,000 words: common words are common.
        let r = (self.next() % 5000) as f64;
        let rank = (r * r / 5000.0) as u64;
        format!("w{rank}")
    }
    fn vector(&mut self, dims: usize) -> Vec<f32> {
        (0..dims)
            .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }
}

/// Vectors shaped like real embeddings rather than uniform noise: each a
/// random one of 200 fixed centres plus noise (topics, and documents
/// within them). Uniform random vectors in 256 dimensions are the worst
/// case for graph indexes and unlike any embedding model's output.
struct Clusters(Vec<Vec<f32>>);

impl Clusters {
    fn new(rng: &mut Rng, dims: usize) -> Self {
        Self((0..200).map(|_| rng.vector(dims)).collect())
    }
    fn near(&self, rng: &mut Rng) -> Vec<f32> {
        let c = &self.0[(rng.next() % self.0.len() as u64) as usize];
        let noise = rng.vector(c.len());
        c.iter().zip(noise).map(|(c, e)| c + 0.35 * e).collect()
    }
}

/// The ANN graph on data shaped more like real embeddings than uniform
/// noise: `n` vectors around 200 random centres (each a centre plus
/// noise), queries drawn the same way. Prints build time, recall@10
/// against the exact scan and both search times.
#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
fn ann_on_clusters(rng: &mut Rng, n: usize, dims: usize) {
    let clusters = Clusters::new(rng, dims);
    let near = |rng: &mut Rng| clusters.near(rng);
    let raw: Vec<(i64, String, Vec<u8>)> = (0..n)
        .map(|i| {
            let v = near(rng);
            (
                i as i64,
                "doc".to_owned(),
                bulkhead_knowledge::encode_vector(&v),
            )
        })
        .collect();
    let index = bulkhead_agent::knowledge::VectorIndex::new(raw);
    let t = Instant::now();
    if !index.build_ann() {
        println!("\nANN on clustered vectors: feature ann off, not measured");
        return;
    }
    let build_s = t.elapsed().as_secs_f64();
    let probes = 200;
    let (mut found, mut exact_s, mut ann_s) = (0, 0.0, 0.0);
    for _ in 0..probes {
        let q = near(rng);
        let t = Instant::now();
        let exact: std::collections::HashSet<i64> = index
            .top_k(&q, None, 10)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        exact_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let got = index.search(&q, None, 10);
        ann_s += t.elapsed().as_secs_f64();
        found += got.iter().filter(|(id, _)| exact.contains(id)).count();
    }
    println!(
        "\nANN on {n} clustered {dims}-d vectors (200 centres + noise): built in {build_s:.1} s ({:.0} vectors/s); recall@10 {:.3}; search {:.2} ms vs exact {:.2} ms (mean of {probes}, ratio {:.2})",
        n as f64 / build_s,
        found as f64 / (probes * 10) as f64,
        ann_s * 1000.0 / probes as f64,
        exact_s * 1000.0 / probes as f64,
        ann_s / exact_s
    );
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn new_tenant(id: &str) -> anyhow::Result<NewTenant> {
    Ok(NewTenant {
        id: TenantId::parse(id)?,
        name: id.to_owned(),
        region: Region::parse("eu")?,
        isolation: Isolation::Shared,
    })
}

/// Runs the bench and prints its figures.
pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let o = parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(o))
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
async fn bench(o: Opts) -> anyhow::Result<()> {
    let root =
        std::env::temp_dir().join(format!("bulkhead-knowledge-bench-{}", std::process::id()));
    let dir = root.join("search");
    std::fs::create_dir_all(&dir)?;
    let fake = FakeProvider::try_start().await?;
    fake.set_recording(false);
    let config_text = format!(
        r#"
[[providers]]
name = "fake"
kind = "openai"
base_url = "{}/v1"
region = "eu"
credential = "env:K"
max_concurrency = 1024
[[embedding_models]]
name = "embed"
provider = "fake"
upstream = "text-embedding-3-small"
dimensions = {}
[knowledge]
embedding_model = "embed"
"#,
        fake.base_url(),
        o.dims
    );
    let config = bulkhead_core::config::load(&config_text, &|_| Some("sk-bench-key".to_owned()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = SqliteStore::open(&dir)?;
    let store_arc = Arc::new(store.clone());
    let vault = Arc::new(Vault::new(
        Arc::new(LocalKeyProvider::open(&dir)?),
        store_arc.clone(),
        Arc::new(HttpRefresher::new(
            &bulkhead_egress::Egress::public_https_only(),
        )?),
    ));
    // The configured (here: unset) quotas over in-process counters, as
    // the server runs with `limits.backend = "memory"`.
    let limiter = Arc::new(bulkhead_quota::Limiter::new(
        config.quotas.default.clone(),
        Arc::new(bulkhead_quota::MemoryBackend::new()),
        Arc::new(bulkhead_gateway::store::LedgerSpend(store_arc.clone())),
        std::time::Duration::from_secs(config.limits.reservation_ttl_s),
    ));
    let gateway = Arc::new(bulkhead_gateway::Gateway::new(
        bulkhead_gateway::Collaborators {
            catalog: Arc::new(bulkhead_gateway::Catalog::from_config(&config)),
            vault,
            store: store_arc.clone(),
            limiter,
            canaries: store.canary_scanner(),
            alarm: store_arc.clone(),
        },
    )?);
    let with_vectors = Knowledge::new(
        gateway.clone(),
        store_arc.clone(),
        HashMap::from([(Region::parse("eu")?, "embed".to_owned())]),
        bulkhead_knowledge::Limits::default(),
        config.limits.vector_cache_mb * 1024 * 1024,
        config.quotas.default.clone(),
    );
    let text_only = Knowledge::new(
        gateway,
        store_arc.clone(),
        HashMap::new(),
        bulkhead_knowledge::Limits::default(),
        config.limits.vector_cache_mb * 1024 * 1024,
        config.quotas.default.clone(),
    );
    let token = SecretString::new("bench-operator-token-0123456789".into());
    let op = OperatorAuthenticator::new(&token)
        .verify(Some(token.expose()), &RequestId::generate())
        .context("operator scope")?;

    println!(
        "bulkhead knowledge bench: {} tenants, one with {} chunks ({}-dimensional vectors), {} queries per mode; release build, in-process",
        o.tenants, o.chunks, o.dims, o.queries
    );
    let t = Instant::now();
    let mut scopes: Vec<TenantScope> = Vec::new();
    for i in 0..o.tenants {
        let tenant = store
            .create_tenant(&op, new_tenant(&format!("t{i}"))?)
            .await?;
        scopes.push(op.act_for_tenant(&tenant));
    }
    println!(
        "created {} tenants in {:.1} s",
        o.tenants,
        t.elapsed().as_secs_f64()
    );
    let big = scopes.first().context("no tenants")?.clone();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let clusters = Clusters::new(&mut rng, o.dims);

    // The big tenant: precomputed vectors, written straight to the store
    // in documents of 100 chunks.
    let t = Instant::now();
    let mut written = 0;
    let mut doc_no = 0;
    while written < o.chunks {
        let n = 100.min(o.chunks - written);
        let rows: Vec<ChunkRow> = (0..n)
            .map(|i| {
                let text: Vec<String> = (0..60).map(|_| rng.word()).collect();
                ChunkRow {
                    seq: i as u32,
                    text: text.join(" "),
                    heading: None,
                    tokens: 60,
                    embedding: Some(bulkhead_knowledge::encode_vector(&clusters.near(&mut rng))),
                }
            })
            .collect();
        let now = Timestamp::now();
        let info = DocumentInfo {
            id: format!("doc-{doc_no}"),
            collection: "kb".into(),
            external_id: Some(format!("doc-{doc_no}")),
            title: None,
            chunks: n as u32,
            bytes: 0,
            sha256: String::new(),
            embedding_model: Some("embed".into()),
            metadata: json!({"n": doc_no % 10}),
            created_at: now,
            updated_at: now,
            fingerprint: None,
        };
        let event = NewAuditEvent::new(
            AuditAction::DocumentPut,
            "collection:kb",
            Outcome::Success,
            RequestId::generate(),
        );
        let unlimited = bulkhead_agent::knowledge::StorageLimit {
            max_documents: u64::MAX,
            max_bytes: u64::MAX,
        };
        KnowledgeStore::put_document(&store, &big, &info, rows, event, unlimited).await?;
        written += n;
        doc_no += 1;
    }
    let load_s = t.elapsed().as_secs_f64();
    println!(
        "loaded the big tenant: {} chunks in {:.1} s ({:.0} chunks/s, precomputed vectors, 100 per document)",
        o.chunks,
        load_s,
        o.chunks as f64 / load_s
    );

    // Ingestion through the service (chunking + full-text index), no embedding.
    let doc: String = (0..40)
        .map(|s| {
            let para: Vec<String> = (0..120).map(|_| rng.word()).collect();
            format!("## Section {s}\n\n{}\n\n", para.join(" "))
        })
        .collect();
    let ingest_scope = scopes.get(1).unwrap_or(&big).clone();
    let t = Instant::now();
    let mut chunks = 0u64;
    for i in 0..50 {
        let (info, _) = text_only
            .ingest(
                &ingest_scope,
                bulkhead_agent::knowledge::NewDocument {
                    collection: "ingest".into(),
                    external_id: Some(format!("d{i}")),
                    title: None,
                    format: bulkhead_knowledge::DocFormat::Markdown,
                    content: doc.clone(),
                    metadata: json!({}),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chunks += u64::from(info.chunks);
    }
    let ingest_s = t.elapsed().as_secs_f64();
    println!(
        "ingestion (chunking + index + commit, no embedding): {chunks} chunks in {ingest_s:.2} s = {:.0} chunks/s",
        chunks as f64 / ingest_s
    );

    // Search on the big tenant.
    let queries: Vec<String> = (0..o.queries)
        .map(|_| (0..3).map(|_| rng.word()).collect::<Vec<_>>().join(" "))
        .collect();
    let t = Instant::now();
    let index = with_vectors
        .vector_index(&big, "kb", "embed")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "vector index of the big tenant: {} vectors read into memory in {:.0} ms (first search only)",
        index.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    if index.len() >= bulkhead_agent::knowledge::ANN_MIN_VECTORS {
        let t = Instant::now();
        let ann = index.build_ann();
        println!(
            "ANN (HNSW, hnsw_rs) graph over them: {} in {:.1} s",
            if ann {
                "built"
            } else {
                "not available (feature ann off)"
            },
            t.elapsed().as_secs_f64()
        );
        let mut found = 0;
        let probes = 100;
        for _ in 0..probes {
            let q = clusters.near(&mut rng);
            let exact: std::collections::HashSet<i64> = index
                .top_k(&q, None, 10)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            found += index
                .search(&q, None, 10)
                .iter()
                .filter(|(id, _)| exact.contains(id))
                .count();
        }
        println!(
            "recall@10 of the index against the exact scan: {:.3}",
            found as f64 / (probes * 10) as f64
        );
    } else {
        println!(
            "no ANN graph: {} vectors is below the {} from which one is built; searches are exact",
            index.len(),
            bulkhead_agent::knowledge::ANN_MIN_VECTORS
        );
    }
    if o.ann_vectors > 0 {
        ann_on_clusters(&mut rng, o.ann_vectors, o.dims);
    }
    println!("\nsearch on the big tenant, top_k 10        p50 ms    p99 ms");
    for (name, mode) in [
        ("fulltext", SearchMode::Fulltext),
        ("vector", SearchMode::Vector),
        ("hybrid", SearchMode::Hybrid),
    ] {
        let mut ms = Vec::with_capacity(queries.len());
        for q in &queries {
            let t = Instant::now();
            let r = with_vectors
                .search(&big, "kb", q, 10, None, mode)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(r);
        }
        println!(
            "  {name:<38} {:>8.2} {:>9.2}",
            pct(ms.clone(), 0.5),
            pct(ms, 0.99)
        );
    }
    // Baselines in the same run: the exact scan alone, and one embedding call.
    let qv = rng.vector(o.dims);
    let mut scan = Vec::new();
    for _ in 0..queries.len() {
        let t = Instant::now();
        std::hint::black_box(index.top_k(&qv, None, 100));
        scan.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "  baseline: exact scan of the vectors alone {:>6.2} {:>9.2}",
        pct(scan.clone(), 0.5),
        pct(scan, 0.99)
    );
    let filtered = with_vectors
        .search(
            &big,
            "kb",
            &queries[0],
            10,
            Some(&json!({"n": 3})),
            SearchMode::Hybrid,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "  (a filtered hybrid search returned {} results)",
        filtered.results.len()
    );

    // Canary scan cost.
    let scanner = store.canary_scanner();
    let text: String = (0..12_000).map(|_| rng.word() + " ").collect();
    let kib = text.len() as f64 / 1024.0;
    let owner = big.partition();
    let rounds = 200;
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(scanner.check(owner, text.as_bytes()));
    }
    let per_kib = t.elapsed().as_nanos() as f64 / rounds as f64 / kib;
    let t = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(text.find("bkc-"));
    }
    let base_kib = t.elapsed().as_nanos() as f64 / rounds as f64 / kib;
    println!(
        "\ncanary scan over {} canaries: {:.0} ns per KiB (baseline, one substring search: {:.0} ns per KiB; ratio {:.1})",
        scanner.len(),
        per_kib,
        base_kib,
        per_kib / base_kib.max(1e-9)
    );
    drop(with_vectors);
    drop(text_only);
    drop(store_arc);
    drop(store);

    // Idle tenants: resident memory of a store holding many.
    let idle_dir = root.join("idle");
    std::fs::create_dir_all(&idle_dir)?;
    let before = rss_kib();
    {
        let idle = SqliteStore::open(&idle_dir)?;
        let t = Instant::now();
        for i in 0..o.idle {
            idle.create_tenant(&op, new_tenant(&format!("i{i}"))?)
                .await?;
        }
        println!(
            "\ncreated {} idle tenants in {:.1} s",
            o.idle,
            t.elapsed().as_secs_f64()
        );
    }
    let reopened_base = rss_kib();
    let idle = SqliteStore::open(&idle_dir)?;
    let after = rss_kib();
    println!(
        "resident memory: {} KiB before, {} KiB after creating them; a fresh open of the {}-tenant store adds {} KiB ({:.1} KiB per idle tenant)",
        before.unwrap_or(0),
        reopened_base.unwrap_or(0),
        o.idle,
        after
            .unwrap_or(0)
            .saturating_sub(reopened_base.unwrap_or(0)),
        after
            .unwrap_or(0)
            .saturating_sub(reopened_base.unwrap_or(0)) as f64
            / o.idle.max(1) as f64
    );
    drop(idle);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
