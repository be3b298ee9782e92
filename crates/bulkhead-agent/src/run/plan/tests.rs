//! Unit tests of planning.
