//! Integration tests of the fake model provider, driven over real HTTP with
//! reqwest (one test binary for the crate).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod anthropic;
mod failures;
mod openai;
mod recording;
mod saas;
mod support;
