//! Agents and runs: `GET /v1/agents`, a tenant's settings of an agent,
//! starting runs (JSON or SSE), reading runs and threads, cancelling.
//!
//! Run and thread ids are minted by the server and only resolve inside the
//! caller's tenant partition: another tenant's id answers 404.

use std::collections::BTreeMap;

use axum::Json as AxumJson;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_agent::{AgentSettings, RunFilter, RunRecord, RunRequest, RunStatus, ThreadFilter};
use bulkhead_core::{RunId, ThreadId};
use bulkhead_policy::{Action, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::routes;

use crate::authz::authorize;
use crate::error::{ApiError, problems};
use crate::extract::{Json, Path, Query, TenantCtx};
use crate::routes::RouteTable;
use crate::state::AppState;

/// This module's routes. Each is declared here once: the router, the OpenAPI document
/// and the isolation matrix all come from this table.
pub(super) fn table() -> RouteTable {
    RouteTable::new()
        .tenant(routes!(list))
        .tenant(routes!(get_settings, put_settings, patch_settings))
        .tenant(routes!(start))
        .tenant(routes!(list_runs))
        .tenant(routes!(list_threads))
        .tenant(routes!(get_run, delete_run))
        .tenant(routes!(cancel))
        .tenant(routes!(messages))
        .tenant(routes!(delete_thread))
}

/// The path prefix of run creation (no request timeout: a run is bounded
/// by its agent's own `timeout_s`).
pub const RUNS_PATH_SUFFIX: &str = "/runs";

/// One agent as a tenant sees it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentBody {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Model alias.
    pub model: String,
    /// Tools it may call.
    pub tools: Vec<String>,
    /// Whether this tenant enabled it (settings).
    pub enabled: bool,
    /// Model calls per run at most.
    pub max_steps: u32,
}

/// The agents available to the tenant.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AgentList {
    /// By name.
    pub agents: Vec<AgentBody>,
}

/// Lists the agents the caller's tenant can run (those served from its region).
#[utoipa::path(get, path = "/v1/agents", operation_id = "list_agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, body = AgentList),
        problems::TenantAuth,
        problems::Timeout))]
pub async fn list(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
) -> Result<AxumJson<AgentList>, ApiError> {
    authorize(&state, &scope, Action::ReadAgents, Resource::Agent("*")).await?;
    let agents = state.runtime.agents(&scope).await?;
    Ok(AxumJson(AgentList {
        agents: agents
            .into_iter()
            .map(|(a, s)| AgentBody {
                name: a.name,
                description: a.description,
                model: a.model,
                tools: a.tools,
                enabled: s.enabled,
                max_steps: a.max_steps,
            })
            .collect(),
    }))
}

/// A tenant's settings of one agent.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentSettingsBody {
    /// Template variables (`vars.NAME` in the prompt), values at most 4 KiB.
    variables: BTreeMap<String, String>,
    /// Extra instructions (at most 16 KiB), added as the tenant's own message.
    instructions: Option<String>,
    /// Tool name → the tenant's connection (credential) it uses.
    connections: BTreeMap<String, String>,
    /// Whether the tenant's principals may run the agent (default true).
    enabled: bool,
}

/// Reads the caller's tenant's settings of an agent (tenant admins).
#[utoipa::path(get, path = "/v1/agents/{agent}/settings", operation_id = "get_agent_settings", tag = "agents", security(("bearer" = [])),
    params(("agent" = String, Path, description = "Agent name")),
    responses((status = 200, body = AgentSettingsBody),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn get_settings(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(agent): Path<String>,
) -> Result<AxumJson<AgentSettings>, ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageAgents,
        Resource::Agent(&agent),
    )
    .await?;
    Ok(AxumJson(state.runtime.settings(&scope, &agent).await?))
}

/// Replaces the caller's tenant's settings of an agent (tenant admins).
/// The body is the whole document: a field left out takes its default
/// (no variables, no instructions, no connections, enabled). To change
/// some fields and keep the rest, use `PATCH`. Each connection must name
/// a credential the tenant has stored. Everything here is data: template
/// syntax in it is never evaluated.
#[utoipa::path(put, path = "/v1/agents/{agent}/settings", operation_id = "put_agent_settings", tag = "agents", security(("bearer" = [])),
    params(("agent" = String, Path, description = "Agent name")),
    request_body = AgentSettingsBody,
    responses((status = 200, body = AgentSettingsBody),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn put_settings(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(agent): Path<String>,
    Json(body): Json<AgentSettings>,
) -> Result<AxumJson<AgentSettings>, ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageAgents,
        Resource::Agent(&agent),
    )
    .await?;
    Ok(AxumJson(
        state.runtime.put_settings(&scope, &agent, body).await?,
    ))
}

