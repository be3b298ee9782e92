//! Who may do what inside a tenant, decided by Cedar policies.
//!
//! - [`SCHEMA`] types the principals (`User`, with `roles` and `tenant`),
//!   the resources (`Tenant`, `Agent`, `Tool`, `Connection`, `Collection`,
//!   each with the `tenant` it belongs to) and the actions. A tool call's
//!   scalar arguments are the `Tool` entity's tags, so a policy can name a
//!   Slack channel or a Jira project (`resource.getTag("channel")`).
//! - [`DEFAULT_PLATFORM_POLICIES`] give each role what it could do before
//!   policies existed; `[policies] file` replaces them.
//! - A built-in `forbid` (not replaceable) refuses any request whose
//!   principal and resource belong to different tenants, however a permit
//!   is written.
//! - A tenant's own policies are added to the platform's; `forbid` always
//!   wins. They are validated against the schema before they are kept.
//! - A `permit` annotated `@approval("required")` that applies makes the
//!   decision "allowed once a person approves" ([`Decision::approval`]).
//!
//! Entities are built per request from the caller's [`TenantScope`]: the
//! principal's tenant is the scope's, never a string from the request.

mod nesting;
pub mod service;

pub use service::{
    MemoryPolicyStore, PERMIT_ALL, Policies, PoliciesError, PolicyStore, PolicyStoreError,
};

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use bulkhead_auth::TenantScope;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use serde_json::Value;

/// The Cedar schema every policy is validated against.
pub const SCHEMA: &str = r#"
entity Tenant = { tenant: String };
entity User = { roles: Set<String>, tenant: String };
entity Agent = { tenant: String };
entity Tool = { tenant: String, risk: String, kind: String } tags String;
entity Connection = { tenant: String };
entity Collection = { tenant: String };

action read_profile, read_audit, read_usage, use_models, read_credentials,
       read_policies, manage_policies, read_approvals, delete_history,
       manage_alerts
  appliesTo { principal: User, resource: Tenant };
action manage_credentials appliesTo { principal: User, resource: Connection };
action read_agents, manage_agents, run_agent
  appliesTo { principal: User, resource: Agent };
action read_runs appliesTo { principal: User, resource: [Agent, Tenant] };
action call_tool appliesTo { principal: User, resource: Tool, context: { connection: String } };
action search, manage_documents, manage_collections
  appliesTo { principal: User, resource: Collection };
action approve appliesTo { principal: User, resource: Agent, context: { own_request: Bool } };
"#;

/// The platform's policies when `[policies] file` is not set: what each
/// role may do.
pub const DEFAULT_PLATFORM_POLICIES: &str = r#"
// Admins manage the tenant: everything except approving, which is the
// approver role's.
@id("admins")
permit(principal, action, resource)
  when { principal.roles.contains("admin") }
  unless { action == Action::"approve" };

// Every role reads, and uses models and knowledge.
@id("everyone-reads")
permit(
  principal,
  action in [Action::"read_profile", Action::"read_audit", Action::"read_usage",
             Action::"use_models", Action::"read_policies", Action::"read_approvals",
             Action::"read_agents", Action::"read_runs", Action::"search"],
  resource
);

// Members run agents (and the agents' tools: allowed unless forbidden)
// and manage documents.
@id("members")
permit(
  principal,
  action in [Action::"run_agent", Action::"call_tool", Action::"manage_documents"],
  resource
) when { principal.roles.contains("member") };

// Approvers decide paused tool calls, except those of runs they started
// themselves (a tenant may permit that in its own policies).
@id("approvers")
permit(principal, action == Action::"approve", resource)
  when { principal.roles.contains("approver") && !context.own_request };
"#;

/// The built-in guardrail: nothing crosses tenants, whatever a permit says.
const GUARDRAIL: &str = r#"
@id("builtin-tenant-isolation")
forbid(principal, action, resource) unless { principal.tenant == resource.tenant };
"#;

/// Largest accepted policy text of one tenant.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;

/// What a principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET /v1/me`.
    ReadProfile,
    /// The tenant's audit chain.
    ReadAudit,
    /// The tenant's usage and cost.
    ReadUsage,
    /// Chat completions and the model list.
    UseModels,
    /// Credential names and metadata.
    ReadCredentials,
    /// Store or delete a credential.
    ManageCredentials,
    /// Read the tenant's policies.
    ReadPolicies,
    /// Replace the tenant's policies.
    ManagePolicies,
    /// The agents and their settings.
    ReadAgents,
    /// Change an agent's settings.
    ManageAgents,
    /// Start or cancel a run.
    RunAgent,
    /// Read runs and threads.
    ReadRuns,
    /// A tool call an agent's model asked for.
    CallTool,
    /// Search a collection, or list them.
    Search,
    /// Add or remove documents.
    ManageDocuments,
    /// Delete a whole collection.
    ManageCollections,
    /// Approve or deny a paused tool call.
    Approve,
    /// List approval requests.
    ReadApprovals,
    /// Delete a thread or a run with what it stored (admins by default).
    DeleteHistory,
    /// Read and replace the tenant's alert rules, and read its alert
    /// events (admins by default).
    ManageAlerts,
}

