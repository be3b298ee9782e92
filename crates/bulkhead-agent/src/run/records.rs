//! What a tenant reads and changes of the runtime outside a run: the
//! agents it can run and its settings of them (cached briefly), its runs
//! and threads, their deletion, and retention.

use std::time::Instant;

use bulkhead_auth::TenantScope;
use bulkhead_core::audit::{AuditAction, NewAuditEvent, Outcome};
use bulkhead_core::{RunId, ThreadId, Timestamp};
use bulkhead_vault::store::CredScope;
use serde_json::{Value, json};

use super::{Runtime, SETTINGS_TTL, sha256_hex};
use crate::agent::{Agent, AgentSettings};
use crate::error::AgentError;
use crate::store::{RunRecord, StoredMessage};

impl Runtime {
    pub(super) fn agent(&self, scope: &TenantScope, name: &str) -> Result<&Agent, AgentError> {
        self.catalog
            .get(name)
            .filter(|a| &a.region == scope.region())
            .ok_or_else(|| AgentError::UnknownAgent(name.to_owned()))
    }

    /// A tenant's settings of an agent, from the cache when fresh.
    pub(super) async fn cached_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
    ) -> Result<AgentSettings, AgentError> {
        let key = (scope.partition(), agent.to_owned());
        if let Ok(cache) = self.settings_cache.lock()
            && let Some((s, at)) = cache.get(&key)
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(s.clone());
        }
        let settings = self
            .store
            .agent_settings(scope, agent)
            .await?
            .unwrap_or_default();
        if let Ok(mut cache) = self.settings_cache.lock() {
            #[expect(
                clippy::disallowed_methods,
                reason = "the settings cache's TTL measures elapsed time on the monotonic clock"
            )]
            cache.insert(key, (settings.clone(), Instant::now()));
        }
        Ok(settings)
    }

    /// The agents the tenant can run (those in its region), with its settings.
    pub async fn agents(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<(Agent, AgentSettings)>, AgentError> {
        let mut out = Vec::new();
        for a in self.catalog.all().filter(|a| &a.region == scope.region()) {
            let settings = self.cached_settings(scope, &a.name).await?;
            out.push((a.clone(), settings));
        }
        Ok(out)
    }

    /// A tenant's settings of an agent.
    pub async fn settings(
        &self,
        scope: &TenantScope,
        agent: &str,
    ) -> Result<AgentSettings, AgentError> {
        let agent = self.agent(scope, agent)?;
        self.cached_settings(scope, &agent.name).await
    }

    /// Replaces a tenant's settings of an agent (validated first): the body
    /// is the whole document, and a field left out takes its default.
    pub async fn put_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
        settings: AgentSettings,
    ) -> Result<AgentSettings, AgentError> {
        let agent = self.agent(scope, agent)?.clone();
        let _write = self.settings_write.lock().await;
        self.write_settings(scope, &agent, settings).await
    }

    /// Changes some of a tenant's settings of an agent: `patch` is a JSON
    /// merge patch (RFC 7396) over the stored document — a field left out
    /// keeps its value, `null` resets it (a map's key set to `null` is
    /// removed), and maps merge key by key.
    pub async fn patch_settings(
        &self,
        scope: &TenantScope,
        agent: &str,
        patch: &Value,
    ) -> Result<AgentSettings, AgentError> {
        let agent = self.agent(scope, agent)?.clone();
        if !patch.is_object() {
            return Err(AgentError::Invalid(
                "the body must be a JSON object (a merge patch of the settings)".to_owned(),
            ));
        }
        let _write = self.settings_write.lock().await;
        // From the store, not the cache: the merge must start from what is
        // stored now.
        let current = self
            .store
            .agent_settings(scope, &agent.name)
            .await?
            .unwrap_or_default();
        let mut doc = serde_json::to_value(&current)
            .map_err(|e| AgentError::Internal(format!("settings encode: {e}")))?;
        merge_patch(&mut doc, patch);
        let merged: AgentSettings = serde_json::from_value(doc)
            .map_err(|e| AgentError::Invalid(format!("settings: {e}")))?;
        self.write_settings(scope, &agent, merged).await
    }

    /// Validates and stores a whole settings document (its connections
    /// must name credentials the tenant has).
    async fn write_settings(
        &self,
        scope: &TenantScope,
        agent: &Agent,
        settings: AgentSettings,
    ) -> Result<AgentSettings, AgentError> {
        settings.validate(agent)?;
        if !settings.connections.is_empty() {
            let have = self
                .vault
                .list(CredScope::Tenant(scope))
                .await
                .map_err(|e| AgentError::Internal(format!("credentials: {e}")))?;
            for (tool, conn) in &settings.connections {
                if !have.iter().any(|c| &c.connection == conn) {
                    return Err(AgentError::Invalid(format!(
                        "connections.{tool}: this organisation has no connection {conn:?} (store it with PUT /v1/credentials/{conn} first)"
                    )));
                }
            }
        }
        let event = NewAuditEvent::new(
            AuditAction::AgentSettingsUpdate,
            format!("agent:{}", agent.name),
            Outcome::Success,
            scope.request_id().clone(),
        )
        .with_details(json!({
            "variables": settings.variables.keys().collect::<Vec<_>>(),
            "instructions_sha256": settings.instructions.as_ref().map(|i| sha256_hex(i.as_bytes())),
            "connections": settings.connections,
            "enabled": settings.enabled,
        }));
        self.store
            .put_agent_settings(scope, &agent.name, &settings, event)
            .await?;
        if let Ok(mut cache) = self.settings_cache.lock() {
            cache.remove(&(scope.partition(), agent.name.clone()));
        }
        Ok(settings)
    }

    /// Deletes the tenant's thread messages older than `days` days.
    pub async fn apply_retention(&self, scope: &TenantScope, days: u32) -> Result<u64, AgentError> {
        let cutoff = Timestamp::now().plus_seconds(-(i64::from(days) * 86_400));
        let event = NewAuditEvent::new(
            AuditAction::RetentionApply,
            format!("tenant:{}", scope.tenant()),
            Outcome::Success,
            scope.request_id().clone(),
        );
        Ok(self.store.apply_retention(scope, cutoff, event).await?)
    }

    /// A run of the tenant, with its steps.
    pub async fn run(&self, scope: &TenantScope, id: RunId) -> Result<RunRecord, AgentError> {
        self.store.run(scope, id).await?.ok_or(AgentError::NotFound)
    }

    /// A run as stored, writing nothing (a run a stopped process left
    /// `running` still reads `running`): what a caller is authorised on
    /// before [`Runtime::run`] may settle the run as `interrupted`.
    pub async fn peek_run(&self, scope: &TenantScope, id: RunId) -> Result<RunRecord, AgentError> {
        self.store
            .stored_run(scope, id)
            .await?
            .ok_or(AgentError::NotFound)
    }

    /// A thread's messages.
    pub async fn messages(
        &self,
        scope: &TenantScope,
        thread: ThreadId,
    ) -> Result<Vec<StoredMessage>, AgentError> {
        self.store
            .messages(scope, thread)
            .await?
            .ok_or(AgentError::NotFound)
    }

    /// Deletes one of the tenant's threads with everything its runs
    /// stored (messages, steps, approval requests), audited.
    pub async fn delete_thread(&self, scope: &TenantScope, id: ThreadId) -> Result<(), AgentError> {
        let event = NewAuditEvent::new(
            AuditAction::ThreadDelete,
            format!("thread:{id}"),
            Outcome::Success,
            scope.request_id().clone(),
        );
        deletion(self.store.delete_thread(scope, id, event).await?)
    }

    /// Deletes one of the tenant's runs with its steps, approval requests
    /// and thread messages, audited.
    pub async fn delete_run(&self, scope: &TenantScope, id: RunId) -> Result<(), AgentError> {
        // Read first: a run its dead process left `running` is settled as
        // interrupted here, and can then be deleted.
        self.run(scope, id).await?;
        let event = NewAuditEvent::new(
            AuditAction::RunDelete,
            format!("run:{id}"),
            Outcome::Success,
            scope.request_id().clone(),
        );
        deletion(self.store.delete_run(scope, id, event).await?)
    }
}

/// A store deletion as the runtime answers it.
fn deletion(d: crate::store::Deletion) -> Result<(), AgentError> {
    match d {
        crate::store::Deletion::Deleted => Ok(()),
        crate::store::Deletion::NotFound => Err(AgentError::NotFound),
        crate::store::Deletion::InProgress => Err(AgentError::InProgress),
    }
}

/// RFC 7396 JSON merge patch: objects merge member by member, `null`
/// removes a member, anything else replaces the target.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in members {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The RFC's own example (section 3).
        let mut doc = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"], "content": "This will be unchanged"});
        merge_patch(
            &mut doc,
            &json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null}, "tags": ["example"]}),
        );
        assert_eq!(
            doc,
            json!({"title": "Hello!", "author": {"givenName": "John"},
            "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
    }
}
