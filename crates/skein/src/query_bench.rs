//! `skein bench-query`: latency of trace-by-id and attribute search against a running skein,
//! one request at a time (latency, not throughput), through the Jaeger HTTP API.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct QueryBenchArgs {
    /// Base URL of the query API.
    #[arg(long, default_value = "http://127.0.0.1:16686")]
    pub query_endpoint: String,
    /// Requests per measured query kind.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Service to search in (the loader's services: frontend, checkout, cart, payment, …).
    #[arg(long, default_value = "checkout")]
    pub service: String,
    /// Search window.
    #[arg(long, default_value = "1h")]
    pub lookback: String,
    /// Attribute filter for the search, as `key=value`.
    #[arg(long, default_value = "http.response.status_code=500")]
    pub attribute: String,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn timed_get(client: &reqwest::Client, url: &str) -> anyhow::Result<(Duration, Value)> {
    let t = Instant::now();
    let r = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let v: Value = r.json().await.with_context(|| format!("reading {url}"))?;
    let elapsed = t.elapsed();
    if !status.is_success() {
        bail!("GET {url}: {status}: {v}");
    }
    Ok((elapsed, v))
}

fn report(name: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "  {name:<28} n={:<5} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        d.len(),
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        percentile(&d, 1.0)
    );
}

pub async fn run(args: QueryBenchArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = args.query_endpoint.trim_end_matches('/');
    let (key, value) = args
        .attribute
        .split_once('=')
        .context("--attribute must be key=value")?;
    let tags = serde_json::json!({ key: value }).to_string();
    let search = format!(
        "{base}/api/traces?service={}&lookback={}&limit=20&tags={}",
        args.service,
        args.lookback,
        urlencode(&tags)
    );
    let search_any = format!(
        "{base}/api/traces?lookback={}&limit=20&tags={}",
        args.lookback,
        urlencode(&tags)
    );
    // Trace ids to fetch: the newest traces of the service in the window.
    let (_, v) = timed_get(
        &client,
        &format!(
            "{base}/api/traces?service={}&lookback={}&limit={}",
            args.service, args.lookback, args.iterations
        ),
    )
    .await?;
    let ids: Vec<String> = v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["traceID"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        bail!(
            "no traces of service {} in the last {}; run `skein load` first",
            args.service,
            args.lookback
        );
    }
    let mut by_id = Vec::new();
    for i in 0..args.iterations {
        let id = &ids[i % ids.len()];
        let (d, _) = timed_get(&client, &format!("{base}/api/traces/{id}")).await?;
        by_id.push(d);
    }
    let mut attr = Vec::new();
    let mut hits = 0;
    for _ in 0..args.iterations {
        let (d, v) = timed_get(&client, &search).await?;
        hits = v["data"].as_array().map_or(0, Vec::len);
        attr.push(d);
    }
    let mut attr_any = Vec::new();
    for _ in 0..args.iterations {
        let (d, _) = timed_get(&client, &search_any).await?;
        attr_any.push(d);
    }
    println!(
        "skein bench-query: {base}, window {}, {} distinct trace ids",
        args.lookback,
        ids.len()
    );
    report("trace by id", by_id);
    report(&format!("search {} + {}", args.service, args.attribute), attr);
    report(&format!("search {} (any service)", args.attribute), attr_any);
    println!("  (search returned {hits} traces per request)");
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
