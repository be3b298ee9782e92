//! The `bulkhead` binary: `serve`, `check`, and operator commands that act
//! through the HTTP API.

// The binary's output is its interface; libraries must not print.
#![expect(
    clippy::print_stdout,
    reason = "the command line's output is its interface"
)]

mod approvals;
mod audit_verify;
mod client;
mod commands;
mod demo;
mod init;
mod kb;
mod ops;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// bulkhead: a multi-tenant runtime for AI agents.
#[derive(Parser)]
#[command(name = "bulkhead", version, about, propagate_version = true)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a self-contained demonstration: two tenants, an agent, a scripted
    /// fake model and Slack/Jira stand-ins; no keys, no services.
    Demo(demo::DemoArgs),
    /// Run the server (embedded defaults without --config).
    Serve(commands::ServeArgs),
    /// Validate a configuration file; exit 1 with every error, naming its key.
    Check(commands::CheckArgs),
    /// Manage tenants through the operator API.
    #[command(subcommand)]
    Tenant(commands::TenantCommand),
    /// Manage tenant API keys through the operator API.
    #[command(subcommand)]
    Key(commands::KeyCommand),
    /// Store, list and delete credentials (secrets are read from stdin).
    #[command(subcommand)]
    Secret(commands::SecretCommand),
    /// Rotate the vault's key-encryption key.
    #[command(subcommand)]
    Kms(commands::KmsCommand),
    /// Ingest files into a tenant's knowledge collection; search it.
    #[command(subcommand)]
    Kb(kb::KbCommand),
    /// List, approve and deny paused tool calls (with a tenant API key).
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Write a commented starter configuration, DIR/bulkhead.toml.
    Init(init::InitArgs),
    /// The cost ledger: the operator's report across tenants, or one
    /// tenant's with --api-key.
    Usage(ops::UsageArgs),
    /// List, export and verify audit chains.
    #[command(subcommand)]
    Audit(ops::AuditCommand),
    /// A tenant's quota overrides (operator).
    #[command(subcommand)]
    Quotas(ops::QuotasCommand),
    /// A tenant's gateway settings: prompt audit, retention, approval
    /// webhook (operator).
    #[command(subcommand)]
    Settings(ops::SettingsCommand),
    /// The models a tenant can call, and its allow-list (operator).
    #[command(subcommand)]
    Models(ops::ModelsCommand),
    /// A tenant's own Cedar policies (with a tenant API key); validate a
    /// policy file offline.
    #[command(subcommand)]
    Policies(ops::PoliciesCommand),
    /// The agents a tenant can run, and its settings of them (with a
    /// tenant API key).
    #[command(subcommand)]
    Agents(ops::AgentsCommand),
    /// List, read, cancel and delete runs (with a tenant API key).
    #[command(subcommand)]
    Runs(ops::RunsCommand),
    /// List threads, read their messages, delete them (with a tenant API key).
    #[command(subcommand)]
    Threads(ops::ThreadsCommand),
    /// Who a tenant API key is: tenant, principal, roles, region.
    Whoami(ops::WhoamiArgs),
    /// List and delete knowledge collections and documents (with a tenant
    /// API key; `kb` ingests and searches).
    #[command(subcommand)]
    Collections(ops::CollectionsCommand),
}

/// Colour in text logs only on a terminal, and never under `NO_COLOR`
/// (<https://no-color.org>: set and not empty).
fn log_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

/// The log style the `--log-format` flag asks for.
fn log_style(format: LogFormat) -> bulkhead_server::telemetry::LogStyle {
    match format {
        LogFormat::Text => bulkhead_server::telemetry::LogStyle::Text {
            colour: log_colour(),
        },
        LogFormat::Json => bulkhead_server::telemetry::LogStyle::Json,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's output is its report; request logs would drown it.
    let level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    let style = log_style(cli.log_format);
    // `serve` sets up logging itself, with its `[telemetry]`.
    if !matches!(cli.command, Command::Serve(_)) {
        let _ = bulkhead_server::telemetry::init_logs(style, level);
    }
    let result = match cli.command {
        Command::Demo(args) => demo::demo(args),
        Command::Serve(args) => commands::serve(args, style),
        Command::Check(args) => commands::check(args),
        Command::Tenant(cmd) => commands::tenant(cmd),
        Command::Key(cmd) => commands::key(cmd),
        Command::Secret(cmd) => commands::secret(cmd),
        Command::Kms(cmd) => commands::kms(cmd),
        Command::Kb(cmd) => kb::kb(cmd),
        Command::Approvals(cmd) => approvals::approvals(cmd),
        Command::Init(args) => init::init(args),
        Command::Usage(args) => ops::usage(args),
        Command::Audit(cmd) => ops::audit(cmd),
        Command::Quotas(cmd) => ops::quotas(cmd),
        Command::Settings(cmd) => ops::settings(cmd),
        Command::Models(cmd) => ops::models(cmd),
        Command::Policies(cmd) => ops::policies(cmd),
        Command::Agents(cmd) => ops::agents(cmd),
        Command::Runs(cmd) => ops::runs(cmd),
        Command::Threads(cmd) => ops::threads(cmd),
        Command::Whoami(args) => ops::whoami(args),
        Command::Collections(cmd) => ops::collections(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
