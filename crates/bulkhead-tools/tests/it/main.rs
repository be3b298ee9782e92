//! Integration tests of the agent tools against the SaaS stand-in (one
//! test binary for the crate).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod build;
mod canary;
mod connectors;
mod egress;
mod http;
mod support;
