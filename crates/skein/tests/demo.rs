//! The multi-hop propagation test: the real `skein demo` shop (every service instrumented with
//! the OpenTelemetry Rust SDK, exporting OTLP/HTTP) runs a bounded number of checkouts with every
//! scenario on against a real `skein serve`; then, through the Jaeger query API, each checkout
//! must be one connected tree spanning every service it touched and every header format (W3C,
//! B3 single, B3 multi, Jaeger), with the deliberately broken hop as the only orphan, exception
//! events on error spans, the queue hop linked, and the slow scenario found by `minDuration`.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::eventually;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const CHECKOUTS: usize = 10;
const ALL_SERVICES: [&str; 8] = [
    "api-gateway",
    "auth",
    "order",
    "inventory",
    "payment",
    "fraud",
    "bank",
    "notification",
];
const HOP_FORMATS: [&str; 4] = ["w3c", "b3-single", "b3-multi", "jaeger"];

/// Runs `skein demo` against `server` until it stops by itself; returns its stdout.
fn run_demo(server: &common::Server, dir: &Path) -> String {
    let mut child = Command::new(common::bin())
        .arg("demo")
        .args(["--endpoint", &server.http_url()])
        .args(["--checkouts", &CHECKOUTS.to_string()])
        .args(["--rate", "5/s", "--scenario", "all"])
        // Large enough that a bulk order is clearly slower than every other checkout.
        .args(["--inventory-holds", "5000"])
        .arg("--data-dir")
        .arg(dir.join("demo-data"))
        .arg("--report")
        .arg(dir.join("report.json"))
        .arg("--log-file")
        .arg(dir.join("shop.log.jsonl"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn skein demo");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    // A safety net against a hung demo, not a performance bound.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for skein demo") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("skein demo --checkouts {CHECKOUTS} did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().expect("stdout reader");
    assert!(status.success(), "skein demo failed ({status}); stdout:\n{out}");
    out
}

struct Trace {
    spans: Vec<Value>,
    /// processID → serviceName
    services: HashMap<String, String>,
}

impl Trace {
    fn service(&self, span: &Value) -> &str {
        &self.services[span["processID"].as_str().unwrap()]
    }

    fn by_id(&self, id: &str) -> Option<&Value> {
        self.spans.iter().find(|s| s["spanID"] == id)
    }

    fn parent(&self, span: &Value) -> Option<String> {
        refs(span, "CHILD_OF").into_iter().next()
    }

    fn service_set(&self) -> BTreeSet<String> {
        self.spans.iter().map(|s| self.service(s).to_string()).collect()
    }
}

fn refs(span: &Value, kind: &str) -> Vec<String> {
    span["references"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["refType"] == kind)
        .map(|r| r["spanID"].as_str().unwrap().to_string())
        .collect()
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

fn tag_str<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    tag(span, key).and_then(Value::as_str)
}

fn kind(span: &Value) -> &str {
    tag_str(span, "span.kind").unwrap_or("internal")
}

fn is_error(span: &Value) -> bool {
    tag(span, "error") == Some(&Value::Bool(true))
}

fn exception_events(span: &Value) -> Vec<HashMap<String, String>> {
    span["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|log| {
            log["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f["key"].as_str().unwrap().to_string(),
                        f["value"].to_string().trim_matches('"').to_string(),
                    )
                })
                .collect::<HashMap<_, _>>()
        })
        .filter(|fields| fields.get("event").map(String::as_str) == Some("exception"))
        .collect()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// The trace by id. The demo exits only after every provider flushed, and skein acknowledges
/// only spans that are durable and searchable, so the whole trace is there once it is found.
async fn fetch_trace(client: &reqwest::Client, server: &common::Server, id: &str) -> Trace {
    let url = format!("{}/api/traces/{id}", server.query_url());
    eventually(&format!("trace {id}"), WAIT, || async {
        let body = get_json(client, &url).await?;
        let data = &body["data"][0];
        let trace = Trace {
            spans: data["spans"].as_array()?.clone(),
            services: data["processes"]
                .as_object()?
                .iter()
                .map(|(k, v)| (k.clone(), v["serviceName"].as_str().unwrap_or("").to_string()))
                .collect(),
        };
        (!trace.spans.is_empty()).then_some(trace)
    })
    .await
}

