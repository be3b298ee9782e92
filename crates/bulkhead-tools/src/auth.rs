//! Injecting a tenant's credential into an outbound request, and the list
//! of strings that must never appear in an error.

use bulkhead_vault::{CredentialSecret, Redactor};

/// Adds the credential's `Authorization` header: Bearer for API keys,
/// bearer tokens and OAuth2 access tokens (what Slack, Jira Cloud and
/// GitHub all accept), HTTP Basic for basic credentials. reqwest marks the
/// header sensitive, so it is not printed by its own `Debug`.
pub(crate) fn authorize(
    request: reqwest::RequestBuilder,
    credential: &CredentialSecret,
) -> reqwest::RequestBuilder {
    match credential {
        CredentialSecret::ApiKey(s) | CredentialSecret::Bearer(s) => {
            request.bearer_auth(s.expose())
        }
        CredentialSecret::Oauth2(o) => request.bearer_auth(o.access_token.expose()),
        CredentialSecret::Basic { username, password } => {
            request.basic_auth(username, Some(password.expose()))
        }
    }
}

/// Finds every string that gives the credential away: its secret values
/// in their common encodings, and for Basic the encoded `user:password`
/// that travels in the header (an upstream echoing the header would
/// otherwise leak it).
pub(crate) fn secrets(credential: Option<&CredentialSecret>) -> Redactor {
    Redactor::for_credentials(credential)
}
