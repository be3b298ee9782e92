//! The in-memory gateway store keeps the SQLite store's semantics:
//! partitions apart, settlement in place, `in_flight` rows outside
//! reports and spend, report lines ordered by their groups.

use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{RequestId, Timestamp};
use bulkhead_gateway::memory::MemoryGatewayStore;
use bulkhead_gateway::usage::{Tokens, UsageGroup, UsageRecord, UsageSummary};
use bulkhead_gateway::{GatewayStore, SettingsChange};

use crate::support::scope;

fn row(id: &str, model: &str, agent: Option<&str>, status: &str, cost: u64) -> UsageRecord {
    UsageRecord {
        id: id.into(),
        time: Timestamp::now(),
        request_id: RequestId::generate().to_string(),
        model: model.into(),
        provider: "p".into(),
        region: "eu".into(),
        tokens: Tokens {
            input: 10,
            output: 5,
            cached: 0,
        },
        cost_nanos: cost,
        latency_ms: 1,
        status: status.into(),
        estimated: false,
        stream: false,
        kind: if model.is_empty() { "tool" } else { "model" },
        agent: agent.map(Into::into),
        run_id: agent.map(|_| "run".into()),
        tool: model.is_empty().then(|| "notify".into()),
    }
}

fn ev() -> NewAuditEvent {
    NewAuditEvent::new(
        AuditAction::ModelCall,
        "model:m",
        Outcome::Success,
        RequestId::generate(),
    )
}

fn all_time() -> (Timestamp, Timestamp) {
    (
        Timestamp::parse("2000-01-01T00:00:00Z").unwrap(),
        Timestamp::parse("2100-01-01T00:00:00Z").unwrap(),
    )
}

#[tokio::test]
async fn a_settlement_replaces_its_in_flight_row_and_only_settled_rows_count() {
    let store = MemoryGatewayStore::new();
    let acme = scope("acme");
    let (from, to) = all_time();
    store
        .begin_usage(&acme, row("1", "m", None, "in_flight", 900))
        .await
        .unwrap();
    assert_eq!(
        store.spent_since(&acme, from).await.unwrap(),
        0,
        "in flight: not spent"
    );
    assert!(
        store
            .usage_summary(&acme, from, to, &[])
            .await
            .unwrap()
            .is_empty()
    );

    let mut settled = row("1", "m", None, "ok", 300);
    settled.time = Timestamp::parse("2001-01-01T00:00:00Z").unwrap();
    store.record_usage(&acme, settled, ev()).await.unwrap();
    let rows = store.usage_rows(&acme);
    assert_eq!(rows.len(), 1, "settled in place");
    assert_eq!((rows[0].status.as_str(), rows[0].cost_nanos), ("ok", 300));
    assert_ne!(
        rows[0].time.day(),
        "2001-01-01",
        "the row keeps its start time"
    );
    assert_eq!(store.spent_since(&acme, from).await.unwrap(), 300);
    assert_eq!(store.audit_events(&acme).len(), 1);
}

#[tokio::test]
async fn reports_group_in_order_with_none_first_and_partitions_stay_apart() {
    let store = MemoryGatewayStore::new();
    let (acme, globex) = (scope("acme"), scope("globex"));
    let (from, to) = all_time();
    store
        .record_usage_row(&acme, row("1", "zeta", Some("bot"), "ok", 1))
        .await
        .unwrap();
    store
        .record_usage_row(&acme, row("2", "alpha", None, "ok", 2))
        .await
        .unwrap();
    store
        .record_usage_row(&acme, row("3", "alpha", None, "upstream_error", 4))
        .await
        .unwrap();
    store
        .record_usage_row(&acme, row("4", "", Some("bot"), "ok", 0))
        .await
        .unwrap();
    let lines = store
        .usage_summary(&acme, from, to, &[UsageGroup::Model])
        .await
        .unwrap();
    let got: Vec<(Option<&str>, u64, u64)> = lines
        .iter()
        .map(|l| (l.model.as_deref(), l.requests, l.cost_nanos))
        .collect();
    assert_eq!(
        got,
        [(None, 1, 0), (Some("alpha"), 2, 6), (Some("zeta"), 1, 1)]
    );
    let by_agent = store
        .usage_summary(&acme, from, to, &[UsageGroup::Agent, UsageGroup::Tool])
        .await
        .unwrap();
    assert_eq!(by_agent.len(), 3);
    assert_eq!(
        (by_agent[0].agent.as_deref(), by_agent[0].tool.as_deref()),
        (None, None)
    );
    let total = store.usage_summary(&acme, from, to, &[]).await.unwrap();
    assert_eq!(
        total,
        [UsageSummary {
            requests: 4,
            input_tokens: 40,
            output_tokens: 20,
            cost_nanos: 7,
            ..Default::default()
        }]
    );
    // Another tenant sees none of it.
    assert!(
        store
            .usage_summary(&globex, from, to, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.spent_since(&globex, from).await.unwrap(), 0);
    assert!(store.usage_rows(&globex).is_empty());
    // Nor do rows outside the period count.
    assert!(
        store
            .usage_summary(&acme, to, to, &[])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn settings_are_per_tenant_and_audited() {
    let store = MemoryGatewayStore::new();
    let (acme, globex) = (scope("acme"), scope("globex"));
    store
        .set_allowed_models(&acme, Some(vec!["small".into()]), ev())
        .await
        .unwrap();
    let all = SettingsChange {
        audit_prompts: Some(true),
        message_retention_days: Some(Some(30)),
        approval_webhook: Some(Some("https://x".into())),
    };
    store.update_settings(&acme, &all, ev()).await.unwrap();
    let s = store.settings(&acme).await.unwrap();
    assert_eq!(s.allowed_models, Some(vec!["small".to_owned()]));
    assert!(s.audit_prompts);
    assert_eq!(s.message_retention_days, Some(30));
    assert_eq!(s.approval_webhook.as_deref(), Some("https://x"));
    // One change, one event, however many settings it names.
    assert_eq!(store.audit_events(&acme).len(), 2);
    assert_eq!(store.settings(&globex).await.unwrap(), Default::default());
    let clear = SettingsChange {
        message_retention_days: Some(None),
        ..SettingsChange::default()
    };
    store.update_settings(&acme, &clear, ev()).await.unwrap();
    let s = store.settings(&acme).await.unwrap();
    assert_eq!(s.message_retention_days, None);
    // What the change did not name is left as it was.
    assert!(s.audit_prompts);
    assert_eq!(s.approval_webhook.as_deref(), Some("https://x"));
}