/// Changes some of the caller's tenant's settings of an agent (tenant
/// admins): the body is a JSON merge patch (RFC 7396) of the settings
/// document. A field left out keeps its value; `null` resets a field to
/// its default, and in `variables` or `connections` removes that key;
/// the maps merge key by key. Answers the whole document as stored.
#[utoipa::path(patch, path = "/v1/agents/{agent}/settings", operation_id = "patch_agent_settings", tag = "agents", security(("bearer" = [])),
    params(("agent" = String, Path, description = "Agent name")),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "A merge patch of the settings document (`application/json` is accepted too)"),
    responses((status = 200, body = AgentSettingsBody),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn patch_settings(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(agent): Path<String>,
    Json(patch): Json<Value>,
) -> Result<AxumJson<AgentSettings>, ApiError> {
    authorize(
        &state,
        &scope,
        Action::ManageAgents,
        Resource::Agent(&agent),
    )
    .await?;
    Ok(AxumJson(
        state.runtime.patch_settings(&scope, &agent, &patch).await?,
    ))
}

/// The body of `POST /v1/agents/{agent}/runs`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The user's message (at most 64 KiB).
    pub input: String,
    /// Continue this thread of the tenant (else a new thread).
    pub thread_id: Option<String>,
    /// `true`: answer with Server-Sent Events as the run progresses.
    #[serde(default)]
    pub stream: bool,
}

/// A run.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunBody {
    /// Run id.
    pub id: String,
    /// Thread id.
    pub thread_id: String,
    /// Agent.
    pub agent: String,
    /// `running`, `awaiting_approval`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The final answer.
    pub output: Option<String>,
    /// Why it did not complete: `{code, message}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Who started it.
    pub principal: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Prompt tokens over the run.
    pub input_tokens: u64,
    /// Completion tokens over the run.
    pub output_tokens: u64,
    /// Steps in order: `{seq, kind, data, time}`.
    #[schema(value_type = Vec<Object>)]
    pub steps: Vec<Value>,
}

impl From<RunRecord> for RunBody {
    fn from(r: RunRecord) -> Self {
        Self {
            id: r.id.to_string(),
            thread_id: r.thread_id.to_string(),
            agent: r.agent,
            status: r.status.as_str().to_owned(),
            output: r.output,
            error: r.error.map(|e| serde_json::json!({"code": e.code, "message": e.message})),
            principal: r.principal,
            created_at: r.created_at.to_string(),
            finished_at: r.finished_at.map(|t| t.to_string()),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            steps: r
                .steps
                .into_iter()
                .map(|s| serde_json::json!({"seq": s.seq, "kind": s.kind, "data": s.data, "time": s.time.to_string()}))
                .collect(),
        }
    }
}

fn run_id(raw: &str) -> Result<RunId, ApiError> {
    // A malformed id cannot exist: answer as for a missing one.
    RunId::parse(raw).map_err(|_| ApiError::NotFound)
}

