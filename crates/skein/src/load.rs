//! `skein load`: sends realistic OTLP traces over gRPC or HTTP, measures throughput and
//! acknowledgement latency, then reads a sample of the acknowledged traces back through the
//! Jaeger query API to check that none went missing.
//!
//! The generator shares the machine with the server in benchmarks, so it must cost far less
//! than the server spends decoding. A pool of requests is therefore generated and encoded once;
//! each send copies one, writes fresh trace and span ids over the id bytes and shifts every
//! timestamp to now. Ids and timestamps have fixed widths in protobuf (bytes of length 16/8,
//! fixed64), so the patch never changes the encoding, and gRPC and HTTP carry identical bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;
use prost::bytes::{BufMut, Bytes};
use prost::Message;
use serde::{Deserialize, Serialize};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadProtocol {
    /// OTLP/gRPC (opentelemetry.proto.collector.trace.v1.TraceService/Export)
    Grpc,
    /// OTLP/HTTP protobuf (POST /v1/traces)
    Http,
}

impl std::fmt::Display for LoadProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoadProtocol::Grpc => "grpc",
            LoadProtocol::Http => "http",
        })
    }
}

/// Generate OTLP trace load against a running skein (or any OTLP receiver).
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = LoadProtocol::Grpc)]
    pub protocol: LoadProtocol,
    /// OTLP endpoint [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for http].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Base URL of the Jaeger HTTP query API, for reading traces back.
    #[arg(long, default_value = "http://127.0.0.1:16686")]
    pub query_endpoint: String,
    /// Target spans per second; 0 sends as fast as the server acknowledges.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long to send, e.g. 30s or 2m [default: 10s unless --max-spans is given].
    #[arg(long, value_parser = skein_model::units::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after sending this many spans.
    #[arg(long)]
    pub max_spans: Option<u64>,
    /// Spans per export request (with --rate, at most rate/10 so requests keep flowing).
    #[arg(long, default_value_t = 1000)]
    pub batch_spans: usize,
    /// Export requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Number of distinct services in the generated traces.
    #[arg(long, default_value_t = 8)]
    pub services: usize,
    /// Traces to read back through the query API after sending (0 to skip).
    #[arg(long, default_value_t = 100)]
    pub readback: usize,
    /// Print the report as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Do not print the once-a-second progress line on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

/// What a load run measured. Rates are over `elapsed_secs`, the send phase (readback excluded).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Spans in requests sent at least once.
    pub spans_sent: u64,
    /// Spans the server acknowledged and did not reject.
    pub spans_acked: u64,
    /// Spans the server reported as rejected through OTLP partial success.
    pub spans_rejected: u64,
    /// Export requests finished (acknowledged or failed); throttled retries are not counted again.
    pub requests: u64,
    /// Requests that ended in an error, or were given up after throttling.
    pub failed_requests: u64,
    /// Throttled responses (429/503, RESOURCE_EXHAUSTED/UNAVAILABLE), each followed by a retry.
    pub throttled_requests: u64,
    pub elapsed_secs: f64,
    /// Acknowledged spans per second.
    pub spans_per_sec: f64,
    /// Acknowledged OTLP protobuf payload, in 10^6 bytes per second.
    pub mb_per_sec: f64,
    /// Latency of the attempt that was acknowledged (send to response), median.
    pub p50_ack_ms: f64,
    pub p99_ack_ms: f64,
    /// Traces read back through the query API.
    pub readback_sampled: u64,
    /// Traces read back with exactly as many spans as were sent.
    pub readback_complete: u64,
}

/// How long a throttled request keeps being retried before it counts as failed.
const MAX_THROTTLED_RETRY: Duration = Duration::from_secs(30);
/// After --duration ends, in-flight throttled requests get this long to land.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const READBACK_WAIT: Duration = Duration::from_secs(5);
const READBACK_CONCURRENCY: usize = 16;
/// Distinct spans kept in the request pool (bounds the pool's memory to a few tens of MB).
const POOL_SPANS: usize = 32 * 1024;

pub async fn run(args: LoadArgs) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(args.batch_spans > 0, "--batch-spans must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.services > 0, "--services must be at least 1");
    if args.max_spans == Some(0) {
        bail!("--max-spans must be at least 1");
    }
    let endpoint = args.endpoint.clone().unwrap_or_else(|| {
        match args.protocol {
            LoadProtocol::Grpc => "http://127.0.0.1:4317",
            LoadProtocol::Http => "http://127.0.0.1:4318",
        }
        .to_string()
    });
    let batch = if args.rate > 0 {
        args.batch_spans
            .min(usize::try_from(args.rate / 10).unwrap_or(usize::MAX).max(1))
    } else {
        args.batch_spans
    };
    let run_for = match (args.duration, args.max_spans) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };

    let mut rng = fastrand::Rng::new();
    let services = make_services(args.services, &mut rng);
    let tail = args.max_spans.map_or(0, |m| (m % batch as u64) as usize);
    let pool_seed = rng.u64(..);
    let (pool, tail) = tokio::task::spawn_blocking(move || build_pool(&services, batch, tail, pool_seed))
        .await
        .context("request generator panicked")??;

    let transport = Transport::connect(args.protocol, &endpoint, args.concurrency).await?;
    if !args.no_progress {
        let pace = if args.rate > 0 {
            format!("{} spans/s", thousands(args.rate))
        } else {
            "max rate".to_string()
        };
        eprintln!(
            "skein load: {} → {endpoint}, {batch} spans/request, {} in flight, {pace}",
            args.protocol, args.concurrency
        );
    }

    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        pool,
        tail,
        batch,
        rate: args.rate,
        deadline: run_for.and_then(|d| start.checked_add(d)),
        remaining: AtomicU64::new(args.max_spans.unwrap_or(u64::MAX)),
        next_slot: Mutex::new(start),
        stop: AtomicBool::new(false),
        counters: Counters::default(),
        sample: Mutex::new(Reservoir::new(args.readback, rng.u64(..))),
        first_error: Mutex::new(None),
    });

    // Ctrl-C ends the run early but still reports what was measured.
    let interrupt = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                ctx.stop.store(true, Ordering::Relaxed);
            }
        }
    });
    let progress = (!args.no_progress).then(|| tokio::spawn(progress_loop(ctx.clone(), start)));

    let mut workers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        workers.push(tokio::spawn(worker(ctx.clone(), transport.clone(), rng.u64(..))));
    }
    let mut latencies_us: Vec<u32> = Vec::new();
    for w in workers {
        latencies_us.extend(w.await.context("load worker panicked")?);
    }
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
        let average = ctx.counters.spans_acked.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64().max(1e-9);
        print_progress(&ctx, elapsed, average);
        eprintln!();
    }

    let sample = std::mem::take(&mut lock(&ctx.sample).items);
    let (readback_sampled, readback_complete) = if ctx.stop.load(Ordering::Relaxed) || sample.is_empty() {
        (0, 0)
    } else {
        read_back(&args.query_endpoint, sample, &ctx).await?
    };
    interrupt.abort();

    latencies_us.sort_unstable();
    let c = &ctx.counters;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let acked = c.spans_acked.load(Ordering::Relaxed);
    let report = LoadReport {
        spans_sent: c.spans_sent.load(Ordering::Relaxed),
        spans_acked: acked,
        spans_rejected: c.spans_rejected.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        failed_requests: c.failed.load(Ordering::Relaxed),
        throttled_requests: c.throttled.load(Ordering::Relaxed),
        elapsed_secs: elapsed.as_secs_f64(),
        spans_per_sec: acked as f64 / secs,
        mb_per_sec: c.bytes_acked.load(Ordering::Relaxed) as f64 / 1e6 / secs,
        p50_ack_ms: percentile_ms(&latencies_us, 0.50),
        p99_ack_ms: percentile_ms(&latencies_us, 0.99),
        readback_sampled,
        readback_complete,
    };
    if let Some(e) = lock(&ctx.first_error).take() {
        eprintln!("skein load: first failure: {e}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, args.protocol, &endpoint);
    }
    Ok(report)
}

