//! The AWS KMS key provider (`kms.provider = "aws-kms"`, cargo feature
//! `aws-kms`).
//!
//! The key-encryption key is a KMS key that never leaves AWS: a data key is
//! wrapped by KMS `Encrypt` and unwrapped by `Decrypt`, both naming the
//! configured key. The vault's [`EncryptionContext`] (which names the
//! tenant) goes along as the KMS encryption context, which KMS binds into
//! the ciphertext: a wrapped key copied to another tenant's row does not
//! decrypt, and CloudTrail records which tenant each call was for.
//!
//! KMS rotates key material itself (automatic key rotation keeps the key
//! id and still decrypts old ciphertexts), so this provider has one
//! version, 1, per key id. Moving to another key is a configuration change
//! followed by `bulkhead kms rewrap`: every data key whose stored key id
//! differs from the configured one is re-wrapped.
//!
//! One SDK client is built at start-up and shared, so connections to KMS
//! are pooled. Its HTTPS stack is rustls on ring, the crypto provider the
//! rest of the binary uses. Credentials come from the standard AWS chain
//! (environment, shared config and credentials files, web identity, ECS
//! and EC2 instance roles).

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use zeroize::Zeroizing;

use crate::aead::DataKey;
use crate::kms::{EncryptionContext, KeyProvider, KmsError, WrappedKey};

/// Provider name stored with every key this provider wraps.
pub const PROVIDER_NAME: &str = "aws-kms";

/// The one key version this provider reports: KMS versions key material
/// internally and resolves it from the ciphertext.
const KEY_VERSION: u32 = 1;

/// Key-encryption keys held by AWS KMS.
pub struct AwsKmsProvider {
    client: Client,
    key_id: String,
}

impl std::fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The SDK configuration the provider runs on: `region`, an optional
/// endpoint override (a KMS emulator, a VPC endpoint), the ring-based
/// rustls HTTPS client, and `credentials` if given, else the standard AWS
/// credentials chain.
pub async fn sdk_config(
    region: String,
    endpoint_url: Option<String>,
    credentials: Option<Credentials>,
) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .http_client(http);
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}

impl AwsKmsProvider {
    /// A provider for the KMS key `key_id` (key id, key ARN, alias name or
    /// alias ARN) in `region`, with credentials from the standard AWS
    /// chain. Makes no request: a wrong key or missing credentials show
    /// at the first wrap or unwrap.
    pub async fn new(
        key_id: String,
        region: String,
        endpoint_url: Option<String>,
    ) -> Result<Self, KmsError> {
        if region.trim().is_empty() {
            return Err(KmsError::Backend("the AWS region is empty".into()));
        }
        let config = sdk_config(region, endpoint_url, None).await;
        Self::from_sdk_config(key_id, &config)
    }

    /// A provider for `key_id` over a prepared SDK configuration (see
    /// [`sdk_config`]; tests use it to pass static credentials).
    pub fn from_sdk_config(key_id: String, config: &SdkConfig) -> Result<Self, KmsError> {
        if key_id.trim().is_empty() {
            return Err(KmsError::Backend("the AWS KMS key id is empty".into()));
        }
        Ok(Self {
            client: Client::new(config),
            key_id,
        })
    }

    /// The SDK client (shared; cheap to clone).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// A service or transport failure: the service's error code and message,
/// or the transport error's chain. Never the raw request or response (the
/// request carries the plaintext data key on `Encrypt`, the response on
/// `Decrypt`).
fn backend<E, R>(op: &str, e: &SdkError<E, R>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("unknown error"),
            s.err().message().unwrap_or("no message")
        ),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    };
    KmsError::Backend(format!("AWS KMS {op}: {detail}"))
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn current(&self) -> (String, u32) {
        (self.key_id.clone(), KEY_VERSION)
    }

    async fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, KmsError> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.expose().to_vec()))
            .set_encryption_context(Some(ctx.0.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| backend("Encrypt", &e))?;
        let ciphertext = out
            .ciphertext_blob
            .map(Blob::into_inner)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| KmsError::Backend("AWS KMS Encrypt returned no ciphertext".into()))?;
        Ok(WrappedKey {
            provider: PROVIDER_NAME.to_owned(),
            key_id: self.key_id.clone(),
            key_version: KEY_VERSION,
            ciphertext,
        })
    }

    async fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        if wrapped.provider != PROVIDER_NAME {
            return Err(KmsError::WrongProvider(wrapped.provider.clone()));
        }
        if wrapped.key_version != KEY_VERSION {
            return Err(KmsError::UnknownKeyVersion {
                key_id: wrapped.key_id.clone(),
                version: wrapped.key_version,
            });
        }
        // The key it was wrapped with, which after a change of `kms.key_id`
        // is not the current one until `bulkhead kms rewrap` has run.
        let out = self
            .client
            .decrypt()
            .key_id(&wrapped.key_id)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(Some(ctx.0.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                // Tampered ciphertext, another context, or another key:
                // the same answer as the local provider's failed open.
                Some(
                    DecryptError::InvalidCiphertextException(_)
                    | DecryptError::IncorrectKeyException(_),
                ) => KmsError::Unwrap,
                _ => backend("Decrypt", &e),
            })?;
        let plaintext = Zeroizing::new(out.plaintext.map(Blob::into_inner).unwrap_or_default());
        DataKey::from_bytes(&plaintext).ok_or(KmsError::Unwrap)
    }

    async fn rotate(&self) -> Result<(String, u32), KmsError> {
        Err(KmsError::Unsupported(format!(
            "the aws-kms provider does not rotate keys itself: enable automatic key rotation \
             on the KMS key {} in AWS KMS (data keys need no re-wrap), or point kms.key_id at \
             a new KMS key, restart, and run `bulkhead kms rewrap`",
            self.key_id
        )))
    }
}
