//! Who is acting: principals and their roles within a tenant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role inside one tenant. The policy engine (a later layer) decides what
/// each role may do; here roles are only a closed, validated vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages the tenant: credentials, documents, settings, policies.
    Admin,
    /// Uses agents and models.
    Member,
    /// Approves or denies risky agent actions.
    Approver,
    /// Reads and never changes anything.
    Viewer,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Member, Role::Approver, Role::Viewer];

    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Approver => "approver",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; roles are admin, member, approver, viewer")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A bulkhead API key.
    ApiKey,
    /// A JWT from a configured issuer.
    Jwt,
    /// The platform operator (operator token or an operator CLI action).
    Operator,
}

/// An authenticated actor. Its `id` is `key:<uuid>` for API keys, the JWT
/// `sub` for tokens and `operator` for the operator; it is what audit events
/// record as the principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    id: String,
    kind: PrincipalKind,
    roles: Vec<Role>,
}

impl Principal {
    /// Builds a principal; roles are sorted and de-duplicated.
    pub fn new(id: impl Into<String>, kind: PrincipalKind, mut roles: Vec<Role>) -> Self {
        roles.sort();
        roles.dedup();
        Self {
            id: id.into(),
            kind,
            roles,
        }
    }

    /// The principal's id as recorded in audit events.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How the principal authenticated.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The principal's roles in its tenant.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_dedupe() {
        assert_eq!("approver".parse::<Role>(), Ok(Role::Approver));
        assert!("root".parse::<Role>().is_err());
        let p = Principal::new(
            "u",
            PrincipalKind::Jwt,
            vec![Role::Viewer, Role::Admin, Role::Viewer],
        );
        assert_eq!(p.roles(), &[Role::Admin, Role::Viewer]);
        assert!(p.has_role(Role::Admin) && !p.has_role(Role::Member));
    }
}
