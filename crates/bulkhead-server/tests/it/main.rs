//! Integration tests of the HTTP layer, in-process through the router
//! (one test binary for the crate).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod agent_attacks;
mod agents;
mod api_keys;
mod approvals;
mod audit_export;
mod bodies;
mod connections;
mod contract;
mod credentials;
mod egress;
mod fakes;
mod gateway;
mod jwks_url;
mod jwt;
mod knowledge;
mod lifecycle;
mod limits;
mod matrix;
mod metrics;
mod model_calls;
mod observability;
mod openai_surface;
mod openapi;
mod policies;
mod support;
