//! Vault integration tests (one test binary for the crate).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[cfg(feature = "aws-kms")]
mod aws_kms;
#[cfg(feature = "test-support")]
mod memory_store;
#[cfg(feature = "test-support")]
mod support;
#[cfg(feature = "test-support")]
mod vault;
