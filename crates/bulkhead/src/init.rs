//! `bulkhead init [DIR]`: writes a commented starter configuration that
//! `serve` runs as is (the embedded defaults, spelled out) and `check`
//! accepts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

/// The starter configuration (also checked by the tests).
pub const STARTER: &str = include_str!("starter.toml");

/// `bulkhead init`
#[derive(Args)]
pub struct InitArgs {
    /// Directory to write `bulkhead.toml` into (created if missing).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Replace an existing `bulkhead.toml`.
    #[arg(long)]
    force: bool,
}

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let path = args.dir.join("bulkhead.toml");
    if path.exists() && !args.force {
        bail!(
            "{} already exists; keep it, or pass --force to replace it",
            path.display()
        );
    }
    std::fs::write(&path, STARTER).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    println!(
        "next: bulkhead check --config {p} && bulkhead serve --config {p}",
        p = path.display()
    );
    Ok(ExitCode::SUCCESS)
}
