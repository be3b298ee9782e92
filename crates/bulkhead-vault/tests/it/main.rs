//! Vault integration tests (one test binary for the crate).

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

#[cfg(feature = "aws-kms")]
mod aws_kms;
