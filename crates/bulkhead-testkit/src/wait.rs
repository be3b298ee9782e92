//! Waiting for a condition in tests: check it, and again every few
//! milliseconds, until it holds; fail past a bound that only keeps a broken
//! build from hanging.
//!
//! This is the one way tests wait for something another task or process
//! does (the tidy test forbids sleeping anywhere else in test code): the
//! wait ends as soon as the condition holds, so a test never depends on a
//! guess of how long something takes.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `cond` resolves to `true`; panics naming `what` once `bound`
/// has passed.
pub async fn eventually<F, Fut>(what: &str, bound: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a blocking test: waits until `cond` returns `true`.
pub fn wait_until(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}