/// One root (the gateway's SERVER span) and every parent present: a connected tree.
fn assert_connected(trace: &Trace, what: &str) {
    let roots: Vec<&Value> = trace.spans.iter().filter(|s| trace.parent(s).is_none()).collect();
    assert_eq!(roots.len(), 1, "{what}: expected one root, got {roots:#?}");
    assert_eq!(trace.service(roots[0]), "api-gateway", "{what}");
    assert_eq!(roots[0]["operationName"], "POST /api/checkout", "{what}");
    for span in &trace.spans {
        if let Some(parent) = trace.parent(span) {
            assert!(
                trace.by_id(&parent).is_some(),
                "{what}: span {} ({}) has a parent {parent} that is not in the trace (an orphan)",
                span["operationName"],
                trace.service(span)
            );
        }
    }
}

/// Each hop format appears on a SERVER span whose parent is the CLIENT span that injected it.
fn assert_formats_joined(trace: &Trace, what: &str) {
    for format in HOP_FORMATS {
        let joined = trace.spans.iter().any(|server| {
            kind(server) == "server"
                && tag_str(server, "demo.propagation") == Some(format)
                && trace
                    .parent(server)
                    .and_then(|p| trace.by_id(&p))
                    .is_some_and(|client| {
                        kind(client) == "client" && tag_str(client, "demo.propagation") == Some(format)
                    })
        });
        assert!(joined, "{what}: no {format} hop joined the trace");
    }
}

/// Every span with error status carries an `exception` event with type and message.
fn assert_errors_have_exceptions(trace: &Trace, what: &str) {
    for span in trace.spans.iter().filter(|s| is_error(s)) {
        let events = exception_events(span);
        assert!(
            events.iter().any(|e| {
                e.get("exception.type").is_some_and(|t| !t.is_empty())
                    && e.get("exception.message").is_some_and(|m| !m.is_empty())
            }),
            "{what}: error span {} ({}) has no exception event: {span:#}",
            span["operationName"],
            trace.service(span)
        );
    }
}

