//! Integration tests of the egress guard over real loopback sockets (one
//! test binary for the crate).

#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on the unexpected, and its helpers need no docs"
)]

mod guard;
