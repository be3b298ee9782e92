//! Integration tests of the agent tools against the SaaS stand-in (one
//! test binary for the crate).

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod build;
mod canary;
mod connectors;
mod egress;
mod http;
mod support;