/// Starts a run (tenant admins and members). Without `stream` the answer
/// comes when the run has ended (its status says how) or paused for
/// approval (202); with `stream: true` it is an SSE stream of `step`,
/// `model_call`, `tool_call`, `tool_result`, `approval_requested`,
/// `message`, then `done`, `error` or `awaiting_approval`. The run goes on
/// if the client leaves.
#[utoipa::path(post, path = "/v1/agents/{agent}/runs", operation_id = "start_run", tag = "agents", security(("bearer" = [])),
    params(("agent" = String, Path, description = "Agent name")),
    request_body = StartRun,
    responses((status = 200, description = "The ended run, or an SSE stream with `stream: true`", content((RunBody = "application/json"), (crate::sse::SseEvent = "text/event-stream"))),
        (status = 202, body = RunBody, description = "The run paused: a tool call awaits approval"),
        problems::TenantAuth,
        problems::JsonBody,
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        (status = 422, response = problems::UnprocessableEntity)))]
pub async fn start(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(agent): Path<String>,
    Json(body): Json<StartRun>,
) -> Result<Response, ApiError> {
    authorize(&state, &scope, Action::RunAgent, Resource::Agent(&agent)).await?;
    let thread_id = match body.thread_id.as_deref() {
        None => None,
        Some(t) => Some(ThreadId::parse(t).map_err(|_| ApiError::NotFound)?),
    };
    let started = state
        .runtime
        .start(
            &scope,
            &agent,
            RunRequest {
                input: body.input,
                thread_id,
            },
        )
        .await?;
    let id = started.run.id;
    let events = started.events;
    if body.stream {
        let first = bulkhead_agent::RunEvent::new(
            "run",
            serde_json::json!({"run_id": id.to_string(), "thread_id": started.run.thread_id.to_string()}),
        );
        let stream = futures_util::stream::unfold(
            (Some(first), events, false),
            |(first, mut rx, ended)| async move {
                if let Some(ev) = first {
                    return Some((sse(&ev), (None, rx, false)));
                }
                if ended {
                    return None;
                }
                let ev = rx.recv().await?;
                let last = ev.is_last();
                Some((sse(&ev), (None, rx, last)))
            },
        );
        return Ok(crate::sse::response(stream));
    }
    // Nobody reads the events of a plain call: dropping them lets the run
    // go on without waiting for a reader.
    drop(events);
    let run = match started.finished.await {
        Ok(run) => run,
        // The run's task ended without reporting (a bug): what is stored.
        Err(_) => state.runtime.run(&scope, id).await?,
    };
    // A paused run is accepted, not done: it goes on after a decision.
    let status = if run.status == bulkhead_agent::RunStatus::AwaitingApproval {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, AxumJson(RunBody::from(run))).into_response())
}

fn sse(ev: &bulkhead_agent::RunEvent) -> Bytes {
    crate::sse::event(ev.event, &ev.data)
}

/// `GET /v1/runs` query: a page of the tenant's runs, newest first.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunListQuery {
    /// Only this agent's runs.
    pub agent: Option<String>,
    /// Only runs in this state: `running`, `awaiting_approval`,
    /// `completed`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// The previous page's `next_after`: runs older than this run id.
    pub after: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `GET /v1/threads` query: a page of the tenant's threads, newest first.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ThreadListQuery {
    /// Only threads this agent ran on.
    pub agent: Option<String>,
    /// The previous page's `next_after`: threads older than this thread id.
    pub after: Option<String>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Largest page of the run and thread listings (as of the audit chain's).
const MAX_LIST_PAGE: u32 = 1000;

fn list_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST_PAGE {
        return Err(ApiError::InvalidParameter(format!(
            "limit: must be between 1 and {MAX_LIST_PAGE}"
        )));
    }
    Ok(limit as usize)
}

/// One run in a listing (without its steps: `GET /v1/runs/{id}` has them).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Thread id.
    pub thread_id: String,
    /// Agent name.
    pub agent: String,
    /// `running`, `awaiting_approval`, `completed`, `failed` or `cancelled`
    /// (as stored: a run a stopped server left `running` reads so until
    /// it is fetched by id).
    pub status: String,
    /// The final answer.
    pub output: Option<String>,
    /// Why it did not complete: `{code, message}`.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// Who started it.
    pub principal: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// Prompt tokens over the run.
    pub input_tokens: u64,
    /// Completion tokens over the run.
    pub output_tokens: u64,
}

impl From<RunRecord> for RunSummary {
    fn from(r: RunRecord) -> Self {
        let b = RunBody::from(r);
        Self {
            id: b.id,
            thread_id: b.thread_id,
            agent: b.agent,
            status: b.status,
            output: b.output,
            error: b.error,
            principal: b.principal,
            created_at: b.created_at,
            finished_at: b.finished_at,
            input_tokens: b.input_tokens,
            output_tokens: b.output_tokens,
        }
    }
}

/// A page of runs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunSummary>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// One thread in a listing.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ThreadBody {
    /// Thread id.
    pub id: String,
    /// When its first run started (RFC 3339).
    pub created_at: String,
    /// When its latest run started (RFC 3339).
    pub last_run_at: String,
    /// The agents that ran on it.
    pub agents: Vec<String>,
    /// How many runs it has.
    pub runs: u64,
}

/// A page of threads.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ThreadList {
    /// Newest first.
    pub threads: Vec<ThreadBody>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// The caller's tenant's runs, newest first, a page at a time, optionally
