//! Injecting a tenant's credential into an outbound request, and the list
//! of strings that must never appear in an error.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bulkhead_vault::CredentialSecret;

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

/// Every string that gives the credential away: its secret values, and
/// for Basic the encoded `user:password` that travels in the header (an
/// upstream echoing the header would otherwise leak it in base64).
pub(crate) fn secrets(credential: Option<&CredentialSecret>) -> Vec<String> {
    let Some(credential) = credential else {
        return Vec::new();
    };
    let mut out: Vec<String> = credential
        .secret_values()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if let CredentialSecret::Basic { username, password } = credential {
        out.push(STANDARD.encode(format!("{username}:{}", password.expose())));
    }
    // Longest first, so that a secret containing another is replaced whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}
