//! The log, as an operator reads it from a file or journald: plain text, no terminal colours.

mod common;

use std::process::{Command, Stdio};

/// Starts `skein serve` with its log going to a file, stops it as an orchestrator would once
/// it is ready, and returns the log.
fn log_of_a_clean_run(sets: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("skein.log")).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("serve").arg("--data-dir").arg(dir.path().join("data"));
    for key in common::ALL_ADDRS {
        cmd.args(["--set", &format!("{key}=127.0.0.1:0")]);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .any(|l| l.starts_with("skein: ready"));
    assert!(ready, "skein did not start");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(dir.path().join("skein.log")).unwrap()
}

#[test]
fn logs_written_to_a_file_carry_no_terminal_colours() {
    let text = log_of_a_clean_run(&[]);
    assert!(text.contains("stopped cleanly"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in the log: {text:?}");
}

/// `log_format = "json"`: every line one object, an event's fields beside its message.
#[test]
fn json_logs_are_one_object_a_line() {
    // A disabled receiver is logged with its name as a field.
    let text = log_of_a_clean_run(&["log_format=json", "jaeger.agent_binary_addr="]);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for e in &events {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(e.get(key).is_some(), "no {key} in {e}");
        }
    }
    let stopped = events.iter().find(|e| e["message"] == "stopped cleanly");
    assert_eq!(stopped.map(|e| e["level"].clone()), Some("INFO".into()), "{text}");
    let disabled = events.iter().find(|e| e["message"] == "disabled");
    assert_eq!(
        disabled.map(|e| e["receiver"].clone()),
        Some("jaeger_agent_binary".into()),
        "{text}"
    );
}

/// SIGHUP (a supervisor's "reload") does not end the server, as its default action would,
/// unflushed: it is logged, and the server keeps serving until SIGTERM.
#[tokio::test]
async fn sighup_is_logged_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let s = common::Server::start_with(&dir.path().join("data"), &[], move |cmd| {
        cmd.stderr(log_file);
    });
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    common::eventually("the SIGHUP log line", std::time::Duration::from_secs(20), || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("SIGHUP ignored")
            .then_some(())
    })
    .await;
    let health = reqwest::get(format!("{}/health", s.query_url())).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(s.stop(), "a clean exit on SIGTERM after SIGHUP");
}

/// The refusal lines of a JSON log, once `n` of them are there.
async fn refusal_lines(log: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    common::eventually("the refusal log lines", std::time::Duration::from_secs(20), || async {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("refused spans")))
            .collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

/// Spans refused for the sender's fault are logged with the sender's address and the reason,
/// on every ingest port: undecodable bodies over HTTP, invalid spans over gRPC (a partial
/// success), a bad datagram over UDP.
#[tokio::test]
async fn refusals_are_logged_with_the_client_address() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let s = common::Server::start_with(&dir.path().join("data"), &["log_format=json"], move |cmd| {
        cmd.stderr(log_file);
    });

    // OTLP/HTTP from a socket whose address we know.
    let mut http = std::net::TcpStream::connect(s.http).unwrap();
    let http_client = http.local_addr().unwrap();
    let body = b"\xff\xff\xff";
    write!(
        http,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    http.write_all(body).unwrap();
    let mut answer = String::new();
    http.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // OTLP/gRPC: one valid span, one with an all-zero trace id.
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let mut grpc = TraceServiceClient::connect(s.grpc_url()).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let good = common::server_span(common::rid(), common::rid(), None, "ok", now);
    let bad = common::server_span([0; 16], common::rid(), None, "zero trace id", now);
    let answer = grpc
        .export(common::otlp_request("refusals", vec![good, bad]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 1);

    // A Jaeger agent datagram that is not thrift.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"not thrift", s.addr("jaeger_agent_compact")).unwrap();

    // Zipkin: not JSON. A bad query on the same port is not a refusal of spans.
    let zipkin = format!("http://{}", s.addr("zipkin_http"));
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{zipkin}/api/v2/spans"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .get(format!("{zipkin}/api/v2/traces?limit=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let lines = refusal_lines(&log, 4).await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    let by_port = |port: &str| {
        lines
            .iter()
            .find(|e| e["port"] == port)
            .unwrap_or_else(|| panic!("no refusal logged for {port}: {lines:?}"))
    };
    let e = by_port("otlp_http");
    assert_eq!(e["client"], http_client.to_string(), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("invalid OTLP protobuf"), "{e}");
    assert_eq!(e["level"], "WARN");
    let e = by_port("otlp_grpc");
    assert!(e["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("trace"), "{e}");
    let e = by_port("jaeger_agent_compact");
    assert_eq!(e["client"], udp.local_addr().unwrap().to_string(), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("bad datagram"), "{e}");
    let e = by_port("zipkin_http");
    assert!(e["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
}
