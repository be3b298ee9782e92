//! Store tests: the conformance suite every backend must pass, run here
//! against the embedded SQLite store, plus SQLite-specific recovery tests,
//! and the vault on top of it (encryption, rotation, crypto-shredding).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod conformance;
mod sqlite;
mod vault;
