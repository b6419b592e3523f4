//! `skein demo`: runs skein (in-process, on the configured ports) unless `--endpoint` points at
//! one already running, starts the instrumented shop from `skein-demo` and drives checkouts
//! through it. Ctrl-C stops the driver, the shop (flushing every exporter) and then skein.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use skein_demo::{DemoOptions, DriverOptions, InventorySettings, Shares};
use tokio::sync::watch;

use crate::{serve, ConfigArgs};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Checkouts per second, e.g. `20/s`, `5` or `600/m`.
    #[arg(long, default_value = "20/s", value_parser = skein_demo::parse_rate)]
    rate: f64,
    /// Stop after this long, e.g. `60s` or `5m` [default: run until Ctrl-C].
    #[arg(long, value_parser = skein_model::units::parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many checkouts (and wait for them to finish).
    #[arg(long)]
    checkouts: Option<u64>,
    /// Scenario shares: `slow-inventory=0.1,declined=5%,slow-payment,broken-hop=0.02`, `all` or
    /// `normal`. Unlisted scenarios get 0, normal the rest
    /// [default: slow-inventory=1% declined=5% slow-payment=5% broken-hop=2%].
    #[arg(long)]
    scenario: Option<Shares>,
    /// OTLP/HTTP endpoint of an already running skein (e.g. `http://localhost:4318`); without
    /// it skein runs in this process with the usual configuration (file, env, `--set`).
    #[arg(long)]
    endpoint: Option<String>,
    /// Base URL of skein's UI, for the printed trace links [default: http://localhost:<query port>].
    #[arg(long)]
    ui_url: Option<String>,
    /// Cart lines (and bind parameters) of a slow-inventory bulk order; at most 5000 (the SKUs
    /// in stock), well under SQLite's 32766 bind parameters.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u64).range(1..=5000))]
    slow_cart_items: u64,
    /// Open holds kept in inventory's unindexed `stock_holds` table: each slow-order cart line
    /// scans it once, so this sets how slow the slow scenario is.
    #[arg(long, default_value_t = InventorySettings::default().holds)]
    inventory_holds: usize,
    /// Where the services' JSON log lines go [default: <data_dir>/demo/shop.log.jsonl].
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Write every checkout (id, scenario, trace id, HTTP status, duration) to this JSON file.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let cfg = args.config.load()?;
    let demo_dir = cfg.data_dir.join("demo");
    let (stop_skein, skein_stopped) = watch::channel(false);
    let (endpoint, ui_url, server) = match &args.endpoint {
        Some(endpoint) => {
            let ui = args
                .ui_url
                .clone()
                .unwrap_or_else(|| "http://localhost:16686".to_string());
            // Accept the signal URL too (`…/v1/traces`): the exporter appends it itself.
            let base = endpoint.trim_end_matches('/').trim_end_matches("/v1/traces");
            (base.to_string(), ui, None)
        }
        None => {
            let otlp = local_addr("otlp.http_addr", &cfg.otlp.http_addr)?;
            let query = local_addr("query.http_addr", &cfg.query.http_addr)?;
            let ui = args
                .ui_url
                .clone()
                .unwrap_or_else(|| format!("http://localhost:{}", query.port()));
            let mut stopped = skein_stopped.clone();
            let server = tokio::spawn(serve::run_until(cfg.clone(), async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            let server = wait_ready(server, query).await?;
            (format!("http://{otlp}"), ui, Some(server))
        }
    };
    println!("skein demo: open the UI at {}/", ui_url.trim_end_matches('/'));

    let opts = DemoOptions {
        endpoint,
        driver: DriverOptions {
            rate: args.rate,
            duration: args.duration,
            checkouts: args.checkouts,
            shares: args.scenario.unwrap_or_default(),
            slow_cart_items: args.slow_cart_items as usize,
            skus: InventorySettings::default().skus,
            ui_url,
        },
        inventory: InventorySettings {
            holds: args.inventory_holds,
            ..InventorySettings::default()
        },
        db_path: demo_dir.join("inventory.sqlite"),
        log_path: Some(args.log_file.unwrap_or_else(|| demo_dir.join("shop.log.jsonl"))),
        report_path: args.report,
    };
    let result = skein_demo::run(opts, interrupted()).await;

    if let Some(server) = server {
        println!("skein demo: stopping skein");
        let _ = stop_skein.send(true);
        server.await.context("the in-process skein server panicked")??;
    }
    result.map(|_| ())
}

/// Resolves on the first Ctrl-C; a second one exits at once.
async fn interrupted() {
    let _ = tokio::signal::ctrl_c().await;
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("skein demo: interrupted again, exiting without flushing");
        std::process::exit(130);
    });
}

/// The address to reach a listener configured as `addr` (`0.0.0.0:4318` → `127.0.0.1:4318`).
fn local_addr(key: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    let mut a: SocketAddr = addr
        .parse()
        .with_context(|| format!("skein demo needs {key} to be an address like 0.0.0.0:4318, not `{addr}`"))?;
    if a.port() == 0 {
        bail!("skein demo runs skein on fixed ports; {key} has port 0 (or use --endpoint with a running skein)");
    }
    if a.ip().is_unspecified() {
        a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(a)
}

type ServerTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Polls `/ready`; a server that fails to start (port in use, bad data dir) reports its error.
async fn wait_ready(server: ServerTask, query: SocketAddr) -> anyhow::Result<ServerTask> {
    let client = reqwest::Client::new();
    let url = format!("http://{query}/ready");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if server.is_finished() {
            server.await.context("the in-process skein server panicked")??;
            bail!("skein stopped before it became ready");
        }
        if let Ok(r) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
            if r.status().is_success() {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            bail!("skein did not become ready at {url}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
