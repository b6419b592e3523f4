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
    /// Search window length.
    #[arg(long, default_value = "1h", value_parser = skein_model::units::parse_duration)]
    pub lookback: Duration,
    /// How long ago the search window ends (for stores filled by `skein generate` a while ago).
    #[arg(long, default_value = "0s", value_parser = skein_model::units::parse_duration)]
    pub ending: Duration,
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
        "  {name:<48} n={:<5} p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
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
    // The window in unix ns, then as Jaeger's µs `start`/`end` parameters.
    let end = skein_store::now_unix_nano().saturating_sub(args.ending.as_nanos() as u64);
    let start = end.saturating_sub(args.lookback.as_nanos() as u64);
    let window = format!("start={}&end={}", start / 1000, end / 1000);
    let search = format!(
        "{base}/api/traces?service={}&{window}&limit=20&tags={}",
        args.service,
        urlencode(&tags)
    );
    let search_any = format!("{base}/api/traces?{window}&limit=20&tags={}", urlencode(&tags));
    // Trace ids to fetch: the newest traces of the service in the window.
    let (_, v) = timed_get(
        &client,
        &format!(
            "{base}/api/traces?service={}&{window}&limit={}",
            args.service, args.iterations
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
            "no traces of service {} in the {} window ending {} ago; run `skein load` first",
            args.service,
            skein_model::units::format_duration(args.lookback),
            skein_model::units::format_duration(args.ending)
        );
    }
    let mut by_id = Vec::new();
    for i in 0..args.iterations {
        let id = &ids[i % ids.len()];
        let (d, _) = timed_get(&client, &format!("{base}/api/traces/{id}")).await?;
        by_id.push(d);
    }
    let (attr, hits) = timed_searches(&client, &search, args.iterations, |v| &v["data"]).await?;
    let (attr_any, hits_any) = timed_searches(&client, &search_any, args.iterations, |v| &v["data"]).await?;
    // api_v3 trace summaries: the same traces loaded, only summaries sent.
    let summaries = format!(
        "{base}/api/v3/trace-summaries?query.startTimeMin={}&query.startTimeMax={}&query.searchDepth=20&query.attributes={}",
        skein_api::time::format_rfc3339(start),
        skein_api::time::format_rfc3339(end),
        urlencode(&tags)
    );
    let (summary_times, summary_hits) =
        timed_searches(&client, &summaries, args.iterations, |v| &v["result"]["summaries"]).await?;
    println!(
        "skein bench-query: {base}, window {}, {} distinct trace ids",
        skein_model::units::format_duration(args.lookback),
        ids.len()
    );
    report("trace by id", by_id);
    report(
        &format!("search {} + {} ({hits} traces)", args.service, args.attribute),
        attr,
    );
    report(&format!("search {} ({hits_any} traces)", args.attribute), attr_any);
    report(
        &format!("summaries {} ({summary_hits} traces)", args.attribute),
        summary_times,
    );
    println!("  (search: /api/traces, which returns whole traces; summaries: /api/v3/trace-summaries)");
    Ok(())
}

/// Times `n` runs of a search; returns the times and how many traces the last one returned
/// (the length of the array `results` picks from the response).
async fn timed_searches(
    client: &reqwest::Client,
    url: &str,
    n: usize,
    results: impl Fn(&Value) -> &Value,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut times = Vec::with_capacity(n);
    let mut hits = 0;
    for _ in 0..n {
        let (d, v) = timed_get(client, url).await?;
        hits = results(&v).as_array().map_or(0, Vec::len);
        times.push(d);
    }
    Ok((times, hits))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
