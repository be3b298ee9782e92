//! End-to-end tests: the real `bulkhead` binary on a real socket, driven
//! over HTTP and through its own operator CLI.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod approvals;
mod audit;
mod check;
mod deadlines;
mod demo;
mod e2e;
mod kb;
mod ledger;
mod limits;
#[cfg(feature = "nats")]
mod nats;
mod ops;
mod runs;
mod sdk_openai;
mod secrets;
mod support;
mod tidy;
mod traces;