/// The notification CONSUMER span is a child of the order PRODUCER span and linked to it.
fn assert_queue_linked(trace: &Trace, what: &str) {
    let producer = trace
        .spans
        .iter()
        .find(|s| kind(s) == "producer")
        .unwrap_or_else(|| panic!("{what}: no PRODUCER span"));
    let consumer = trace
        .spans
        .iter()
        .find(|s| kind(s) == "consumer")
        .unwrap_or_else(|| panic!("{what}: no CONSUMER span"));
    assert_eq!(trace.service(producer), "order");
    assert_eq!(trace.service(consumer), "notification");
    let producer_id = producer["spanID"].as_str().unwrap().to_string();
    assert_eq!(
        trace.parent(consumer),
        Some(producer_id.clone()),
        "{what}: consumer's parent"
    );
    assert_eq!(
        refs(consumer, "FOLLOWS_FROM"),
        vec![producer_id],
        "{what}: consumer's link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_checkouts_form_connected_traces_across_every_propagation_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(&dir.path().join("skein"), &[]);
    let stdout = run_demo(&server, dir.path());
    let client = reqwest::Client::new();

    let report: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report.len(), CHECKOUTS, "{report:#?}");
    let by_scenario = |name: &str| -> Vec<&Value> { report.iter().filter(|r| r["scenario"] == name).collect() };
    for scenario in ["normal", "slow-inventory", "declined", "slow-payment", "broken-hop"] {
        let rows = by_scenario(scenario);
        assert_eq!(rows.len(), CHECKOUTS / 5, "{scenario}: {report:#?}");
        let want = if scenario == "declined" { 402 } else { 200 };
        for r in rows {
            assert_eq!(r["http_status"], want, "{scenario}: {r:#}");
            assert!(r["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{r:#}");
        }
    }
    // The printed links point at real checkouts of the right kind.
    for (label, scenario) in [("slow checkout", "slow-inventory"), ("failing checkout", "declined")] {
        let line = stdout
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no `{label}` link in:\n{stdout}"));
        assert!(
            by_scenario(scenario)
                .iter()
                .any(|r| line.ends_with(&format!("/trace/{}", r["trace_id"].as_str().unwrap()))),
            "{line}"
        );
    }

    let mut traces = HashMap::new();
    for r in &report {
        let scenario = r["scenario"].as_str().unwrap();
        let id = r["trace_id"].as_str().unwrap();
        let what = format!("{scenario} checkout {} (trace {id})", r["checkout_id"]);
        let expected: BTreeSet<String> = ALL_SERVICES
            .iter()
            .filter(|s| match scenario {
                "broken-hop" => **s != "fraud",
                "declined" => **s != "notification",
                _ => true,
            })
            .map(|s| s.to_string())
            .collect();
        let trace = fetch_trace(&client, &server, id).await;
        assert_eq!(trace.service_set(), expected, "{what}");
        assert!(trace.spans.iter().all(|s| s["traceID"] == id), "{what}");
        assert_connected(&trace, &what);
        assert_formats_joined(&trace, &what);
        assert_errors_have_exceptions(&trace, &what);
        if scenario != "declined" {
            assert_queue_linked(&trace, &what);
        }

        let db: Vec<&Value> = trace
            .spans
            .iter()
            .filter(|s| tag_str(s, "db.system") == Some("sqlite"))
            .collect();
        let select = db
            .iter()
            .find(|s| tag_str(s, "db.operation") == Some("SELECT"))
            .unwrap_or_else(|| panic!("{what}: no SELECT span"));
        assert_eq!(kind(select), "client");
        assert_eq!(trace.service(select), "inventory");
        let statement = tag_str(select, "db.statement").unwrap();
        assert!(
            statement.starts_with("SELECT") && statement.contains("WHERE s.sku IN (?"),
            "{statement}"
        );
        assert_eq!(tag_str(select, "db.query.text"), Some(statement));
        let params = tag(select, "db.query.parameter_count").and_then(Value::as_i64).unwrap();
        assert_eq!(
            params,
            r["items"].as_i64().unwrap(),
            "{what}: one bind parameter per cart line"
        );

        match scenario {
            "declined" => {
                let declined = trace
                    .spans
                    .iter()
                    .filter(|s| is_error(s))
                    .flat_map(exception_events)
                    .any(|e| e.get("exception.type").map(String::as_str) == Some("CardDeclinedError"));
                assert!(declined, "{what}: no CardDeclinedError exception");
                let bank_call = trace
                    .spans
                    .iter()
                    .find(|s| trace.service(s) == "payment" && kind(s) == "client")
                    .unwrap();
                assert!(
                    is_error(bank_call),
                    "{what}: a 402 from the bank makes the CLIENT span an error"
                );
                assert_eq!(tag(bank_call, "http.response.status_code"), Some(&Value::from(402)));
            }
            "slow-payment" => {
                let mut attempts: Vec<&Value> = trace
                    .spans
                    .iter()
                    .filter(|s| {
                        trace.service(s) == "order" && kind(s) == "client" && s["operationName"] == "POST /payments"
                    })
                    .collect();
                attempts.sort_by_key(|a| a["startTime"].as_u64());
                // The bank stalls the first attempt only; a later one may also time out on a very
                // busy machine, so count from the ends rather than requiring exactly two.
                assert!(
                    attempts.len() >= 2,
                    "{what}: a timed-out attempt and a retry: {attempts:#?}"
                );
                let first = attempts[0];
                assert!(is_error(first), "{what}");
                assert!(exception_events(first)
                    .iter()
                    .any(|e| e.get("exception.type").map(String::as_str) == Some("TimeoutError")));
                let last = attempts[attempts.len() - 1];
                assert!(!is_error(last), "{what}: the retry succeeds");
                let resends = (attempts.len() - 1) as i64;
                assert_eq!(
                    tag(last, "http.request.resend_count"),
                    Some(&Value::from(resends)),
                    "{what}"
                );
                assert_eq!(
                    tag(last, "http.response.status_code"),
                    Some(&Value::from(200)),
                    "{what}"
                );
            }
            "broken-hop" => {
                let to_fraud = trace
                    .spans
                    .iter()
                    .find(|s| kind(s) == "client" && tag_str(s, "peer.service") == Some("fraud"))
                    .unwrap();
                assert_eq!(tag_str(to_fraud, "demo.propagation"), Some("none"));
                let fraud_id = to_fraud["spanID"].as_str().unwrap().to_string();
                assert!(!trace.spans.iter().any(|s| trace.parent(s) == Some(fraud_id.clone())));
            }
            _ => {}
        }
        traces.insert(id.to_string(), trace);
    }

    // The broken hop: fraud's spans started a trace of their own (the orphan, on purpose).
    for r in by_scenario("broken-hop") {
        let checkout_id = r["checkout_id"].as_str().unwrap();
        let url = format!(
            "{}/api/traces?service=fraud&lookback=1h&tags={{\"shop.checkout.id\":\"{checkout_id}\"}}",
            server.query_url()
        );
        let found = eventually("fraud's orphan trace", WAIT, || async {
            let body = get_json(&client, &url).await?;
            let data = body["data"].as_array()?.clone();
            (!data.is_empty()).then_some(data)
        })
        .await;
        assert_eq!(found.len(), 1, "{found:#?}");
        let orphan = &found[0];
        assert_ne!(
            orphan["traceID"], r["trace_id"],
            "the broken hop must not join the checkout trace"
        );
        let spans = orphan["spans"].as_array().unwrap();
        let root: Vec<&Value> = spans.iter().filter(|s| refs(s, "CHILD_OF").is_empty()).collect();
        assert_eq!(root.len(), 1);
        assert_eq!(kind(root[0]), "server");
        assert_eq!(tag_str(root[0], "demo.propagation"), Some("none"));
    }
    // Only the broken hop's checkouts lose their fraud spans; intact checkouts have them.
    let intact_fraud_traces = report
        .iter()
        .filter(|r| r["scenario"] != "broken-hop")
        .filter(|r| traces[r["trace_id"].as_str().unwrap()].service_set().contains("fraud"))
        .count();
    assert_eq!(intact_fraud_traces, CHECKOUTS - CHECKOUTS / 5);

    // Services are told apart by their resources.
    let url = format!(
        "{}/api/traces/{}",
        server.query_url(),
        report[0]["trace_id"].as_str().unwrap()
    );
    let raw = get_json(&client, &url).await.unwrap();
    let processes = raw["data"][0]["processes"].as_object().unwrap();
    let mut versions = HashSet::new();
    for process in processes.values() {
        let tags: HashMap<&str, &Value> = process["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["key"].as_str().unwrap(), &t["value"]))
            .collect();
        versions.insert(tags["service.version"].to_string());
        let env = tags["deployment.environment"].as_str().unwrap();
        let expected_env = if process["serviceName"] == "bank" {
            "partner-sandbox"
        } else {
            "demo"
        };
        assert_eq!(env, expected_env, "{process:#}");
    }
    assert_eq!(
        versions.len(),
        processes.len(),
        "each service has its own version: {processes:#?}"
    );

    // W3C tracestate: started at the gateway, carried over the W3C hop to auth, and lost after
    // the B3 hop to order (B3 has no field for it).
    let normal_id = by_scenario("normal")[0]["trace_id"].as_str().unwrap();
    let v3 = get_json(&client, &format!("{}/api/v3/traces/{normal_id}", server.query_url()))
        .await
        .expect("api_v3 trace");
    let mut trace_states: HashMap<String, BTreeSet<String>> = HashMap::new();
    for resource_spans in v3["result"]["resourceSpans"].as_array().unwrap() {
        let service = resource_spans["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap()
            .to_string();
        for scope in resource_spans["scopeSpans"].as_array().unwrap() {
            for span in scope["spans"].as_array().unwrap() {
                let state = span["traceState"].as_str().unwrap_or("").to_string();
                trace_states.entry(service.clone()).or_default().insert(state);
            }
        }
    }
    let only = |state: &str| BTreeSet::from([state.to_string()]);
    assert_eq!(
        trace_states["api-gateway"],
        only("shop=api-gateway"),
        "{trace_states:?}"
    );
    assert_eq!(trace_states["auth"], only("shop=api-gateway"), "{trace_states:?}");
    assert_eq!(trace_states["order"], only(""), "{trace_states:?}");

    // The slow scenario stands out in a duration search: above every checkout that is neither a
    // bulk order nor a retried payment, the search finds exactly the bulk orders' traces.
    let slow_ids: BTreeSet<&str> = by_scenario("slow-inventory")
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap())
        .collect();
    let fast_max_us = report
        .iter()
        .filter(|r| r["scenario"] != "slow-inventory" && r["scenario"] != "slow-payment")
        .map(|r| {
            traces[r["trace_id"].as_str().unwrap()]
                .spans
                .iter()
                .map(|s| s["duration"].as_u64().unwrap())
                .max()
                .unwrap()
        })
        .max()
        .unwrap();
    let slow_min_us = slow_ids
        .iter()
        .map(|id| {
            traces[*id]
                .spans
                .iter()
                .map(|s| s["duration"].as_u64().unwrap())
                .max()
                .unwrap()
        })
        .min()
        .unwrap();
    assert!(
        slow_min_us > fast_max_us,
        "bulk orders ({slow_min_us} µs) should be slower than normal checkouts ({fast_max_us} µs): raise --inventory-holds"
    );
    let min_duration_ms = (fast_max_us + slow_min_us) / 2 / 1000;
    let url = format!(
        "{}/api/traces?service=inventory&minDuration={min_duration_ms}ms&lookback=1h&limit=100",
        server.query_url()
    );
    let found = get_json(&client, &url).await.expect("minDuration search");
    let found_ids: BTreeSet<&str> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(found_ids, slow_ids, "inventory spans ≥ {min_duration_ms} ms");
    let slow_select = traces[*slow_ids.iter().next().unwrap()]
        .spans
        .iter()
        .find(|s| tag_str(s, "db.operation") == Some("SELECT"))
        .unwrap();
    assert_eq!(tag(slow_select, "db.query.parameter_count"), Some(&Value::from(2500)));

    // Logs: JSON lines from every service, each with the ids of a span that really exists.
    let logs = std::fs::read_to_string(dir.path().join("shop.log.jsonl")).unwrap();
    let mut logged_services = BTreeSet::new();
    let mut checked = 0;
    for line in logs.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let trace_id = entry["trace_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no trace_id: {line}"));
        let span_id = entry["span_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no span_id: {line}"));
        assert_eq!((trace_id.len(), span_id.len()), (32, 16), "{line}");
        logged_services.insert(entry["service"].as_str().unwrap().to_string());
        if let Some(trace) = traces.get(trace_id) {
            assert!(
                trace.by_id(span_id).is_some(),
                "log line's span is not in its trace: {line}"
            );
            checked += 1;
        }
    }
    let all: BTreeSet<String> = ALL_SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(logged_services, all);
    assert!(
        checked >= CHECKOUTS * 5,
        "only {checked} log lines matched checkout traces"
    );
}

