//! Credential kinds, their secret material, and their metadata.

use std::fmt;

use bulkhead_core::{SecretString, Timestamp};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// A vault connection name: `[a-z0-9_-]{1,64}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionName(String);

/// An invalid connection name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection names are 1-64 characters of lowercase letters, digits, '_' and '-'")]
pub struct BadConnectionName;

impl ConnectionName {
    /// Validates a name.
    pub fn parse(s: &str) -> Result<Self, BadConnectionName> {
        if bulkhead_core::config::is_connection_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadConnectionName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ConnectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionName({})", self.0)
    }
}

/// The kinds of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A static API key.
    ApiKey,
    /// A static bearer token.
    Bearer,
    /// HTTP basic credentials.
    Basic,
    /// OAuth2 tokens, refreshed by the vault.
    Oauth2,
}

impl CredentialKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Bearer => "bearer",
            CredentialKind::Basic => "basic",
            CredentialKind::Oauth2 => "oauth2",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::ApiKey, Self::Bearer, Self::Basic, Self::Oauth2]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Whether a credential can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialStatus {
    /// Usable.
    Active,
    /// An OAuth2 refresh failed; a tenant admin must store new tokens.
    NeedsReauth,
}

impl CredentialStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialStatus::Active => "active",
            CredentialStatus::NeedsReauth => "needs_reauth",
        }
    }
}

/// OAuth2 material.
#[derive(Clone)]
pub struct OAuth2Secret {
    /// Current access token.
    pub access_token: SecretString,
    /// Refresh token, if the provider issued one.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires.
    pub expires_at: Option<Timestamp>,
    /// Token endpoint (http or https).
    pub token_url: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub client_secret: Option<SecretString>,
    /// Scope to request on refresh.
    pub scope: Option<String>,
}

/// The secret material of a credential. Never `Display`; `Debug` shows
/// only the kind.
#[derive(Clone)]
pub enum CredentialSecret {
    /// A static API key.
    ApiKey(SecretString),
    /// A static bearer token.
    Bearer(SecretString),
    /// HTTP basic.
    Basic {
        /// User name (not secret, but kept encrypted with the password).
        username: String,
        /// Password.
        password: SecretString,
    },
    /// OAuth2.
    Oauth2(OAuth2Secret),
}

impl fmt::Debug for CredentialSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialSecret({}, [redacted])", self.kind().as_str())
    }
}

/// Largest accepted secret value: far above any real token or key, small
/// enough that a mistaken upload (a file, a document) is refused.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Why a credential was refused; the message never includes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCredential(pub String);

/// The wire form, shared by the API body and the encrypted plaintext.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CredentialWire {
    /// `{"kind": "api_key", "secret": "..."}`
    ApiKey {
        /// The key.
        secret: String,
    },
    /// `{"kind": "bearer", "secret": "..."}`
    Bearer {
        /// The token.
        secret: String,
    },
    /// `{"kind": "basic", "username": "...", "password": "..."}`
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `{"kind": "oauth2", "access_token": ..., "refresh_token": ..., ...}`
    Oauth2 {
        /// Access token.
        access_token: String,
        /// Refresh token.
        #[serde(default)]
        refresh_token: Option<String>,
        /// Expiry of the access token (RFC 3339).
        #[serde(default)]
        expires_at: Option<Timestamp>,
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        #[serde(default)]
        client_secret: Option<String>,
        /// Scope.
        #[serde(default)]
        scope: Option<String>,
    },
}

impl Drop for CredentialWire {
    fn drop(&mut self) {
        match self {
            CredentialWire::ApiKey { secret } | CredentialWire::Bearer { secret } => {
                secret.zeroize()
            }
            CredentialWire::Basic { password, .. } => password.zeroize(),
            CredentialWire::Oauth2 {
                access_token,
                refresh_token,
                client_secret,
                ..
            } => {
                access_token.zeroize();
                refresh_token.zeroize();
                client_secret.zeroize();
            }
        }
    }
}

fn secret(value: &str, field: &str) -> Result<SecretString, InvalidCredential> {
    if value.is_empty() {
        return Err(InvalidCredential(format!("{field} must not be empty")));
    }
    if value.len() > MAX_SECRET_BYTES {
        return Err(InvalidCredential(format!("{field} is larger than 64 KiB")));
    }
    Ok(SecretString::new(value.to_owned()))
}

fn plain(value: &str, field: &str, max: usize) -> Result<String, InvalidCredential> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(InvalidCredential(format!(
            "{field} must be 1-{max} bytes without control characters"
        )));
    }
    Ok(value.to_owned())
}

impl CredentialWire {
    /// Validates and converts to secret material.
    pub fn into_secret(self) -> Result<CredentialSecret, InvalidCredential> {
        Ok(match &self {
            CredentialWire::ApiKey { secret: s } => CredentialSecret::ApiKey(secret(s, "secret")?),
            CredentialWire::Bearer { secret: s } => CredentialSecret::Bearer(secret(s, "secret")?),
            CredentialWire::Basic { username, password } => CredentialSecret::Basic {
                username: plain(username, "username", 1024)?,
                password: secret(password, "password")?,
            },
            CredentialWire::Oauth2 {
                access_token,
                refresh_token,
                expires_at,
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                if !(token_url.starts_with("https://") || token_url.starts_with("http://"))
                    || token_url.len() > 2048
                    || token_url
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(InvalidCredential(
                        "token_url must be an http:// or https:// URL".into(),
                    ));
                }
                CredentialSecret::Oauth2(OAuth2Secret {
                    access_token: secret(access_token, "access_token")?,
                    refresh_token: refresh_token
                        .as_deref()
                        .map(|r| secret(r, "refresh_token"))
                        .transpose()?,
                    expires_at: *expires_at,
                    token_url: token_url.clone(),
                    client_id: plain(client_id, "client_id", 1024)?,
                    client_secret: client_secret
                        .as_deref()
                        .map(|c| secret(c, "client_secret"))
                        .transpose()?,
                    scope: scope
                        .as_deref()
                        .map(|s| plain(s, "scope", 4096))
                        .transpose()?,
                })
            }
        })
    }
}

