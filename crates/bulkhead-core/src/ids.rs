//! Validated identifiers.
//!
//! Every identifier that can reach a file path, a SQL row or a log line is
//! parsed here once and carried as its own type afterwards. Tenant ids double
//! as directory-name material nowhere: partitions are named by the tenant's
//! internal [`TenantUid`], but the id grammar is strict anyway so that a
//! future mistake cannot turn it into a path traversal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use uuid::Uuid;

/// Why an identifier was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// The tenant id does not follow the grammar.
    #[error(
        "tenant id must be 1-63 characters of lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    Tenant,
    /// The region does not follow the grammar.
    #[error("region must be 1-32 characters of lowercase letters, digits and '-'")]
    Region,
    /// A typed UUID could not be parsed.
    #[error("not a valid id")]
    Uuid,
    /// A request id was not well formed.
    #[error("request id must be 1-128 characters of letters, digits, '-', '_', '.' or ':'")]
    RequestId,
}

fn is_label(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $check:expr, $err:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the identifier.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> bool = $check;
                if check(s) { Ok(Self(s.to_owned())) } else { Err($err) }
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A tenant's public id: lowercase letters, digits and `-`, 1–63
    /// characters, no leading or trailing `-` (a DNS label, so it also fits
    /// Kubernetes names, should tenants one day get their own deployments).
    TenantId,
    |s| is_label(s, 63) && !s.starts_with('-') && !s.ends_with('-'),
    IdError::Tenant
);

string_id!(
    /// A residency region tag such as `eu` or `us-east`.
    Region,
    |s| is_label(s, 32),
    IdError::Region
);

string_id!(
    /// The id of one HTTP request: accepted from `X-Request-ID` when well
    /// formed, generated otherwise. Restricted to characters that are safe
    /// in headers, logs and JSON without escaping.
    RequestId,
    |s| !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')),
    IdError::RequestId
);

impl Region {
    /// The region of the embedded default, `local`.
    pub fn local() -> Self {
        Self("local".to_owned())
    }
}

impl RequestId {
    /// A fresh, time-ordered request id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7().to_string())
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered (UUIDv7) id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the textual form.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError::Uuid)
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(
    /// The internal, never-reused identity of one incarnation of a tenant.
    /// Partitions are named by it, so a tenant deleted and re-created with
    /// the same public id starts from an empty partition.
    TenantUid,
    "tenant-uid:"
);
uuid_id!(
    /// The id of an API key (not the key itself).
    ApiKeyId,
    "api-key:"
);
uuid_id!(
    /// The id of one audit event.
    EventId,
    "event:"
);
uuid_id!(
    /// The id of one agent run, minted by the server.
    RunId,
    "run:"
);
uuid_id!(
    /// The id of one conversation thread, minted by the server.
    ThreadId,
    "thread:"
);
uuid_id!(
    /// The id of one approval request (a paused tool call), minted by the
    /// server.
    ApprovalId,
    "approval:"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_id_grammar() {
        for ok in ["a", "acme", "acme-corp", "t1", &"a".repeat(63)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Acme",
            "a_b",
            "a.b",
            "../x",
            "a/b",
            "é",
            " a",
            &"a".repeat(64),
        ] {
            assert_eq!(
                TenantId::parse(bad),
                Err(IdError::Tenant),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn request_id_grammar() {
        assert!(RequestId::parse("abc-123_x.y:z").is_ok());
        for bad in ["", "a b", "a\nb", "ä", &"a".repeat(129)] {
            assert!(RequestId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RequestId::parse(RequestId::generate().as_str()).is_ok());
    }

    #[test]
    fn uuid_ids_round_trip() {
        let id = ApiKeyId::generate();
        assert_eq!(ApiKeyId::parse(&id.to_string()), Ok(id));
        assert_eq!(ApiKeyId::parse("nope"), Err(IdError::Uuid));
    }
}
