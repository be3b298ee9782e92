#!/usr/bin/env python3
"""Schema-driven fuzzing of the HTTP API with schemathesis, on both planes.

Starts the debug `bulkhead serve` (building it if missing) on a free
loopback port with a temporary configuration and data directory, and a
fake OpenAI-compatible model server on another loopback port so agent
runs and chat completions answer for real. Creates the tenants and the
tenant admin key through the operator API, seeds a document and a run,
then runs schemathesis against `/openapi.json`:

- the tenant plane (`/v1/...` and the public routes) with the admin key;
- the operator plane (`/admin/v1/...`) with the operator token.

First the served document is checked by openapi-spec-validator. Checks
of the fuzzing: not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance. Every operation is
fuzzed; none is excluded. Path parameters that name fixtures are pinned
(the agent, the collection, the seeded document, run and thread, the
operator plane's tenant) so requests reach the handlers instead of
answering 404, except `DELETE
/admin/v1/tenants/{id}`, which gets generated ids: pinned, its first
success would erase the tenant that every other pinned operator request
is about, and the rest of the run would only see 404s. The tenant plane
runs first, on its own tenant, so the operator plane's changes (suspension,
quotas, deletion) cannot reach it.

Exit status: 0 when both runs pass, 1 when schemathesis reports a failure,
2 when the setup itself fails. Environment: FUZZ_MAX_EXAMPLES (default 20
per operation), FUZZ_SEED (default 1, so CI runs are reproducible),
CARGO_TARGET_DIR (where the debug binary is), RUST_LOG (the server's
log, default `warn`), FUZZ_KEEP=1 (keep the temporary directory with the
server log and the JUnit reports).

    python3 scripts/fuzz_api.py
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
OPERATOR_TOKEN = "fuzz-operator-token-" + os.urandom(8).hex()
TENANT = "fuzz"
OPERATOR_TENANT = "fuzz-op"
AGENT = "fuzz-agent"
COLLECTION = "docs"


class SetupError(Exception):
    """The fuzz run could not be set up (exit 2)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeModel(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that always answers the same."""

    def do_POST(self) -> None:  # noqa: N802 (the http.server name)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            request = {}
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        message = {"role": "assistant", "content": "A fuzzed answer."}
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if request.get("stream"):
            chunks = [
                {"choices": [{"index": 0, "delta": message, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": usage},
            ]
            body = "".join(
                "data: "
                + json.dumps(
                    {"id": "chatcmpl-fuzz", "object": "chat.completion.chunk", "created": 0, "model": "fake", **c}
                )
                + "\n\n"
                for c in chunks
            )
            self.reply("text/event-stream", (body + "data: [DONE]\n\n").encode())
            return
        answer = {
            "id": "chatcmpl-fuzz",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }
        self.reply("application/json", json.dumps(answer).encode())

    def reply(self, content_type: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


def config(port: int, model_port: int, data_dir: Path) -> str:
    # Failed authentications are part of fuzzing (requests without or with
    # broken credentials): the throttles are raised so that they never
    # turn the valid credentials' requests into 429s.
    return f"""
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data_dir}"
default_region = "local"

[operator]
token = "env:FUZZ_OPERATOR_TOKEN"

[auth]
failures_per_minute_per_credential = 1000000
failures_per_minute_per_peer = 1000000

[[providers]]
name = "fake"
kind = "openai"
base_url = "http://127.0.0.1:{model_port}/v1"
region = "local"
max_retries = 0
timeout_s = 5

[[models]]
name = "fuzz-model"
provider = "fake"
upstream = "fake"
price_input_per_mtok = "0.15"
price_output_per_mtok = "0.60"
price_cached_input_per_mtok = "0.05"

[[agents]]
name = "{AGENT}"
description = "Answers from the fuzzer's fake model"
model = "fuzz-model"
prompt = "You are the assistant of {{{{ tenant.name }}}}."
max_steps = 2
timeout_s = 10
"""


def call(base: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            text = res.read()
    except urllib.error.HTTPError as e:
        raise SetupError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from None
    return json.loads(text) if text else {}


def binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    path = target / "debug" / "bulkhead"
    if not path.exists():
        print("== building the debug binary (cargo build -p bulkhead --locked)", flush=True)
        subprocess.run(["cargo", "build", "-p", "bulkhead", "--locked", "--quiet"], cwd=ROOT, check=True)
    return path


def wait_healthy(base: str, server: subprocess.Popen, log: Path) -> None:
    # Up to 60 s (300 × 0.2 s): a debug build on two busy cores starts slowly.
    for _ in range(300):
        if server.poll() is not None:
            raise SetupError(f"the server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as res:
                if res.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SetupError("the server did not answer /healthz within 60 s")


def seed(base: str) -> dict[str, str]:
    """Creates the fixtures; returns the tenant admin key and the ids of
    the tenant's document, run and thread."""
    call(base, "POST", "/admin/v1/tenants", OPERATOR_TOKEN, {"id": TENANT})
    key = call(base, "POST", f"/admin/v1/tenants/{TENANT}/api-keys", OPERATOR_TOKEN, {"roles": ["admin"]})["key"]
    call(base, "POST", "/admin/v1/tenants", OPERATOR_TOKEN, {"id": OPERATOR_TENANT})
    call(base, "POST", f"/admin/v1/tenants/{OPERATOR_TENANT}/api-keys", OPERATOR_TOKEN, {"roles": ["member"]})
    document = {"content": "# Fuzzing\n\nA document to search.", "external_id": "seed"}
    doc = call(base, "POST", f"/v1/collections/{COLLECTION}/documents", key, document)
    call(base, "POST", f"/admin/v1/tenants/{OPERATOR_TENANT}/collections/{COLLECTION}/documents", OPERATOR_TOKEN, document)
    # Two runs in two threads: deleting the thread (pinned for the thread
    # operations) would delete the run that the run operations are pinned to.
    runs = [call(base, "POST", f"/v1/agents/{AGENT}/runs", key, {"input": "Hello"}) for _ in range(2)]
    for run in runs:
        if run.get("status") != "completed":
            raise SetupError(f"a seed run did not complete: {run}")
    return {"key": key, "document": doc["id"], "run": runs[0]["id"], "thread": runs[1]["thread_id"]}


