//! `skein demo`: a small shop of real, OpenTelemetry-instrumented HTTP services (api-gateway,
//! auth, order, inventory on SQLite, payment, fraud, an external-looking bank and a queue-fed
//! notification worker) that exports OTLP to skein, and a driver that sends checkouts through
//! it so the traces tell the checkout-latency story. See docs/demo.md.

pub mod driver;
pub mod http;
pub mod propagation;
pub mod scenario;
pub mod services;
pub mod telemetry;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

pub use driver::{CheckoutRecord, DriverOptions, DECLINED_USER};
pub use scenario::{parse_rate, Scenario, Shares};
pub use services::{InventorySettings, SERVICES};

pub struct DemoOptions {
    /// OTLP/HTTP base URL of skein, e.g. `http://127.0.0.1:4318`.
    pub endpoint: String,
    pub driver: DriverOptions,
    pub inventory: InventorySettings,
    /// The inventory's SQLite file (recreated at start).
    pub db_path: PathBuf,
    /// JSON log lines go here; `None`: standard error.
    pub log_path: Option<PathBuf>,
    /// Writes every checkout (id, scenario, trace id, status, duration) here as JSON at the end.
    pub report_path: Option<PathBuf>,
}

/// Starts the shop, drives checkouts until done or `stop` resolves, then stops the services and
/// flushes every exporter. Returns what each checkout did.
pub async fn run(opts: DemoOptions, stop: impl Future<Output = ()>) -> anyhow::Result<Vec<CheckoutRecord>> {
    check_reachable(&opts.endpoint).await?;
    let log = match &opts.log_path {
        Some(path) => telemetry::JsonLog::to_file(path)?,
        None => telemetry::JsonLog::to_stderr(),
    };
    let shop = services::Shop::start(services::ShopSettings {
        endpoint: opts.endpoint.clone(),
        log,
        inventory: opts.inventory.clone(),
        db_path: opts.db_path.clone(),
    })
    .await?;
    println!(
        "skein demo: shop up (api-gateway {}), exporting OTLP to {}; {:.1} checkouts/s, scenarios: {}",
        shop.gateway_url, opts.endpoint, opts.driver.rate, opts.driver.shares
    );
    if let Some(path) = &opts.log_path {
        println!(
            "skein demo: service logs (JSON lines with trace_id/span_id) in {}",
            path.display()
        );
    }
    let records = driver::drive(&opts.driver, &shop.gateway_url, stop).await;
    println!("skein demo: stopping the shop and flushing spans");
    let flushed = shop.shutdown().await;
    driver::print_summary(&records);
    if let Some(path) = &opts.report_path {
        let json = serde_json::to_vec_pretty(&records)?;
        std::fs::write(path, json).with_context(|| format!("writing the report {}", path.display()))?;
    }
    flushed?;
    Ok(records)
}

/// Fails early, with the address, when nothing listens at the OTLP endpoint.
async fn check_reachable(endpoint: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(endpoint).with_context(|| format!("--endpoint {endpoint} is not a URL"))?;
    let host = url.host_str().context("the OTLP endpoint has no host")?;
    let port = url.port_or_known_default().unwrap_or(4318);
    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to the OTLP endpoint {endpoint} timed out"))?
        .with_context(|| format!("nothing accepts connections at the OTLP endpoint {endpoint}"))?;
    Ok(())
}
