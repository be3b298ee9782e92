//! Authentication, and the capabilities it alone can create.
//!
//! A [`TenantScope`] is the proof that a request was authenticated for one
//! tenant. Its constructor is private to this crate: the only ways to get
//! one are [`Authenticator::authenticate`] (a verified API key or JWT) and
//! [`OperatorScope::act_for_tenant`] (an operator action, which the caller
//! audits). Every store and domain function below the HTTP layer takes a
//! scope instead of a tenant id string, so code that never authenticated
//! cannot name a tenant at all.
//!
//! This crate does no I/O of its own: tenants and keys are looked up through
//! the [`Directory`] trait, which the store implements, key files are
//! read through a function the caller passes in, and JWKS documents at a
//! `jwks_url` are fetched by the caller ([`jwks::JwksRefresh`]).

pub mod apikey;
pub mod authenticator;
pub mod jwks;
pub mod jwt;
pub mod memory;
pub mod observe;
pub mod operator;
pub mod scope;

pub use apikey::{ApiKeyDigest, NewApiKey};
pub use authenticator::{AuthError, AuthFailure, Authenticator, Directory, DirectoryError};
pub use jwks::{JwksRefresh, RemoteJwks};
pub use jwt::{JwtSetupError, JwtVerifier};
pub use memory::MemoryDirectory;
pub use operator::{OperatorAuthenticator, TokenDigest};
pub use scope::{FailureAttribution, OperatorScope, TenantScope};
