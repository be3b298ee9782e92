//! `bulkhead kb`: ingest files into a tenant's knowledge collection and
//! search it, through the operator routes that act for a tenant
//! (`/admin/v1/tenants/{id}/collections/...`).
//!
//! `ingest` sends one document per file, with the file's path relative to
//! the argument it came from as `external_id`, so running it again replaces
//! the documents instead of duplicating them. A file the server refuses is
//! reported and the others go on; the summary on standard output says what
//! happened. Exit status: 0, 1 when a file failed, 2 when the command could
//! not run (bad arguments, an unreadable path, an unknown tenant).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{Client, Connection};
use crate::commands::seg;

/// Exit status when the command could not run at all.
const USAGE: u8 = 2;

/// `bulkhead kb ...`
#[derive(Subcommand)]
pub enum KbCommand {
    /// Ingest files (or directories, recursively) into a tenant's collection.
    Ingest(IngestArgs),
    /// Search a tenant's collection; prints the server's JSON answer.
    Search(SearchArgs),
}

/// A document format, as the server names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Format {
    /// Plain text.
    Text,
    /// Markdown (headings become the chunks' heading paths).
    Markdown,
    /// HTML (scripts, styles and navigation are dropped).
    Html,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
        }
    }

    /// The format a file's extension suggests; text when it suggests none.
    fn from_path(path: &Path) -> Self {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("md" | "markdown") => Format::Markdown,
            Some("html" | "htm") => Format::Html,
            _ => Format::Text,
        }
    }
}

/// `bulkhead kb ingest`
#[derive(Args)]
pub struct IngestArgs {
    /// Tenant id.
    #[arg(long)]
    tenant: String,
    /// Collection (created on first use).
    #[arg(long)]
    collection: String,
    /// Format of every file; without it, from each file's extension
    /// (.md/.markdown: markdown, .html/.htm: html, else text).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Metadata for every document: a JSON object of scalars or arrays.
    #[arg(long)]
    metadata: Option<String>,
    /// Files or directories (walked recursively, hidden entries skipped).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    conn: Connection,
}

/// `bulkhead kb search`
#[derive(Args)]
pub struct SearchArgs {
    /// Tenant id.
    #[arg(long)]
    tenant: String,
    /// Collection.
    #[arg(long)]
    collection: String,
    /// What to look for.
    query: String,
    /// Results wanted (1–50; the server's default is 5).
    #[arg(long)]
    top_k: Option<usize>,
    /// hybrid (default), fulltext or vector.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    #[command(flatten)]
    conn: Connection,
}

/// A search mode, as the server names it.
#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Full-text and vector results fused (full-text alone without an
    /// embedding model).
    Hybrid,
    /// Full-text only.
    Fulltext,
    /// Vector only.
    Vector,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Fulltext => "fulltext",
            Mode::Vector => "vector",
        }
    }
}

pub fn kb(cmd: KbCommand) -> anyhow::Result<ExitCode> {
    let result = match cmd {
        KbCommand::Ingest(args) => ingest(args),
        KbCommand::Search(args) => search(args),
    };
    // Whatever stops the command before it could do its work is a usage
    // error (exit 2); per-file failures are counted in the summary.
    result.or_else(|e| {
        eprintln!("error: {e:#}");
        Ok(ExitCode::from(USAGE))
    })
}

/// One file to send.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    /// The path to read and to name in messages.
    path: PathBuf,
    /// Relative to the argument it came from, `/`-separated.
    external_id: String,
}

/// A path below a directory argument that could not be read, and why.
type Unreadable = (PathBuf, String);

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// The files under the arguments: a file stands for itself (its name is
/// its id), a directory for every non-hidden file below it, sorted.
/// An argument that cannot be read is an error; an unreadable entry below
/// a directory is returned in the second list with the reason.
fn collect(args: &[PathBuf]) -> anyhow::Result<(Vec<Entry>, Vec<Unreadable>)> {
    let mut files = Vec::new();
    let mut unreadable = Vec::new();
    for arg in args {
        let meta =
            std::fs::metadata(arg).with_context(|| format!("cannot read {}", arg.display()))?;
        if meta.is_dir() {
            std::fs::read_dir(arg).with_context(|| format!("cannot read {}", arg.display()))?;
            walk(arg, &mut Vec::new(), &mut files, &mut unreadable);
        } else if meta.is_file() {
            let name = arg
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .with_context(|| format!("{} names no file", arg.display()))?;
            files.push(Entry {
                path: arg.clone(),
                external_id: name,
            });
        } else {
            bail!("{} is neither a file nor a directory", arg.display());
        }
    }
    Ok((files, unreadable))
}

