//! Vault integration tests (one test binary for the crate).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[cfg(feature = "aws-kms")]
mod aws_kms;
