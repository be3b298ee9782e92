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

/// An authenticated actor. Its `id` is namespaced by how it authenticated —
/// `key:<uuid>` for API keys, `jwt:<iss>:<sub>` for tokens, `operator` for
/// the operator — so no token can claim another kind's name (a JWT whose
/// `sub` is `operator` is `jwt:<iss>:operator`); it is what audit events
/// and policies see as the principal.
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

    /// The principal of an API key.
    pub fn api_key(key_id: impl std::fmt::Display, roles: Vec<Role>) -> Self {
        Self::new(format!("key:{key_id}"), PrincipalKind::ApiKey, roles)
    }

    /// The principal of a verified JWT: its issuer and subject.
    pub fn jwt(issuer: &str, subject: &str, roles: Vec<Role>) -> Self {
        Self::new(format!("jwt:{issuer}:{subject}"), PrincipalKind::Jwt, roles)
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

    #[test]
    fn ids_are_namespaced_by_kind() {
        assert_eq!(Principal::api_key("k1", vec![]).id(), "key:k1");
        let spoof = Principal::jwt("https://idp.test", "operator", vec![]);
        assert_eq!(spoof.id(), "jwt:https://idp.test:operator");
        let spoof = Principal::jwt("https://idp.test", "key:k1", vec![]);
        assert_eq!(spoof.id(), "jwt:https://idp.test:key:k1");
    }
}
