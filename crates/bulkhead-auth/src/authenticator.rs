//! Turning a bearer credential into a [`TenantScope`].

use std::sync::Arc;

use async_trait::async_trait;
use bulkhead_core::{
    ApiKeyRecord, Principal, RequestId, Tenant, TenantId, TenantStatus, Timestamp,
};

use crate::apikey::ApiKeyDigest;
use crate::jwt::JwtVerifier;
use crate::scope::{FailureAttribution, TenantScope};

/// The store could not answer a lookup.
#[derive(Debug, thiserror::Error)]
#[error("directory lookup failed: {0}")]
pub struct DirectoryError(pub String);

/// What authentication needs to know from the control store.
#[async_trait]
pub trait Directory: Send + Sync {
    /// A live (not deleted) tenant by id.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, DirectoryError>;
    /// An API key by digest, with its live tenant.
    async fn api_key(
        &self,
        digest: &ApiKeyDigest,
    ) -> Result<Option<(ApiKeyRecord, Tenant)>, DirectoryError>;
}

/// Why authentication failed. The HTTP layer maps every variant to one of
/// a few deliberately vague answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential.
    Missing,
    /// The credential is not valid (malformed, unknown, revoked, expired,
    /// bad signature, unknown tenant…); the reason is in the log and audit only.
    Invalid(&'static str),
    /// The credential is valid but its tenant is suspended.
    Suspended,
    /// `X-Tenant-ID` names another tenant than the credential.
    TenantMismatch,
    /// The store failed.
    Unavailable,
}

/// A failed authentication, with the tenant to audit it against when the
/// failure can be attributed to one.
#[derive(Debug)]
pub struct AuthError {
    /// What went wrong.
    pub failure: AuthFailure,
    /// The tenant whose chain records it, if known.
    pub attribution: Option<FailureAttribution>,
}

impl AuthError {
    fn new(failure: AuthFailure) -> Self {
        Self {
            failure,
            attribution: None,
        }
    }

    fn attributed(
        failure: AuthFailure,
        tenant: &Tenant,
        principal: String,
        reason: &'static str,
        rid: &RequestId,
    ) -> Self {
        Self {
            failure,
            attribution: Some(FailureAttribution::new(
                tenant,
                principal,
                reason,
                rid.clone(),
            )),
        }
    }
}

/// Authenticates tenant-plane requests.
pub struct Authenticator {
    jwt: JwtVerifier,
    directory: Arc<dyn Directory>,
    jwks_refresh: Option<Arc<dyn crate::jwks::JwksRefresh>>,
}

impl Authenticator {
    /// From verified issuer keys and the directory.
    pub fn new(jwt: JwtVerifier, directory: Arc<dyn Directory>) -> Self {
        Self {
            jwt,
            directory,
            jwks_refresh: None,
        }
    }

    /// Lets a token whose `kid` an issuer with a `jwks_url` does not know
    /// cause one rate-limited refetch of that issuer's document before it
    /// is refused (a key the identity provider just rotated in).
    pub fn with_jwks_refresh(mut self, refresh: Arc<dyn crate::jwks::JwksRefresh>) -> Self {
        self.jwks_refresh = Some(refresh);
        self
    }

    /// The JWT verifier (its remote issuers are refreshed by the server).
    pub fn jwt_verifier(&self) -> &JwtVerifier {
        &self.jwt
    }

    /// Authenticates `bearer` (an API key or a JWT) and checks the optional
    /// `X-Tenant-ID` header against it.
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        tenant_header: Option<&str>,
        request_id: &RequestId,
    ) -> Result<TenantScope, AuthError> {
        let bearer = bearer.ok_or_else(|| AuthError::new(AuthFailure::Missing))?;
        let (tenant, principal) = if bearer.starts_with(crate::apikey::PREFIX) {
            self.api_key(bearer, request_id).await?
        } else {
            self.jwt(bearer, request_id).await?
        };
        if let Some(header) = tenant_header
            && header != tenant.id.as_str()
        {
            return Err(AuthError::attributed(
                AuthFailure::TenantMismatch,
                &tenant,
                principal.id().to_owned(),
                "tenant_header_mismatch",
                request_id,
            ));
        }
        if tenant.status == TenantStatus::Suspended {
            return Err(AuthError::attributed(
                AuthFailure::Suspended,
                &tenant,
                principal.id().to_owned(),
                "tenant_suspended",
                request_id,
            ));
        }
        Ok(TenantScope::mint(&tenant, principal, request_id.clone()))
    }

    async fn api_key(
        &self,
        bearer: &str,
        rid: &RequestId,
    ) -> Result<(Tenant, Principal), AuthError> {
        let digest = ApiKeyDigest::of_presented(bearer)
            .ok_or_else(|| AuthError::new(AuthFailure::Invalid("api_key_malformed")))?;
        let (record, tenant) = self
            .directory
            .api_key(&digest)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "api key lookup failed");
                AuthError::new(AuthFailure::Unavailable)
            })?
            .ok_or_else(|| AuthError::new(AuthFailure::Invalid("api_key_unknown")))?;
        let principal_id = format!("key:{}", record.id);
        if record.revoked_at.is_some() {
            return Err(AuthError::attributed(
                AuthFailure::Invalid("api_key_revoked"),
                &tenant,
                principal_id,
                "api_key_revoked",
                rid,
            ));
        }
        if !record.is_usable(Timestamp::now()) {
            return Err(AuthError::attributed(
                AuthFailure::Invalid("api_key_expired"),
                &tenant,
                principal_id,
                "api_key_expired",
                rid,
            ));
        }
        Ok((tenant, Principal::api_key(record.id, record.roles)))
    }

    async fn jwt(&self, bearer: &str, _rid: &RequestId) -> Result<(Tenant, Principal), AuthError> {
        let token = match self.jwt.verify(bearer) {
            Err(crate::jwt::JwtRejection::UnknownKey) => {
                // Only a remote issuer can learn new keys; the refetch is
                // rate-limited per issuer, so forged kids cost one fetch per
                // interval at most, and every other token waits for nothing.
                match (&self.jwks_refresh, self.jwt.remote_issuer_of(bearer)) {
                    (Some(refresh), Some(remote)) if remote.claim_refetch() => {
                        refresh.refetch(&remote).await;
                        self.jwt.verify(bearer)
                    }
                    _ => Err(crate::jwt::JwtRejection::UnknownKey),
                }
            }
            other => other,
        }
        .map_err(|r| AuthError::new(AuthFailure::Invalid(r.code())))?;
        let tenant = self
            .directory
            .tenant(&token.tenant)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "tenant lookup failed");
                AuthError::new(AuthFailure::Unavailable)
            })?
            .ok_or_else(|| AuthError::new(AuthFailure::Invalid("jwt_unknown_tenant")))?;
        Ok((
            tenant,
            Principal::jwt(&token.issuer, &token.subject, token.roles),
        ))
    }
}