impl Action {
    /// The Cedar action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadProfile => "read_profile",
            Action::DeleteHistory => "delete_history",
            Action::ReadAudit => "read_audit",
            Action::ReadUsage => "read_usage",
            Action::UseModels => "use_models",
            Action::ReadCredentials => "read_credentials",
            Action::ManageCredentials => "manage_credentials",
            Action::ReadPolicies => "read_policies",
            Action::ManagePolicies => "manage_policies",
            Action::ReadAgents => "read_agents",
            Action::ManageAgents => "manage_agents",
            Action::RunAgent => "run_agent",
            Action::ReadRuns => "read_runs",
            Action::CallTool => "call_tool",
            Action::Search => "search",
            Action::ManageDocuments => "manage_documents",
            Action::ManageCollections => "manage_collections",
            Action::Approve => "approve",
            Action::ReadApprovals => "read_approvals",
            Action::ManageAlerts => "manage_alerts",
        }
    }
}

/// What the action is on. Every resource belongs to the scope's tenant.
#[derive(Debug, Clone)]
pub enum Resource<'a> {
    /// The tenant as a whole.
    Tenant,
    /// An agent.
    Agent(&'a str),
    /// A tool call: the tool, its risk and kind, the connection whose
    /// credential it would use, and its arguments (scalars become tags).
    Tool {
        /// Tool name.
        name: &'a str,
        /// `read`, `write` or `destructive`.
        risk: &'a str,
        /// `http`, `slack`, `jira`, `github`, `builtin`.
        kind: &'a str,
        /// The connection (empty when none).
        connection: &'a str,
        /// The arguments the model sent.
        arguments: &'a Value,
    },
    /// A vault connection.
    Connection(&'a str),
    /// A knowledge collection (`*` for all of them).
    Collection(&'a str),
    /// A paused tool call of an agent's run, to approve or deny
    /// (`Agent::"<name>"`, with `context.own_request`: whether the caller
    /// started the run).
    Approval {
        /// The agent whose run is paused.
        agent: &'a str,
        /// Whether the deciding principal started the run.
        own_request: bool,
    },
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action is permitted.
    pub allowed: bool,
    /// Permitted, but only once a person approves (an applicable permit
    /// is annotated `@approval("required")`).
    pub approval: bool,
    /// The policies that decided, by id (for the audit trail).
    pub policies: Vec<String>,
}

/// Why policies could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text does not parse or does not validate against the schema;
    /// the message is the parser's or validator's.
    #[error("{0}")]
    Invalid(String),
    /// A request could not be built (a bug: the schema and the code
    /// disagree).
    #[error("policy request: {0}")]
    Request(String),
}

/// A tenant's policies, compiled and merged with the platform's.
#[derive(Debug, Clone)]
pub struct TenantPolicies {
    set: Arc<PolicySet>,
    text: Arc<str>,
    /// Decisions on the tenant itself already made under this set: the
    /// hot path (every model call asks `use_models` on `Tenant`) asks the
    /// same question again and again, and the answer depends only on the
    /// set, the tenant, the principal, its roles and the action. A new
    /// set (a policy change) starts with an empty cache.
    decisions: Arc<std::sync::Mutex<HashMap<String, Decision>>>,
}

/// Most cached decisions of one policy set; past it the cache starts over.
const MAX_CACHED_DECISIONS: usize = 4096;

impl TenantPolicies {
    fn new(set: PolicySet, text: &str) -> Self {
        Self {
            set: Arc::new(set),
            text: Arc::from(text),
            decisions: Arc::default(),
        }
    }
}

impl TenantPolicies {
    /// The tenant's own policy text, as it was written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The schema, the platform's policies and the authorizer.
pub struct PolicyEngine {
    schema: Schema,
    base: TenantPolicies,
    authorizer: Authorizer,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyEngine")
    }
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let t = EntityTypeName::from_str(kind).map_err(|e| PolicyError::Request(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_owned())
}

/// Parses `text` and adds its policies to `set` with ids `prefix.N` (or
/// `prefix.<@id>` when annotated).
fn add_policies(set: &mut PolicySet, text: &str, prefix: &str) -> Result<(), PolicyError> {
    // Before the parser: deep nesting overflows Cedar's recursion.
    if let Some((line, column)) = nesting::too_deep(text, nesting::MAX_POLICY_NESTING) {
        return Err(PolicyError::Invalid(format!(
            "{line}:{column}: the policies nest more than {} levels deep (brackets and `if`s together)",
            nesting::MAX_POLICY_NESTING
        )));
    }
    let parsed = PolicySet::from_str(text).map_err(|e| {
        // Every error with its position, on one line.
        let all: Vec<String> = e.iter().map(|err| err.to_string()).collect();
        PolicyError::Invalid(all.join("; "))
    })?;
    if parsed.templates().next().is_some() {
        return Err(PolicyError::Invalid(
            "policy templates are not supported; write static policies".into(),
        ));
    }
    for (i, p) in parsed.policies().enumerate() {
        let name = match p.annotation("id") {
            Some(id) => format!("{prefix}.{id}"),
            None => format!("{prefix}.{i}"),
        };
        set.add(p.new_id(PolicyId::new(name)))
            .map_err(|e| PolicyError::Invalid(e.to_string()))?;
    }
    Ok(())
}

impl PolicyEngine {
    /// An engine with the platform's policies (`None`: the defaults).
    /// Refuses platform policies that do not validate.
    pub fn new(platform: Option<&str>) -> Result<Self, PolicyError> {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA)
            .map_err(|e| PolicyError::Invalid(format!("schema: {e}")))?;
        let mut set = PolicySet::new();
        add_policies(&mut set, GUARDRAIL, "builtin")?;
        add_policies(
            &mut set,
            platform.unwrap_or(DEFAULT_PLATFORM_POLICIES),
            "platform",
        )?;
        let engine = Self {
            base: TenantPolicies::new(PolicySet::new(), ""),
            schema,
            authorizer: Authorizer::new(),
        };
        engine.validate(&set)?;
        Ok(Self {
            base: TenantPolicies::new(set, ""),
            ..engine
        })
    }

    fn validate(&self, set: &PolicySet) -> Result<(), PolicyError> {
        let result = Validator::new(self.schema.clone()).validate(set, ValidationMode::Strict);
        if result.validation_passed() {
            return Ok(());
        }
        let messages: Vec<String> = result
            .validation_errors()
            .map(|e| {
                let id = e.policy_id().to_string();
                let id = id
                    .split_once('.')
                    .map_or(id.as_str(), |(_, rest)| rest)
                    .to_owned();
                format!("policy {id}: {e}")
            })
            .collect();
        Err(PolicyError::Invalid(messages.join("; ")))
    }

    /// The platform's policies alone (a tenant that has none of its own).
    pub fn platform(&self) -> TenantPolicies {
        self.base.clone()
    }

    /// A tenant's policies, parsed, validated and merged with the
    /// platform's. An empty text means none of its own.
    pub fn compile(&self, text: &str) -> Result<TenantPolicies, PolicyError> {
        if text.trim().is_empty() {
            return Ok(self.base.clone());
        }
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::Invalid(format!(
                "the policies are longer than {MAX_POLICY_BYTES} bytes"
            )));
        }
        let mut set = (*self.base.set).clone();
        add_policies(&mut set, text, "tenant")?;
        self.validate(&set)?;
        Ok(TenantPolicies::new(set, text))
    }

    /// Decides whether the scope's principal may do `action` on `resource`
    /// under `policies`.
    pub fn authorize(
        &self,
        policies: &TenantPolicies,
        scope: &TenantScope,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PolicyError> {
        self.decide(
            policies,
            scope.tenant().as_str(),
            scope.principal(),
            action,
            resource,
        )
    }

    /// [`PolicyEngine::authorize`] for `who`, a principal of the scope's
    /// tenant other than the scope's own: a run resumed by an approver
    /// still acts for the principal who started it.
    pub fn authorize_as(
        &self,
        policies: &TenantPolicies,
        scope: &TenantScope,
        who: &bulkhead_core::Principal,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PolicyError> {
        self.decide(policies, scope.tenant().as_str(), who, action, resource)
    }

    /// [`PolicyEngine::authorize`] for a principal of `tenant`. Private:
    /// outside this crate the tenant comes only from a scope.
    fn decide(
        &self,
        policies: &TenantPolicies,
        tenant: &str,
        who: &bulkhead_core::Principal,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PolicyError> {
        self.decide_in(policies, tenant, tenant, who, action, resource)
    }

    /// The decision with the principal in `tenant` and the resource in
    /// `owner` (always the same outside the guardrail's tests).
    fn decide_in(
        &self,
        policies: &TenantPolicies,
        tenant: &str,
        owner: &str,
        who: &bulkhead_core::Principal,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PolicyError> {
        // Only decisions on the tenant itself are cached: no context, no
        // resource attributes beyond the tenant.
        let key = matches!(resource, Resource::Tenant).then(|| {
            let mut roles: Vec<&str> = who.roles().iter().map(|r| r.as_str()).collect();
            roles.sort_unstable();
            format!(
                "{tenant}\u{0}{owner}\u{0}{}\u{0}{}\u{0}{}",
                who.id(),
                roles.join(","),
                action.as_str()
            )
        });
        if let Some(k) = &key
            && let Ok(cache) = policies.decisions.lock()
            && let Some(d) = cache.get(k)
        {
            return Ok(d.clone());
        }
        let decision = self.evaluate(policies, tenant, owner, who, action, resource)?;
        if let Some(k) = key
            && let Ok(mut cache) = policies.decisions.lock()
        {
            if cache.len() >= MAX_CACHED_DECISIONS {
                cache.clear();
            }
            cache.insert(k, decision.clone());
        }
        Ok(decision)
    }

    /// Evaluates the request with Cedar.
    fn evaluate(
        &self,
        policies: &TenantPolicies,
        tenant: &str,
        owner: &str,
        who: &bulkhead_core::Principal,
        action: Action,
        resource: &Resource<'_>,
    ) -> Result<Decision, PolicyError> {
        let principal = uid("User", who.id())?;
        let roles = RestrictedExpression::new_set(who.roles().iter().map(|r| string(r.as_str())));
        let user = Entity::new(
            principal.clone(),
            HashMap::from([
                ("roles".to_owned(), roles),
                ("tenant".to_owned(), string(tenant)),
            ]),
            Default::default(),
        )
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let mut context = Vec::new();
        let (resource_uid, resource_entity) = match resource {
            Resource::Tenant => {
                let u = uid("Tenant", owner)?;
                (
                    u.clone(),
                    Entity::new(u, tenant_attr(owner), Default::default()),
                )
            }
            Resource::Agent(name) => {
                let u = uid("Agent", name)?;
                (
                    u.clone(),
                    Entity::new(u, tenant_attr(owner), Default::default()),
                )
            }
            Resource::Approval { agent, own_request } => {
                let u = uid("Agent", agent)?;
                context.push((
                    "own_request".to_owned(),
                    RestrictedExpression::new_bool(*own_request),
                ));
                (
                    u.clone(),
                    Entity::new(u, tenant_attr(owner), Default::default()),
                )
            }
            Resource::Connection(name) => {
                let u = uid("Connection", name)?;
                (
                    u.clone(),
                    Entity::new(u, tenant_attr(owner), Default::default()),
                )
            }
            Resource::Collection(name) => {
                let u = uid("Collection", name)?;
                (
                    u.clone(),
                    Entity::new(u, tenant_attr(owner), Default::default()),
                )
            }
            Resource::Tool {
                name,
                risk,
                kind,
                connection,
                arguments,
            } => {
                let u = uid("Tool", name)?;
                let mut attrs = tenant_attr(owner);
                attrs.insert("risk".into(), string(risk));
                attrs.insert("kind".into(), string(kind));
                context.push(("connection".to_owned(), string(connection)));
                let tags: Vec<(String, RestrictedExpression)> = arguments
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => return None,
                        };
                        Some((k.clone(), string(&text)))
                    })
                    .collect();
                (u.clone(), Entity::new_with_tags(u, attrs, [], tags))
            }
        };
        let resource_entity = resource_entity.map_err(|e| PolicyError::Request(e.to_string()))?;
        let entities = Entities::from_entities([user, resource_entity], Some(&self.schema))
            .map_err(|e| PolicyError::Request(e.to_string()))?;
        let context =
            Context::from_pairs(context).map_err(|e| PolicyError::Request(e.to_string()))?;
        let request = Request::new(
            principal,
            uid("Action", action.as_str())?,
            resource_uid,
            context,
            Some(&self.schema),
        )
        .map_err(|e| PolicyError::Request(e.to_string()))?;
        let response = self
            .authorizer
            .is_authorized(&request, &policies.set, &entities);
        let reasons: Vec<&PolicyId> = response.diagnostics().reason().collect();
        let allowed = response.decision() == CedarDecision::Allow;
        let approval = allowed
            && reasons
                .iter()
                .any(|id| policies.set.annotation(id, "approval") == Some("required"));
        Ok(Decision {
            allowed,
            approval,
            policies: reasons.iter().map(|id| id.to_string()).collect(),
        })
    }
}

fn tenant_attr(tenant: &str) -> HashMap<String, RestrictedExpression> {
    HashMap::from([("tenant".to_owned(), string(tenant))])
}

#[cfg(test)]
mod tests;