// ---- shared run state ------------------------------------------------------------------------

#[derive(Default)]
struct Counters {
    spans_sent: AtomicU64,
    spans_acked: AtomicU64,
    spans_rejected: AtomicU64,
    bytes_acked: AtomicU64,
    requests: AtomicU64,
    failed: AtomicU64,
    throttled: AtomicU64,
}

struct Ctx {
    pool: Vec<Template>,
    /// The one shorter request that makes the total come out at exactly --max-spans.
    tail: Option<Template>,
    batch: usize,
    rate: u64,
    deadline: Option<Instant>,
    remaining: AtomicU64,
    next_slot: Mutex<Instant>,
    stop: AtomicBool,
    counters: Counters,
    sample: Mutex<Reservoir>,
    first_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Poisoning only says another worker panicked; what these mutexes guard stays consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    fn finished(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Takes up to one batch of spans from the --max-spans budget.
    fn reserve(&self) -> Option<usize> {
        let batch = self.batch as u64;
        let before = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                (r > 0).then_some(r - r.min(batch))
            })
            .ok()?;
        Some(before.min(batch) as usize)
    }

    /// Token pacing: each request books `n / rate` seconds after the previous booking. Bookings
    /// never start in the past, so a generator that fell behind does not burst to catch up.
    fn pace(&self, n: usize) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let now = Instant::now();
        let mut next = lock(&self.next_slot);
        let slot = (*next).max(now);
        *next = slot + Duration::from_secs_f64(n as f64 / self.rate as f64);
        (slot > now).then_some(slot)
    }

    fn give_up_throttled(&self, first_attempt: Instant) -> bool {
        self.stop.load(Ordering::Relaxed)
            || first_attempt.elapsed() > MAX_THROTTLED_RETRY
            || self.deadline.is_some_and(|d| Instant::now() > d + DRAIN_GRACE)
    }

    fn fail(&self, msg: String) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        lock(&self.first_error).get_or_insert(msg);
    }

    fn acknowledged(&self, req: &Request, rejected: u64) {
        let c = &self.counters;
        let rejected = rejected.min(req.spans);
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.spans_acked.fetch_add(req.spans - rejected, Ordering::Relaxed);
        c.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
        c.bytes_acked.fetch_add(req.body.len() as u64, Ordering::Relaxed);
        // Only fully accepted requests are candidates: with a partial success we cannot tell
        // which spans are missing.
        if rejected == 0 {
            let mut s = lock(&self.sample);
            for t in &req.traces {
                s.offer(*t);
            }
        }
    }
}

/// A uniform random sample of fixed size over a stream of unknown length (Algorithm R), so
/// readback candidates take bounded memory however long the run.
struct Reservoir {
    cap: usize,
    seen: u64,
    items: Vec<([u8; 16], u32)>,
    rng: fastrand::Rng,
}

impl Reservoir {
    fn new(cap: usize, seed: u64) -> Reservoir {
        Reservoir {
            cap,
            seen: 0,
            items: Vec::with_capacity(cap.min(1 << 16)),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn offer(&mut self, item: ([u8; 16], u32)) {
        if self.cap == 0 {
            return;
        }
        self.seen += 1;
        if self.items.len() < self.cap {
            self.items.push(item);
        } else {
            let j = self.rng.u64(..self.seen);
            if let Some(slot) = usize::try_from(j).ok().and_then(|j| self.items.get_mut(j)) {
                *slot = item;
            }
        }
    }
}

async fn worker(ctx: Arc<Ctx>, transport: Transport, seed: u64) -> Vec<u32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut latencies = Vec::new();
    while !ctx.finished() {
        let Some(n) = ctx.reserve() else { break };
        if let Some(slot) = ctx.pace(n) {
            // A slot booked past the end would only add idle time to the measured run.
            if ctx.deadline.is_some_and(|d| slot >= d) {
                break;
            }
            tokio::time::sleep_until(slot.into()).await;
            if ctx.finished() {
                break;
            }
        }
        let template = match (n == ctx.batch, &ctx.tail) {
            (false, Some(t)) => t,
            _ => &ctx.pool[rng.usize(..ctx.pool.len())],
        };
        let req = template.instantiate(&mut rng);
        ctx.counters.spans_sent.fetch_add(req.spans, Ordering::Relaxed);

        let first_attempt = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let sent = Instant::now();
            match transport.send(req.body.clone()).await {
                Outcome::Accepted { rejected } => {
                    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    ctx.acknowledged(&req, rejected);
                    break;
                }
                Outcome::Throttled { retry_after } => {
                    ctx.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    if ctx.give_up_throttled(first_attempt) {
                        ctx.fail("gave up retrying a throttled request".to_string());
                        break;
                    }
                    // Honour the server's advice but never sleep long: a load generator that
                    // idles for minutes measures nothing.
                    let base = retry_after
                        .unwrap_or(backoff)
                        .clamp(Duration::from_millis(10), MAX_BACKOFF);
                    let jitter = base.mul_f64(rng.f64() * 0.25);
                    tokio::time::sleep(base + jitter).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Outcome::Failed(msg) => {
                    ctx.fail(msg);
                    // Keeps a dead endpoint from turning the workers into a busy loop.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
    }
    latencies
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

// ---- progress and summary --------------------------------------------------------------------

async fn progress_loop(ctx: Arc<Ctx>, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_acked, mut last_at) = (0u64, start);
    loop {
        tick.tick().await;
        let acked = ctx.counters.spans_acked.load(Ordering::Relaxed);
        let now = Instant::now();
        let per_sec = acked.saturating_sub(last_acked) as f64 / (now - last_at).as_secs_f64().max(1e-3);
        (last_acked, last_at) = (acked, now);
        print_progress(&ctx, now - start, per_sec);
    }
}

/// One progress line, rewritten in place with `\r`.
fn print_progress(ctx: &Ctx, elapsed: Duration, per_sec: f64) {
    let c = &ctx.counters;
    let acked = c.spans_acked.load(Ordering::Relaxed);
    let failed = c.failed.load(Ordering::Relaxed);
    let failed = if failed > 0 {
        format!("  failed {}", thousands(failed))
    } else {
        String::new()
    };
    eprint!(
        "\r{:>6.0}s  {:>11} spans/s  acked {:>13}  throttled {:>7}{failed}   ",
        elapsed.as_secs_f64(),
        thousands(per_sec as u64),
        thousands(acked),
        thousands(c.throttled.load(Ordering::Relaxed)),
    );
}

fn print_summary(r: &LoadReport, protocol: LoadProtocol, endpoint: &str) {
    println!("skein load: {protocol} {endpoint}, {:.1}s", r.elapsed_secs);
    println!(
        "  spans     sent {}  acked {}  rejected {}",
        thousands(r.spans_sent),
        thousands(r.spans_acked),
        thousands(r.spans_rejected)
    );
    println!(
        "  requests  {}  failed {}  throttled {}",
        thousands(r.requests),
        thousands(r.failed_requests),
        thousands(r.throttled_requests)
    );
    println!(
        "  rate      {} spans/s  {:.1} MB/s",
        thousands(r.spans_per_sec as u64),
        r.mb_per_sec
    );
    println!("  ack       p50 {:.2} ms  p99 {:.2} ms", r.p50_ack_ms, r.p99_ack_ms);
    if r.readback_sampled > 0 {
        println!(
            "  readback  {}/{} traces complete",
            r.readback_complete, r.readback_sampled
        );
    }
}

pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ---- transports ------------------------------------------------------------------------------

enum Outcome {
    Accepted { rejected: u64 },
    Throttled { retry_after: Option<Duration> },
    Failed(String),
}

#[derive(Clone)]
enum Transport {
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
    Http { client: reqwest::Client, url: String },
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Transport {
    async fn connect(protocol: LoadProtocol, endpoint: &str, concurrency: usize) -> anyhow::Result<Transport> {
        match protocol {
            LoadProtocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                    .with_context(|| format!("invalid --endpoint {endpoint:?}"))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(REQUEST_TIMEOUT)
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("connecting to {endpoint}"))?;
                Ok(Transport::Grpc(tonic::client::Grpc::new(channel)))
            }
            LoadProtocol::Http => {
                let base = endpoint.trim_end_matches('/');
                let url = if base.ends_with("/v1/traces") {
                    base.to_string()
                } else {
                    format!("{base}/v1/traces")
                };
                // Fail up front, as the gRPC connect does, rather than count every request failed.
                let parsed = reqwest::Url::parse(&url).with_context(|| format!("invalid --endpoint {endpoint:?}"))?;
                let host = parsed
                    .host_str()
                    .unwrap_or("127.0.0.1")
                    .trim_matches(['[', ']'])
                    .to_string();
                let port = parsed.port_or_known_default().unwrap_or(80);
                tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect((host.as_str(), port)),
                )
                .await
                .map_err(|_| anyhow::anyhow!("timed out"))
                .and_then(|r| r.map_err(anyhow::Error::from))
                .with_context(|| format!("connecting to {endpoint}"))?;
                let client = reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .connect_timeout(Duration::from_secs(5))
                    .pool_max_idle_per_host(concurrency)
                    .tcp_nodelay(true)
                    .build()
                    .context("building the HTTP client")?;
                Ok(Transport::Http { client, url })
            }
        }
    }

    async fn send(&self, body: Bytes) -> Outcome {
        match self {
            Transport::Grpc(grpc) => send_grpc(grpc.clone(), body).await,
            Transport::Http { client, url } => send_http(client, url, body).await,
        }
    }
}

async fn send_grpc(mut grpc: tonic::client::Grpc<tonic::transport::Channel>, body: Bytes) -> Outcome {
    if let Err(e) = grpc.ready().await {
        return Outcome::Failed(format!("gRPC channel not ready: {e}"));
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
    match grpc.unary(tonic::Request::new(body), path, PreEncodedCodec).await {
        Ok(resp) => Outcome::Accepted {
            rejected: resp
                .into_inner()
                .partial_success
                .map_or(0, |p| p.rejected_spans.max(0) as u64),
        },
        // tonic reports its own connection errors as UNAVAILABLE too; those carry the
        // underlying error as source, a server's answer does not.
        Err(s)
            if matches!(s.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable)
                && std::error::Error::source(&s).is_none() =>
        {
            Outcome::Throttled {
                retry_after: grpc_retry_delay(&s),
            }
        }
        Err(s) => Outcome::Failed(format!("gRPC {:?}: {}", s.code(), s.message())),
    }
}

async fn send_http(client: &reqwest::Client, url: &str, body: Bytes) -> Outcome {
    let resp = match client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("POST {url}: {}", error_chain(&e))),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        return Outcome::Throttled { retry_after };
    }
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("reading response of POST {url}: {}", error_chain(&e))),
    };
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        return Outcome::Failed(format!("POST {url}: HTTP {status}: {text}"));
    }
    let rejected = if is_json {
        json_rejected_spans(&bytes)
    } else {
        match ExportTraceServiceResponse::decode(bytes) {
            Ok(r) => r.partial_success.map_or(0, |p| p.rejected_spans.max(0) as u64),
            Err(e) => return Outcome::Failed(format!("POST {url}: undecodable response: {e}")),
        }
    };
    Outcome::Accepted { rejected }
}

