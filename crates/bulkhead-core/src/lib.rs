//! Domain types shared by every layer of bulkhead.
//!
//! This crate does no I/O: no files, no sockets, no environment reads (the
//! configuration loader takes the environment as a function). Everything
//! here is plain, validated data, so that the layers above can rely on a
//! `TenantId` being a safe path component and a `Region` being well formed
//! without re-checking.

pub mod alert;
pub mod audit;
pub mod checkpoint;
pub mod codes;
pub mod config;
pub mod deadline;
pub mod ids;
pub mod jcs;
pub mod money;
pub mod principal;
pub mod secret;
pub mod tenant;
pub mod timestamp;

pub use deadline::Deadline;
pub use ids::{
    ApiKeyId, ApprovalId, EventId, Region, RequestId, RunId, TenantId, TenantUid, ThreadId,
};
pub use principal::{Principal, PrincipalKind, Role};
pub use secret::SecretString;
pub use tenant::{ApiKeyRecord, Isolation, Tenant, TenantStatus};
pub use timestamp::Timestamp;
