//! Gateway integration tests (one test binary for the crate): the service
//! below HTTP, over the in-memory stores and a fake provider.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod harness;
mod memory_store;
mod service;
mod support;