/// reqwest's Display leaves out the cause ("connection refused" and the like).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// OTLP/JSON writes int64 as a string, but some servers send a number.
fn json_rejected_spans(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let r = &v["partialSuccess"]["rejectedSpans"];
    r.as_u64()
        .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The OTLP spec puts retry advice in a `google.rpc.RetryInfo` status detail; a plain
/// `retry-after` header is accepted too.
fn grpc_retry_delay(s: &tonic::Status) -> Option<Duration> {
    let from_detail = RpcStatus::decode(s.details()).ok().and_then(|st| {
        st.details
            .iter()
            .find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))
            .and_then(|d| RetryInfo::decode(d.value.as_slice()).ok())
            .and_then(|r| r.retry_delay)
            .map(|d| Duration::new(d.seconds.clamp(0, 3600) as u64, d.nanos.clamp(0, 999_999_999) as u32))
    });
    from_detail.or_else(|| {
        s.metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| Duration::from_secs_f64(v.min(3600.0)))
    })
}

/// Just the parts of google.rpc.Status / Any / RetryInfo / Duration that carry the delay.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// Sends an already encoded ExportTraceServiceRequest as is and decodes the response, so the
/// pool's bytes go on the wire without a decode/re-encode round.
#[derive(Clone, Copy)]
struct PreEncodedCodec;

struct PreEncodedEncoder;
struct ResponseDecoder;

impl tonic::codec::Codec for PreEncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncodedEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for PreEncodedEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable export response: {e}")))
    }
}

// ---- readback --------------------------------------------------------------------------------

#[derive(Deserialize)]
struct JaegerTraces {
    #[serde(default)]
    data: Vec<JaegerTrace>,
}

#[derive(Deserialize)]
struct JaegerTrace {
    #[serde(default)]
    spans: Vec<serde::de::IgnoredAny>,
}

/// Reads each sampled trace through the Jaeger API, polling while it is still incomplete
/// (the server may make spans queryable a little after acknowledging them).
async fn read_back(query: &str, sample: Vec<([u8; 16], u32)>, ctx: &Ctx) -> anyhow::Result<(u64, u64)> {
    let client = reqwest::Client::builder()
        .timeout(READBACK_WAIT)
        .build()
        .context("building the HTTP client")?;
    let base = query.trim_end_matches('/');
    let sampled = sample.len() as u64;
    let complete = futures::stream::iter(sample)
        .map(|(id, spans)| {
            let url = format!("{base}/api/traces/{}", skein_model::hex::encode(&id));
            let client = &client;
            async move { trace_complete(client, &url, spans as usize, ctx).await }
        })
        .buffer_unordered(READBACK_CONCURRENCY)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    Ok((sampled, complete as u64))
}

