//! The agent crate's integration tests: the run loop below HTTP, over the
//! in-memory stores (`test-support`), a fake model provider and a SaaS
//! stand-in speaking real HTTP; and the in-memory stores' own semantics.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod memory_store;
mod runs;
mod support;
