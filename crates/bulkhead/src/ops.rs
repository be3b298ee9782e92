//! The operator's and tenant admin's everyday commands over the HTTP API:
//! `usage`, `audit`, `quotas`, `settings`, `models`, `policies`, `agents`,
//! `runs`, `threads` and `whoami`. Each prints a table or text by default
//! and the server's JSON with `--json`.
//!
//! Operator commands (`quotas`, `settings`, `models`, and `usage`/`audit`
//! without `--api-key`) present the operator token like `tenant`; tenant
//! commands present the caller's own API key like `approvals`, so the
//! tenant's policies decide.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::approvals::TenantConnection;
use crate::client::{Client, Connection};
use crate::commands::{print, seg};

/// `--json`: the server's answer as it came.
#[derive(Args, Clone, Copy)]
pub struct Format {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The operator token, or a tenant API key with `--api-key`.
#[derive(Args, Clone)]
pub struct EitherConnection {
    /// Base URL of the bulkhead server.
    #[arg(long, env = "BULKHEAD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Data directory holding a generated operator token (used when
    /// BULKHEAD_OPERATOR_TOKEN is not set and no --api-key is given).
    #[arg(long, default_value = ".bulkhead")]
    pub data_dir: PathBuf,
    /// The operator token.
    #[arg(
        long = "operator-token",
        env = "BULKHEAD_OPERATOR_TOKEN",
        hide_env_values = true,
        hide = true
    )]
    pub token: Option<String>,
    /// Act as a tenant with this API key (or JWT) instead of the operator.
    #[arg(long = "api-key", env = "BULKHEAD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl EitherConnection {
    /// The tenant client when an API key is given, else the operator's.
    fn client(&self) -> anyhow::Result<(Client, bool)> {
        match self.api_key.as_deref().map(str::trim) {
            Some("") => bail!("--api-key (or BULKHEAD_API_KEY) is empty"),
            Some(key) => Ok((Client::with_token(&self.url, key), true)),
            None => Ok((
                Client::new(&Connection {
                    url: self.url.clone(),
                    data_dir: self.data_dir.clone(),
                    token: self.token.clone(),
                })?,
                false,
            )),
        }
    }
}

fn tenant_client(conn: &TenantConnection) -> anyhow::Result<Client> {
    if conn.api_key.trim().is_empty() {
        bail!("--api-key (or BULKHEAD_API_KEY) is empty");
    }
    Ok(Client::with_token(&conn.url, conn.api_key.trim()))
}

/// A JSON value as a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints rows under headers, each column as wide as its widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Rows of `items`, one cell per key.
fn rows_of(items: &[Value], keys: &[&str]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|i| keys.iter().map(|k| cell(&i[*k])).collect())
        .collect()
}

/// Appends `key=value` query parameters that are set.
fn query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let mut out = path.to_owned();
    let mut sep = '?';
    for (k, v) in params {
        if let Some(v) = v {
            out.push(sep);
            out.push_str(k);
            out.push('=');
            out.push_str(&seg(v));
            sep = '&';
        }
    }
    out
}

fn array<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn more(body: &Value) {
    if let Some(next) = body["next_after"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| body["next_after"].as_u64().map(|n| n.to_string()))
    {
        eprintln!("more: repeat with --after {next}");
    }
}

/// `--limit` as the list endpoints take it.
fn check_limit(limit: Option<u32>) -> anyhow::Result<()> {
    if limit.is_some_and(|l| l == 0 || l > 1000) {
        bail!("--limit: must be between 1 and 1000");
    }
    Ok(())
}

/// One page of a list: the server's JSON with `--json`, else a table of
/// the `list` member's `fields` under `headers`, and how to ask for the
/// next page when there is one.
fn print_page(
    body: &Value,
    format: Format,
    list: &str,
    headers: &[&str],
    fields: &[&str],
) -> anyhow::Result<ExitCode> {
    if format.json {
        return print(body);
    }
    table(headers, &rows_of(array(body, list), fields));
    more(body);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- usage

/// `bulkhead usage`
#[derive(Args)]
pub struct UsageArgs {
    /// One tenant's rows of the operator's report (without --api-key).
    #[arg(long)]
    tenant: Option<String>,
    /// Start, inclusive: YYYY-MM-DD or RFC 3339 (default: 30 days ago).
    #[arg(long)]
    from: Option<String>,
    /// End, exclusive: YYYY-MM-DD or RFC 3339 (default: now).
    #[arg(long)]
    to: Option<String>,
    /// Comma-separated groups: day, agent, model, tool (default day,model).
    #[arg(long)]
    group_by: Option<String>,
    /// Print the server's CSV.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    #[command(flatten)]
    format: Format,
    #[command(flatten)]
    conn: EitherConnection,
}

/// A nine-decimal USD string as nano-dollars (0 when malformed).
fn usd_nanos(s: &str) -> u128 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    whole.parse::<u128>().unwrap_or(0) * 1_000_000_000 + frac.parse::<u128>().unwrap_or(0)
}

