//! Vault integration tests (one test binary for the crate).

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

#[cfg(feature = "aws-kms")]
mod aws_kms;
#[cfg(feature = "test-support")]
mod memory_store;
#[cfg(feature = "test-support")]
mod support;
#[cfg(feature = "test-support")]
mod vault;
