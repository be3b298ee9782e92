//! Gateway integration tests (one test binary for the crate): the service
//! below HTTP, over the in-memory stores and a fake provider.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod memory_store;
mod support;
