//! JWT verification against the configured issuers.
//!
//! The order of checks is what defeats the classic attacks:
//! 1. the unverified `iss` only *selects* an issuer, it grants nothing;
//! 2. the header's `alg` must be on that issuer's allow-list (`none` never
//!    is, and HMAC is never allowed for an issuer with public keys, which
//!    rules out HMAC-signed-with-the-public-key);
//! 3. a `kid` is looked up among that issuer's keys only, so a key id that
//!    names another issuer's key finds nothing;
//! 4. signature, `iss`, `aud`, `exp` and `nbf` are then verified by
//!    `jsonwebtoken`, with the issuer's leeway.
//!
//! An issuer with a `jwks_url` starts with no keys; the server fetches its
//! document at boot and keeps it fresh (see [`crate::jwks`]). `verify`
//! itself never does I/O: it reads the current key set under a lock.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulkhead_core::config::{JwtAlgorithm, JwtIssuerConfig, JwtKeySource, KeyFamily};
use bulkhead_core::{Role, TenantId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::jwks::{IssuerKey, KeySet, RemoteJwks, parse_jwks};

/// A configuration problem found while loading issuer keys, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JwtSetupError {
    /// Key path, e.g. `auth.jwt[0].public_key_file`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

struct Issuer {
    algorithms: Vec<Algorithm>,
    keys: Arc<RwLock<KeySet>>,
    remote: Option<Arc<RemoteJwks>>,
    validation: HashMap<Algorithm, Validation>,
    tenant_claim: String,
    roles_claim: String,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The tenant claim.
    pub tenant: TenantId,
    /// The `iss` claim (a configured issuer).
    pub issuer: String,
    /// The `sub` claim.
    pub subject: String,
    /// Known roles from the roles claim (unknown role names grant nothing
    /// and are dropped).
    pub roles: Vec<Role>,
}

/// Why a token was refused. Kept internal: callers answer a generic 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtRejection {
    /// Not a JWT, or an unparseable header.
    Malformed,
    /// No configured issuer matches `iss`.
    UnknownIssuer,
    /// The header's algorithm is not allowed for this issuer.
    AlgorithmNotAllowed,
    /// No key of this issuer matches the `kid`.
    UnknownKey,
    /// Signature or a registered claim failed.
    Invalid,
    /// The tenant claim is missing or not a valid tenant id.
    BadTenantClaim,
    /// `sub` is missing or the roles claim is malformed.
    BadClaims,
}

impl JwtRejection {
    /// Stable code for logs and audit.
    pub fn code(self) -> &'static str {
        match self {
            JwtRejection::Malformed => "jwt_malformed",
            JwtRejection::UnknownIssuer => "jwt_unknown_issuer",
            JwtRejection::AlgorithmNotAllowed => "jwt_algorithm_not_allowed",
            JwtRejection::UnknownKey => "jwt_unknown_key",
            JwtRejection::Invalid => "jwt_invalid",
            JwtRejection::BadTenantClaim => "jwt_bad_tenant_claim",
            JwtRejection::BadClaims => "jwt_bad_claims",
        }
    }
}

/// Verifies tokens of all configured issuers.
#[derive(Default)]
pub struct JwtVerifier {
    issuers: HashMap<String, Issuer>,
}

fn to_jwt_alg(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn family_of(a: Algorithm) -> KeyFamily {
    match a {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => KeyFamily::Ec,
        Algorithm::EdDSA => KeyFamily::Ed,
        _ => KeyFamily::Rsa,
    }
}

impl JwtVerifier {
    /// Loads every issuer's keys. `read_file` reads key files (relative
    /// paths are the caller's business).
    pub fn new(
        issuers: &[JwtIssuerConfig],
        read_file: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
    ) -> Result<Self, Vec<JwtSetupError>> {
        let mut out = HashMap::new();
        let mut errors = Vec::new();
        for (i, cfg) in issuers.iter().enumerate() {
            match load_issuer(i, cfg, read_file) {
                Ok(issuer) => {
                    out.insert(cfg.issuer.clone(), issuer);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Self { issuers: out })
        } else {
            Err(errors)
        }
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The issuers whose keys come from a `jwks_url`, for the caller to
    /// fetch at boot and keep fresh.
    pub fn remote_issuers(&self) -> Vec<Arc<RemoteJwks>> {
        let mut out: Vec<Arc<RemoteJwks>> = self
            .issuers
            .values()
            .filter_map(|i| i.remote.clone())
            .collect();
        out.sort_by(|a, b| a.key_path().cmp(b.key_path()));
        out
    }

    /// The remote key set of the issuer a token names (unverified: it only
    /// selects which document a refetch would read), if that issuer has a
    /// `jwks_url`.
    pub fn remote_issuer_of(&self, token: &str) -> Option<Arc<RemoteJwks>> {
        let iss = peek_issuer(token)?;
        self.issuers.get(&iss)?.remote.clone()
    }

    /// Verifies a token and extracts tenant, subject and roles.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, JwtRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRejection::Malformed)?;
        let iss = peek_issuer(token).ok_or(JwtRejection::Malformed)?;
        let issuer = self.issuers.get(&iss).ok_or(JwtRejection::UnknownIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(JwtRejection::AlgorithmNotAllowed);
        }
        let family = family_of(header.alg);
        // Cloning the Arc keeps the lock for a moment only; a refresh
        // replacing the set meanwhile does not disturb this check.
        let keys: KeySet = issuer
            .keys
            .read()
            .map(|k| k.clone())
            .map_err(|_| JwtRejection::UnknownKey)?;
        let candidates: Vec<&IssuerKey> = keys
            .iter()
            .filter(|k| k.family == family)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                // A key without an id (secret, PEM) serves any token of its issuer.
                (_, None) => true,
                (None, Some(_)) => false,
            })
            .collect();
        let key = match candidates.as_slice() {
            [one] => *one,
            // Without a kid, a JWKS with several keys of one family is
            // ambiguous: refuse rather than try each key in turn.
            _ => return Err(JwtRejection::UnknownKey),
        };
        let validation = issuer
            .validation
            .get(&header.alg)
            .ok_or(JwtRejection::AlgorithmNotAllowed)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|_| JwtRejection::Invalid)?;
        let claims = data.claims;
        let tenant = claims
            .get(&issuer.tenant_claim)
            .and_then(Value::as_str)
            .and_then(|s| TenantId::parse(s).ok())
            .ok_or(JwtRejection::BadTenantClaim)?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control))
            .ok_or(JwtRejection::BadClaims)?
            .to_owned();
        let roles = match claims.get(&issuer.roles_claim) {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut roles = Vec::new();
                for item in items {
                    let name = item.as_str().ok_or(JwtRejection::BadClaims)?;
                    if let Ok(role) = name.parse::<Role>() {
                        roles.push(role);
                    }
                }
                roles
            }
            Some(_) => return Err(JwtRejection::BadClaims),
        };
        Ok(VerifiedToken {
            tenant,
            issuer: iss,
            subject,
            roles,
        })
    }
}

