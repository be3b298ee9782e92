//! `bulkhead approvals list|approve|deny`: the approval requests of a
//! tenant, through the tenant plane with the caller's own API key, so the
//! server's rules apply unchanged (an approver decides; not the principal
//! who started the run, unless the tenant's policies allow it).

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::Client;
use crate::commands::{print, seg};

/// How approval commands reach the server, and as whom.
#[derive(Args, Clone)]
pub struct TenantConnection {
    /// Base URL of the bulkhead server.
    #[arg(long, env = "BULKHEAD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The tenant API key (or JWT) to act with.
    #[arg(long = "api-key", env = "BULKHEAD_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

/// Request states to list.
#[derive(Clone, Copy, ValueEnum)]
pub enum Status {
    /// Waiting for a decision.
    Pending,
    /// Approved.
    Approved,
    /// Denied.
    Denied,
    /// Not decided in time.
    Expired,
}

/// `bulkhead approvals ...`
#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// List the tenant's approval requests, newest first.
    List {
        /// Only requests in this state.
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Approve a pending request (the run resumes and the call is made).
    Approve(Decision),
    /// Deny a pending request (the call is never made; the run ends).
    Deny(Decision),
}

/// A decision's arguments.
#[derive(Args)]
pub struct Decision {
    /// The approval request's id.
    pub id: String,
    /// Why; kept with the decision and in the audit chain.
    #[arg(long)]
    pub comment: Option<String>,
    /// Refuse unless the request's arguments hash to this (what you saw).
    #[arg(long)]
    pub arguments_hash: Option<String>,
    #[command(flatten)]
    pub conn: TenantConnection,
}

fn client(conn: &TenantConnection) -> anyhow::Result<Client> {
    if conn.api_key.trim().is_empty() {
        bail!("--api-key (or BULKHEAD_API_KEY) is empty");
    }
    Ok(Client::with_token(&conn.url, conn.api_key.trim()))
}

fn decide(d: &Decision, verdict: &str) -> anyhow::Result<ExitCode> {
    let mut body = json!({});
    if let Some(c) = &d.comment {
        body["comment"] = Value::String(c.clone());
    }
    if let Some(h) = &d.arguments_hash {
        body["arguments_hash"] = Value::String(h.clone());
    }
    let path = format!("/v1/approvals/{}/{verdict}", seg(&d.id));
    print(&client(&d.conn)?.post(&path, &body)?)
}

/// Runs an approvals command.
pub fn approvals(cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApprovalsCommand::List { status, conn } => {
            let path = match status {
                None => "/v1/approvals".to_owned(),
                Some(s) => format!(
                    "/v1/approvals?status={}",
                    s.to_possible_value()
                        .map(|v| v.get_name().to_owned())
                        .unwrap_or_default()
                ),
            };
            print(&client(&conn)?.get(&path)?)
        }
        ApprovalsCommand::Approve(d) => decide(&d, "approve"),
        ApprovalsCommand::Deny(d) => decide(&d, "deny"),
    }
}
