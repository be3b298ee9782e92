//! `bulkhead check` and `serve` with bad configuration: exit status 1 and
//! every error naming its key.

use crate::support::*;

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_reports_every_error_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        r#"
[[auth.jwt]]
issuer = "https://idp.test"
audience = "bulkhead"
algorithms = ["HS256", "none"]
secret = "env:CHECK_TEST_UNSET_SECRET"

[[providers]]
name = "eu"
kind = "openai"
base_url = "https://api.example.com/v1"
region = "eu"

[[models]]
name = "small"
provider = "eu"
upstream = "gpt-4o-mini"

[[tools]]
name = "notify"
kind = "slack"
base_url = "https://slack.com/api"
region = "us"
connection = "slack"

[[agents]]
name = "support"
model = "small"
prompt = "hi"
tools = ["notify"]
"#,
    );
    let out = cli(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "auth.jwt[0].algorithms[1]: \"none\" is not allowed",
        "auth.jwt[0].secret: environment variable CHECK_TEST_UNSET_SECRET is not set",
        "agents[0].tools[0]: tool \"notify\" is in region \"us\"",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr.lines().all(|l| l.starts_with(bad.to_str().unwrap())),
        "{stderr}"
    );

    let unknown = write(
        dir.path(),
        "unknown.toml",
        "[server]\nlisten = \"127.0.0.1:1\"\nport = 8\n",
    );
    let out = cli(&["check", "--config", unknown.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.port: unknown field"),
        "{out:?}"
    );

    let missing_key = write(
        dir.path(),
        "pem.toml",
        "[[auth.jwt]]\nissuer = \"i\"\naudience = \"a\"\nalgorithms = [\"RS256\"]\npublic_key_file = \"nope.pem\"\n",
    );
    let out = cli(&["check", "--config", missing_key.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth.jwt[0].public_key_file: cannot read"),
        "{out:?}"
    );

    let out = cli(
        &[
            "check",
            "--config",
            dir.path().join("absent.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{out:?}"
    );

    let good = write(
        dir.path(),
        "good.toml",
        "[server]\nlisten = \"127.0.0.1:9999\"\n",
    );
    let out = cli(&["check", "--config", good.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn serve_refuses_an_invalid_configuration_without_touching_data() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[operator]\ntoken = \"literal-secret-in-file\"\n",
    );
    let data = dir.path().join("data");
    let out = cli(
        &[
            "serve",
            "--config",
            bad.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("operator.token: secrets are not written in the file"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("literal-secret-in-file"),
        "the rejected secret was echoed"
    );
    assert!(!data.exists(), "a refused start created the data directory");
}

#[test]
fn check_compiles_prompt_templates_and_tool_templates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("prompts")).unwrap();
    std::fs::write(dir.path().join("prompts/good.j2"), "Hello {{ tenant.id }}").unwrap();
    let base = r#"
[[providers]]
name = "eu"
kind = "openai"
base_url = "https://api.example.com/v1"
region = "eu"
[[models]]
name = "small"
provider = "eu"
upstream = "gpt-4o-mini"
"#;
    let good = write(
        dir.path(),
        "good.toml",
        &format!("{base}[[agents]]\nname = \"a\"\nmodel = \"small\"\nprompt_file = \"good.j2\"\n"),
    );
    let out = cli(&["check", "--config", good.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, agent, needle) in [
        (
            "syntax.toml",
            "prompt = \"{{ unclosed\"",
            "agents[0]: the prompt template does not compile",
        ),
        (
            "missing.toml",
            "prompt_file = \"nope.j2\"",
            "agents[0].prompt_file: cannot read",
        ),
    ] {
        let p = write(
            dir.path(),
            name,
            &format!("{base}[[agents]]\nname = \"a\"\nmodel = \"small\"\n{agent}\n"),
        );
        let out = cli(&["check", "--config", p.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }
    let p = write(
        dir.path(),
        "tool.toml",
        &format!(
            "{base}[[tools]]\nname = \"t\"\nkind = \"http\"\nregion = \"eu\"\nurl = \"https://x.example/{{{{ a\"\nallowed_hosts = [\"x.example:443\"]\n[tools.parameters]\ntype = \"object\"\n"
        ),
    );
    let out = cli(&["check", "--config", p.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tools[0].url"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Public metrics name tenants: `check` refuses a non-loopback `listen`
/// without `server.metrics_token`, naming the key, and accepts it with
/// the token or with `metrics_public = true`; `serve --listen` onto a
/// non-loopback address is refused the same way before anything starts.
#[test]
fn a_non_loopback_listen_needs_a_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    let public = write(
        dir.path(),
        "public.toml",
        "[server]\nlisten = \"0.0.0.0:8080\"\n",
    );
    let out = cli(&["check", "--config", public.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("server.metrics_token: is required when listen"),
        "{out:?}"
    );
    for (name, extra) in [
        ("token.toml", "metrics_token = \"env:CHECK_TEST_METRICS\"\n"),
        ("explicit.toml", "metrics_public = true\n"),
    ] {
        let file = write(
            dir.path(),
            name,
            &format!("[server]\nlisten = \"0.0.0.0:8080\"\n{extra}"),
        );
        let out = cli(
            &["check", "--config", file.to_str().unwrap()],
            &[("CHECK_TEST_METRICS", "metrics-token-0123456789")],
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
    }

    let data = dir.path().join("data");
    let out = cli(
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.metrics_token: is required"),
        "{out:?}"
    );
}

/// A tool the egress guard would refuse every call of fails `check` by
/// key path, and passes once `[egress]` allows it.
#[test]
fn check_refuses_tool_urls_the_egress_guard_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let tools = r#"
[[tools]]
name = "meta"
kind = "http"
region = "eu"
url = "http://169.254.169.254/latest/{{ path }}"
allowed_hosts = ["169.254.169.254:80"]
[tools.parameters]
type = "object"
[[tools]]
name = "notify"
kind = "slack"
base_url = "https://10.1.2.3"
region = "eu"
connection = "slack"
"#;
    let bad = write(dir.path(), "egress.toml", tools);
    let out = cli(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "tools[0].url: http:// URLs are not allowed",
        "tools[0].allowed_hosts[0]: 169.254.169.254 is a cloud metadata address",
        "tools[1].base_url: 10.1.2.3 is a private address",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // A name is resolved too: `localhost` is loopback.
    let named = write(
        dir.path(),
        "egress-name.toml",
        "[[tools]]\nname = \"notify\"\nkind = \"slack\"\nbase_url = \"https://localhost:8443\"\nregion = \"eu\"\nconnection = \"slack\"\n",
    );
    let out = cli(&["check", "--config", named.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tools[0].base_url: localhost resolves to"),
        "{stderr}"
    );
    let allowed = write(
        dir.path(),
        "egress-ok.toml",
        &format!(
            "[egress]\nallow_http = true\nallow_hosts = [\"169.254.169.254:80\", \"10.0.0.0/8\"]\n{tools}"
        ),
    );
    let out = cli(&["check", "--config", allowed.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