def validate(base: str, work: Path) -> bool:
    """The served document, checked by openapi-spec-validator."""
    doc = work / "openapi.json"
    with urllib.request.urlopen(base + "/openapi.json", timeout=30) as res:
        doc.write_bytes(res.read())
    print("== openapi-spec-validator", flush=True)
    result = subprocess.run([sys.executable, "-m", "openapi_spec_validator", "--validation-errors", "all", str(doc)])
    return result.returncode == 0


def schemathesis(base: str, plane: str, token: str, config_file: Path, filters: list[str], report: Path) -> bool:
    examples = os.environ.get("FUZZ_MAX_EXAMPLES", "20")
    seed_value = os.environ.get("FUZZ_SEED", "1")
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config_file),
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        examples,
        "--seed",
        seed_value,
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *filters,
    ]
    print(f"== schemathesis, {plane} plane ({examples} examples per operation, seed {seed_value})", flush=True)
    started = time.monotonic()
    # The token is in the command line: it is a throwaway of this run only.
    result = subprocess.run(cmd, cwd=report.parent, env={**os.environ, "NO_COLOR": "1"})
    print(f"== {plane} plane: exit {result.returncode} in {time.monotonic() - started:.1f} s", flush=True)
    return result.returncode == 0


def main() -> int:
    # Both run under this interpreter (`-m`), the one pip installed them for.
    if importlib.util.find_spec("schemathesis") is None or importlib.util.find_spec("openapi_spec_validator") is None:
        print(
            "fuzz_api: schemathesis and openapi-spec-validator are needed (.ci/run pins and installs them)",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    exe = binary()
    work = Path(tempfile.mkdtemp(prefix="bulkhead-fuzz-"))
    # The fake model binds its own free port; only the server's is picked
    # here and handed to it (a small race with other processes, no more).
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    model_port = fake.server_address[1]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    cfg = work / "bulkhead.toml"
    cfg.write_text(config(port, model_port, work / "data"))
    log = work / "server.log"
    env = {"RUST_LOG": "warn", **os.environ, "FUZZ_OPERATOR_TOKEN": OPERATOR_TOKEN}
    with open(log, "w") as out:
        server = subprocess.Popen([str(exe), "serve", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT, env=env)
    ok = False
    try:
        wait_healthy(base, server, log)
        valid = validate(base, work)
        fixtures = seed(base)
        key = fixtures["key"]
        tenant_cfg = work / "tenant.toml"
        tenant_cfg.write_text(
            f'[parameters]\n"path.agent" = "{AGENT}"\n"path.collection" = "{COLLECTION}"\n'
            + "".join(
                f'\n[[operations]]\ninclude-path-regex = "{regex}"\nparameters = {{ "path.id" = "{fixtures[name]}" }}\n'
                for regex, name in [
                    ("^/v1/runs/", "run"),
                    ("^/v1/threads/", "thread"),
                    ("^/v1/collections/\\\\{collection\\\\}/documents/", "document"),
                ]
            )
        )
        operator_cfg = work / "operator.toml"
        operator_cfg.write_text(
            f'[parameters]\n"path.collection" = "{COLLECTION}"\n\n'
            "[[operations]]\n"
            'include-path-regex = "^/admin/v1/tenants/\\\\{id\\\\}"\n'
            'exclude-operation-id = "delete_tenant"\n'
            f'parameters = {{ "path.id" = "{OPERATOR_TENANT}" }}\n'
        )
        # An inclusion, not `--exclude-path-regex ^/admin/`: with an
        # exclusion, schemathesis 4.32.5 also leaves out GET /openapi.json.
        tenant_ok = schemathesis(
            base, "tenant", key, tenant_cfg, ["--include-path-regex", r"^/(v1/|healthz$|metrics$|openapi\.json$)"], work / "tenant-junit.xml"
        )
        operator_ok = schemathesis(
            base, "operator", OPERATOR_TOKEN, operator_cfg, ["--include-path-regex", "^/admin/"], work / "operator-junit.xml"
        )
        ok = valid and tenant_ok and operator_ok
    except SetupError as e:
        print(f"fuzz_api: setup failed: {e}", file=sys.stderr)
        return 2
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        fake.shutdown()
        if server.returncode not in (0, -signal.SIGTERM):
            print(f"fuzz_api: the server exited with {server.returncode}", file=sys.stderr)
            ok = False
        if not ok:
            print(f"fuzz_api: server log (last 4000 characters of {log}):\n{log.read_text()[-4000:]}", file=sys.stderr)
        elif os.environ.get("FUZZ_KEEP"):
            print(f"fuzz_api: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"== fuzz_api: {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
