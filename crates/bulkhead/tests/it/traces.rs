//! Traces and logs on the real binary: an OTLP/HTTP receiver in the test
//! (decoding the export with the official protobuf types) gets the spans
//! of two tenants' runs, each with two tool calls: the tree is right,
//! every span names its tenant, the GenAI attributes hold the right
//! values, the caller's `traceparent` is joined and passed on to the
//! provider and the tool, and no secret or prompt text leaves. The JSON
//! log lines name tenant, request and trace.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use bulkhead_testkit::{FakeProvider, Reply, SaasStandIn, ToolCall};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

use crate::support::*;

/// What the receiver got: each export's headers and raw body.
#[derive(Default)]
struct Received {
    exports: Vec<(HashMap<String, String>, Vec<u8>)>,
}

/// An OTLP/HTTP receiver on a free port: answers every POST 200 (an empty
/// `ExportTraceServiceResponse`) and keeps what it got.
fn receiver() -> (String, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Received::default()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    assert!(line.starts_with("POST /v1/traces "), "{line}");
                    let mut headers = HashMap::new();
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
                    }
                    let len: usize = headers["content-length"].parse().unwrap();
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    sink.lock().unwrap().exports.push((headers, body));
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    )
                    .unwrap();
                }
            });
        }
    });
    (url, got)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string(span: &Span, key: &str) -> String {
    match attr(span, key) {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("{} has {key} = {other:?}", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(Any::IntValue(i)) => *i,
        other => panic!("{} has {key} = {other:?}", span.name),
    }
}

fn strings(span: &Span, key: &str) -> Vec<String> {
    match attr(span, key) {
        Some(Any::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| match &v.value {
                Some(Any::StringValue(s)) => s.clone(),
                other => panic!("{key}: {other:?}"),
            })
            .collect(),
        other => panic!("{} has {key} = {other:?}", span.name),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn spans_of_two_tenants_runs_reach_an_otlp_receiver_with_their_tenant_and_genai_attributes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeProvider::start());
    let saas = rt.block_on(SaasStandIn::start());
    let (otlp, got) = receiver();
    // Two posts for the user's text, then an answer.
    fake.set_responder(|req| {
        let last = req["messages"].as_array()?.last()?.clone();
        match last["role"].as_str()? {
            "user" => Some(Reply::tool_calls([
                ToolCall::new("slack", json!({"channel": "#ops", "text": "one"})),
                ToolCall::new("slack", json!({"channel": "#eng", "text": "two"})),
            ])),
            _ => Some(Reply::text("posted twice")),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bulkhead.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[telemetry]
otlp_endpoint = "{otlp}"
service_name = "bulkhead-test"
headers = {{ "x-collector-key" = "env:TRACES_COLLECTOR_KEY" }}
[[providers]]
name = "fake-eu"
kind = "openai"
base_url = "{base}/v1"
region = "eu"
credential = "env:TRACES_PROVIDER_KEY"
max_retries = 0
[[models]]
name = "small"
provider = "fake-eu"
upstream = "gpt-4o-mini"
[egress]
allow_http = true
allow_hosts = ["127.0.0.1/32"]
[[tools]]
name = "slack"
kind = "slack"
base_url = "{saas}"
region = "eu"
connection = "slack"
[[agents]]
name = "support"
model = "small"
prompt = "SYSTEM-PROMPT-CANARY for {{{{ tenant.id }}}}."
tools = ["slack"]
"#,
            base = fake.base_url(),
            saas = saas.base_url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let provider_key = "sk-traces-provider-canary-51f0";
    let server = Server::start(
        &data,
        Some(&config),
        &[
            ("TRACES_PROVIDER_KEY", provider_key),
            ("TRACES_COLLECTOR_KEY", "collector-key-7"),
        ],
    );
    let tenants = [
        ("acme", "xoxb-traces-acme-canary-1a2b"),
        ("globex", "xoxb-traces-globex-canary-3c4d"),
    ];
    let mut keys = Vec::new();
    for (tenant, token) in tenants {
        let key = tenant_with_admin_key(&server.url, &data, tenant, "eu");
        let res = agent()
            .put(format!("{}/v1/credentials/slack", server.url))
            .header("authorization", format!("Bearer {key}"))
            .send_json(json!({"kind": "bearer", "secret": token}))
            .unwrap();
        assert_eq!(res.status(), 201);
        keys.push((tenant, key));
    }
    // Both tenants run at once; acme's caller sends its trace context.
    let runs: Vec<(String, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .map(|(tenant, key)| {
                let url = format!("{}/v1/agents/support/runs", server.url);
                s.spawn(move || {
                    let mut req = agent()
                        .post(&url)
                        .header("authorization", format!("Bearer {key}"));
                    if *tenant == "acme" {
                        req = req
                            .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"));
                    }
                    let mut res = req
                        .send_json(json!({"input": format!("USER-INPUT-CANARY of {tenant}")}))
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    let body: Value =
                        serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap();
                    assert_eq!(body["status"], "completed", "{body}");
                    ((*tenant).to_owned(), body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // A clean stop sends every buffered span.
    let logs = server.stop();

    let got = got.lock().unwrap();
    assert!(!got.exports.is_empty(), "no export arrived");
    let mut spans: Vec<Span> = Vec::new();
    for (headers, body) in &got.exports {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-collector-key"], "collector-key-7");
        // Nothing secret or written by a user or an agent's author leaves.
        let raw = String::from_utf8_lossy(body);
        for canary in [
            "USER-INPUT-CANARY",
            "SYSTEM-PROMPT-CANARY",
            "posted twice",
            provider_key,
            tenants[0].1,
            tenants[1].1,
            &keys[0].1,
            &keys[1].1,
        ] {
            assert!(!raw.contains(canary), "{canary} was exported");
        }
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for rs in req.resource_spans {
            let resource = rs.resource.unwrap();
            assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"
                && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(Any::StringValue(s)) if s == "bulkhead-test")));
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
    }
    // Every span of work for a tenant names it; only the operator's own
    // requests (creating the tenants, here) act for none.
    for s in &spans {
        if s.kind == 2 && string(s, "http.route").starts_with("/admin/") {
            assert!(attr(s, "tenant.id").is_none());
            continue;
        }
        let t = string(s, "tenant.id");
        assert!(t == "acme" || t == "globex", "{}: {t}", s.name);
    }
    for (tenant, run) in &runs {
        let run_id = run["id"].as_str().unwrap();
        let theirs: Vec<&Span> = spans
            .iter()
            .filter(|s| matches!(attr(s, "tenant.id"), Some(Any::StringValue(t)) if t == tenant))
            .collect();
        let run_span = theirs
            .iter()
            .find(|s| s.name == "invoke_agent support")
            .unwrap_or_else(|| {
                panic!(
                    "{tenant}: no run span in {:?}",
                    theirs.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            });
        assert_eq!(string(run_span, "bulkhead.run_id"), run_id);
        assert_eq!(string(run_span, "gen_ai.operation.name"), "invoke_agent");
        assert_eq!(string(run_span, "gen_ai.agent.name"), "support");
        let trace = run_span.trace_id.clone();
        // The request that started the run is its parent (server kind).
        let request = theirs
            .iter()
            .find(|s| s.span_id == run_span.parent_span_id)
            .unwrap();
        assert_eq!(request.name, "POST /v1/agents/{agent}/runs");
        assert_eq!(request.kind, 2, "server kind");
        assert_eq!(int(request, "http.response.status_code"), 200);
        if *tenant == "acme" {
            assert_eq!(hex(&trace), CALLER_TRACE, "the caller's trace is joined");
            assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
        } else {
            assert_ne!(hex(&trace), CALLER_TRACE);
            assert!(request.parent_span_id.is_empty(), "a root span");
        }
        let children = |name: &str| -> Vec<&Span> {
            theirs
                .iter()
                .filter(|s| s.name == name && s.parent_span_id == run_span.span_id)
                .copied()
                .collect()
        };
        // Two model calls, the first answered with tool calls.
        let mut chats = children("chat small");
        chats.sort_by_key(|s| s.start_time_unix_nano);
        assert_eq!(chats.len(), 2, "{tenant}");
        for (c, finish) in chats.iter().zip(["tool_calls", "stop"]) {
            assert_eq!(c.trace_id, trace);
            assert_eq!(c.kind, 3, "client kind");
            assert_eq!(string(c, "gen_ai.operation.name"), "chat");
            assert_eq!(string(c, "gen_ai.provider.name"), "openai");
            assert_eq!(string(c, "gen_ai.request.model"), "small");
            assert_eq!(string(c, "gen_ai.response.model"), "gpt-4o-mini");
            assert!(string(c, "gen_ai.response.id").starts_with("chatcmpl-fake"));
            assert!(int(c, "gen_ai.usage.input_tokens") > 0);
            assert!(int(c, "gen_ai.usage.output_tokens") > 0);
            assert_eq!(strings(c, "gen_ai.response.finish_reasons"), [finish]);
            assert_eq!(string(c, "server.address"), "127.0.0.1");
            assert_eq!(string(c, "bulkhead.run_id"), run_id);
            assert_eq!(string(c, "bulkhead.agent"), "support");
        }
        // Two tool calls, each with the call id the model gave.
        let tools = children("execute_tool slack");
        assert_eq!(tools.len(), 2, "{tenant}");
        let mut ids: Vec<String> = tools
            .iter()
            .map(|t| {
                assert_eq!(string(t, "gen_ai.tool.name"), "slack");
                assert_eq!(string(t, "gen_ai.operation.name"), "execute_tool");
                assert_eq!(string(t, "bulkhead.status"), "ok");
                string(t, "gen_ai.tool.call.id")
            })
            .collect();
        ids.sort();
        assert!(
            ids[0].starts_with("call_fake") && ids[0].ends_with("_0"),
            "{ids:?}"
        );
        assert!(ids[1].ends_with("_1"), "{ids:?}");
        // The provider's requests carry the trace, parented by their model call.
        let sent: Vec<String> = fake
            .requests()
            .iter()
            .filter_map(|r| r.header("traceparent").map(str::to_owned))
            .filter(|tp| tp.contains(&hex(&trace)))
            .collect();
        assert_eq!(sent.len(), 2, "{tenant}: {sent:?}");
        for c in &chats {
            assert!(
                sent.iter()
                    .any(|tp| tp == &format!("00-{}-{}-01", hex(&trace), hex(&c.span_id))),
                "{sent:?}"
            );
        }
        // And the tool's requests, parented by their tool span.
        let tool_tps: Vec<String> = saas
            .requests()
            .iter()
            .filter_map(|r| r.header("traceparent").map(str::to_owned))
            .filter(|tp| tp.contains(&hex(&trace)))
            .collect();
        assert_eq!(tool_tps.len(), 2, "{tenant}: {tool_tps:?}");
        for t in &tools {
            assert!(
                tool_tps
                    .iter()
                    .any(|tp| tp == &format!("00-{}-{}-01", hex(&trace), hex(&t.span_id))),
                "{tool_tps:?}"
            );
        }
    }

    // JSON logs: the run request's line names tenant, request and trace.
    let line = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["message"] == "request finished"
                && v["route"] == "/v1/agents/{agent}/runs"
                && v["tenant.id"] == "acme"
        })
        .expect("acme's run request in the log");
    assert_eq!(line["trace_id"], CALLER_TRACE);
    assert!(line["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    for l in &logs {
        assert!(!l.contains(provider_key) && !l.contains(tenants[0].1));
    }
}
