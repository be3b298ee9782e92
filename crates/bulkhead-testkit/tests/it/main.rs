//! Integration tests of the fake model provider, driven over real HTTP with
//! reqwest (one test binary for the crate).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod anthropic;
mod failures;
mod openai;
mod recording;
mod saas;
mod support;
