//! The sub-commands. `serve` and `check` work on configuration and the
//! data directory; `tenant` and `key` go through the operator HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bulkhead_core::config::{self, Config};
use bulkhead_server::boot::{self, OperatorTokenSource};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, Connection};

/// `bulkhead serve`
#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file; without it, the embedded defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen address, overriding `server.listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory, overriding `server.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// `bulkhead check`
#[derive(Args)]
pub struct CheckArgs {
    /// Configuration file to validate.
    #[arg(long, short)]
    config: PathBuf,
}

/// Reads an environment variable for an `env:NAME` reference. This is the
/// one place the binary reads configuration from the environment.
#[allow(clippy::disallowed_methods)]
fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads a configuration file, or the embedded default. On invalid
/// configuration prints every error (prefixed with the file) and returns `None`.
fn load_config(path: Option<&Path>) -> anyhow::Result<Option<(Config, PathBuf)>> {
    let Some(path) = path else {
        return Ok(Some((config::embedded_default(), PathBuf::from("."))));
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match config::load(&text, &env_lookup) {
        Ok(c) => {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let base = if base.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                base
            };
            Ok(Some((c, base)))
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}: {e}", path.display());
            }
            Ok(None)
        }
    }
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let Some((config, base)) = load_config(Some(&args.config))? else {
        return Ok(ExitCode::FAILURE);
    };
    if let Err(e) = boot::jwt_verifier(&config, &base) {
        for line in e.to_string().lines() {
            eprintln!("{}: {line}", args.config.display());
        }
        return Ok(ExitCode::FAILURE);
    }
    println!("{}: configuration is valid", args.config.display());
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let Some((mut config, base)) = load_config(args.config.as_deref())? else {
        return Ok(ExitCode::FAILURE);
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.server.data_dir = dir;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let boot = boot::boot(&config, &base)?;
        match &boot.operator_token {
            OperatorTokenSource::Configured => tracing::info!("operator token taken from the configuration"),
            OperatorTokenSource::Generated(p) => {
                tracing::info!(path = %p.display(), "generated an operator token (mode 0600); the operator CLI reads it from there")
            }
            OperatorTokenSource::Existing(p) => tracing::info!(path = %p.display(), "operator token read from file"),
        }
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, data_dir = %config.server.data_dir.display(), "listening");
        bulkhead_server::serve(listener, boot.state, shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// `bulkhead tenant ...`
#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Tenant id (lowercase letters, digits, '-').
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Residency region.
        #[arg(long)]
        region: Option<String>,
        /// shared or dedicated.
        #[arg(long)]
        isolation: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show a tenant.
    Get {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Change a tenant's name, region or isolation.
    Update {
        /// Tenant id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Residency region.
        #[arg(long)]
        region: Option<String>,
        /// shared or dedicated.
        #[arg(long)]
        isolation: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Suspend a tenant: its requests are refused, its data kept.
    Suspend {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Resume a suspended tenant.
    Resume {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete a tenant and erase all its data.
    Delete {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `bulkhead key ...`
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create an API key; it is printed once.
    Create {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Role (repeatable): admin, member, approver, viewer.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Label.
        #[arg(long)]
        name: Option<String>,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// List a tenant's keys (never the keys themselves).
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Revoke a key.
    Revoke {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Key id.
        key_id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

fn print(value: &Value) -> anyhow::Result<ExitCode> {
    if !value.is_null() {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Path segment escaping for ids typed by a person: anything outside the
/// id alphabet is percent-encoded, so it reaches the server as data and
/// gets the server's own validation error.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn object(pairs: &[(&str, &Option<String>)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            map.insert((*k).to_owned(), Value::String(v.clone()));
        }
    }
    Value::Object(map)
}

pub fn tenant(cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCommand::Create {
            id,
            name,
            region,
            isolation,
            conn,
        } => {
            let mut body = object(&[
                ("name", &name),
                ("region", &region),
                ("isolation", &isolation),
            ]);
            body["id"] = Value::String(id);
            print(&Client::new(&conn)?.post("/admin/v1/tenants", &body)?)
        }
        TenantCommand::List { conn } => print(&Client::new(&conn)?.get("/admin/v1/tenants")?),
        TenantCommand::Get { id, conn } => {
            print(&Client::new(&conn)?.get(&format!("/admin/v1/tenants/{}", seg(&id)))?)
        }
        TenantCommand::Update {
            id,
            name,
            region,
            isolation,
            conn,
        } => {
            let body = object(&[
                ("name", &name),
                ("region", &region),
                ("isolation", &isolation),
            ]);
            print(&Client::new(&conn)?.patch(&format!("/admin/v1/tenants/{}", seg(&id)), &body)?)
        }
        TenantCommand::Suspend { id, conn } => print(&Client::new(&conn)?.patch(
            &format!("/admin/v1/tenants/{}", seg(&id)),
            &json!({"status": "suspended"}),
        )?),
        TenantCommand::Resume { id, conn } => print(&Client::new(&conn)?.patch(
            &format!("/admin/v1/tenants/{}", seg(&id)),
            &json!({"status": "active"}),
        )?),
        TenantCommand::Delete { id, conn } => {
            Client::new(&conn)?.delete(&format!("/admin/v1/tenants/{}", seg(&id)))?;
            eprintln!("deleted tenant {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Create {
            tenant,
            roles,
            name,
            expires_at,
            conn,
        } => {
            let mut body = object(&[("name", &name), ("expires_at", &expires_at)]);
            if !roles.is_empty() {
                body["roles"] = json!(roles);
            }
            print(&Client::new(&conn)?.post(
                &format!("/admin/v1/tenants/{}/api-keys", seg(&tenant)),
                &body,
            )?)
        }
        KeyCommand::List { tenant, conn } => print(
            &Client::new(&conn)?.get(&format!("/admin/v1/tenants/{}/api-keys", seg(&tenant)))?,
        ),
        KeyCommand::Revoke {
            tenant,
            key_id,
            conn,
        } => {
            Client::new(&conn)?.delete(&format!(
                "/admin/v1/tenants/{}/api-keys/{}",
                seg(&tenant),
                seg(&key_id)
            ))?;
            eprintln!("revoked key {key_id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