/// Reads `iss` from the unverified payload; only used to pick an issuer.
fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value.get("iss")?.as_str().map(str::to_owned)
}

fn load_issuer(
    i: usize,
    cfg: &JwtIssuerConfig,
    read_file: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
) -> Result<Issuer, JwtSetupError> {
    let algorithms: Vec<Algorithm> = cfg.algorithms.iter().copied().map(to_jwt_alg).collect();
    let families: Vec<KeyFamily> = cfg.algorithms.iter().map(|a| a.family()).collect();
    let err = |field: &str, message: String| JwtSetupError {
        path: format!("auth.jwt[{i}]{field}"),
        message,
    };
    let mut remote_url = None;
    let keys = match cfg.key_source() {
        None => {
            return Err(err(
                "",
                "set exactly one of secret, public_key_file, jwks_file, jwks_url".into(),
            ));
        }
        Some(JwtKeySource::JwksUrl(url)) => {
            remote_url = Some(url);
            Vec::new()
        }
        Some(JwtKeySource::Secret(secret)) => vec![IssuerKey {
            kid: None,
            family: KeyFamily::Hmac,
            key: DecodingKey::from_secret(secret.value().expose().as_bytes()),
        }],
        Some(JwtKeySource::PublicKeyFile(path)) => {
            let pem = read_file(&path).map_err(|e| {
                err(
                    ".public_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let family = match families.as_slice() {
                [first, rest @ ..] if rest.iter().all(|f| f == first) => *first,
                _ => {
                    return Err(err(
                        ".algorithms",
                        "with one public_key_file, all algorithms must use the same key type (RS*/PS*, ES* or EdDSA)"
                            .into(),
                    ));
                }
            };
            let key = match family {
                KeyFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                KeyFamily::Ec => DecodingKey::from_ec_pem(&pem),
                KeyFamily::Ed => DecodingKey::from_ed_pem(&pem),
                KeyFamily::Hmac => {
                    return Err(err(".algorithms", "HMAC algorithms need a secret".into()));
                }
            }
            .map_err(|e| {
                err(
                    ".public_key_file",
                    format!(
                        "{} is not a PEM public key of the algorithms' type: {e}",
                        path.display()
                    ),
                )
            })?;
            vec![IssuerKey {
                kid: None,
                family,
                key,
            }]
        }
        Some(JwtKeySource::JwksFile(path)) => {
            let bytes = read_file(&path)
                .map_err(|e| err(".jwks_file", format!("cannot read {}: {e}", path.display())))?;
            parse_jwks(&bytes).map_err(|e| err(".jwks_file", format!("{}: {e}", path.display())))?
        }
    };
    let mut validation = HashMap::new();
    for alg in &algorithms {
        let mut v = Validation::new(*alg);
        v.leeway = cfg.leeway_s;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[cfg.issuer.as_str()]);
        v.set_audience(&[cfg.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.insert(*alg, v);
    }
    let keys = Arc::new(RwLock::new(Arc::new(keys)));
    let remote = remote_url.map(|url| {
        Arc::new(RemoteJwks::new(
            &cfg.issuer,
            &url,
            format!("auth.jwt[{i}].jwks_url"),
            keys.clone(),
            (
                Duration::from_secs(cfg.jwks_min_refresh_s()),
                Duration::from_secs(cfg.jwks_max_refresh_s()),
                Duration::from_secs(cfg.jwks_refetch_interval_s()),
            ),
        ))
    });
    Ok(Issuer {
        algorithms,
        keys,
        remote,
        validation,
        tenant_claim: cfg.tenant_claim.clone(),
        roles_claim: cfg.roles_claim.clone(),
    })
}