impl CredentialSecret {
    /// The kind.
    pub fn kind(&self) -> CredentialKind {
        match self {
            CredentialSecret::ApiKey(_) => CredentialKind::ApiKey,
            CredentialSecret::Bearer(_) => CredentialKind::Bearer,
            CredentialSecret::Basic { .. } => CredentialKind::Basic,
            CredentialSecret::Oauth2(_) => CredentialKind::Oauth2,
        }
    }

    /// Every secret value it holds (for redaction).
    pub fn secret_values(&self) -> Vec<&str> {
        match self {
            CredentialSecret::ApiKey(s) | CredentialSecret::Bearer(s) => vec![s.expose()],
            CredentialSecret::Basic { password, .. } => vec![password.expose()],
            CredentialSecret::Oauth2(o) => [
                Some(&o.access_token),
                o.refresh_token.as_ref(),
                o.client_secret.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(SecretString::expose)
            .collect(),
        }
    }

    /// The plaintext that gets encrypted (zeroed on drop).
    pub fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        let wire = match self {
            CredentialSecret::ApiKey(s) => CredentialWire::ApiKey {
                secret: s.expose().to_owned(),
            },
            CredentialSecret::Bearer(s) => CredentialWire::Bearer {
                secret: s.expose().to_owned(),
            },
            CredentialSecret::Basic { username, password } => CredentialWire::Basic {
                username: username.clone(),
                password: password.expose().to_owned(),
            },
            CredentialSecret::Oauth2(o) => CredentialWire::Oauth2 {
                access_token: o.access_token.expose().to_owned(),
                refresh_token: o.refresh_token.as_ref().map(|s| s.expose().to_owned()),
                expires_at: o.expires_at,
                token_url: o.token_url.clone(),
                client_id: o.client_id.clone(),
                client_secret: o.client_secret.as_ref().map(|s| s.expose().to_owned()),
                scope: o.scope.clone(),
            },
        };
        // Serialising owned strings cannot fail.
        Zeroizing::new(serde_json::to_vec(&wire).unwrap_or_default())
    }

    /// Parses decrypted plaintext.
    pub fn from_plaintext(bytes: &[u8]) -> Option<Self> {
        let wire: CredentialWire = serde_json::from_slice(bytes).ok()?;
        wire.into_secret().ok()
    }

    /// Expiry of an OAuth2 access token.
    pub fn expires_at(&self) -> Option<Timestamp> {
        match self {
            CredentialSecret::Oauth2(o) => o.expires_at,
            _ => None,
        }
    }
}

/// What the API shows about a credential: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialMeta {
    /// Connection name.
    pub connection: String,
    /// Kind.
    pub kind: CredentialKind,
    /// Increases with every write (and OAuth2 refresh).
    pub version: u64,
    /// Usable or needing re-authorisation.
    pub status: CredentialStatus,
    /// First stored.
    pub created_at: Timestamp,
    /// Last written.
    pub updated_at: Timestamp,
    /// Last handed to an outbound request.
    pub last_used_at: Option<Timestamp>,
    /// OAuth2 access-token expiry.
    pub expires_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_plaintext() {
        let inputs = [
            serde_json::json!({"kind": "api_key", "secret": "k1"}),
            serde_json::json!({"kind": "bearer", "secret": "t1"}),
            serde_json::json!({"kind": "basic", "username": "u", "password": "p"}),
            serde_json::json!({"kind": "oauth2", "access_token": "a", "refresh_token": "r",
                "expires_at": "2030-01-01T00:00:00Z", "token_url": "https://idp/token",
                "client_id": "c", "client_secret": "s", "scope": "chat:write"}),
        ];
        for input in inputs {
            let wire: CredentialWire = serde_json::from_value(input.clone()).unwrap();
            let secret = wire.into_secret().unwrap();
            let back = CredentialSecret::from_plaintext(&secret.to_plaintext()).unwrap();
            assert_eq!(back.kind(), secret.kind());
            assert_eq!(back.secret_values(), secret.secret_values());
            assert!(!format!("{back:?}").contains("k1"));
        }
    }

    #[test]
    fn bad_credentials_are_refused() {
        for bad in [
            serde_json::json!({"kind": "ssh_key", "secret": "x"}),
            serde_json::json!({"kind": "api_key"}),
            serde_json::json!({"kind": "api_key", "secret": "x", "extra": 1}),
            serde_json::json!({"secret": "x"}),
        ] {
            assert!(
                serde_json::from_value::<CredentialWire>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        for bad in [
            serde_json::json!({"kind": "api_key", "secret": ""}),
            serde_json::json!({"kind": "api_key", "secret": "x".repeat(MAX_SECRET_BYTES + 1)}),
            serde_json::json!({"kind": "oauth2", "access_token": "a", "token_url": "ftp://x", "client_id": "c"}),
            serde_json::json!({"kind": "basic", "username": "a\nb", "password": "p"}),
        ] {
            let wire: CredentialWire = serde_json::from_value(bad.clone()).unwrap();
            assert!(wire.into_secret().is_err(), "{bad}");
        }
        assert!(ConnectionName::parse("Slack").is_err());
        assert!(ConnectionName::parse("slack_eu-1").is_ok());
    }
}
