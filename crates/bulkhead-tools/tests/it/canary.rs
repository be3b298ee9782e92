//! A credential never appears in an error, even when the upstream echoes
//! it back.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bulkhead_testkit::SaasStandIn;
use bulkhead_tools::ToolError;
use serde_json::json;

use crate::support::{api_key, basic, bearer, call, connector, http, oauth2, one};

const CANARY: &str = "canary-7f3a9c1e-secret";

#[tokio::test]
async fn echoed_credentials_are_scrubbed_from_every_error() {
    let saas = SaasStandIn::start().await;
    let tools = one(http(&saas, "/status/{{ code }}", json!({})));
    let creds = [
        bearer(CANARY),
        api_key(CANARY),
        oauth2(CANARY, "refresh-canary"),
        basic("bot", CANARY),
    ];
    let basic_header = STANDARD.encode(format!("bot:{CANARY}"));
    for cred in &creds {
        for code in [401, 403, 500] {
            saas.clear();
            let err = call(&tools, json!({ "code": code }), Some(cred))
                .await
                .unwrap_err();
            // The stand-in did receive and echo the credential…
            let sent = saas.requests()[0]
                .header("authorization")
                .unwrap()
                .to_owned();
            assert!(
                sent.contains(CANARY) || sent.contains(&basic_header),
                "{sent}"
            );
            // …and the error shows where it was, not what it was.
            let shown = [err.to_string(), format!("{err:?}")];
            for text in &shown {
                assert!(!text.contains(CANARY), "{text}");
                assert!(!text.contains(&basic_header), "{text}");
                assert!(!text.contains("canary"), "{text}");
            }
            assert!(
                matches!(err, ToolError::Upstream { ref message, .. } if message.contains("[redacted]")),
                "{err:?}"
            );
        }
    }
}

#[tokio::test]
async fn credential_values_in_urls_or_arguments_are_scrubbed_too() {
    // A model that pastes the secret into an argument gets it back nowhere
    // in an error either (the schema message names the path, not values).
    let saas = SaasStandIn::start().await;
    let tools = one(http(&saas, "/status/404?x={{ x }}", json!({})));
    let err = call(&tools, json!({"x": CANARY}), Some(&bearer(CANARY)))
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains(CANARY), "{err:?}");

    // Connector errors: a failing Slack call whose upstream error body
    // would carry the token.
    let mut config = connector(&saas, "slack");
    config.base_url = Some(format!("{}/status/401", saas.base_url()));
    let tools = one(config);
    let err = call(
        &tools,
        json!({"channel": "C1", "text": CANARY}),
        Some(&bearer(CANARY)),
    )
    .await
    .unwrap_err();
    assert!(!format!("{err} {err:?}").contains(CANARY), "{err:?}");
    assert!(
        matches!(err, ToolError::Upstream { status: 401, ref message } if message.contains("[redacted]")),
        "{err:?}"
    );
    assert_eq!(
        saas.requests().last().unwrap().path,
        "/status/401/api/chat.postMessage"
    );
}
