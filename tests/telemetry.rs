//! What an operator sees, through the real binaries and real tools: spans received by a real
//! OTLP receiver (Python `opentelemetry-proto` + `grpcio`), `/metrics` parsed by Prometheus' own
//! text parser (Python `prometheus_client`), the per-call log line, and liveness.
//!
//! The Python tools are installed by `.ci/test` into `.tools/telemetry` (or named by
//! `TELEMETRY_PYTHON`); without them the tests fail with instructions.

mod support;

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::Licensing;

const SERVICE: &str = "licensing.v1.LicensingService";
/// How long spans, metrics or log lines may take to show (generous: a busy machine).
const DEADLINE: Duration = Duration::from_secs(120);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn python() -> PathBuf {
    let path = std::env::var_os("TELEMETRY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/telemetry/bin/python")
        });
    assert!(
        path.exists(),
        "the telemetry Python was not found at {}: run ./.ci/test once (it installs the pinned tools into .tools/) or set TELEMETRY_PYTHON",
        path.display()
    );
    path
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/telemetry")
        .join(name)
}

/// The OTLP receiver as a child process, and the spans it printed so far.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let mut child = Command::new(python())
            .arg(script("otlp_receiver.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let (spans, _reader) = support::collect_lines(child.stdout.take().expect("stdout"));
        let started = Instant::now();
        let port = loop {
            let listening = spans
                .lock()
                .expect("lock")
                .iter()
                .find_map(|line| line.strip_prefix("listening ")?.parse::<u16>().ok());
            if let Some(port) = listening {
                break port;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the OTLP receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Receiver { child, port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points a binary's traces here, exported promptly.
    fn environment(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    }

    /// Waits until the spans received satisfy `done`, and returns them.
    fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let spans: Vec<Value> = self
                .spans
                .lock()
                .expect("lock")
                .iter()
                .filter(|line| line.starts_with('{'))
                .map(|line| serde_json::from_str(line).expect("a span as JSON"))
                .collect();
            if done(&spans) {
                return spans;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{what} never arrived; spans received:\n{}",
                spans
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Closing its standard input ends it; a kill if it does not.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_traced(receiver: &Receiver, args: &[&str]) -> Licensing {
    let environment = receiver.environment();
    let environment: Vec<(&str, &str)> = environment
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    Licensing::start_with_env_args(&environment, args)
}

#[test]
fn a_call_with_a_traceparent_is_a_span_of_that_trace_with_the_rpc_attributes_and_account() {
    let receiver = Receiver::start();
    let server = start_traced(&receiver, &[]);
    let traceparent = format!("traceparent: 00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let created = server.grpcurl(&[
        "-H",
        &traceparent,
        "-d",
        &json!({ "accountId": "acme", "settings": { "timeZone": "UTC" } }).to_string(),
        &format!("{SERVICE}/CreateAccount"),
    ]);
    assert!(created.status.success(), "{created:?}");
    let missing = server.grpcurl(&[
        "-H",
        &traceparent,
        "-d",
        &json!({ "accountId": "nobody" }).to_string(),
        &format!("{SERVICE}/GetAccount"),
    ]);
    assert!(!missing.status.success(), "{missing:?}");

    let method_span = |spans: &[Value], method: &str| {
        spans
            .iter()
            .find(|s| s["attributes"]["rpc.method"] == method)
            .cloned()
    };
    let spans = receiver.wait_for("the spans of CreateAccount and GetAccount", |spans| {
        method_span(spans, "CreateAccount").is_some() && method_span(spans, "GetAccount").is_some()
    });
    let created = method_span(&spans, "CreateAccount").expect("CreateAccount's span");
    assert_eq!(created["trace_id"], TRACE_ID, "{created}");
    assert_eq!(created["parent_span_id"], PARENT_SPAN_ID, "{created}");
    assert_eq!(created["service"], "licensing", "{created}");
    assert_eq!(
        created["name"],
        "/licensing.v1.LicensingService/CreateAccount"
    );
    // SPAN_KIND_SERVER
    assert_eq!(created["kind"], 2, "{created}");
    let attributes = &created["attributes"];
    assert_eq!(attributes["rpc.system"], "grpc", "{created}");
    assert_eq!(attributes["rpc.service"], SERVICE, "{created}");
    assert_eq!(attributes["account"], "acme", "{created}");
    assert_eq!(attributes["rpc.grpc.status_code"], 0, "{created}");

    let missing = method_span(&spans, "GetAccount").expect("GetAccount's span");
    assert_eq!(missing["trace_id"], TRACE_ID, "{missing}");
    assert_eq!(missing["attributes"]["account"], "nobody", "{missing}");
    // NOT_FOUND is the caller's business: the span's status is not an error.
    assert_eq!(
        missing["attributes"]["rpc.grpc.status_code"], 5,
        "{missing}"
    );
    assert_ne!(missing["status"], 2, "{missing}");

    // The call's log line carries the same trace id.
    let logs = server.logs();
    let line = logs
        .iter()
        .find(|l| l.contains("licensing::call") && l.contains("GetAccount"))
        .unwrap_or_else(|| panic!("no call line for GetAccount:\n{}", logs.join("\n")));
    for part in [
        "code=\"NotFound\"",
        "account=\"nobody\"",
        &format!("trace_id=\"{TRACE_ID}\""),
        "latency_ms=",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
}

/// A collector following `events`, sending to `licensing`, its metrics on a free address.
fn start_collector(
    licensing: &Licensing,
    spool: &Path,
    events: &Path,
    environment: &[(&'static str, String)],
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let metrics = support::free_address();
    let mut command = Command::new(env!("CARGO_BIN_EXE_licensing-collector"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("LICENSING_") || name.starts_with("OTEL_") {
            command.env_remove(&*name);
        }
    }
    let mut child = command
        .envs(environment.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--licensing", &licensing.endpoint(), "--spool-dir"])
        .arg(spool)
        .arg("--follow")
        .arg(events)
        .args([
            "--source",
            "test",
            "--backoff-max-ms",
            "500",
            "--log",
            "info",
            "--metrics-listen",
            &metrics,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start licensing-collector");
    let (lines, _reader) = support::collect_lines(child.stderr.take().expect("stderr"));
    (child, metrics, lines)
}

/// A login a second ago: in the open month.
fn event_line(id: &str, account: &str, member: &str) -> String {
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    format!(
        "{{\"event_id\":\"{id}\",\"account_id\":\"{account}\",\"member_id\":\"{member}\",\"occurred_at\":\"{at}\",\"kind\":\"agent_login\"}}\n"
    )
}

#[test]
fn a_collector_upload_is_one_trace_across_both_processes() {
    let receiver = Receiver::start();
    let server = start_traced(&receiver, &[]);
    server.call(
        &format!("{SERVICE}/CreateAccount"),
        &json!({ "accountId": "acme", "settings": { "timeZone": "UTC" } }),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, event_line("e1", "acme", "ann")).expect("events");
    let (mut collector, _, _) = start_collector(
        &server,
        &dir.path().join("spool"),
        &events,
        &receiver.environment(),
    );
    let find = |spans: &[Value], service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s["service"] == service && s["name"] == name)
            .cloned()
    };
    let spans = receiver.wait_for(
        "the collector's upload, licensing's batch and its group commit",
        |spans| {
            find(spans, "licensing-collector", "upload batch").is_some()
                && find(spans, "licensing", "ingest batch").is_some()
                && find(spans, "licensing", "group commit").is_some()
        },
    );
    let _ = collector.kill();
    let _ = collector.wait();
    let upload = find(&spans, "licensing-collector", "upload batch").expect("upload");
    let batch = find(&spans, "licensing", "ingest batch").expect("batch");
    let group = find(&spans, "licensing", "group commit").expect("group");
    assert_eq!(
        batch["trace_id"], upload["trace_id"],
        "one trace across both processes:\n{upload}\n{batch}"
    );
    assert_eq!(batch["parent_span_id"], upload["span_id"], "{batch}");
    assert_eq!(upload["parent_span_id"], "", "the upload starts its trace");
    let linked = group["links"]
        .as_array()
        .expect("links")
        .iter()
        .any(|link| link["trace_id"] == batch["trace_id"] && link["span_id"] == batch["span_id"]);
    assert!(
        linked,
        "the group commit links to the batch it committed:\n{group}\n{batch}"
    );
}

/// The samples of a scrape of `address`, parsed by prometheus_client's parser.
fn scrape(address: &str) -> Vec<Value> {
    let mut socket = std::net::TcpStream::connect(address).expect("connect to /metrics");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    socket.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut parser = Command::new(python())
        .arg(script("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the parser");
    parser
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("exposition");
    let output = parser.wait_with_output().expect("parsed");
    assert!(
        output.status.success(),
        "prometheus_client could not parse the exposition: {}\n{body}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a sample as JSON"))
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn both_metrics_endpoints_parse_and_their_counters_move_with_the_calls() {
    let metrics = support::free_address();
    let server = Licensing::start_with_env_args(&[], &["--metrics-listen", &metrics]);
    let get_account = [
        ("grpc_service", SERVICE),
        ("grpc_method", "GetAccount"),
        ("grpc_type", "unary"),
    ];
    let not_found = [
        get_account[0],
        get_account[1],
        get_account[2],
        ("grpc_code", "NotFound"),
    ];
    let before = scrape(&metrics);
    let handled_before = sample(&before, "grpc_server_handled_total", &not_found).unwrap_or(0.0);
    let started_before = sample(&before, "grpc_server_started_total", &get_account)
        .expect("started is there from the start, at 0");
    for _ in 0..3 {
        server.call_err(
            &format!("{SERVICE}/GetAccount"),
            &json!({ "accountId": "nobody" }),
        );
    }
    server.call(
        &format!("{SERVICE}/CreateAccount"),
        &json!({ "accountId": "acme", "settings": { "timeZone": "UTC" } }),
    );

    // The collector's events move licensing's event counters and its own.
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        event_line("e1", "acme", "ann") + &event_line("e2", "acme", "bob"),
    )
    .expect("events");
    let (mut collector, collector_metrics, _) =
        start_collector(&server, &dir.path().join("spool"), &events, &[]);
    let started = Instant::now();
    let collected = loop {
        if let Ok(socket) = std::net::TcpStream::connect(&collector_metrics) {
            drop(socket);
            let samples = scrape(&collector_metrics);
            if sample(&samples, "licensing_collector_events_applied_total", &[]) == Some(2.0) {
                break samples;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the collector never had its 2 events applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = collector.kill();
    let _ = collector.wait();
    assert_eq!(
        sample(&collected, "licensing_collector_spool_depth", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&collected, "licensing_collector_lag_seconds", &[]),
        Some(0.0)
    );
    let events_path = events.display().to_string();
    assert_eq!(
        sample(
            &collected,
            "licensing_collector_read_bytes_total",
            &[("source", &events_path)]
        ),
        Some(std::fs::metadata(&events).expect("size").len() as f64),
        "bytes read from the followed file"
    );

    let after = scrape(&metrics);
    assert_eq!(
        sample(&after, "grpc_server_handled_total", &not_found),
        Some(handled_before + 3.0),
        "three NOT_FOUND calls counted"
    );
    assert_eq!(
        sample(&after, "grpc_server_started_total", &get_account),
        Some(started_before + 3.0)
    );
    let latency_count = sample(&after, "grpc_server_handling_seconds_count", &get_account)
        .expect("the handling histogram");
    assert!(latency_count >= 3.0, "{latency_count}");
    assert!(
        after
            .iter()
            .any(|s| s["name"] == "grpc_server_handling_seconds_bucket"
                && s["labels"]["grpc_method"] == "GetAccount"
                && s["labels"]["le"] == "0.005"),
        "a histogram with buckets, not a summary"
    );
    assert_eq!(
        sample(&after, "licensing_events_total", &[("outcome", "applied")]),
        Some(2.0)
    );
    assert!(sample(&after, "licensing_group_commit_batches_count", &[]).is_some_and(|n| n >= 1.0));
    assert!(sample(&after, "licensing_flush_seconds_count", &[]).is_some_and(|n| n >= 1.0));
    assert!(sample(&after, "licensing_database_bytes", &[]).is_some_and(|b| b > 0.0));
    assert_eq!(sample(&after, "licensing_storage_failed", &[]), Some(0.0));
    // Summed every 30 s from the accounts: there from the first pass on.
    assert!(
        sample(
            &after,
            "licensing_seats",
            &[("product", "STANDARD_SEAT"), ("state", "bought")]
        )
        .is_some(),
        "seats per product"
    );
    assert!(sample(&after, "licensing_accounts", &[]).is_some());
    assert!(
        !after
            .iter()
            .any(|s| s["labels"].get("account_id").is_some()
                || s["labels"].get("member_id").is_some()),
        "no label names an account or a member"
    );
}

#[test]
fn liveness_and_readiness_are_separate_health_services() {
    let server = Licensing::start();
    for service in ["", "liveness", SERVICE] {
        let answer = server.call(
            "grpc.health.v1.Health/Check",
            &json!({ "service": service }),
        );
        assert_eq!(answer["status"], "SERVING", "{service:?}: {answer}");
    }
}

#[test]
fn a_trace_backend_that_never_answers_does_not_hold_the_shutdown() {
    // Accepts connections (the kernel does) and never answers: every export would wait for its
    // timeout, here a minute.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", blackhole.local_addr().expect("address"));
    let server = Licensing::start_with_env_args(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        &[],
    );
    for _ in 0..20 {
        server.call_err(
            &format!("{SERVICE}/GetAccount"),
            &json!({ "accountId": "nobody" }),
        );
    }
    let stopping = Instant::now();
    let (clean, logs) = server.terminate();
    let took = stopping.elapsed();
    assert!(clean, "exited with an error:\n{}", logs.join("\n"));
    assert!(
        took < Duration::from_secs(30),
        "the shutdown waited {took:?} for a trace backend that never answers"
    );
    assert!(
        logs.iter().any(|l| l.contains("last spans")),
        "the shutdown says the last spans were not exported:\n{}",
        logs.join("\n")
    );
}
