//! Starting and stopping the real binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");
/// Upper bound on waiting for the server to log that it listens; a start
/// takes milliseconds, the bound only keeps a broken build from hanging CI.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    child: Child,
    pub url: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `bulkhead serve` on a free port with JSON logs.
    pub fn start(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env_remove("BULKHEAD_OPERATOR_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("server did not start: {:?}", logs.lock().unwrap()));
        Server {
            child,
            url: format!("http://{addr}"),
            logs,
        }
    }

    /// Sends SIGTERM and waits; the server must exit cleanly.
    pub fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "server exited with {exit}");
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI.
pub fn cli<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("BULKHEAD_OPERATOR_TOKEN")
        .env_remove("BULKHEAD_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Runs the CLI with `input` on its standard input.
pub fn cli_stdin<S: AsRef<std::ffi::OsStr>>(args: &[S], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("BULKHEAD_OPERATOR_TOKEN")
        .env_remove("BULKHEAD_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the CLI and parses its JSON output; the command must succeed.
pub fn cli_json<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Value {
    let out = cli(args, env);
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET with a bearer token; returns status and JSON body.
pub fn get(
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut req = agent().get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut res = req.call().unwrap();
    let rid = res
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.body_mut().read_to_string().unwrap();
    (
        res.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        rid,
    )
}

/// Operator CLI arguments aimed at the server at `url` with data in `data`.
pub fn op_args(url: &str, data: &Path, args: &[&str]) -> Vec<String> {
    args.iter()
        .map(|s| (*s).to_owned())
        .chain([
            "--url".to_owned(),
            url.to_owned(),
            "--data-dir".to_owned(),
            data.to_string_lossy().into_owned(),
        ])
        .collect()
}

/// Creates `tenant` in `region` through the CLI; returns an admin API key.
pub fn tenant_with_admin_key(url: &str, data: &Path, tenant: &str, region: &str) -> String {
    cli_json(
        &op_args(url, data, &["tenant", "create", tenant, "--region", region]),
        &[],
    );
    cli_json(
        &op_args(
            url,
            data,
            &["key", "create", "--tenant", tenant, "--role", "admin"],
        ),
        &[],
    )["key"]
        .as_str()
        .unwrap()
        .to_owned()
}