fn walk(
    dir: &Path,
    rel: &mut Vec<String>,
    files: &mut Vec<Entry>,
    unreadable: &mut Vec<Unreadable>,
) {
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).collect(),
        Err(e) => {
            unreadable.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if is_hidden(&name) {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links to files; a link to a directory is not
        // descended into, so a link loop cannot make the walk endless.
        let Ok(kind) = entry.file_type() else {
            unreadable.push((path, "cannot read its file type".to_owned()));
            continue;
        };
        rel.push(name.to_string_lossy().into_owned());
        if kind.is_dir() {
            walk(&path, rel, files, unreadable);
        } else if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(Entry {
                path,
                external_id: rel.join("/"),
            });
        }
        rel.pop();
    }
}

/// What `ingest` prints at the end.
#[derive(Default)]
struct Summary {
    ingested: u64,
    replaced: u64,
    unchanged: u64,
    chunks: u64,
    failed: Vec<Value>,
}

impl Summary {
    fn fail(&mut self, bar: &ProgressBar, path: &Path, code: &str, detail: &str) {
        bar.suspend(|| eprintln!("failed: {}: {code}: {detail}", path.display()));
        self.failed
            .push(json!({"path": path.display().to_string(), "code": code, "detail": detail}));
    }

    fn to_json(&self) -> Value {
        json!({
            "ingested": self.ingested,
            "replaced": self.replaced,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "chunks": self.chunks,
        })
    }
}

fn problem(body: &Value) -> (String, String) {
    let code = body
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_owned();
    let detail = body
        .get("detail")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    (code, detail)
}

/// Checks the tenant exists (and the token and URL work) before anything
/// is read or sent.
fn check_tenant(client: &Client, tenant: &str) -> anyhow::Result<()> {
    let (status, body) = client.call("GET", &format!("/admin/v1/tenants/{}", seg(tenant)), None)?;
    match status {
        200..=299 => Ok(()),
        404 => bail!("no tenant {tenant:?}"),
        _ => {
            let (code, detail) = problem(&body);
            bail!("cannot look up tenant {tenant:?}: {status} {code}: {detail}")
        }
    }
}

/// The progress bar: drawn on standard error when it is a terminal,
/// hidden otherwise (so redirected output stays parsable).
fn progress(len: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    bar
}

fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let metadata = match &args.metadata {
        None => None,
        Some(text) => {
            let v: Value = serde_json::from_str(text).context("--metadata is not JSON")?;
            if !v.is_object() {
                bail!("--metadata must be a JSON object");
            }
            Some(v)
        }
    };
    let (files, unreadable) = collect(&args.paths)?;
    let client = Client::new(&args.conn)?;
    check_tenant(&client, &args.tenant)?;
    let target = Target {
        client: &client,
        route: format!(
            "/admin/v1/tenants/{}/collections/{}/documents",
            seg(&args.tenant),
            seg(&args.collection)
        ),
        tenant: &args.tenant,
        collection: &args.collection,
        format: args.format,
        metadata: metadata.as_ref(),
    };

    let bar = progress(files.len());
    let mut summary = Summary::default();
    for (path, reason) in &unreadable {
        summary.fail(&bar, path, "unreadable", reason);
    }
    for entry in &files {
        bar.set_message(entry.path.display().to_string());
        let outcome = target.send(entry, &bar);
        bar.inc(1);
        match outcome {
            Sent::Done { status, chunks } => {
                match status {
                    Ingest::Created => summary.ingested += 1,
                    Ingest::Replaced => summary.replaced += 1,
                    Ingest::Unchanged => summary.unchanged += 1,
                }
                summary.chunks += chunks;
            }
            Sent::Skipped => {}
            Sent::Failed { code, detail } => summary.fail(&bar, &entry.path, &code, &detail),
            Sent::Fatal(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What the server did with a document it took.
enum Ingest {
    Created,
    Replaced,
    /// Already stored exactly so: not embedded (nor paid for) again.
    Unchanged,
}

/// What became of one file.
enum Sent {
    Done {
        status: Ingest,
        chunks: u64,
    },
    /// Not text: skipped with a warning.
    Skipped,
    Failed {
        code: String,
        detail: String,
    },
    /// Every further file would fail the same way (the tenant disappeared,
    /// the token or the collection name is refused).
    Fatal(anyhow::Error),
}

/// Where and how `ingest` sends its files.
struct Target<'a> {
    client: &'a Client,
    route: String,
    tenant: &'a str,
    collection: &'a str,
    format: Option<Format>,
    metadata: Option<&'a Value>,
}

impl Target<'_> {
    fn send(&self, entry: &Entry, bar: &ProgressBar) -> Sent {
        let failed = |code: &str, detail: String| Sent::Failed {
            code: code.to_owned(),
            detail,
        };
        // A file larger than a request may carry is not read into memory.
        let limit = bulkhead_server::routes::knowledge::DOCUMENT_BODY_LIMIT;
        match std::fs::metadata(&entry.path) {
            Ok(m) if m.len() > limit as u64 => {
                return failed(
                    "document_too_large",
                    format!("{} bytes; a request carries at most {limit} bytes", m.len()),
                );
            }
            Ok(_) => {}
            Err(e) => return failed("unreadable", e.to_string()),
        }
        let bytes = match std::fs::read(&entry.path) {
            Ok(b) => b,
            Err(e) => return failed("unreadable", e.to_string()),
        };
        // NUL never occurs in text; UTF-8 that contains it is a binary file.
        let content = match String::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => s,
            _ => {
                bar.suspend(|| {
                    eprintln!("warning: skipped {}: not UTF-8 text", entry.path.display());
                });
                return Sent::Skipped;
            }
        };
        let format = self
            .format
            .unwrap_or_else(|| Format::from_path(&entry.path));
        let mut body = json!({
            "content": content,
            "format": format.as_str(),
            "external_id": entry.external_id,
        });
        if let Some(name) = entry.path.file_name() {
            body["title"] = Value::String(name.to_string_lossy().into_owned());
        }
        if let Some(m) = self.metadata {
            body["metadata"] = m.clone();
        }
        let (status, answer) = match self.client.call("POST", &self.route, Some(&body)) {
            Ok(r) => r,
            Err(e) => return failed("request_failed", format!("{e:#}")),
        };
        let (code, detail) = problem(&answer);
        match status {
            200 | 201 => Sent::Done {
                status: match answer.get("status").and_then(Value::as_str) {
                    Some("unchanged") => Ingest::Unchanged,
                    _ if status == 201 => Ingest::Created,
                    _ => Ingest::Replaced,
                },
                chunks: answer.get("chunks").and_then(Value::as_u64).unwrap_or(0),
            },
            404 => Sent::Fatal(anyhow::anyhow!(
                "{}: no tenant {:?} (deleted while ingesting?)",
                entry.path.display(),
                self.tenant
            )),
            401 | 403 => Sent::Fatal(anyhow::anyhow!(
                "{}: refused: {status} {code}: {detail}",
                entry.path.display()
            )),
            400 if code == "invalid_name" => Sent::Fatal(anyhow::anyhow!(
                "--collection {:?}: {detail}",
                self.collection
            )),
            _ => Sent::Failed { code, detail },
        }
    }
}

fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    check_tenant(&client, &args.tenant)?;
    let mut body = json!({"query": args.query});
    if let Some(k) = args.top_k {
        body["top_k"] = json!(k);
    }
    if let Some(m) = args.mode {
        body["mode"] = json!(m.as_str());
    }
    let route = format!(
        "/admin/v1/tenants/{}/collections/{}/search",
        seg(&args.tenant),
        seg(&args.collection)
    );
    let (status, answer) = client.call("POST", &route, Some(&body))?;
    if !(200..300).contains(&status) {
        let (code, detail) = problem(&answer);
        if status == 404 {
            bail!(
                "tenant {:?} has no collection {:?}",
                args.tenant,
                args.collection
            );
        }
        bail!("search failed: {status} {code}: {detail}");
    }
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension() {
        for (name, want) in [
            ("a.md", Format::Markdown),
            ("a.MARKDOWN", Format::Markdown),
            ("a.html", Format::Html),
            ("a.htm", Format::Html),
            ("a.txt", Format::Text),
            ("README", Format::Text),
        ] {
            assert_eq!(Format::from_path(Path::new(name)), want, "{name}");
        }
    }

    #[test]
    fn walk_is_sorted_relative_and_skips_hidden_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        for f in [
            "b.txt",
            "a.md",
            ".hidden",
            "sub/c.html",
            "sub/deeper/d.txt",
            ".git/x",
        ] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let (files, unreadable) = collect(&[root.to_path_buf(), root.join("a.md")]).unwrap();
        assert!(unreadable.is_empty());
        let ids: Vec<&str> = files.iter().map(|e| e.external_id.as_str()).collect();
        assert_eq!(
            ids,
            ["a.md", "b.txt", "sub/c.html", "sub/deeper/d.txt", "a.md"]
        );
        assert_eq!(files[2].path, root.join("sub/c.html"));
        assert!(collect(&[root.join("missing")]).is_err());
    }
}
