//! Integration tests of the egress guard over real loopback sockets (one
//! test binary for the crate).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod guard;