async fn trace_complete(client: &reqwest::Client, url: &str, want: usize, ctx: &Ctx) -> bool {
    let deadline = Instant::now() + READBACK_WAIT;
    loop {
        if let Ok(resp) = client.get(url).send().await {
            if resp.status().is_success() {
                if let Ok(t) = resp.json::<JaegerTraces>().await {
                    let got: usize = t.data.iter().map(|d| d.spans.len()).sum();
                    if got >= want {
                        // More spans than sent means duplicates: not complete, and waiting won't fix it.
                        return got == want;
                    }
                }
            }
        }
        if Instant::now() >= deadline || ctx.stop.load(Ordering::Relaxed) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the request pool ------------------------------------------------------------------------

/// One export request ready to send.
pub(crate) struct Request {
    pub(crate) body: Bytes,
    spans: u64,
    /// Trace ids in the request with their span counts (traces never straddle requests).
    traces: Vec<([u8; 16], u32)>,
}

/// An encoded request plus where its ids and timestamps sit in the bytes.
pub(crate) struct Template {
    body: Vec<u8>,
    spans: u64,
    /// `now` when the template was generated; timestamps are shifted by (send time - this).
    base_nanos: u64,
    trace_slots: Vec<(usize, u32)>,
    span_slots: Vec<(usize, u32)>,
    time_slots: Vec<usize>,
    trace_sizes: Vec<u32>,
    distinct_spans: usize,
}

pub(crate) fn build_pool(
    services: &[Service],
    batch: usize,
    tail: usize,
    seed: u64,
) -> anyhow::Result<(Vec<Template>, Option<Template>)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let count = (POOL_SPANS / batch).clamp(4, 256);
    let pool = (0..count)
        .map(|_| Template::build(services, batch, &mut rng))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tail = if tail > 0 {
        Some(Template::build(services, tail, &mut rng)?)
    } else {
        None
    };
    Ok((pool, tail))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Template {
    fn build(services: &[Service], spans: usize, rng: &mut fastrand::Rng) -> anyhow::Result<Template> {
        let base_nanos = now_nanos();
        let req = generate_request(services, spans, base_nanos, rng);
        let body = req.encode_to_vec();
        let mut ix = Indexer::default();
        ix.walk(&body, 0, body.len(), Level::Request)?;
        let total: u64 = ix.trace_sizes.iter().map(|&n| u64::from(n)).sum();
        // Each span contributes exactly one span_id slot; parents reuse those ids.
        let own_ids = ix.span_ix.len();
        if total != spans as u64 || own_ids != spans {
            bail!("internal: generated request indexes as {total} spans / {own_ids} ids, expected {spans}");
        }
        Ok(Template {
            body,
            spans: spans as u64,
            base_nanos,
            trace_slots: ix.trace_slots,
            span_slots: ix.span_slots,
            time_slots: ix.time_slots,
            trace_sizes: ix.trace_sizes,
            distinct_spans: own_ids,
        })
    }

    /// A copy with fresh random ids and timestamps moved to now.
    fn instantiate(&self, rng: &mut fastrand::Rng) -> Request {
        self.instantiate_at(rng, now_nanos())
    }

    /// A copy with fresh random ids, its timestamps moved so the request starts at `at`.
    pub(crate) fn instantiate_at(&self, rng: &mut fastrand::Rng, at: u64) -> Request {
        let mut buf = self.body.clone();
        let trace_ids: Vec<[u8; 16]> = self.trace_sizes.iter().map(|_| rng.u128(1..).to_be_bytes()).collect();
        let span_ids: Vec<[u8; 8]> = (0..self.distinct_spans).map(|_| rng.u64(1..).to_be_bytes()).collect();
        for &(off, i) in &self.trace_slots {
            if let (Some(dst), Some(id)) = (buf.get_mut(off..off + 16), trace_ids.get(i as usize)) {
                dst.copy_from_slice(id);
            }
        }
        for &(off, i) in &self.span_slots {
            if let (Some(dst), Some(id)) = (buf.get_mut(off..off + 8), span_ids.get(i as usize)) {
                dst.copy_from_slice(id);
            }
        }
        // Modular arithmetic: a shift into the past wraps around and back.
        let shift = at.wrapping_sub(self.base_nanos);
        for &off in &self.time_slots {
            if let Some(dst) = buf.get_mut(off..off + 8) {
                let mut t = [0u8; 8];
                t.copy_from_slice(dst);
                dst.copy_from_slice(&u64::from_le_bytes(t).wrapping_add(shift).to_le_bytes());
            }
        }
        Request {
            body: Bytes::from(buf),
            spans: self.spans,
            traces: trace_ids.into_iter().zip(self.trace_sizes.iter().copied()).collect(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Request,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
}

/// Finds id and timestamp fields in an encoded ExportTraceServiceRequest by walking the
/// protobuf wire format (field numbers from opentelemetry/proto/trace/v1/trace.proto).
#[derive(Default)]
struct Indexer {
    trace_ix: HashMap<[u8; 16], u32>,
    span_ix: HashMap<[u8; 8], u32>,
    trace_slots: Vec<(usize, u32)>,
    span_slots: Vec<(usize, u32)>,
    time_slots: Vec<usize>,
    trace_sizes: Vec<u32>,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> anyhow::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            bail!("truncated varint")
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    bail!("varint longer than 10 bytes")
}

impl Indexer {
    fn walk(&mut self, buf: &[u8], start: usize, end: usize, level: Level) -> anyhow::Result<()> {
        let mut pos = start;
        while pos < end {
            let key = read_varint(buf, &mut pos)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    read_varint(buf, &mut pos)?;
                }
                1 => {
                    let is_time = matches!((level, field), (Level::Span, 7 | 8) | (Level::Event, 1));
                    if is_time {
                        self.time_slots.push(pos);
                    }
                    pos += 8;
                }
                2 => {
                    let len = usize::try_from(read_varint(buf, &mut pos)?)?;
                    let (s, e) = (pos, pos + len);
                    if e > end {
                        bail!("length-delimited field overruns its message");
                    }
                    match (level, field) {
                        (Level::Request, 1) => self.walk(buf, s, e, Level::ResourceSpans)?,
                        (Level::ResourceSpans, 2) => self.walk(buf, s, e, Level::ScopeSpans)?,
                        (Level::ScopeSpans, 2) => self.walk(buf, s, e, Level::Span)?,
                        (Level::Span, 11) => self.walk(buf, s, e, Level::Event)?,
                        (Level::Span, 1) => {
                            let id: [u8; 16] = buf[s..e].try_into().context("trace id is not 16 bytes")?;
                            let next = self.trace_ix.len() as u32;
                            let i = *self.trace_ix.entry(id).or_insert(next);
                            if i == next {
                                self.trace_sizes.push(0);
                            }
                            self.trace_sizes[i as usize] += 1;
                            self.trace_slots.push((s, i));
                        }
                        (Level::Span, 2 | 4) => {
                            let id: [u8; 8] = buf[s..e].try_into().context("span id is not 8 bytes")?;
                            let next = self.span_ix.len() as u32;
                            let i = *self.span_ix.entry(id).or_insert(next);
                            self.span_slots.push((s, i));
                        }
                        _ => {}
                    }
                    pos = e;
                }
                5 => pos += 4,
                w => bail!("unexpected protobuf wire type {w}"),
            }
        }
        if pos != end {
            bail!("message overruns its length");
        }
        Ok(())
    }
}

// ---- realistic traces ------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Api {
    Http(&'static [(&'static str, &'static str)]),
    Grpc(&'static str, &'static [&'static str]),
}

#[derive(Clone, Copy)]
enum Db {
    Postgres(&'static str),
    Redis,
    Mongo(&'static str),
}

struct ServiceSpec {
    name: &'static str,
    lang: &'static str,
    scope: &'static str,
    api: Api,
    db: Option<Db>,
}

const SPECS: &[ServiceSpec] = &[
    ServiceSpec {
        name: "frontend",
        lang: "nodejs",
        scope: "@opentelemetry/instrumentation-http",
        api: Api::Http(&[
            ("GET", "/api/products/{productId}"),
            ("GET", "/api/products"),
            ("GET", "/api/cart"),
            ("POST", "/api/cart"),
            ("POST", "/api/checkout"),
            ("GET", "/api/recommendations"),
            ("GET", "/api/data"),
        ]),
        db: None,
    },
    ServiceSpec {
        name: "checkout",
        lang: "go",
        scope: "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
        api: Api::Grpc("oteldemo.CheckoutService", &["PlaceOrder"]),
        db: Some(Db::Postgres("orders")),
    },
    ServiceSpec {
        name: "cart",
        lang: "dotnet",
        scope: "OpenTelemetry.Instrumentation.AspNetCore",
        api: Api::Grpc("oteldemo.CartService", &["GetCart", "AddItem", "EmptyCart"]),
        db: Some(Db::Redis),
    },
    ServiceSpec {
        name: "payment",
        lang: "nodejs",
        scope: "@opentelemetry/instrumentation-grpc",
        api: Api::Grpc("oteldemo.PaymentService", &["Charge"]),
        db: None,
    },
    ServiceSpec {
        name: "product-catalog",
        lang: "go",
        scope: "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
        api: Api::Grpc(
            "oteldemo.ProductCatalogService",
            &["ListProducts", "GetProduct", "SearchProducts"],
        ),
        db: Some(Db::Postgres("catalog")),
    },
    ServiceSpec {
        name: "shipping",
        lang: "rust",
        scope: "opentelemetry-instrumentation-actix-web",
        api: Api::Http(&[("POST", "/get-quote"), ("POST", "/ship-order")]),
        db: None,
    },
    ServiceSpec {
        name: "currency",
        lang: "cpp",
        scope: "grpc.server",
        api: Api::Grpc("oteldemo.CurrencyService", &["Convert", "GetSupportedCurrencies"]),
        db: None,
    },
    ServiceSpec {
        name: "recommendation",
        lang: "python",
        scope: "opentelemetry.instrumentation.grpc",
        api: Api::Grpc("oteldemo.RecommendationService", &["ListRecommendations"]),
        db: None,
    },
    ServiceSpec {
        name: "ad",
        lang: "java",
        scope: "io.opentelemetry.grpc-1.6",
        api: Api::Grpc("oteldemo.AdService", &["GetAds"]),
        db: None,
    },
    ServiceSpec {
        name: "email",
        lang: "ruby",
        scope: "OpenTelemetry::Instrumentation::Sinatra",
        api: Api::Http(&[("POST", "/send_order_confirmation")]),
        db: None,
    },
    ServiceSpec {
        name: "inventory",
        lang: "java",
        scope: "io.opentelemetry.grpc-1.6",
        api: Api::Grpc("oteldemo.InventoryService", &["Reserve", "Release"]),
        db: Some(Db::Mongo("inventory")),
    },
    ServiceSpec {
        name: "accounting",
        lang: "dotnet",
        scope: "OpenTelemetry.Instrumentation.AspNetCore",
        api: Api::Grpc("oteldemo.AccountingService", &["RecordOrder"]),
        db: Some(Db::Postgres("ledger")),
    },
    ServiceSpec {
        name: "fraud-detection",
        lang: "java",
        scope: "io.opentelemetry.grpc-1.6",
        api: Api::Grpc("oteldemo.FraudDetectionService", &["Score"]),
        db: Some(Db::Redis),
    },
    ServiceSpec {
        name: "quote",
        lang: "php",
        scope: "io.opentelemetry.contrib.php.slim",
        api: Api::Http(&[("POST", "/getquote")]),
        db: None,
    },
    ServiceSpec {
        name: "auth",
        lang: "go",
        scope: "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
        api: Api::Grpc("oteldemo.AuthService", &["Authenticate", "RefreshToken"]),
        db: Some(Db::Redis),
    },
    ServiceSpec {
        name: "search",
        lang: "java",
        scope: "io.opentelemetry.spring-webmvc-6.0",
        api: Api::Http(&[("GET", "/search"), ("GET", "/suggest")]),
        db: None,
    },
];

/// Operations of services beyond the named table.
const GENERIC_OPS: &[&str] = &["Get", "List", "Update"];

pub(crate) struct Service {
    name: String,
    lang: &'static str,
    scope: &'static str,
    api: Api,
    db: Option<Db>,
    rpc_service: String,
    /// A few instances (pods) per service, each with its own resource.
    instances: Vec<resource::Resource>,
    ip: String,
}

pub(crate) fn make_services(n: usize, rng: &mut fastrand::Rng) -> Vec<Service> {
    (0..n)
        .map(|i| {
            let (name, lang, scope, api, db) = match SPECS.get(i) {
                Some(s) => (s.name.to_string(), s.lang, s.scope, s.api, s.db),
                None => {
                    let db = (i % 3 == 0).then_some(Db::Postgres("app"));
                    (
                        format!("service-{i}"),
                        "go",
                        "go.opentelemetry.io/otel",
                        Api::Grpc("", GENERIC_OPS),
                        db,
                    )
                }
            };
            let rpc_service = match api {
                Api::Grpc("", _) => format!("skein.demo.Service{i}"),
                Api::Grpc(s, _) => s.to_string(),
                Api::Http(_) => String::new(),
            };
            let version = format!("1.{}.{}", rng.u8(0..20), rng.u8(0..10));
            let replica_set = format!("{:09x}", rng.u64(..) >> 28);
            let instances = (0..3)
                .map(|_| {
                    let pod: String = (0..5).map(|_| rng.alphanumeric().to_ascii_lowercase()).collect();
                    let host = format!("{name}-{replica_set}-{pod}");
                    let mut a = Attrs::default();
                    a.str("service.name", &name);
                    a.str("service.namespace", "shop");
                    a.str("service.version", &version);
                    a.str("service.instance.id", format!("{:032x}", rng.u128(..)));
                    a.str("host.name", &host);
                    a.str("deployment.environment", "production");
                    a.str("k8s.namespace.name", "shop");
                    a.str("k8s.pod.name", host);
                    a.str("cloud.region", "eu-west-1");
                    a.str("telemetry.sdk.name", "opentelemetry");
                    a.str("telemetry.sdk.language", lang);
                    a.str("telemetry.sdk.version", "1.38.0");
                    resource::Resource {
                        attributes: a.0,
                        ..Default::default()
                    }
                })
                .collect();
            let ip = format!("10.42.{}.{}", rng.u8(0..8), rng.u8(2..250));
            Service {
                name,
                lang,
                scope,
                api,
                db,
                rpc_service,
                instances,
                ip,
            }
        })
        .collect()
}

#[derive(Default)]
struct Attrs(Vec<common::KeyValue>);

impl Attrs {
    fn put(&mut self, key: &str, v: common::any_value::Value) {
        self.0.push(common::KeyValue {
            key: key.to_string(),
            value: Some(common::AnyValue { value: Some(v) }),
            ..Default::default()
        });
    }
    fn str(&mut self, key: &str, v: impl Into<String>) {
        self.put(key, common::any_value::Value::StringValue(v.into()));
    }
    fn int(&mut self, key: &str, v: i64) {
        self.put(key, common::any_value::Value::IntValue(v));
    }
    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|kv| kv.key == key)
    }
}

/// How an extra attribute's value is drawn; all low to medium cardinality.
enum Gen {
    Pick(&'static [&'static str]),
    Id(&'static str, u32),
    Int(i64, i64),
    /// Percent chance of `true`.
    Bool(u32),
    Real(f64, f64),
}

const PRODUCTS: &[&str] = &[
    "OLJCESPC7Z",
    "66VCHSJNUP",
    "1YMWWN1N4O",
    "L9ECAV7KIM",
    "2ZYFJ3GM2N",
    "0PUK6V6EV0",
    "LS4PSXUNUM",
    "9SIQT8TOJO",
    "6E92ZMYYFZ",
    "HQTGWGPNH4",
];

const EXTRAS: &[(&str, Gen)] = &[
    ("enduser.id", Gen::Id("user-", 5000)),
    ("session.id", Gen::Id("sess-", 20000)),
    ("app.tenant.id", Gen::Id("tenant-", 40)),
    ("app.user.tier", Gen::Pick(&["free", "pro", "enterprise"])),
    (
        "app.feature_flag.variant",
        Gen::Pick(&["control", "treatment-a", "treatment-b"]),
    ),
    (
        "app.region",
        Gen::Pick(&["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"]),
    ),
    ("app.currency", Gen::Pick(&["USD", "EUR", "GBP", "JPY", "CAD"])),
    ("app.product.id", Gen::Pick(PRODUCTS)),
    ("app.items.count", Gen::Int(0, 25)),
    ("app.order.amount", Gen::Real(1.0, 900.0)),
    ("app.cache.hit", Gen::Bool(70)),
    ("app.retry.count", Gen::Int(0, 3)),
    ("app.synthetic_request", Gen::Bool(3)),
    ("app.request.priority", Gen::Pick(&["low", "normal", "high"])),
    ("thread.id", Gen::Int(1, 64)),
    (
        "thread.name",
        Gen::Pick(&[
            "main",
            "worker-1",
            "worker-2",
            "worker-3",
            "grpc-default-executor-0",
            "tokio-runtime-worker",
        ]),
    ),
    (
        "code.function",
        Gen::Pick(&["handle", "process", "validate", "serialize", "load", "store"]),
    ),
    (
        "code.namespace",
        Gen::Pick(&[
            "shop.orders",
            "shop.cart",
            "shop.catalog",
            "shop.payments",
            "shop.common",
        ]),
    ),
    ("code.lineno", Gen::Int(10, 900)),
    ("network.transport", Gen::Pick(&["tcp"])),
    ("network.peer.port", Gen::Int(32768, 33768)),
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "python-requests/2.32.3",
    "k6/0.52.0 (https://k6.io/)",
];

const EXCEPTIONS: &[(&str, &str)] = &[
    ("java.net.SocketTimeoutException", "Read timed out"),
    ("context.DeadlineExceeded", "context deadline exceeded"),
    ("ConnectionResetError", "[Errno 104] Connection reset by peer"),
    ("PaymentDeclinedError", "card declined: insufficient funds"),
    ("Npgsql.PostgresException", "40P01: deadlock detected"),
    (
        "StackExchange.Redis.RedisTimeoutException",
        "Timeout performing HGET (5000ms)",
    ),
    (
        "Grpc.Core.RpcException",
        "Status(StatusCode=\"Unavailable\", Detail=\"upstream connect error\")",
    ),
];

const LOG_LINES: &[&str] = &[
    "cache miss, loading from backend",
    "request validated",
    "retrying after transient error",
    "falling back to default currency",
    "inventory reserved",
];

impl Gen {
    fn value(&self, rng: &mut fastrand::Rng) -> common::any_value::Value {
        use common::any_value::Value;
        match self {
            Gen::Pick(opts) => Value::StringValue(opts[rng.usize(..opts.len())].to_string()),
            Gen::Id(prefix, n) => Value::StringValue(format!("{prefix}{}", rng.u32(..*n))),
            Gen::Int(lo, hi) => Value::IntValue(rng.i64(*lo..=*hi)),
            Gen::Bool(pct) => Value::BoolValue(rng.u32(..100) < *pct),
            Gen::Real(lo, hi) => Value::DoubleValue(((lo + rng.f64() * (hi - lo)) * 100.0).round() / 100.0),
        }
    }
}

/// Tops attributes up to `target` with extras not already present, drawn without repeats.
fn fill_extras(a: &mut Attrs, rng: &mut fastrand::Rng, target: usize) {
    let mut order: [usize; EXTRAS.len()] = std::array::from_fn(|i| i);
    for i in 0..order.len() {
        if a.0.len() >= target {
            break;
        }
        let j = rng.usize(i..order.len());
        order.swap(i, j);
        let (key, gen) = &EXTRAS[order[i]];
        if !a.has(key) {
            a.put(key, gen.value(rng));
        }
    }
}

/// What a span does, which decides its name, kind and semantic-convention attributes.
enum Op<'a> {
    HttpServer {
        method: &'static str,
        route: &'static str,
        caller: Option<&'a Service>,
    },
    HttpClient {
        method: &'static str,
        route: &'static str,
        peer: &'a Service,
    },
    RpcServer {
        method: &'static str,
        caller_ip: &'a str,
    },
    RpcClient {
        method: &'static str,
        peer: &'a Service,
    },
    Db(Db),
    Internal,
}

struct Node {
    service: usize,
    span_id: [u8; 8],
    start: u64,
    end: u64,
    can_parent: bool,
}

struct TraceGen<'a> {
    services: &'a [Service],
    rng: &'a mut fastrand::Rng,
    trace_id: [u8; 16],
    next_span: &'a mut u64,
    /// Spans per service.
    out: &'a mut [Vec<trace::Span>],
    nodes: Vec<Node>,
}

fn generate_request(services: &[Service], n: usize, now: u64, rng: &mut fastrand::Rng) -> ExportTraceServiceRequest {
    let mut per_service: Vec<Vec<trace::Span>> = services.iter().map(|_| Vec::new()).collect();
    // Template ids only need to be distinct; every send overwrites them with random ones.
    let mut next_span = 1u64;
    let mut next_trace = 1u128;
    let mut left = n;
    while left > 0 {
        let size = rng.usize(5..=15).min(left);
        left -= size;
        let mut g = TraceGen {
            services,
            rng: &mut *rng,
            trace_id: next_trace.to_be_bytes(),
            next_span: &mut next_span,
            out: &mut per_service,
            nodes: Vec::with_capacity(size),
        };
        next_trace += 1;
        g.trace(size, now);
    }
    let resource_spans = per_service
        .into_iter()
        .enumerate()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(i, spans)| {
            let svc = &services[i];
            trace::ResourceSpans {
                resource: Some(svc.instances[rng.usize(..svc.instances.len())].clone()),
                scope_spans: vec![trace::ScopeSpans {
                    scope: Some(common::InstrumentationScope {
                        name: svc.scope.to_string(),
                        version: "0.52.0".to_string(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
                }],
                schema_url: String::new(),
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

impl TraceGen<'_> {
    fn trace(&mut self, size: usize, now: u64) {
        // Root durations spread log-uniformly from 2 ms to 800 ms, ending just before now.
        let dur = (2e6 * 400f64.powf(self.rng.f64())) as u64;
        let end = now - self.rng.u64(0..50_000_000);
        let (method, route) = match self.services[0].api {
            Api::Http(routes) => routes[self.rng.usize(..routes.len())],
            Api::Grpc(..) => ("GET", "/"),
        };
        self.span(
            0,
            None,
            end - dur,
            end,
            Op::HttpServer {
                method,
                route,
                caller: None,
            },
        );
        while self.nodes.len() < size {
            let room = size - self.nodes.len();
            let mut p = self.rng.usize(..self.nodes.len());
            while !self.nodes[p].can_parent {
                p = (p + 1) % self.nodes.len();
            }
            let (svc, ps, pe, pid) = (
                self.nodes[p].service,
                self.nodes[p].start,
                self.nodes[p].end,
                self.nodes[p].span_id,
            );
            let (cs, ce) = self.child_window(ps, pe);
            let roll = self.rng.u32(..100);
            let services = self.services;
            if room >= 2 && svc + 1 < services.len() && roll < 55 {
                let callee = self.rng.usize(svc + 1..services.len());
                let peer = &services[callee];
                let gap = (ce - cs) / 20;
                let (ss, se) = (cs + self.rng.u64(0..=gap), ce - self.rng.u64(0..=gap));
                match peer.api {
                    Api::Http(routes) => {
                        let (method, route) = routes[self.rng.usize(..routes.len())];
                        let client = self.span(svc, Some(pid), cs, ce, Op::HttpClient { method, route, peer });
                        let caller = Some(&services[svc]);
                        self.span(callee, Some(client), ss, se, Op::HttpServer { method, route, caller });
                    }
                    Api::Grpc(_, methods) => {
                        let method = methods[self.rng.usize(..methods.len())];
                        let client = self.span(svc, Some(pid), cs, ce, Op::RpcClient { method, peer });
                        let caller_ip = services[svc].ip.as_str();
                        self.span(callee, Some(client), ss, se, Op::RpcServer { method, caller_ip });
                    }
                }
            } else if let (Some(db), true) = (services[svc].db, roll < 85) {
                self.span(svc, Some(pid), cs, ce, Op::Db(db));
            } else {
                self.span(svc, Some(pid), cs, ce, Op::Internal);
            }
        }
    }

    /// A child's time range inside its parent's.
    fn child_window(&mut self, ps: u64, pe: u64) -> (u64, u64) {
        let d = pe.saturating_sub(ps) as f64;
        let s = ps + (d * 0.5 * self.rng.f64()) as u64;
        let len = ((pe - s) as f64 * (0.1 + 0.85 * self.rng.f64())) as u64;
        (s, (s + len.max(1_000)).min(pe).max(s + 1))
    }

    fn span(&mut self, svc: usize, parent: Option<[u8; 8]>, start: u64, end: u64, op: Op<'_>) -> [u8; 8] {
        let span_id = self.next_span.to_be_bytes();
        *self.next_span += 1;
        let rng = &mut *self.rng;
        let service = &self.services[svc];
        let error = rng.u32(..1000) < 20;
        let mut a = Attrs::default();
        let (name, kind, can_parent) = match &op {
            Op::HttpServer { method, route, caller } => {
                let path = route.replace("{productId}", PRODUCTS[rng.usize(..PRODUCTS.len())]);
                let status = if error {
                    [500, 502, 503][rng.usize(..3)]
                } else if rng.u32(..100) < 3 {
                    404
                } else {
                    200
                };
                a.str("http.request.method", *method);
                a.str("http.route", *route);
                a.str("url.path", path);
                a.str("url.scheme", if caller.is_some() { "http" } else { "https" });
                a.int("http.response.status_code", status);
                a.str(
                    "server.address",
                    if caller.is_some() {
                        service.name.as_str()
                    } else {
                        "shop.example.com"
                    },
                );
                a.int("server.port", if caller.is_some() { 8080 } else { 443 });
                match caller {
                    Some(c) => {
                        a.str("client.address", c.ip.as_str());
                        a.str("user_agent.original", http_client_agent(c.lang));
                    }
                    None => {
                        a.str("client.address", format!("203.0.113.{}", rng.u8(1..255)));
                        a.str("user_agent.original", USER_AGENTS[rng.usize(..USER_AGENTS.len())]);
                    }
                }
                a.str("network.protocol.version", "1.1");
                (format!("{method} {route}"), trace::span::SpanKind::Server, true)
            }
            Op::HttpClient { method, route, peer } => {
                let path = route.replace("{productId}", PRODUCTS[rng.usize(..PRODUCTS.len())]);
                a.str("http.request.method", *method);
                a.str("url.full", format!("http://{}:8080{path}", peer.name));
                a.str("server.address", peer.name.as_str());
                a.int("server.port", 8080);
                a.int("http.response.status_code", if error { 503 } else { 200 });
                a.str("network.protocol.version", "1.1");
                (method.to_string(), trace::span::SpanKind::Client, false)
            }
            Op::RpcServer { method, caller_ip } => {
                a.str("rpc.system", "grpc");
                a.str("rpc.service", service.rpc_service.as_str());
                a.str("rpc.method", *method);
                a.int("rpc.grpc.status_code", if error { 13 } else { 0 });
                a.str("server.address", service.name.as_str());
                a.int("server.port", 50051);
                a.str("network.peer.address", *caller_ip);
                (
                    format!("{}/{method}", service.rpc_service),
                    trace::span::SpanKind::Server,
                    true,
                )
            }
            Op::RpcClient { method, peer } => {
                a.str("rpc.system", "grpc");
                a.str("rpc.service", peer.rpc_service.as_str());
                a.str("rpc.method", *method);
                a.int("rpc.grpc.status_code", if error { 14 } else { 0 });
                a.str("server.address", peer.name.as_str());
                a.int("server.port", 50051);
                a.str("network.peer.address", peer.ip.as_str());
                (
                    format!("{}/{method}", peer.rpc_service),
                    trace::span::SpanKind::Client,
                    false,
                )
            }
            Op::Db(db) => {
                let (system, namespace, op, table, stmt, port) = db_call(*db, rng);
                a.str("db.system", system);
                a.str("db.namespace", namespace);
                a.str("db.operation.name", op);
                a.str("db.statement", stmt);
                if !table.is_empty() {
                    a.str("db.collection.name", table);
                }
                a.str("server.address", format!("{system}.shop.svc.cluster.local"));
                a.int("server.port", port);
                let name = if table.is_empty() {
                    op.to_string()
                } else {
                    format!("{op} {namespace}.{table}")
                };
                (name, trace::span::SpanKind::Client, false)
            }
            Op::Internal => {
                let (func, ns) = [
                    ("ValidateRequest", "shop.common"),
                    ("RenderPage", "shop.web"),
                    ("ComputeTotals", "shop.orders"),
                    ("SerializeResponse", "shop.common"),
                    ("ApplyDiscounts", "shop.pricing"),
                ][rng.usize(..5)];
                a.str("code.function", func);
                a.str("code.namespace", ns);
                (func.to_string(), trace::span::SpanKind::Internal, true)
            }
        };
        let target = rng.usize(10..=20);
        fill_extras(&mut a, rng, target);

        let mut events = Vec::new();
        let n_events = match rng.u32(..100) {
            0..=54 => 0,
            55..=89 => 1,
            _ => 2,
        };
        for _ in 0..n_events {
            events.push(make_event(rng, &op, start, end));
        }
        let status = if error {
            let (ty, msg) = EXCEPTIONS[rng.usize(..EXCEPTIONS.len())];
            let mut ea = Attrs::default();
            ea.str("exception.type", ty);
            ea.str("exception.message", msg);
            ea.str(
                "exception.stacktrace",
                format!("{ty}: {msg}\n    at {name} ({}:{})", service.name, rng.u32(10..900)),
            );
            events.push(trace::span::Event {
                time_unix_nano: end - (end - start) / 10,
                name: "exception".to_string(),
                attributes: ea.0,
                dropped_attributes_count: 0,
            });
            Some(trace::Status {
                message: format!("{ty}: {msg}"),
                code: trace::status::StatusCode::Error as i32,
            })
        } else {
            None
        };
        self.out[svc].push(trace::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map_or_else(Vec::new, |p| p.to_vec()),
            flags: 1,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: a.0,
            events,
            status,
            ..Default::default()
        });
        self.nodes.push(Node {
            service: svc,
            span_id,
            start,
            end,
            can_parent,
        });
        span_id
    }
}

/// What each language's usual HTTP client puts in User-Agent.
fn http_client_agent(lang: &str) -> &'static str {
    match lang {
        "go" => "Go-http-client/1.1",
        "java" => "Java-http-client/21.0.3",
        "python" => "python-requests/2.32.3",
        "nodejs" => "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "dotnet" => "dotnet-httpclient/8.0",
        "rust" => "reqwest/0.12",
        _ => "curl/8.5.0",
    }
}

/// (db.system, namespace, operation, table, statement, port) for one database call.
fn db_call(db: Db, rng: &mut fastrand::Rng) -> (&'static str, &'static str, &'static str, &'static str, String, i64) {
    match db {
        Db::Postgres(ns) => {
            let (op, table, stmt) = [
                (
                    "SELECT",
                    "orders",
                    "SELECT id, status, total FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
                ),
                (
                    "SELECT",
                    "products",
                    "SELECT id, name, price_units, price_nanos FROM products WHERE id = $1",
                ),
                (
                    "INSERT",
                    "orders",
                    "INSERT INTO orders (id, user_id, total, currency) VALUES ($1, $2, $3, $4)",
                ),
                (
                    "UPDATE",
                    "orders",
                    "UPDATE orders SET status = $1, updated_at = now() WHERE id = $2",
                ),
                (
                    "SELECT",
                    "accounts",
                    "SELECT balance FROM accounts WHERE tenant_id = $1 FOR UPDATE",
                ),
            ][rng.usize(..5)];
            ("postgresql", ns, op, table, stmt.to_string(), 5432)
        }
        Db::Redis => {
            let user = rng.u32(..5000);
            let (op, stmt) = match rng.u32(..4) {
                0 => ("HGET", format!("HGET cart:user-{user} items")),
                1 => ("HSET", format!("HSET cart:user-{user} items ?")),
                2 => ("EXPIRE", format!("EXPIRE cart:user-{user} 3600")),
                _ => ("GET", format!("GET session:user-{user}")),
            };
            ("redis", "0", op, "", stmt, 6379)
        }
        Db::Mongo(ns) => {
            let sku = PRODUCTS[rng.usize(..PRODUCTS.len())];
            let (op, stmt) = if rng.bool() {
                ("find", format!(r#"{{"find":"stock","filter":{{"sku":"{sku}"}}}}"#))
            } else {
                (
                    "update",
                    format!(r#"{{"update":"stock","q":{{"sku":"{sku}"}},"u":{{"$inc":{{"qty":-1}}}}}}"#),
                )
            };
            ("mongodb", ns, op, "stock", stmt, 27017)
        }
    }
}

fn make_event(rng: &mut fastrand::Rng, op: &Op<'_>, start: u64, end: u64) -> trace::span::Event {
    let t = start + rng.u64(0..=(end - start));
    let mut a = Attrs::default();
    let name = match (op, rng.u32(..3)) {
        (Op::RpcClient { .. } | Op::RpcServer { .. }, 0 | 1) => {
            a.str("message.type", if rng.bool() { "SENT" } else { "RECEIVED" });
            a.int("message.id", 1);
            a.int("message.uncompressed_size", rng.i64(64..16_384));
            "message"
        }
        (_, 0) => {
            a.str(
                "cache.key",
                format!("product:{}", PRODUCTS[rng.usize(..PRODUCTS.len())]),
            );
            a.put("cache.hit", common::any_value::Value::BoolValue(rng.u32(..100) < 70));
            "cache.lookup"
        }
        _ => {
            a.str("log.severity", ["INFO", "DEBUG", "WARN"][rng.usize(..3)]);
            a.str("log.message", LOG_LINES[rng.usize(..LOG_LINES.len())]);
            "log"
        }
    };
    trace::span::Event {
        time_unix_nano: t,
        name: name.to_string(),
        attributes: a.0,
        dropped_attributes_count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn services(n: usize) -> Vec<Service> {
        make_services(n, &mut fastrand::Rng::with_seed(7))
    }

    #[test]
    fn instantiated_requests_decode_with_fresh_ids_and_whole_trees() {
        let svcs = services(8);
        let mut rng = fastrand::Rng::with_seed(1);
        let t = Template::build(&svcs, 1000, &mut rng).expect("template");
        let a = t.instantiate(&mut rng);
        let b = t.instantiate(&mut rng);
        assert_eq!(a.spans, 1000);
        assert_eq!(a.traces.iter().map(|(_, n)| u64::from(*n)).sum::<u64>(), 1000);
        let ra = ExportTraceServiceRequest::decode(a.body.clone()).expect("decodes");
        let rb = ExportTraceServiceRequest::decode(b.body.clone()).expect("decodes");
        let spans = |r: &ExportTraceServiceRequest| -> Vec<trace::Span> {
            r.resource_spans
                .iter()
                .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.clone()))
                .collect()
        };
        let (sa, sb) = (spans(&ra), spans(&rb));
        assert_eq!(sa.len(), 1000);
        let ids_a: HashSet<Vec<u8>> = sa.iter().map(|s| s.span_id.clone()).collect();
        let ids_b: HashSet<Vec<u8>> = sb.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(ids_a.len(), 1000, "span ids unique within a request");
        assert!(ids_a.is_disjoint(&ids_b), "span ids unique across requests");
        let traces: HashSet<Vec<u8>> = sa.iter().map(|s| s.trace_id.clone()).collect();
        assert_eq!(traces.len(), a.traces.len());
        for s in &sa {
            assert!(
                s.parent_span_id.is_empty() || ids_a.contains(&s.parent_span_id),
                "parent in request"
            );
            assert!(s.start_time_unix_nano <= s.end_time_unix_nano);
            assert!(
                (10..=20).contains(&s.attributes.len()),
                "{} attributes",
                s.attributes.len()
            );
        }
        let roots = sa.iter().filter(|s| s.parent_span_id.is_empty()).count();
        assert_eq!(roots, a.traces.len());
        let now = now_nanos();
        assert!(sa
            .iter()
            .all(|s| s.end_time_unix_nano <= now && s.start_time_unix_nano > now - 10_000_000_000));
    }

    #[test]
    fn model_accepts_generated_spans() {
        let svcs = services(20);
        let mut rng = fastrand::Rng::with_seed(2);
        let t = Template::build(&svcs, 3, &mut rng).expect("template");
        let req = ExportTraceServiceRequest::decode(t.instantiate(&mut rng).body).expect("decodes");
        let decoded = skein_model::otlp::proto::decode_request(req);
        assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
        assert_eq!(decoded.batch.len(), 3);
    }

    #[test]
    fn grpc_retry_info_is_honoured() {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: 0,
                nanos: 250_000_000,
            }),
        };
        let details = RpcStatus {
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        let st = tonic::Status::with_details(tonic::Code::ResourceExhausted, "busy", details.encode_to_vec().into());
        assert_eq!(grpc_retry_delay(&st), Some(Duration::from_millis(250)));
        assert_eq!(grpc_retry_delay(&tonic::Status::unavailable("busy")), None);
    }

    #[test]
    fn reservoir_and_percentiles() {
        let mut r = Reservoir::new(10, 3);
        for i in 0..1000u32 {
            r.offer(([1; 16], i));
        }
        assert_eq!(r.items.len(), 10);
        assert!(r.items.iter().any(|(_, i)| *i >= 10), "later items replace early ones");
        let lat: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&lat, 0.5), 50.0);
        assert_eq!(percentile_ms(&lat, 0.99), 99.0);
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(json_rejected_spans(br#"{"partialSuccess":{"rejectedSpans":"3"}}"#), 3);
    }
}
