//! The gateway service below HTTP: billing, settlement, streams, limits,
//! residency, tenant keys and the tripwire.

use bulkhead_core::audit::{AuditAction, Outcome};
use bulkhead_core::config::QuotaValues;
use bulkhead_core::money::Usd;
use bulkhead_core::{SecretString, Timestamp};
use bulkhead_gateway::canary::Channel;
use bulkhead_gateway::memory::Leak;
use bulkhead_gateway::usage::{Tokens, cost_nanos};
use bulkhead_gateway::{ChatOutcome, GatewayError};
use bulkhead_testkit::Reply;
use bulkhead_vault::credential::{ConnectionName, CredentialSecret};
use bulkhead_vault::store::CredScope;
use serde_json::json;

use crate::harness::{Harness, PLATFORM_KEY, chat, complete};
use crate::support::scope;

fn usd(s: &str) -> Usd {
    Usd::parse(s).unwrap()
}

fn daily_budget(s: &str) -> QuotaValues {
    QuotaValues {
        daily_budget_usd: Some(usd(s)),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_chat_call_is_billed_to_the_ledger_at_the_models_prices() {
    let h = Harness::new().await;
    let acme = scope("acme");
    h.fake
        .push(Reply::text("hello").with_usage((1000, 500, 200)));
    let answer = complete(h.gateway.chat(&acme, chat("small", "hi")).await);
    assert_eq!(answer["model"], "small", "the alias, not the upstream name");
    assert_eq!(answer["choices"][0]["message"]["content"], "hello");
    let sent = &h.fake.requests()[0];
    assert_eq!(sent.body["model"], "gpt-4o-mini");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {PLATFORM_KEY}").as_str())
    );
    h.gateway.drain().await;

    let rows = h.store.usage_rows(&acme);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let tokens = Tokens {
        input: 1000,
        output: 500,
        cached: 200,
    };
    assert_eq!(
        (row.status.as_str(), row.tokens, row.estimated),
        ("ok", tokens, false)
    );
    // (800 × 0.15 + 200 × 0.075 + 500 × 0.60) µ$ = 435 µ$.
    assert_eq!(row.cost_nanos, 435_000);
    assert_eq!(
        row.cost_nanos,
        cost_nanos(tokens, usd("0.15"), usd("0.60"), usd("0.075"))
    );
    let event = h.store.audit_events(&acme).pop().unwrap();
    assert_eq!(
        (event.action, event.outcome),
        (AuditAction::ModelCall, Outcome::Success)
    );
    assert_eq!(event.details["cost_usd"], "0.000435000");
    // The report reads the same ledger; another tenant's is empty.
    let from = Timestamp::parse("2000-01-01T00:00:00Z").unwrap();
    let to = Timestamp::parse("2100-01-01T00:00:00Z").unwrap();
    let report = h.gateway.usage(&acme, from, to, &[]).await.unwrap();
    assert_eq!((report[0].requests, report[0].cost_nanos), (1, 435_000));
    assert!(
        h.gateway
            .usage(&scope("globex"), from, to, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_provider_error_settles_the_reservation() {
    // One call's reservation ($0.60 of output at most) fits the budget,
    // two do not: a second call passes only if the first gave its back.
    let h = Harness::with_quotas(daily_budget("1")).await;
    let acme = scope("acme");
    let body = json!({"model": "small", "max_tokens": 1_000_000,
        "messages": [{"role": "user", "content": "hi"}]});
    h.fake.push(Reply::error(400, "the provider refuses"));
    let err = h.gateway.chat(&acme, body.clone()).await.err().unwrap();
    assert_eq!((err.status(), err.code()), (502, "upstream_error"), "{err}");
    h.gateway.drain().await;
    let rows = h.store.usage_rows(&acme);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].cost_nanos),
        ("upstream_error", 0)
    );

    h.fake.push(Reply::text("ok").with_usage((10, 1, 0)));
    complete(h.gateway.chat(&acme, body).await);
    assert_eq!(h.fake.request_count(), 2);
}

#[tokio::test]
async fn a_stream_is_renamed_counted_and_billed_by_its_usage() {
    let h = Harness::new().await;
    let acme = scope("acme");
    h.fake
        .push(Reply::text("hello streaming world").with_usage((7, 3, 0)));
    let body = json!({"model": "small", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    let Ok(ChatOutcome::Stream(mut rx)) = h.gateway.chat(&acme, body).await else {
        panic!("not a stream");
    };
    let mut text = String::new();
    while let Some(bytes) = rx.recv().await {
        text.push_str(&String::from_utf8(bytes).unwrap());
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"model\":\"small\""), "{text}");
    assert!(!text.contains("gpt-4o-mini"), "{text}");
    assert!(
        text.contains("\"prompt_tokens\":7"),
        "the usage chunk: {text}"
    );
    // The provider is always asked for usage, whatever the client wants.
    assert_eq!(
        h.fake.requests()[0].body["stream_options"],
        json!({"include_usage": true})
    );
    h.gateway.drain().await;
    let row = h.store.usage_rows(&acme).pop().unwrap();
    assert_eq!(
        (row.status.as_str(), row.stream, row.estimated),
        ("ok", true, false)
    );
    assert_eq!(
        row.tokens,
        Tokens {
            input: 7,
            output: 3,
            cached: 0
        }
    );
}

#[tokio::test]
async fn a_stream_without_usage_asked_hides_the_usage_chunk_but_bills_it() {
    let h = Harness::new().await;
    let acme = scope("acme");
    h.fake.push(Reply::text("hello").with_usage((5, 1, 0)));
    let body = json!({"model": "small", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let Ok(ChatOutcome::Stream(mut rx)) = h.gateway.chat(&acme, body).await else {
        panic!("not a stream");
    };
    let mut text = String::new();
    while let Some(bytes) = rx.recv().await {
        text.push_str(&String::from_utf8(bytes).unwrap());
    }
    assert!(!text.contains("prompt_tokens"), "{text}");
    h.gateway.drain().await;
    assert_eq!(h.store.usage_rows(&acme)[0].tokens.input, 5);
}

#[tokio::test]
async fn over_budget_is_refused_before_any_upstream_call() {
    let h = Harness::with_quotas(daily_budget("0.01")).await;
    let acme = scope("acme");
    let body = json!({"model": "small", "max_tokens": 1_000_000,
        "messages": [{"role": "user", "content": "hi"}]});
    let err = h.gateway.chat(&acme, body).await.err().unwrap();
    assert!(
        matches!(
            err,
            GatewayError::Limited(bulkhead_quota::Refusal::BudgetExceeded { .. })
        ),
        "{err:?}"
    );
    assert_eq!((err.status(), err.kind()), (429, "insufficient_quota"));
    assert_eq!(h.fake.request_count(), 0, "nothing was sent");
    h.gateway.drain().await;
    assert!(h.store.usage_rows(&acme).is_empty(), "nothing was billed");
    let event = h.store.audit_events(&acme).pop().unwrap();
    assert_eq!(
        (event.action, event.outcome),
        (AuditAction::LimitExceeded, Outcome::Denied)
    );
    assert_eq!(event.target, "model:small");
}

#[tokio::test]
async fn a_model_outside_the_tenants_region_is_not_listed_and_is_refused() {
    let h = Harness::new().await;
    let acme = scope("acme");
    let listed: Vec<String> = h
        .gateway
        .models(&acme)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(listed.contains(&"small".to_owned()));
    assert!(!listed.contains(&"us-only".to_owned()), "{listed:?}");
    let err = h
        .gateway
        .chat(&acme, chat("us-only", "hi"))
        .await
        .err()
        .unwrap();
    assert_eq!((err.status(), err.code()), (403, "residency_violation"));
    assert_eq!(h.fake.request_count(), 0, "never rerouted, never sent");
    let event = h.store.audit_events(&acme).pop().unwrap();
    assert_eq!(
        (event.action, event.outcome),
        (AuditAction::ModelCall, Outcome::Denied)
    );
    assert_eq!(event.details["reason"], "residency");
    // An alias nobody configured is simply not found.
    let err = h
        .gateway
        .chat(&acme, chat("nope", "hi"))
        .await
        .err()
        .unwrap();
    assert_eq!((err.status(), err.code()), (404, "model_not_found"));
}

#[tokio::test]
async fn a_tenants_own_provider_credential_is_used_and_a_missing_one_refused() {
    let h = Harness::new().await;
    let (acme, globex) = (scope("acme"), scope("globex"));
    let err = h
        .gateway
        .chat(&acme, chat("own-key", "hi"))
        .await
        .err()
        .unwrap();
    assert_eq!((err.status(), err.code()), (400, "missing_credential"));
    assert_eq!(h.fake.request_count(), 0);

    let name = ConnectionName::parse("openai").unwrap();
    let own = CredentialSecret::ApiKey(SecretString::new("sk-acme-own".into()));
    h.vault
        .put(CredScope::Tenant(&acme), &name, &own)
        .await
        .unwrap();
    complete(h.gateway.chat(&acme, chat("own-key", "hi")).await);
    assert_eq!(
        h.fake.requests()[0].header("authorization"),
        Some("Bearer sk-acme-own")
    );
    // Acme's key is not globex's.
    let err = h
        .gateway
        .chat(&globex, chat("own-key", "hi"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "missing_credential");
    assert_eq!(h.fake.request_count(), 1);
}

#[tokio::test]
async fn another_tenants_canary_trips_the_wire_and_nothing_is_sent() {
    let h = Harness::new().await;
    let (acme, victim) = (scope("acme"), scope("victim"));
    let canary = "bulkhead-canary-6f1c2a9e";
    h.canaries.insert(victim.partition(), canary.to_owned());
    let err = h
        .gateway
        .chat(&acme, chat("small", &format!("leak: {canary}")))
        .await
        .err()
        .unwrap();
    assert_eq!((err.status(), err.code()), (403, "cross_tenant_leak"));
    assert_eq!(h.fake.request_count(), 0);
    assert_eq!(
        h.alarm.hits(),
        [Leak {
            from: acme.partition(),
            victim: victim.partition(),
            channel: Channel::Model,
        }]
    );
    // The owner's own canary in its own request is not a leak.
    complete(h.gateway.chat(&victim, chat("small", canary)).await);
    assert_eq!(h.alarm.hits().len(), 1);
    assert_eq!(h.fake.request_count(), 1);
}

#[tokio::test]
async fn embeddings_come_back_in_order_and_are_billed_as_embed_calls() {
    let h = Harness::new().await;
    let acme = scope("acme");
    let inputs = vec!["alpha".to_owned(), "beta".to_owned(), "alpha".to_owned()];
    let vectors = h.gateway.embed(&acme, "embed", &inputs).await.unwrap();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 16));
    assert_eq!(
        vectors[0], vectors[2],
        "the same input, the same vector, in place"
    );
    assert_ne!(vectors[0], vectors[1]);
    assert_eq!(h.fake.requests()[0].body["dimensions"], 16);
    h.gateway.drain().await;
    let row = h.store.usage_rows(&acme).pop().unwrap();
    assert_eq!(
        (row.kind, row.status.as_str(), row.model.as_str()),
        ("embed", "ok", "embed")
    );
    assert!(row.tokens.input > 0);
    let event = h.store.audit_events(&acme).pop().unwrap();
    assert_eq!(event.action, AuditAction::ModelEmbed);
    // Residency holds for embeddings too, and nothing is sent.
    let err = h
        .gateway
        .embed(&acme, "embed-us", &inputs)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), "residency_violation");
    assert_eq!(h.fake.request_count(), 1);
}

#[tokio::test]
async fn a_model_outside_the_tenants_allow_list_is_not_found_at_once() {
    let h = Harness::new().await;
    let acme = scope("acme");
    complete(h.gateway.chat(&acme, chat("small", "hi")).await);
    let event = h
        .gateway
        .set_allowed(&acme, acme.request_id(), Some(vec!["own-key".into()]))
        .await
        .unwrap();
    assert_eq!(event.action, AuditAction::TenantModels);
    assert_eq!(event.details["allowed"], serde_json::json!(["own-key"]));
    // The cached settings were dropped with the write: no stale allow-list.
    let err = h
        .gateway
        .chat(&acme, chat("small", "hi"))
        .await
        .err()
        .unwrap();
    assert_eq!((err.status(), err.code()), (404, "model_not_found"));
    assert_eq!(h.fake.request_count(), 1);
    // Another tenant's list is its own.
    complete(h.gateway.chat(&scope("globex"), chat("small", "hi")).await);
}