/// Ctrl-C (SIGINT) while checkouts are flowing: the demo stops sending, lets the checkouts in
/// flight finish, flushes every exporter and exits 0; every checkout it reports is in skein.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_demo_cleanly_with_every_reported_checkout_stored() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(&dir.path().join("skein"), &[]);
    let report_path = dir.path().join("report.json");
    let mut child = Command::new(common::bin())
        .arg("demo")
        .args(["--endpoint", &server.http_url()])
        .args(["--rate", "20/s", "--scenario", "declined=0.5"])
        .arg("--data-dir")
        .arg(dir.path().join("demo-data"))
        .arg("--report")
        .arg(&report_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn skein demo");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Checkouts are flowing once the first failing one has been linked.
    loop {
        let line = lines
            .recv_timeout(WAIT)
            .expect("skein demo printed no failing-checkout link");
        if line.contains("failing checkout") {
            break;
        }
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("skein demo did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let printed: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "skein demo exited with {status}: {printed:#?}");
    assert!(
        printed.iter().any(|l| l.contains("stopping (waiting for")),
        "{printed:#?}"
    );

    let report: Vec<Value> = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert!(!report.is_empty());
    let client = reqwest::Client::new();
    for r in &report {
        let id = r["trace_id"]
            .as_str()
            .unwrap_or_else(|| panic!("checkout without a trace: {r:#}"));
        let trace = fetch_trace(&client, &server, id).await;
        assert_connected(&trace, &format!("interrupted run, checkout {}", r["checkout_id"]));
    }
}
