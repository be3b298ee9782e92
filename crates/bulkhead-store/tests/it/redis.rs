//! The Redis limit backend against a real server on 127.0.0.1:6379: the
//! backend conformance checks, then two backends (two connections, as two
//! processes would have) deciding on one counter and one budget at once.
//!
//! `scripts/services.sh` starts Redis (`.ci/run` calls it). Without a
//! server the tests fail when `CI=true` and return early with a note
//! otherwise. Each run uses keys under a fresh prefix, so runs in parallel
//! or left over from earlier ones never meet; every key expires by itself.

use std::sync::Arc;

use bulkhead_quota::LimitBackend;
use bulkhead_store::redis_limits::RedisBackend;
use tokio::task::JoinSet;

const URL: &str = "redis://127.0.0.1:6379";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true")
}

/// A backend on the local server, or `None` (with a note) outside CI when
/// there is none.
async fn backend() -> Option<RedisBackend> {
    match RedisBackend::connect(URL).await {
        Ok(b) => Some(b),
        Err(e) => {
            let msg = format!(
                "Redis is not answering on 127.0.0.1:6379 ({e}); start it with `bash scripts/services.sh`"
            );
            assert!(!in_ci(), "{msg}");
            eprintln!("skipping the Redis limit tests: {msg}");
            None
        }
    }
}

fn prefix() -> String {
    format!("bh-test:{}", uuid::Uuid::now_v7())
}

#[tokio::test]
async fn redis_backend_conforms() {
    let Some(b) = backend().await else { return };
    assert_eq!(b.name(), "redis");
    bulkhead_quota::backend::conformance::check(&b, &prefix()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_window() {
    let Some(a) = backend().await else { return };
    let Some(b) = backend().await else { return };
    let key = format!("{}:w", prefix());
    let mut calls = JoinSet::new();
    for backend in [Arc::new(a), Arc::new(b)] {
        for _ in 0..200 {
            let (backend, key) = (backend.clone(), key.clone());
            calls.spawn(async move { backend.add_within(&key, 1, 150, 60_000).await });
        }
    }
    let mut admitted = 0;
    while let Some(r) = calls.join_next().await {
        admitted += usize::from(r.unwrap().unwrap());
    }
    assert_eq!(
        admitted, 150,
        "400 concurrent requests against a limit of 150"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_budget() {
    let Some(a) = backend().await else { return };
    let Some(b) = backend().await else { return };
    let p = prefix();
    let day = format!("{p}:d");
    let month = format!("{p}:m");
    a.seed(&day, 100, 60_000).await.unwrap();
    b.seed(&month, 0, 60_000).await.unwrap();
    let budgets = vec![(day.clone(), 1_000), (month.clone(), 10_000)];
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut calls = JoinSet::new();
    for (n, backend) in [a.clone(), b.clone()].into_iter().enumerate() {
        for i in 0..200 {
            let (backend, budgets) = (backend.clone(), budgets.clone());
            calls.spawn(async move {
                let id = format!("{n}-{i}");
                let r = backend
                    .reserve(&budgets, &id, 7, 1_000, 600_000)
                    .await
                    .unwrap();
                r.ok.then_some((backend, id))
            });
        }
    }
    let mut held = Vec::new();
    while let Some(r) = calls.join_next().await {
        held.extend(r.unwrap());
    }
    // 100 spent + 7 per reservation ≤ 1000: at most 128 fit, and since
    // each decision sees every earlier one, exactly that many are taken.
    assert_eq!(held.len(), 128, "reservations admitted");
    assert!(100 + 7 * held.len() as u64 <= 1_000);
    let refused = a
        .reserve(&budgets, "late", 7, 1_000, 600_000)
        .await
        .unwrap();
    assert!(!refused.ok);
    assert_eq!(refused.spent, vec![100, 0]);

    // Each settles for 5 through the process that reserved it; spend adds
    // up exactly, and the freed room admits new reservations.
    let keys = vec![day.clone(), month.clone()];
    let mut settles = JoinSet::new();
    for (backend, id) in held {
        let keys = keys.clone();
        settles.spawn(async move { backend.settle(&keys, &id, 5, 60_000).await });
    }
    while let Some(r) = settles.join_next().await {
        r.unwrap().unwrap();
    }
    let after = b.settle(&keys, "none", 0, 60_000).await.unwrap();
    assert_eq!(after, vec![100 + 5 * 128, 5 * 128]);
    let r = b
        .reserve(&budgets, "next", 7, 1_000, 600_000)
        .await
        .unwrap();
    assert!(r.ok, "settled below the estimates: room again");
}

#[tokio::test]
async fn errors_name_the_server_without_its_password() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let e = RedisBackend::connect("redis://app:hunter2@127.0.0.1:1/0")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("redis://app:***@127.0.0.1:1/0"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = RedisBackend::connect("hunter2")
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}
