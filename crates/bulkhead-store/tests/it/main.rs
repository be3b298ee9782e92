//! Store tests: the conformance suite every backend must pass, run here
//! against the embedded SQLite store, plus SQLite-specific recovery tests,
//! the vault on top of it (encryption, rotation, crypto-shredding), and
//! with the feature `redis` the limit counters in Redis, and the event bus
//! outbox.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod conformance;
mod outbox;
#[cfg(feature = "redis")]
mod redis;
mod sqlite;
mod vault;