fn nanos_usd(n: u128) -> String {
    format!("{}.{:09}", n / 1_000_000_000, n % 1_000_000_000)
}

pub fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let (client, as_tenant) = args.conn.client()?;
    if as_tenant && args.tenant.is_some() {
        bail!("--tenant: with --api-key the key's own tenant is reported; drop one of them");
    }
    let base = if as_tenant {
        "/v1/usage"
    } else {
        "/admin/v1/usage"
    };
    let path = query(
        base,
        &[
            ("from", args.from.clone()),
            ("to", args.to.clone()),
            ("group_by", args.group_by.clone()),
            ("format", args.csv.then(|| "csv".to_owned())),
        ],
    );
    let mut body = client.get(&path)?;
    if args.csv {
        let text = body.as_str().unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let keep = match &args.tenant {
                Some(t) => i == 0 || line.split(',').next() == Some(t.as_str()),
                None => true,
            };
            if keep {
                println!("{line}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(t) = &args.tenant {
        let rows: Vec<Value> = array(&body, "rows")
            .iter()
            .filter(|r| r["tenant"].as_str() == Some(t.as_str()))
            .cloned()
            .collect();
        let mut total =
            json!({"requests": 0, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0});
        let mut nanos = 0u128;
        for r in &rows {
            for k in ["requests", "input_tokens", "output_tokens", "cached_tokens"] {
                total[k] = json!(total[k].as_u64().unwrap_or(0) + r[k].as_u64().unwrap_or(0));
            }
            nanos += usd_nanos(r["cost_usd"].as_str().unwrap_or("0"));
        }
        total["cost_usd"] = json!(nanos_usd(nanos));
        body["rows"] = json!(rows);
        body["total"] = total;
    }
    if args.format.json {
        return print(&body);
    }
    let groups: Vec<&str> = ["tenant", "day", "agent", "model", "tool"]
        .into_iter()
        .filter(|g| array(&body, "rows").iter().any(|r| r.get(*g).is_some()))
        .collect();
    let numbers = [
        "requests",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "cost_usd",
    ];
    let keys: Vec<&str> = groups.iter().copied().chain(numbers).collect();
    let mut rows = rows_of(array(&body, "rows"), &keys);
    let mut total: Vec<String> = groups.iter().map(|_| String::new()).collect();
    if let Some(first) = total.first_mut() {
        *first = "total".to_owned();
    }
    total.extend(numbers.iter().map(|k| cell(&body["total"][*k])));
    if groups.is_empty() {
        rows.push(total);
        table(&numbers, &rows);
    } else {
        rows.push(total);
        table(&keys, &rows);
    }
    println!("period: {} to {}", cell(&body["from"]), cell(&body["to"]));
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- audit

/// `bulkhead audit ...`
#[derive(Subcommand)]
pub enum AuditCommand {
    /// A page of an audit chain, oldest first: the key's tenant's with
    /// --api-key, else the operator's own.
    List {
        /// Events after this sequence number.
        #[arg(long)]
        after: Option<u64>,
        /// Page size, 1-1000.
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: EitherConnection,
    },
    /// Export a chain as JSON Lines (events and the signed checkpoints
    /// among them) to --output or standard output: the key's tenant's
    /// with --api-key, a tenant's with --tenant (operator), else the
    /// operator's own.
    Export {
        /// As the operator: this tenant's chain.
        #[arg(long, conflicts_with = "api_key")]
        tenant: Option<String>,
        /// First sequence number (default 1).
        #[arg(long)]
        from: Option<u64>,
        /// Last sequence number (default: the newest event).
        #[arg(long)]
        to: Option<u64>,
        /// File to write (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        conn: EitherConnection,
    },
    /// Verify an export offline: exit 0 printing what it holds, or 1
    /// naming the first bad line and why.
    Verify {
        /// The exported file.
        file: PathBuf,
        /// Public keys to check checkpoint signatures with (the output of
        /// `bulkhead audit keys`); without it signatures are not checked.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// The file is the operator's chain (its events name many tenants).
        #[arg(long)]
        operator: bool,
    },
    /// Print the public keys that sign checkpoints (JSON; keep it for
    /// `audit verify --keys`).
    Keys {
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Add a new generated signing key to the data directory's key file;
    /// it signs from the server's next start, and the older keys stay
    /// listed so their checkpoints still verify. Prints the new public key.
    RotateKey {
        /// Configuration file (for `server.data_dir` and `[audit]`);
        /// without it, the embedded defaults apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Data directory, overriding `server.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn audit_path(as_tenant: bool) -> &'static str {
    if as_tenant {
        "/v1/audit"
    } else {
        "/admin/v1/audit"
    }
}

pub fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::List {
            after,
            limit,
            format,
            conn,
        } => {
            check_limit(limit)?;
            let (client, as_tenant) = conn.client()?;
            let path = query(
                audit_path(as_tenant),
                &[
                    ("after", after.map(|a| a.to_string())),
                    ("limit", limit.map(|l| l.to_string())),
                ],
            );
            let body = client.get(&path)?;
            let columns = ["seq", "time", "principal", "action", "target", "outcome"];
            print_page(&body, format, "events", &columns, &columns)
        }
        AuditCommand::Export {
            tenant,
            from,
            to,
            output,
            conn,
        } => {
            let (client, as_tenant) = conn.client()?;
            let base = match (&tenant, as_tenant) {
                (Some(t), false) => format!("/admin/v1/tenants/{t}/audit/export"),
                (_, true) => "/v1/audit/export".to_owned(),
                (None, false) => "/admin/v1/audit/export".to_owned(),
            };
            let path = query(
                &base,
                &[
                    ("from", from.map(|a| a.to_string())),
                    ("to", to.map(|a| a.to_string())),
                ],
            );
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("--output: cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let bytes = client.get_to(&path, &mut out)?;
            out.flush()?;
            if let Some(p) = output {
                eprintln!("wrote {bytes} bytes to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Keys { conn } => print(&tenant_client(&conn)?.get("/v1/audit/keys")?),
        AuditCommand::Verify {
            file,
            keys,
            operator,
        } => verify(&file, keys.as_deref(), operator),
        AuditCommand::RotateKey { config, data_dir } => {
            let Some((config, _)) = crate::commands::load_config(config.as_deref())? else {
                return Ok(ExitCode::FAILURE);
            };
            let dir = data_dir.unwrap_or(config.server.data_dir);
            let key = bulkhead_server::audit_keys::rotate(&config.audit, &dir)?;
            eprintln!(
                "new audit signing key {}: it signs from the next start",
                key.id
            );
            print(&serde_json::to_value(key)?)
        }
    }
}

fn verify(file: &Path, keys: Option<&Path>, operator: bool) -> anyhow::Result<ExitCode> {
    let keys =
        match keys {
            Some(k) => {
                let text = std::fs::read_to_string(k)
                    .with_context(|| format!("--keys: cannot read {}", k.display()))?;
                Some(crate::audit_verify::parse_keys(&text).with_context(|| {
                    format!("--keys: {} is not a list of audit keys", k.display())
                })?)
            }
            None => None,
        };
    let input = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
    );
    match crate::audit_verify::verify(input, keys.as_deref(), operator) {
        Ok(None) => {
            eprintln!("{}: no audit events", file.display());
            Ok(ExitCode::FAILURE)
        }
        Ok(Some(s)) => {
            println!(
                "{}: {} events (seq {} to {}), chain intact",
                file.display(),
                s.events,
                s.first,
                s.last
            );
            println!("head: {}", s.head);
            match &s.last_checkpoint {
                Some(c) => println!(
                    "last valid checkpoint: seq {} at {} by key {}{} ({} in the file)",
                    c.seq,
                    c.time,
                    c.key_id,
                    if keys.is_some() {
                        ""
                    } else {
                        ", signature not checked (no --keys)"
                    },
                    s.checkpoints
                ),
                None => println!("last valid checkpoint: none"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            eprintln!("{}: line {}: {}", file.display(), f.line, f.reason);
            Ok(ExitCode::FAILURE)
        }
    }
}

// ---------------------------------------------------------------- quotas

/// `bulkhead quotas ...`
#[derive(Subcommand)]
pub enum QuotasCommand {
    /// A tenant's own quota overrides (over `[quotas.default]`).
    Get {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: Connection,
    },
    /// Change a tenant's overrides: KEY=VALUE each (requests_per_minute,
    /// tokens_per_minute, concurrent_runs, tool_calls_per_minute,
    /// daily_budget_usd, monthly_budget_usd, weight, alert_webhook,
    /// max_documents, max_stored_bytes); KEY=default removes an override.
    Set {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        values: Vec<String>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: Connection,
    },
}

/// The quota keys whose values are strings on the wire.
const STRING_QUOTAS: [&str; 3] = ["daily_budget_usd", "monthly_budget_usd", "alert_webhook"];

fn quota_patch(values: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut patch = Map::new();
    for pair in values {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("{pair:?}: write KEY=VALUE (e.g. requests_per_minute=600)");
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() {
            bail!("{pair:?}: the quota name is missing before '='");
        }
        let v = if value == "default" {
            Value::Null
        } else if STRING_QUOTAS.contains(&key) {
            Value::String(value.to_owned())
        } else {
            match value.parse::<u64>() {
                Ok(n) => json!(n),
                Err(_) => bail!("{key}: {value:?} is not a whole number (or `default`)"),
            }
        };
        patch.insert(key.to_owned(), v);
    }
    Ok(patch)
}

fn print_quotas(tenant: &Value, format: Format) -> anyhow::Result<ExitCode> {
    let quotas = tenant.get("quotas").cloned().unwrap_or(json!({}));
    if format.json {
        return print(&json!({"tenant": tenant["id"], "quotas": quotas}));
    }
    let rows: Vec<Vec<String>> = quotas
        .as_object()
        .map(|m| m.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect())
        .unwrap_or_default();
    if rows.is_empty() {
        println!(
            "tenant {} has no quota overrides: [quotas.default] applies",
            cell(&tenant["id"])
        );
    } else {
        table(&["quota", "value"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn quotas(cmd: QuotasCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        QuotasCommand::Get {
            tenant,
            format,
            conn,
        } => {
            let t = Client::new(&conn)?.get(&format!("/admin/v1/tenants/{}", seg(&tenant)))?;
            print_quotas(&t, format)
        }
        QuotasCommand::Set {
            tenant,
            values,
            format,
            conn,
        } => {
            let patch = quota_patch(&values)?;
            let t = Client::new(&conn)?.patch(
                &format!("/admin/v1/tenants/{}", seg(&tenant)),
                &json!({"quotas": patch}),
            )?;
            print_quotas(&t, format)
        }
    }
}

// ---------------------------------------------------------------- settings

/// `bulkhead settings ...`
#[derive(Subcommand)]
pub enum SettingsCommand {
    /// A tenant's gateway settings.
    Get {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: Connection,
    },
    /// Change a tenant's gateway settings (only those given).
    Set {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Keep each model call's messages in the audit chain: true or false.
        #[arg(long)]
        audit_prompts: Option<bool>,
        /// Delete thread messages older than this many days (1-3650), or
        /// `none` to keep them.
        #[arg(long)]
        message_retention_days: Option<String>,
        /// Where new approval requests are posted (http(s) URL), or `none`.
        #[arg(long)]
        approval_webhook: Option<String>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: Connection,
    },
}

fn print_settings(body: &Value, format: Format) -> anyhow::Result<ExitCode> {
    if format.json {
        return print(body);
    }
    let keys = [
        "tenant",
        "audit_prompts",
        "message_retention_days",
        "approval_webhook",
        "allowed_models",
    ];
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| vec![(*k).to_owned(), cell(&body[*k])])
        .collect();
    table(&["setting", "value"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub fn settings(cmd: SettingsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SettingsCommand::Get {
            tenant,
            format,
            conn,
        } => print_settings(
            &Client::new(&conn)?.get(&format!("/admin/v1/tenants/{}/settings", seg(&tenant)))?,
            format,
        ),
        SettingsCommand::Set {
            tenant,
            audit_prompts,
            message_retention_days,
            approval_webhook,
            format,
            conn,
        } => {
            let mut body = Map::new();
            if let Some(a) = audit_prompts {
                body.insert("audit_prompts".into(), json!(a));
            }
            if let Some(d) = message_retention_days {
                let v = if d == "none" {
                    Value::Null
                } else {
                    match d.parse::<u32>() {
                        Ok(n) => json!(n),
                        Err(_) => bail!(
                            "--message-retention-days: {d:?} is not a number of days (or `none`)"
                        ),
                    }
                };
                body.insert("message_retention_days".into(), v);
            }
            if let Some(w) = approval_webhook {
                let v = if w == "none" { Value::Null } else { json!(w) };
                body.insert("approval_webhook".into(), v);
            }
            if body.is_empty() {
                bail!(
                    "nothing to change: give --audit-prompts, --message-retention-days and/or --approval-webhook"
                );
            }
            print_settings(
                &Client::new(&conn)?.put(
                    &format!("/admin/v1/tenants/{}/settings", seg(&tenant)),
                    &Value::Object(body),
                )?,
                format,
            )
        }
    }
}

// ---------------------------------------------------------------- models

/// `bulkhead models ...`
#[derive(Subcommand)]
pub enum ModelsCommand {
    /// The models the key's tenant can call (tenant plane).
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// A tenant's model allow-list and what it can call now (operator).
    Get {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: Connection,
    },
    /// Replace a tenant's model allow-list (operator).
    Set {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Model aliases the tenant may use (repeatable or comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        allow: Vec<String>,
        /// Allow every model (no allow-list).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: Connection,
    },
}

fn print_models(body: &Value, format: Format) -> anyhow::Result<ExitCode> {
    if format.json {
        return print(body);
    }
    println!(
        "allowed:   {}",
        if body["allowed"].is_null() {
            "every model".to_owned()
        } else {
            cell(&body["allowed"])
        }
    );
    println!("available: {}", cell(&body["available"]));
    Ok(ExitCode::SUCCESS)
}

pub fn models(cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCommand::List { format, conn } => {
            let body = tenant_client(&conn)?.get("/v1/models")?;
            if format.json {
                return print(&body);
            }
            table(
                &["model", "owned_by"],
                &rows_of(array(&body, "data"), &["id", "owned_by"]),
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Get {
            tenant,
            format,
            conn,
        } => print_models(
            &Client::new(&conn)?.get(&format!("/admin/v1/tenants/{}/models", seg(&tenant)))?,
            format,
        ),
        ModelsCommand::Set {
            tenant,
            allow,
            all,
            format,
            conn,
        } => {
            let allowed = if all { Value::Null } else { json!(allow) };
            print_models(
                &Client::new(&conn)?.put(
                    &format!("/admin/v1/tenants/{}/models", seg(&tenant)),
                    &json!({"allowed": allowed}),
                )?,
                format,
            )
        }
    }
}

// ---------------------------------------------------------------- policies

/// `bulkhead policies ...`
#[derive(Subcommand)]
pub enum PoliciesCommand {
    /// Print the key's tenant's own Cedar policies.
    Get {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Replace the key's tenant's policies with FILE's (validated by the
    /// server first; on error the old ones stay).
    Put {
        /// A Cedar policy file (`-`: standard input).
        file: PathBuf,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Validate a Cedar policy file offline against the schema: exit 0,
    /// or 1 with the validator's message.
    Validate {
        /// A Cedar policy file (`-`: standard input).
        file: PathBuf,
    },
}

fn read_text(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

pub fn policies(cmd: PoliciesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PoliciesCommand::Get { format, conn } => {
            let body = tenant_client(&conn)?.get("/v1/policies")?;
            if format.json {
                return print(&body);
            }
            let text = body["policies"].as_str().unwrap_or_default();
            if text.trim().is_empty() {
                eprintln!("the tenant has no policies of its own: the platform's apply");
            } else {
                println!("{}", text.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        PoliciesCommand::Put { file, format, conn } => {
            let text = read_text(&file)?;
            let body = tenant_client(&conn)?.put("/v1/policies", &json!({"policies": text}))?;
            if format.json {
                return print(&body);
            }
            eprintln!("policies replaced; they apply from the next request");
            Ok(ExitCode::SUCCESS)
        }
        PoliciesCommand::Validate { file } => {
            let text = read_text(&file)?;
            let engine = bulkhead_policy::PolicyEngine::new(None)
                .map_err(|e| anyhow::anyhow!("the built-in policies do not load: {e}"))?;
            match engine.compile(&text) {
                Ok(_) => {
                    println!("{}: policies are valid", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    for line in e.to_string().lines() {
                        eprintln!("{}: {line}", file.display());
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

// ---------------------------------------------------------------- agents

/// `bulkhead agents ...`
#[derive(Subcommand)]
pub enum AgentsCommand {
    /// The agents the key's tenant can run.
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// The tenant's settings of an agent (JSON).
    Settings {
        /// Agent name.
        agent: String,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Replace the tenant's settings of an agent with FILE's JSON
    /// (`variables`, `instructions`, `connections`, `enabled`).
    Configure {
        /// Agent name.
        agent: String,
        /// A JSON file (`-`: standard input).
        file: PathBuf,
        #[command(flatten)]
        conn: TenantConnection,
    },
}

pub fn agents(cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentsCommand::List { format, conn } => {
            let body = tenant_client(&conn)?.get("/v1/agents")?;
            if format.json {
                return print(&body);
            }
            table(
                &["agent", "model", "enabled", "tools", "description"],
                &rows_of(
                    array(&body, "agents"),
                    &["name", "model", "enabled", "tools", "description"],
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Settings { agent, conn } => {
            print(&tenant_client(&conn)?.get(&format!("/v1/agents/{}/settings", seg(&agent)))?)
        }
        AgentsCommand::Configure { agent, file, conn } => {
            let text = read_text(&file)?;
            let body: Value = serde_json::from_str(&text).map_err(|_| {
                anyhow::anyhow!("{}: not a JSON object of agent settings", file.display())
            })?;
            if !body.is_object() {
                bail!("{}: not a JSON object of agent settings", file.display());
            }
            print(
                &tenant_client(&conn)?
                    .put(&format!("/v1/agents/{}/settings", seg(&agent)), &body)?,
            )
        }
    }
}

// ---------------------------------------------------------------- runs

/// Run states, as the server names them.
#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum RunState {
    /// In progress.
    Running,
    /// Paused for a decision.
    AwaitingApproval,
    /// Answered.
    Completed,
    /// Ended by an error or a limit.
    Failed,
    /// Cancelled.
    Cancelled,
}

fn value_name<T: ValueEnum>(v: &T) -> Option<String> {
    v.to_possible_value().map(|p| p.get_name().to_owned())
}

/// `bulkhead runs ...`
#[derive(Subcommand)]
pub enum RunsCommand {
    /// The key's tenant's runs, newest first.
    List {
        /// Only this agent's runs.
        #[arg(long)]
        agent: Option<String>,
        /// Only runs in this state.
        #[arg(long, value_enum)]
        status: Option<RunState>,
        /// Runs older than this run id (the previous page's last).
        #[arg(long)]
        after: Option<String>,
        /// Page size, 1-1000 (default 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// A run with its steps (JSON).
    Get {
        /// Run id.
        id: String,
        /// Wait up to this many seconds (at most 60) for it to end.
        #[arg(long)]
        wait: Option<u64>,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Ask a running run to stop.
    Cancel {
        /// Run id.
        id: String,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Delete an ended run with its steps, approvals and messages.
    Delete {
        /// Run id.
        id: String,
        #[command(flatten)]
        conn: TenantConnection,
    },
}

pub fn runs(cmd: RunsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCommand::List {
            agent,
            status,
            after,
            limit,
            format,
            conn,
        } => {
            check_limit(limit)?;
            let path = query(
                "/v1/runs",
                &[
                    ("agent", agent),
                    ("status", status.as_ref().and_then(value_name)),
                    ("after", after),
                    ("limit", limit.map(|l| l.to_string())),
                ],
            );
            let body = tenant_client(&conn)?.get(&path)?;
            print_page(
                &body,
                format,
                "runs",
                &["run", "agent", "status", "created_at", "thread"],
                &["id", "agent", "status", "created_at", "thread_id"],
            )
        }
        RunsCommand::Get { id, wait, conn } => {
            let path = query(
                &format!("/v1/runs/{}", seg(&id)),
                &[("wait", wait.map(|w| w.to_string()))],
            );
            print(&tenant_client(&conn)?.get(&path)?)
        }
        RunsCommand::Cancel { id, conn } => {
            let body =
                tenant_client(&conn)?.post(&format!("/v1/runs/{}/cancel", seg(&id)), &json!({}))?;
            eprintln!("asked run {id} to stop");
            print(&body)
        }
        RunsCommand::Delete { id, conn } => {
            tenant_client(&conn)?.delete(&format!("/v1/runs/{}", seg(&id)))?;
            eprintln!("deleted run {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

// ---------------------------------------------------------------- threads

/// `bulkhead threads ...`
#[derive(Subcommand)]
pub enum ThreadsCommand {
    /// The key's tenant's threads, newest first.
    List {
        /// Only threads this agent ran on.
        #[arg(long)]
        agent: Option<String>,
        /// Threads older than this thread id (the previous page's last).
        #[arg(long)]
        after: Option<String>,
        /// Page size, 1-1000 (default 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// A thread's messages, in order.
    Messages {
        /// Thread id.
        id: String,
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Delete a thread with its messages and runs.
    Delete {
        /// Thread id.
        id: String,
        #[command(flatten)]
        conn: TenantConnection,
    },
}

pub fn threads(cmd: ThreadsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ThreadsCommand::List {
            agent,
            after,
            limit,
            format,
            conn,
        } => {
            check_limit(limit)?;
            let path = query(
                "/v1/threads",
                &[
                    ("agent", agent),
                    ("after", after),
                    ("limit", limit.map(|l| l.to_string())),
                ],
            );
            let body = tenant_client(&conn)?.get(&path)?;
            print_page(
                &body,
                format,
                "threads",
                &["thread", "agents", "runs", "created_at", "last_run_at"],
                &["id", "agents", "runs", "created_at", "last_run_at"],
            )
        }
        ThreadsCommand::Messages { id, format, conn } => {
            let body = tenant_client(&conn)?.get(&format!("/v1/threads/{}/messages", seg(&id)))?;
            if format.json {
                return print(&body);
            }
            for m in array(&body, "messages") {
                let msg = &m["message"];
                let content = match &msg["content"] {
                    Value::String(s) => s.clone(),
                    Value::Null => match &msg["tool_calls"] {
                        Value::Null => String::new(),
                        calls => format!("(tool calls) {calls}"),
                    },
                    other => other.to_string(),
                };
                println!("[{}] {}: {content}", cell(&m["seq"]), cell(&msg["role"]));
            }
            Ok(ExitCode::SUCCESS)
        }
        ThreadsCommand::Delete { id, conn } => {
            tenant_client(&conn)?.delete(&format!("/v1/threads/{}", seg(&id)))?;
            eprintln!("deleted thread {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

// ---------------------------------------------------------------- whoami

/// `bulkhead whoami`
#[derive(Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    format: Format,
    #[command(flatten)]
    conn: TenantConnection,
}

pub fn whoami(args: WhoamiArgs) -> anyhow::Result<ExitCode> {
    let body = tenant_client(&args.conn)?.get("/v1/me")?;
    if args.format.json {
        return print(&body);
    }
    for k in ["tenant", "principal", "principal_kind", "roles", "region"] {
        println!("{k:<15} {}", cell(&body[k]));
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- collections

/// `bulkhead collections ...`
#[derive(Subcommand)]
pub enum CollectionsCommand {
    /// The key's tenant's knowledge collections.
    List {
        #[command(flatten)]
        format: Format,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Delete a collection with all its documents.
    Delete {
        /// Collection name.
        collection: String,
        #[command(flatten)]
        conn: TenantConnection,
    },
    /// Delete one document of a collection.
    DeleteDocument {
        /// Collection name.
        collection: String,
        /// Document id.
        id: String,
        #[command(flatten)]
        conn: TenantConnection,
    },
}

pub fn collections(cmd: CollectionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CollectionsCommand::List { format, conn } => {
            let body = tenant_client(&conn)?.get("/v1/collections")?;
            if format.json {
                return print(&body);
            }
            table(
                &["collection", "documents", "chunks", "created_at"],
                &rows_of(
                    array(&body, "collections"),
                    &["name", "documents", "chunks", "created_at"],
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        CollectionsCommand::Delete { collection, conn } => {
            tenant_client(&conn)?.delete(&format!("/v1/collections/{}", seg(&collection)))?;
            eprintln!("deleted collection {collection}");
            Ok(ExitCode::SUCCESS)
        }
        CollectionsCommand::DeleteDocument {
            collection,
            id,
            conn,
        } => {
            tenant_client(&conn)?.delete(&format!(
                "/v1/collections/{}/documents/{}",
                seg(&collection),
                seg(&id)
            ))?;
            eprintln!("deleted document {id} of {collection}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
