//! `bulkhead kb`: ingesting a directory through the operator route, the
//! summary and exit statuses, re-ingesting replaces, search finds it.

use std::process::Output;

use serde_json::Value;

use crate::support::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {out:?}"))
}

#[test]
fn ingest_a_directory_then_again_then_search() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("guides")).unwrap();
    std::fs::write(
        docs.join("guides/onboarding.md"),
        "# Onboarding\n\nEvery new hire receives a periwinkle badge on day one.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("faq.txt"),
        "Refunds are processed within five days.",
    )
    .unwrap();
    std::fs::write(
        docs.join("policy.html"),
        "<html><body><h1>Policy</h1><p>Laptops are encrypted.</p></body></html>",
    )
    .unwrap();
    std::fs::write(docs.join(".secret"), "hidden files are not sent").unwrap();
    std::fs::write(docs.join("empty.txt"), "").unwrap();
    std::fs::write(docs.join("logo.bin"), [0xff, 0xfe, 0x00, 0x01]).unwrap();

    let server = Server::start(&data, None, &[]);
    tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let ingest = |extra: &[&str]| {
        let mut args = vec![
            "kb",
            "ingest",
            "--tenant",
            "acme",
            "--collection",
            "handbook",
        ];
        args.extend_from_slice(extra);
        let docs = docs.to_string_lossy().into_owned();
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        args.push(docs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&op_args(&server.url, &data, &args), &[])
    };

    // Standard error is a pipe here: no progress bar, stdout is the summary.
    let out = ingest(&["--metadata", r#"{"source": "handbook"}"#]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(s["ingested"], 3, "{s}");
    assert_eq!(s["replaced"], 0, "{s}");
    assert!(s["chunks"].as_u64().unwrap() >= 3, "{s}");
    let failed = s["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{s}");
    assert_eq!(failed[0]["code"], "empty_document");
    assert!(
        failed[0]["path"].as_str().unwrap().ends_with("empty.txt"),
        "{s}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("empty.txt"),
        "the failure names the file: {err}"
    );
    assert!(err.contains("logo.bin"), "the skipped file is named: {err}");
    assert!(!err.contains(".secret"), "{err}");
    assert!(
        !err.contains('\r') && !err.contains('\u{1b}'),
        "no progress bar when stderr is not a terminal: {err:?}"
    );

    // Again: the same external ids, so every document is replaced (and a
    // replacement takes the metadata it is sent with).
    let out = ingest(&["--metadata", r#"{"source": "handbook", "run": 2}"#]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        (s["ingested"].as_u64(), s["replaced"].as_u64()),
        (Some(0), Some(3)),
        "{s}"
    );
    // Once more, exactly the same: nothing to re-embed.
    let out = ingest(&["--metadata", r#"{"source": "handbook", "run": 2}"#]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        (
            s["ingested"].as_u64(),
            s["replaced"].as_u64(),
            s["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(3)),
        "{s}"
    );

    let found = cli_json(
        &op_args(
            &server.url,
            &data,
            &[
                "kb",
                "search",
                "--tenant",
                "acme",
                "--collection",
                "handbook",
                "periwinkle",
                "--mode",
                "fulltext",
            ],
        ),
        &[],
    );
    let results = found["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{found}");
    assert_eq!(results[0]["external_id"], "guides/onboarding.md");
    assert_eq!(results[0]["title"], "onboarding.md");
    assert_eq!(results[0]["metadata"]["source"], "handbook");
    assert_eq!(results[0]["metadata"]["run"], 2);
    let found = cli_json(
        &op_args(
            &server.url,
            &data,
            &[
                "kb",
                "search",
                "--tenant",
                "acme",
                "--collection",
                "handbook",
                "hidden",
            ],
        ),
        &[],
    );
    assert_eq!(found["results"], Value::Array(vec![]), "{found}");

    // A single file argument: its name is its id, so this replaces it.
    let out = cli(
        &op_args(
            &server.url,
            &data,
            &[
                "kb",
                "ingest",
                "--tenant",
                "acme",
                "--collection",
                "handbook",
                "--format",
                "text",
                docs.join("faq.txt").to_str().unwrap(),
            ],
        ),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);
    assert_eq!(
        (s["ingested"].as_u64(), s["replaced"].as_u64()),
        (Some(0), Some(1)),
        "{s}"
    );
    server.stop();
}

#[test]
fn unknown_tenant_bad_path_and_bad_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "a note").unwrap();
    let file = file.to_str().unwrap();
    let server = Server::start(&data, None, &[]);
    tenant_with_admin_key(&server.url, &data, "acme", "eu");
    let run = |args: &[&str]| cli(&op_args(&server.url, &data, args), &[]);

    let out = run(&[
        "kb",
        "ingest",
        "--tenant",
        "ghost",
        "--collection",
        "kb",
        file,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("ghost"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let out = run(&[
        "kb",
        "search",
        "--tenant",
        "ghost",
        "--collection",
        "kb",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("ghost"), "{}", stderr(&out));

    let missing = dir.path().join("missing");
    let out = run(&[
        "kb",
        "ingest",
        "--tenant",
        "acme",
        "--collection",
        "kb",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));

    for bad in [
        &["--format", "pdf"][..],
        &["--metadata", "[1]"][..],
        &["--metadata", "{"][..],
    ] {
        let mut args = vec!["kb", "ingest", "--tenant", "acme", "--collection", "kb"];
        args.extend_from_slice(bad);
        args.push(file);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
    let out = run(&[
        "kb",
        "ingest",
        "--tenant",
        "acme",
        "--collection",
        "Bad Name!",
        file,
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--collection"), "{}", stderr(&out));
    server.stop();
}
