//! Tenant and API-key records as the control plane knows them.

use serde::{Deserialize, Serialize};

use crate::{ApiKeyId, Region, Role, TenantId, TenantUid, Timestamp};

/// Whether a tenant may use the tenant plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    /// Requests are served.
    Active,
    /// Every tenant-plane request is refused with 403; data is kept.
    Suspended,
}

/// How a tenant's agents are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// In the shared process, logically partitioned.
    Shared,
    /// In a dedicated worker process holding only this tenant's keys.
    /// Not available yet: the API refuses to set it (there is no worker
    /// supervisor), and the store still reads it from older rows.
    Dedicated,
}

impl TenantStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
}

impl Isolation {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Shared => "shared",
            Isolation::Dedicated => "dedicated",
        }
    }
}

/// A tenant as stored in the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Public id, chosen by the operator.
    pub id: TenantId,
    /// Internal id of this incarnation; names the partition.
    #[serde(skip)]
    pub uid: TenantUid,
    /// Display name.
    pub name: String,
    /// Residency region.
    pub region: Region,
    /// Shared or dedicated execution.
    pub isolation: Isolation,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// The tenant's own limits, over the configured defaults.
    pub quotas: crate::config::QuotaValues,
}

/// A change to a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPatch {
    /// New display name.
    pub name: Option<String>,
    /// New region.
    pub region: Option<Region>,
    /// New isolation mode.
    pub isolation: Option<Isolation>,
    /// New status.
    pub status: Option<TenantStatus>,
    /// The tenant's whole new quota overrides (merged by the caller).
    pub quotas: Option<crate::config::QuotaValues>,
}

impl TenantPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.region.is_none()
            && self.isolation.is_none()
            && self.status.is_none()
            && self.quotas.is_none()
    }
}

/// Longest accepted display name; long enough for legal entity names, short
/// enough to keep audit lines and consoles readable.
pub const MAX_TENANT_NAME: usize = 200;

/// Validates a display name: non-empty after trimming, bounded, no control
/// characters (they would corrupt logs and consoles).
pub fn validate_tenant_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() {
        return Err("name must not be empty");
    }
    if name.chars().count() > MAX_TENANT_NAME {
        return Err("name must be at most 200 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters");
    }
    Ok(())
}

/// An API key's stored metadata. The key itself is never stored; only its
/// SHA-256 digest is, in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// Key id (also the principal id suffix).
    pub id: ApiKeyId,
    /// The owning tenant.
    pub tenant: TenantId,
    /// Optional label.
    pub name: Option<String>,
    /// Roles granted to requests made with the key.
    pub roles: Vec<Role>,
    /// Creation time.
    pub created_at: Timestamp,
    /// After this instant the key is refused.
    pub expires_at: Option<Timestamp>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl ApiKeyRecord {
    /// Whether the key may authenticate at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_tenant_name("Acme Corp").is_ok());
        assert!(validate_tenant_name("  ").is_err());
        assert!(validate_tenant_name("a\u{7}b").is_err());
        assert!(validate_tenant_name(&"x".repeat(201)).is_err());
    }
}
