//! `skein generate`: fills a store with loader spans spread over a past time window, written
//! straight into blocks (no server, no WAL), so query latency can be measured at a scale that
//! would take hours to ingest over the network. Spans are the same as `skein load` sends.

use std::time::{Duration, Instant};

use anyhow::Context;
use skein_model::otlp::wire_decode;
use skein_model::Span;

use crate::load::{build_pool, make_services, thousands};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub config: crate::ConfigArgs,
    /// Spans to write.
    #[arg(long, default_value_t = 10_000_000)]
    pub spans: u64,
    /// The spans' start times are spread evenly over this window, ending now.
    #[arg(long, default_value = "24h", value_parser = skein_model::units::parse_duration)]
    pub window: Duration,
    /// Spans per block (compaction merges blocks up to `store.compaction_target_spans`, so
    /// a long-running store holds blocks of half that to all of it).
    #[arg(long, default_value_t = 1_000_000)]
    pub block_spans: u64,
    /// Number of distinct services in the generated traces.
    #[arg(long, default_value_t = 8)]
    pub services: usize,
}

/// Spans per generated request; traces never straddle requests.
const REQUEST_SPANS: usize = 1000;

pub async fn run(args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.spans > 0, "--spans must be at least 1");
    // Whole requests per block keep every trace in one block (traces never straddle requests).
    anyhow::ensure!(
        args.block_spans >= REQUEST_SPANS as u64 && args.block_spans.is_multiple_of(REQUEST_SPANS as u64),
        "--block-spans must be a multiple of {REQUEST_SPANS}, got {}",
        args.block_spans
    );
    anyhow::ensure!(args.services > 0, "--services must be at least 1");
    let cfg = args.config.load()?;
    let store = skein_store::Store::open(&cfg.data_dir, cfg.store.clone())
        .await
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;

    let mut rng = fastrand::Rng::new();
    let services = make_services(args.services, &mut rng);
    let seed = rng.u64(..);
    // The last request carries the spans that do not fill a whole one.
    let tail_spans = (args.spans % REQUEST_SPANS as u64) as usize;
    let (pool, tail) = tokio::task::spawn_blocking(move || build_pool(&services, REQUEST_SPANS, tail_spans, seed))
        .await
        .context("request generator panicked")??;

    let blocks = args.spans.div_ceil(args.block_spans);
    let window = args.window.as_nanos() as u64;
    let end = skein_store::now_unix_nano();
    let begin = end.saturating_sub(window);
    eprintln!(
        "skein generate: {} spans in {blocks} blocks into {}, start times over the last {}",
        thousands(args.spans),
        cfg.data_dir.display(),
        skein_model::units::format_duration(args.window)
    );
    let started = Instant::now();
    let (mut written, mut bytes) = (0u64, 0u64);
    // One block builds (on a blocking thread) while the next one is generated.
    let mut building: Option<tokio::task::JoinHandle<Result<u64, skein_store::StoreError>>> = None;
    for b in 0..blocks {
        let n = args.block_spans.min(args.spans - b * args.block_spans);
        let (from, to) = (begin + window / blocks * b, begin + window / blocks * (b + 1));
        let mut spans: Vec<Span> = Vec::with_capacity(n as usize + REQUEST_SPANS);
        let whole = n / REQUEST_SPANS as u64;
        let requests = n.div_ceil(REQUEST_SPANS as u64);
        for r in 0..requests {
            let at = from + (to - from) / requests * r;
            let template = match &tail {
                Some(t) if r == whole => t,
                _ => &pool[rng.usize(..pool.len())],
            };
            let req = template.instantiate_at(&mut rng, at);
            let decoded = wire_decode::decode_request(&req.body).context("decoding a generated request")?;
            spans.extend(decoded.batch.spans);
        }
        if let Some(prev) = building.take() {
            bytes += prev.await.context("block writer panicked")??;
        }
        written += spans.len() as u64;
        let store = store.clone();
        building = Some(tokio::spawn(async move { store.import(spans).await }));
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "  block {}/{blocks}: {} spans generated, {:.0} spans/s",
            b + 1,
            thousands(written),
            written as f64 / secs
        );
    }
    if let Some(prev) = building.take() {
        bytes += prev.await.context("block writer panicked")??;
    }
    store.shutdown().await.context("closing the store")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "skein generate: {} spans in {blocks} blocks, {:.1} MB ({:.1} bytes/span), {:.0} s ({:.0} spans/s)",
        thousands(written),
        bytes as f64 / 1e6,
        bytes as f64 / written as f64,
        secs,
        written as f64 / secs
    );
    Ok(())
}
