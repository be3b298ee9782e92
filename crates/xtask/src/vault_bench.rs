//! `cargo xtask bench-vault`: the vault's cost, in-process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bulkhead_auth::{Authenticator, JwtVerifier, OperatorAuthenticator};
use bulkhead_core::{Isolation, Region, RequestId, Role, SecretString, TenantId};
use bulkhead_store::sqlite::SqliteStore;
use bulkhead_store::{ControlStore, NewApiKeyRecord, NewTenant};
use bulkhead_vault::Vault;
use bulkhead_vault::aead::{DataKey, associated_data};
use bulkhead_vault::credential::{ConnectionName, CredentialWire};
use bulkhead_vault::kms::{EncryptionContext, KeyProvider, LocalKeyProvider};
use bulkhead_vault::oauth::HttpRefresher;
use bulkhead_vault::store::{CredScope, VaultStore};

struct Opts {
    tenants: usize,
    iterations: usize,
}

fn parse(args: Vec<String>) -> anyhow::Result<Opts> {
    let mut o = Opts {
        tenants: 10_000,
        iterations: 20_000,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |n: &str| it.next().with_context(|| format!("{n} needs a value"));
        match a.as_str() {
            "--tenants" => o.tenants = value("--tenants")?.parse().context("--tenants")?,
            "--iterations" => {
                o.iterations = value("--iterations")?.parse().context("--iterations")?
            }
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench-vault [--tenants N] [--iterations N]"
            ),
        }
    }
    Ok(o)
}

fn percentiles(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    (p(0.50), p(0.99))
}

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let opts = parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(bench(opts))
}

#[expect(clippy::print_stdout, reason = "a bench prints its figures")]
async fn bench(opts: Opts) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("bulkhead-vault-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = SqliteStore::open(&dir)?;
    let kms = Arc::new(LocalKeyProvider::open(&dir)?);
    let vault = Vault::new(
        kms.clone(),
        Arc::new(store.clone()),
        Arc::new(HttpRefresher::new(
            &bulkhead_egress::Egress::public_https_only(),
        )?),
    );
    let token = SecretString::new("bench-operator-token-0123456789".into());
    let op = OperatorAuthenticator::new(&token)
        .verify(Some(token.expose()), &RequestId::generate())
        .context("operator scope")?;

    // One tenant with one credential, reached the way requests reach it.
    let new_tenant = |id: String| NewTenant {
        id: TenantId::parse(&id).unwrap_or_else(|_| unreachable!()),
        name: id,
        region: Region::local(),
        isolation: Isolation::Shared,
    };
    store.create_tenant(&op, new_tenant("bench".into())).await?;
    let key = bulkhead_auth::apikey::generate()?;
    store
        .create_api_key(
            &op,
            &TenantId::parse("bench")?,
            NewApiKeyRecord {
                id: key.id,
                digest: key.digest,
                name: None,
                roles: vec![Role::Admin],
                expires_at: None,
            },
        )
        .await?;
    let auth = Authenticator::new(JwtVerifier::default(), Arc::new(store.clone()));
    let scope = auth
        .authenticate(Some(key.plaintext.expose()), None, &RequestId::generate())
        .await
        .map_err(|e| anyhow::anyhow!("{:?}", e.failure))?;
    let conn = ConnectionName::parse("slack")?;
    let secret = serde_json::from_value::<CredentialWire>(
        serde_json::json!({"kind": "api_key", "secret": "xoxb-0123456789-abcdefghij"}),
    )?
    .into_secret()
    .map_err(|e| anyhow::anyhow!(e.0))?;
    vault.put(CredScope::Tenant(&scope), &conn, &secret).await?;
    let row = store
        .credential(CredScope::Tenant(&scope), &conn)
        .await?
        .context("credential row")?;

    // Baseline: the bare AES-256-GCM open of a same-sized ciphertext.
    let raw_key = DataKey::generate()?;
    let aad = associated_data("bench", &[b"x"]);
    let sealed = raw_key.seal(&aad, &secret.to_plaintext())?;
    let mut base = Vec::with_capacity(opts.iterations);
    for _ in 0..opts.iterations {
        let t = Instant::now();
        std::hint::black_box(raw_key.open(&aad, &sealed)?);
        base.push(t.elapsed().as_nanos() as u64);
    }
    let mut cached = Vec::with_capacity(opts.iterations);
    vault.decrypt(CredScope::Tenant(&scope), &row).await?;
    for _ in 0..opts.iterations {
        let t = Instant::now();
        std::hint::black_box(vault.decrypt(CredScope::Tenant(&scope), &row).await?);
        cached.push(t.elapsed().as_nanos() as u64);
    }
    let first_n = (opts.iterations / 10).max(100);
    let mut first = Vec::with_capacity(first_n);
    for _ in 0..first_n {
        vault.clear_cache();
        let t = Instant::now();
        std::hint::black_box(vault.decrypt(CredScope::Tenant(&scope), &row).await?);
        first.push(t.elapsed().as_nanos() as u64);
    }
    let (b50, b99) = percentiles(base);
    let (c50, c99) = percentiles(cached);
    let (f50, f99) = percentiles(first);

    // Re-wrap: many tenants, each with its data key.
    let setup = Instant::now();
    for i in 0..opts.tenants {
        let t = store
            .create_tenant(&op, new_tenant(format!("t{i}")))
            .await?;
        vault.ensure_tenant_key(&op.act_for_tenant(&t)).await?;
    }
    let setup = setup.elapsed();
    let keys = opts.tenants + 1;
    // Baseline: unwrap and wrap in memory only, for the same number of keys.
    let dek = DataKey::generate()?;
    let ctx = EncryptionContext::tenant("bench", 1);
    let wrapped = kms.wrap(&dek, &ctx).await?;
    let t = Instant::now();
    for _ in 0..keys {
        let k = kms.unwrap(&wrapped, &ctx).await?;
        std::hint::black_box(kms.wrap(&k, &ctx).await?);
    }
    let crypto_only = keys as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = vault.rotate_kek(&op).await?;
    let elapsed = t.elapsed();
    if report.rewrapped != keys as u64 {
        bail!("re-wrapped {} keys, expected {keys}", report.rewrapped);
    }
    let rate = keys as f64 / elapsed.as_secs_f64();

    println!(
        "bulkhead vault bench: release build, embedded store (SQLite, synchronous=FULL), local key provider"
    );
    println!();
    println!(
        "{:<46} {:>10} {:>10} {:>8}",
        "decrypt one credential", "p50 µs", "p99 µs", "ratio"
    );
    println!(
        "{:<46} {:>10.2} {:>10.2} {:>8.2}",
        "AES-256-GCM open only (baseline)", b50, b99, 1.0
    );
    println!(
        "{:<46} {:>10.2} {:>10.2} {:>8.2}",
        "vault decrypt, cached data key",
        c50,
        c99,
        c50 / b50
    );
    println!(
        "{:<46} {:>10.2} {:>10.2} {:>8.2}",
        "vault decrypt, first use (read + unwrap)",
        f50,
        f99,
        f50 / b50
    );
    println!();
    println!(
        "re-wrap {keys} data keys under a new KEK: {:.2} s, {:.0} keys/s ({:.0} keys/s crypto only, ratio {:.2}); setup {:.1} s",
        elapsed.as_secs_f64(),
        rate,
        crypto_only,
        rate / crypto_only,
        setup.as_secs_f64()
    );
    drop(vault);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = Duration::ZERO;
    Ok(())
}
