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
#[expect(
    clippy::disallowed_methods,
    reason = "the one place the binary reads configuration from the environment"
)]
fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads a configuration file, or the embedded default. On invalid
/// configuration prints every error (prefixed with the file) and returns `None`.
pub(crate) fn load_config(path: Option<&Path>) -> anyhow::Result<Option<(Config, PathBuf)>> {
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
    if let Err(e) = boot::agent_parts(&config, &base) {
        for line in e.to_string().split("; ") {
            eprintln!("{}: {line}", args.config.display());
        }
        return Ok(ExitCode::FAILURE);
    }
    if let Err(e) = boot::policy_engine(&config, &base) {
        eprintln!("{}: {e}", args.config.display());
        return Ok(ExitCode::FAILURE);
    }
    // Tool hosts whose names resolve inside: `serve` would start, and every
    // call of the tool would be refused.
    let refused = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(boot::vet_tool_hosts(&config));
    if !refused.is_empty() {
        for line in refused {
            eprintln!("{}: {line}", args.config.display());
        }
        return Ok(ExitCode::FAILURE);
    }
    if config.limits.backend == bulkhead_core::config::LimitsBackend::Redis
        && !cfg!(feature = "redis")
    {
        eprintln!(
            "{}: limits.backend: \"redis\" needs a build with the cargo feature `redis`",
            args.config.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    if config.quotas.alerts.signing_key.is_none() && config.quotas.default.alert_webhook.is_some() {
        eprintln!(
            "{}: note: quotas.default.alert_webhook is set but quotas.alerts.signing_key is not: budget alerts are not sent",
            args.config.display()
        );
    }
    println!("{}: configuration is valid", args.config.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn shutdown_signal() {
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

pub fn serve(
    args: ServeArgs,
    log_style: bulkhead_server::telemetry::LogStyle,
) -> anyhow::Result<ExitCode> {
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
    let telemetry = runtime.block_on(async {
        bulkhead_server::telemetry::init(log_style, "info", &config.telemetry)
    })?;
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        tracing::info!(endpoint = %endpoint, sample_ratio = config.telemetry.sample_ratio, "exporting traces over OTLP/HTTP");
    }
    let result = runtime.block_on(async move {
        let boot = boot::boot(&config, &base).await?;
        match &boot.operator_token {
            OperatorTokenSource::Configured => tracing::info!("operator token taken from the configuration"),
            OperatorTokenSource::Generated(p) => {
                tracing::info!(path = %p.display(), "generated an operator token (mode 0600); the operator CLI reads it from there")
            }
            OperatorTokenSource::Existing(p) => tracing::info!(path = %p.display(), "operator token read from file"),
        }
        if let Some(op) = boot.startup_operator.clone() {
            bulkhead_server::retention::spawn(
                boot.state.clone(),
                op.clone(),
                std::time::Duration::from_secs(config.server.retention_interval_s),
                std::time::Duration::from_secs(config.approvals.sweep_interval_s),
            );
            // Finish a key-encryption-key rotation a crash interrupted.
            let vault = boot.state.vault.clone();
            tokio::spawn(async move {
                match vault.rewrap_all(&op).await {
                    Ok(r) if r.rewrapped > 0 => {
                        tracing::info!(rewrapped = r.rewrapped, key_version = r.key_version, "finished an interrupted key rotation")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "could not finish the interrupted key rotation; run `bulkhead kms rewrap`"),
                }
            });
        }
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(addr = %addr, data_dir = %config.server.data_dir.display(), "listening");
        bulkhead_server::serve(listener, boot.state, shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(ExitCode::SUCCESS)
    });
    // After the server stopped: the last spans (the shutdown's included).
    telemetry.shutdown();
    result
}

/// The tenant attributes `create` and `update` take.
#[derive(Args)]
pub struct TenantFields {
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Residency region.
    #[arg(long)]
    region: Option<String>,
    /// shared (the only mode this build runs; the server refuses
    /// dedicated with 409 isolation_unavailable).
    #[arg(long)]
    isolation: Option<String>,
}

impl TenantFields {
    /// The JSON body with the attributes that were given.
    fn body(&self) -> Value {
        object(&[
            ("name", &self.name),
            ("region", &self.region),
            ("isolation", &self.isolation),
        ])
    }
}

/// `bulkhead tenant ...`
#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Tenant id (lowercase letters, digits, '-').
        id: String,
        #[command(flatten)]
        fields: TenantFields,
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
        #[command(flatten)]
        fields: TenantFields,
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
    /// Rotate a tenant's data key and re-encrypt its credentials.
    RotateKey {
        /// Tenant id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete a tenant and erase all its data. Asks for the tenant id on
    /// a terminal; without one, refuses unless --yes.
    Delete {
        /// Tenant id.
        id: String,
        /// Do not ask: delete at once (for scripts).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `bulkhead secret ...`
#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a credential. The secret is read from standard input, never
    /// from the command line: `api_key`/`bearer` take the raw value, `basic`
    /// the password (with --username), `json` a whole credential body.
    Set {
        /// Tenant id (or --platform).
        #[arg(
            long,
            required_unless_present_any = ["platform", "api_key"],
            conflicts_with = "platform"
        )]
        tenant: Option<String>,
        /// Act as the tenant of this API key (a tenant admin) on the tenant
        /// plane (`/v1/credentials`) instead of as the operator.
        #[arg(long = "api-key", conflicts_with_all = ["tenant", "platform"])]
        api_key: Option<String>,
        /// Store one of the platform's own credentials instead.
        #[arg(long)]
        platform: bool,
        /// Connection name.
        name: String,
        /// api_key, bearer, basic, or json (the body on stdin).
        #[arg(long, default_value = "api_key")]
        kind: String,
        /// User name for `basic`.
        #[arg(long)]
        username: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// List credentials (metadata only).
    List {
        /// Tenant id (or --platform).
        #[arg(
            long,
            required_unless_present_any = ["platform", "api_key"],
            conflicts_with = "platform"
        )]
        tenant: Option<String>,
        /// Act as the tenant of this API key (a tenant admin) on the tenant
        /// plane (`/v1/credentials`) instead of as the operator.
        #[arg(long = "api-key", conflicts_with_all = ["tenant", "platform"])]
        api_key: Option<String>,
        /// The platform's own credentials.
        #[arg(long)]
        platform: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Delete a credential.
    Delete {
        /// Tenant id (or --platform).
        #[arg(
            long,
            required_unless_present_any = ["platform", "api_key"],
            conflicts_with = "platform"
        )]
        tenant: Option<String>,
        /// Act as the tenant of this API key (a tenant admin) on the tenant
        /// plane (`/v1/credentials`) instead of as the operator.
        #[arg(long = "api-key", conflicts_with_all = ["tenant", "platform"])]
        api_key: Option<String>,
        /// The platform's own credentials.
        #[arg(long)]
        platform: bool,
        /// Connection name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `bulkhead kms ...`
#[derive(Subcommand)]
pub enum KmsCommand {
    /// Rotate the key-encryption key and re-wrap every data key, online.
    Rotate {
        #[command(flatten)]
        conn: Connection,
    },
    /// Finish an interrupted rotation (re-wrap without rotating).
    Rewrap {
        #[command(flatten)]
        conn: Connection,
    },
}

fn credentials_path(
    tenant: &Option<String>,
    platform: bool,
    api_key: &Option<String>,
) -> anyhow::Result<String> {
    match (tenant, platform) {
        _ if api_key.is_some() => Ok("/v1/credentials".to_owned()),
        (_, true) => Ok("/admin/v1/platform/credentials".to_owned()),
        (Some(t), false) => Ok(format!("/admin/v1/tenants/{}/credentials", seg(t))),
        (None, false) => {
            anyhow::bail!("name a tenant with --tenant, use --platform, or act with --api-key")
        }
    }
}

/// The operator's client, or the tenant's with `--api-key`.
fn secret_client(conn: &Connection, api_key: &Option<String>) -> anyhow::Result<Client> {
    match api_key.as_deref().map(str::trim) {
        Some("") => anyhow::bail!("--api-key is empty"),
        Some(k) => Ok(Client::with_token(&conn.url, k)),
        None => Client::new(conn),
    }
}

fn read_stdin_secret() -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the secret from standard input")?;
    let trimmed = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if trimmed.is_empty() {
        anyhow::bail!(
            "no secret on standard input (pipe it in: `printf %s \"$TOKEN\" | bulkhead secret set ...`)"
        );
    }
    Ok(trimmed.to_owned())
}

pub fn secret(cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretCommand::Set {
            tenant,
            api_key,
            platform,
            name,
            kind,
            username,
            conn,
        } => {
            let base = credentials_path(&tenant, platform, &api_key)?;
            let value = read_stdin_secret()?;
            let body = match kind.as_str() {
                "api_key" | "bearer" => json!({"kind": kind, "secret": value}),
                "basic" => {
                    let username = username.context("--kind basic needs --username")?;
                    json!({"kind": "basic", "username": username, "password": value})
                }
                "json" => serde_json::from_str(&value).map_err(|_| {
                    anyhow::anyhow!("--kind json: standard input is not a JSON credential body")
                })?,
                other => anyhow::bail!("--kind {other:?}: use api_key, bearer, basic or json"),
            };
            let client = secret_client(&conn, &api_key)?;
            let path = format!("{base}/{}", seg(&name));
            let res = client.put(&path, &body);
            drop(body);
            print(&res?)
        }
        SecretCommand::List {
            tenant,
            api_key,
            platform,
            conn,
        } => print(
            &secret_client(&conn, &api_key)?
                .get(&credentials_path(&tenant, platform, &api_key)?)?,
        ),
        SecretCommand::Delete {
            tenant,
            api_key,
            platform,
            name,
            conn,
        } => {
            let path = format!(
                "{}/{}",
                credentials_path(&tenant, platform, &api_key)?,
                seg(&name)
            );
            secret_client(&conn, &api_key)?.delete(&path)?;
            eprintln!("deleted credential {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn kms(cmd: KmsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KmsCommand::Rotate { conn } => {
            print(&Client::new(&conn)?.post("/admin/v1/kms/rotate", &json!({}))?)
        }
        KmsCommand::Rewrap { conn } => {
            print(&Client::new(&conn)?.post("/admin/v1/kms/rewrap", &json!({}))?)
        }
    }
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

pub(crate) fn print(value: &Value) -> anyhow::Result<ExitCode> {
    if !value.is_null() {
        println!("{}", serde_json::to_string_pretty(value)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Path segment escaping for ids typed by a person: anything outside the
/// id alphabet is percent-encoded, so it reaches the server as data and
/// gets the server's own validation error.
pub(crate) fn seg(s: &str) -> String {
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
        TenantCommand::Create { id, fields, conn } => {
            let mut body = fields.body();
            body["id"] = Value::String(id);
            print(&Client::new(&conn)?.post("/admin/v1/tenants", &body)?)
        }
        TenantCommand::List { conn } => print(&Client::new(&conn)?.get("/admin/v1/tenants")?),
        TenantCommand::Get { id, conn } => {
            print(&Client::new(&conn)?.get(&format!("/admin/v1/tenants/{}", seg(&id)))?)
        }
        TenantCommand::Update { id, fields, conn } => {
            let body = fields.body();
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
        TenantCommand::RotateKey { id, conn } => print(&Client::new(&conn)?.post(
            &format!("/admin/v1/tenants/{}/data-key/rotate", seg(&id)),
            &json!({}),
        )?),
        TenantCommand::Delete { id, yes, conn } => {
            if !yes && !confirm_delete(&id)? {
                eprintln!("not deleted: tenant {id} is unchanged");
                return Ok(ExitCode::FAILURE);
            }
            Client::new(&conn)?.delete(&format!("/admin/v1/tenants/{}", seg(&id)))?;
            eprintln!("deleted tenant {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Asks on the terminal for the tenant id before an erasure; refuses
/// outright when standard input is not a terminal (a script must say
/// `--yes`).
fn confirm_delete(id: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to delete tenant {id} without confirmation: standard input is not a terminal; pass --yes to delete it and erase all its data"
        );
    }
    eprint!("Delete tenant {id} and erase all its data? Type the tenant id to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == id)
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