/// one agent's or those in one state. Runs of agents the caller may not
/// read (`read_runs` on the agent) are left out.
#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "agents", security(("bearer" = [])),
    params(RunListQuery),
    responses((status = 200, body = RunList),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn list_runs(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Query(q): Query<RunListQuery>,
) -> Result<AxumJson<RunList>, ApiError> {
    let resource = match &q.agent {
        Some(a) => Resource::Agent(a),
        None => Resource::Tenant,
    };
    authorize(&state, &scope, Action::ReadRuns, resource).await?;
    let limit = list_limit(q.limit)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "status: {s:?} is not one of running, awaiting_approval, completed, failed, cancelled"
            ))
        })?),
    };
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => Some(RunId::parse(a).map_err(|_| {
            ApiError::InvalidParameter(
                "after: not a run id (pass the previous page's next_after)".into(),
            )
        })?),
    };
    let filter = RunFilter {
        agent: q.agent.clone(),
        status,
        after,
        limit,
    };
    let runs = state.runtime.list_runs(&scope, &filter).await?;
    let next_after = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.to_string()))
        .flatten();
    // Each agent's runs only when the caller may read that agent's runs.
    let mut allowed: BTreeMap<String, bool> = BTreeMap::new();
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        let ok = match allowed.get(&r.agent) {
            Some(ok) => *ok,
            None => {
                let ok = authorize(&state, &scope, Action::ReadRuns, Resource::Agent(&r.agent))
                    .await
                    .is_ok();
                allowed.insert(r.agent.clone(), ok);
                ok
            }
        };
        if ok {
            out.push(RunSummary::from(r));
        }
    }
    Ok(AxumJson(RunList {
        runs: out,
        next_after,
    }))
}

/// The caller's tenant's threads (those with a run), newest first, a page
/// at a time, optionally only those an agent ran on.
#[utoipa::path(get, path = "/v1/threads", operation_id = "list_threads", tag = "agents", security(("bearer" = [])),
    params(ThreadListQuery),
    responses((status = 200, body = ThreadList),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        problems::Timeout))]
pub async fn list_threads(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Query(q): Query<ThreadListQuery>,
) -> Result<AxumJson<ThreadList>, ApiError> {
    authorize(&state, &scope, Action::ReadRuns, Resource::Tenant).await?;
    if let Some(a) = &q.agent {
        authorize(&state, &scope, Action::ReadRuns, Resource::Agent(a)).await?;
    }
    let limit = list_limit(q.limit)?;
    let after = match q.after.as_deref() {
        None => None,
        Some(a) => Some(ThreadId::parse(a).map_err(|_| {
            ApiError::InvalidParameter(
                "after: not a thread id (pass the previous page's next_after)".into(),
            )
        })?),
    };
    let filter = ThreadFilter {
        agent: q.agent.clone(),
        after,
        limit,
    };
    let threads = state.runtime.list_threads(&scope, &filter).await?;
    let next_after = (threads.len() == limit)
        .then(|| threads.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(AxumJson(ThreadList {
        threads: threads
            .into_iter()
            .map(|t| ThreadBody {
                id: t.id.to_string(),
                created_at: t.created_at.to_string(),
                last_run_at: t.last_run_at.to_string(),
                agents: t.agents,
                runs: t.runs,
            })
            .collect(),
        next_after,
    }))
}

/// `GET /v1/runs/{id}` parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// Wait up to this many seconds (at most 60) for a run executing in
    /// this process to end or pause before answering.
    #[param(maximum = 60)]
    pub wait: Option<u64>,
}

/// Longest `wait` of `GET /v1/runs/{id}`.
const MAX_WAIT_S: u64 = 60;

