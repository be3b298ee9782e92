//! Per-tenant limits, so that no tenant exhausts shared capacity or
//! overspends its budget.
//!
//! - [`backend`]: the atomic counter operations every limit is built from
//!   (fixed windows, budgets with expiring reservations, leases), and the
//!   in-process implementation. A Redis implementation (the store crate,
//!   feature `redis`) lets several processes enforce one limit together.
//! - [`limiter`]: the policy on top — which counter each tenant action
//!   touches, the configured defaults merged with the tenant's overrides,
//!   reserve-then-settle for model calls, and the refusals with their
//!   `Retry-After`.
//! - [`fair`]: weighted fair admission to saturated capacity.
//!
//! No I/O happens here; backends do it.

pub mod backend;
pub mod fair;
pub mod limiter;

pub use backend::{LimitBackend, LimitError, MemoryBackend};
pub use fair::FairGate;
pub use limiter::{Limiter, Refusal, Reservation, RunLease, SpendLedger};
