//! Test harness: runs the real `skein` binary on loopback port 0 and talks to it over real
//! sockets. Ports are read from the `skein: listening <name> <addr>` lines it prints.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Server {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub query: SocketAddr,
    /// Every `skein: listening <name> <addr>` line, by name (`zipkin_http`, `jaeger_grpc`, …).
    pub ports: std::collections::HashMap<String, SocketAddr>,
    pub data_dir: PathBuf,
}

/// Every listen address in the configuration, so tests never bind a well-known port.
pub const ALL_ADDRS: &[&str] = &[
    "otlp.grpc_addr",
    "otlp.http_addr",
    "query.http_addr",
    "query.grpc_addr",
    "zipkin.http_addr",
    "jaeger.thrift_http_addr",
    "jaeger.grpc_addr",
    "jaeger.agent_compact_addr",
    "jaeger.agent_binary_addr",
    "sampling.http_addr",
];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_skein")
}

impl Server {
    /// Starts `skein serve` on `data_dir` with every port on 127.0.0.1:0 plus extra `--set`s.
    pub fn start(data_dir: &Path, sets: &[&str]) -> Server {
        Server::start_with(data_dir, sets, |_| {})
    }

    /// [`Server::start`], with a last say over the command (environment, limits, stderr).
    pub fn start_with(data_dir: &Path, sets: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").arg("--data-dir").arg(data_dir);
        for key in ALL_ADDRS {
            cmd.args(["--set", &format!("{key}=127.0.0.1:0")]);
        }
        for s in sets {
            cmd.args(["--set", s]);
        }
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        configure(&mut cmd);
        let mut child = cmd.spawn().expect("spawn skein");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ports = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("skein did not become ready within 60s"));
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() == 4 && parts[1] == "listening" {
                let addr: SocketAddr = parts[3].parse().expect("address");
                ports.insert(parts[2].to_string(), addr);
            }
            if line.starts_with("skein: ready") {
                break;
            }
        }
        Server {
            child: Some(child),
            grpc: ports["otlp_grpc"],
            http: ports["otlp_http"],
            query: ports["query_http"],
            ports,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }
    pub fn query_url(&self) -> String {
        format!("http://{}", self.query)
    }

    /// The address a receiver or API announced, e.g. `addr("zipkin_http")`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self.ports.get(name).unwrap_or_else(|| {
            panic!(
                "skein did not announce a {name} listener; it announced {:?}",
                self.ports
            )
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `<workspace>/.test-deps`, filled by `scripts/test-deps`.
pub fn test_deps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.test-deps")
}

/// The virtualenv's Python with the third-party clients from tests/python/requirements.txt.
/// Missing is a failure, not a skip: run `scripts/test-deps` (scripts/test does).
pub fn python() -> PathBuf {
    let p = test_deps().join("venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run scripts/test-deps to install the Python test clients",
        p.display()
    );
    p
}

/// `.test-deps/node/node_modules`, with the npm packages from tests/node/package.json.
pub fn node_modules() -> PathBuf {
    let p = test_deps().join("node/node_modules");
    assert!(
        p.exists(),
        "{} not found: run scripts/test-deps to install the npm test packages",
        p.display()
    );
    p
}

/// One OTLP request holding `spans` of one service.
pub fn otlp_request(
    service: &str,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// A 1-ms server span starting at `start` (unix ns), without attributes.
pub fn server_span(
    trace: [u8; 16],
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &str,
    start: u64,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000_000,
        ..Default::default()
    }
}

/// A random id with no zero bytes (never the invalid all-zero id).
pub fn rid<const N: usize>() -> [u8; N] {
    std::array::from_fn(|_| fastrand::u8(1..))
}

/// POSTs `spans` of one service as OTLP/HTTP protobuf; the server must answer 200. Returns the
/// decoded response (partial success, if any).
pub async fn post_otlp(
    client: &reqwest::Client,
    s: &Server,
    service: &str,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
    use prost::Message;
    let r = client
        .post(format!("{}/v1/traces", s.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(otlp_request(service, spans).encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(body).unwrap()
}

/// The server's `/metrics` text.
pub async fn metrics(s: &Server) -> String {
    reqwest::get(format!("{}/metrics", s.query_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One series' value in `/metrics` text, e.g. `metric(&m, "skein_head_spans")`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A trace's spans from the Jaeger HTTP API (`/api/traces/{id}`), or `None` on 404.
pub async fn jaeger_spans(client: &reqwest::Client, s: &Server, id: &[u8; 16]) -> Option<Vec<serde_json::Value>> {
    let r = client
        .get(format!("{}/api/traces/{}", s.query_url(), hex(id)))
        .send()
        .await
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    let v: serde_json::Value = r.json().await.unwrap();
    Some(v["data"][0]["spans"].as_array().cloned().unwrap_or_default())
}