/// A run of the caller's tenant, with its steps.
#[utoipa::path(get, path = "/v1/runs/{id}", operation_id = "get_run", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id"), RunParams),
    responses((status = 200, body = RunBody),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn get_run(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
    Query(params): Query<RunParams>,
) -> Result<AxumJson<RunBody>, ApiError> {
    let id = run_id(&id)?;
    let wait = match params.wait {
        Some(w) if w > MAX_WAIT_S => {
            return Err(ApiError::InvalidParameter(format!(
                "wait: at most {MAX_WAIT_S} seconds"
            )));
        }
        // Answered before the server's request timeout cuts the wait.
        Some(w) => w.min(state.settings.request_timeout_s.saturating_sub(1)),
        None => 0,
    };
    // Authorised on the run as stored, before the read that may settle a
    // run a stopped process left running, and before waiting: a caller
    // who may not read runs learns nothing, not even how long it takes.
    let stored = state.runtime.peek_run(&scope, id).await?;
    authorize(
        &state,
        &scope,
        Action::ReadRuns,
        Resource::Agent(&stored.agent),
    )
    .await?;
    let run = state.runtime.run(&scope, id).await?;
    if wait == 0 || run.status != bulkhead_agent::RunStatus::Running {
        return Ok(AxumJson(run.into()));
    }
    let run = state
        .runtime
        .wait(&scope, id, std::time::Duration::from_secs(wait))
        .await?;
    Ok(AxumJson(run.into()))
}

/// Asks a running run to stop (tenant admins and members). 202: the run
/// ends as `cancelled` shortly; 409 when it has already ended.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", operation_id = "cancel_run", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 202, body = RunBody),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn cancel(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
) -> Result<(StatusCode, AxumJson<RunBody>), ApiError> {
    let id = run_id(&id)?;
    // Authorised on the run as stored: nothing is written before.
    let stored = state.runtime.peek_run(&scope, id).await?;
    authorize(
        &state,
        &scope,
        Action::RunAgent,
        Resource::Agent(&stored.agent),
    )
    .await?;
    let run = state.runtime.cancel(&scope, id).await?;
    Ok((StatusCode::ACCEPTED, AxumJson(run.into())))
}

/// One message of a thread.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageBody {
    /// Position.
    pub seq: u64,
    /// The run that added it.
    pub run_id: Option<String>,
    /// OpenAI chat message (`role`, `content`, `tool_calls`, `tool_call_id`).
    #[schema(value_type = Object)]
    pub message: Value,
    /// RFC 3339.
    pub time: String,
}

/// A thread's messages.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageList {
    /// Thread id.
    pub thread_id: String,
    /// In order.
    pub messages: Vec<MessageBody>,
}

/// The messages of one of the caller's tenant's threads.
#[utoipa::path(get, path = "/v1/threads/{id}/messages", operation_id = "list_thread_messages", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Thread id")),
    responses((status = 200, body = MessageList),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        problems::Timeout))]
pub async fn messages(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
) -> Result<AxumJson<MessageList>, ApiError> {
    authorize(&state, &scope, Action::ReadRuns, Resource::Tenant).await?;
    let thread = ThreadId::parse(&id).map_err(|_| ApiError::NotFound)?;
    let messages = state.runtime.messages(&scope, thread).await?;
    Ok(AxumJson(MessageList {
        thread_id: thread.to_string(),
        messages: messages
            .into_iter()
            .map(|m| MessageBody {
                seq: m.seq,
                run_id: m.run_id.map(|r| r.to_string()),
                message: m.message,
                time: m.time.to_string(),
            })
            .collect(),
    }))
}

/// Deletes one of the caller's tenant's runs with its steps, approval
/// requests and thread messages (tenant admins by default; audited). 409
/// `run_in_progress` while it runs or awaits approval.
#[utoipa::path(delete, path = "/v1/runs/{id}", operation_id = "delete_run", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses((status = 204, description = "Deleted"),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn delete_run(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &scope, Action::DeleteHistory, Resource::Tenant).await?;
    let id = RunId::parse(&id).map_err(|_| ApiError::NotFound)?;
    state.runtime.delete_run(&scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes one of the caller's tenant's threads with its messages and its
/// runs (tenant admins by default; audited). 409 `run_in_progress` while
/// a run of it runs or awaits approval.
#[utoipa::path(delete, path = "/v1/threads/{id}", operation_id = "delete_thread", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Thread id")),
    responses((status = 204, description = "Deleted"),
        problems::TenantAuth,
        (status = 400, response = problems::BadRequest),
        (status = 404, response = problems::NotFound),
        (status = 409, response = problems::Conflict),
        problems::Timeout))]
pub async fn delete_thread(
    State(state): State<AppState>,
    TenantCtx(scope): TenantCtx,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &scope, Action::DeleteHistory, Resource::Tenant).await?;
    let id = ThreadId::parse(&id).map_err(|_| ApiError::NotFound)?;
    state.runtime.delete_thread(&scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
