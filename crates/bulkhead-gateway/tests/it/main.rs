//! Gateway integration tests (one test binary for the crate): the service
//! below HTTP, over the in-memory stores and a fake provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod harness;
mod memory_store;
mod service;
mod support;
