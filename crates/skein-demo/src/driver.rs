//! The load driver: a "browser" sending checkouts to the api-gateway at a steady rate, each one
//! shaped by its scenario; prints links to the first slow and the first failing checkout.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::scenario::{Scenario, Schedule, Shares};
use crate::services::{sku, CheckoutItem, CheckoutRequest, CHAOS_DROP_FRAUD_HEADERS, DECLINED_CARD, SLOW_CARD};

const GOOD_CARD: &str = "4242424242424242";
const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
/// The one user whose cards the bank declines.
pub const DECLINED_USER: &str = "mallory";
/// Checkouts in flight at once before the driver skips ticks (it never queues without bound).
const MAX_IN_FLIGHT: usize = 256;

pub struct DriverOptions {
    pub rate: f64,
    pub duration: Option<Duration>,
    pub checkouts: Option<u64>,
    pub shares: Shares,
    /// Cart lines in a slow-inventory bulk order (one bind parameter each).
    pub slow_cart_items: usize,
    pub skus: usize,
    /// Base of the links printed, e.g. `http://localhost:16686`.
    pub ui_url: String,
}

/// What happened to one checkout, as the driver saw it (also the `--report` file's rows).
#[derive(Clone, Debug, Serialize)]
pub struct CheckoutRecord {
    pub checkout_id: String,
    pub scenario: Scenario,
    pub trace_id: Option<String>,
    pub http_status: u16,
    pub duration_ms: u64,
    pub items: usize,
    pub error: Option<String>,
}

pub async fn drive(opts: &DriverOptions, gateway_url: &str, stop: impl Future<Output = ()>) -> Vec<CheckoutRecord> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(64)
        .build()
        .expect("building the driver's HTTP client");
    let run_id = format!("{:06x}", fastrand::u32(..0x100_0000));
    let mut schedule = Schedule::new(opts.shares.clone());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<CheckoutRecord>();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut records = Vec::new();
    let mut links = Links::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    let mut sent: u64 = 0;
    let mut skipped: u64 = 0;
    tokio::pin!(stop);

    loop {
        // Reap finished tasks so the JoinSet holds only checkouts still in flight.
        while tasks.try_join_next().is_some() {}
        let done_sending =
            opts.checkouts.is_some_and(|n| sent >= n) || opts.duration.is_some_and(|d| started.elapsed() >= d);
        if done_sending {
            break;
        }
        tokio::select! {
            _ = &mut stop => {
                println!("skein demo: stopping (waiting for {} checkouts in flight)", tasks.len());
                break;
            }
            Some(record) = done_rx.recv() => {
                links.note(&record, &opts.ui_url);
                records.push(record);
            }
            _ = progress.tick() => print_progress(&records, started.elapsed(), skipped),
            _ = tick.tick() => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    skipped += 1;
                    continue;
                };
                sent += 1;
                let scenario = schedule.next_scenario();
                let request = checkout_request(&run_id, sent, scenario, opts);
                let client = client.clone();
                let url = format!("{gateway_url}/api/checkout");
                let done = done_tx.clone();
                tasks.spawn(async move {
                    let record = checkout(&client, &url, scenario, request).await;
                    let _ = done.send(record);
                    drop(permit);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    drop(done_tx);
    while let Some(record) = done_rx.recv().await {
        links.note(&record, &opts.ui_url);
        records.push(record);
    }
    records
}

fn checkout_request(run_id: &str, n: u64, scenario: Scenario, opts: &DriverOptions) -> CheckoutRequest {
    let user = match scenario {
        Scenario::Declined => DECLINED_USER,
        _ => USERS[fastrand::usize(..USERS.len())],
    };
    let card = match (scenario, user) {
        (_, DECLINED_USER) => DECLINED_CARD,
        (Scenario::SlowPayment, _) => SLOW_CARD,
        _ => GOOD_CARD,
    };
    let items = match scenario {
        Scenario::SlowInventory => (0..opts.slow_cart_items.min(opts.skus))
            .map(|i| CheckoutItem { sku: sku(i), qty: 1 })
            .collect(),
        _ => (0..fastrand::usize(1..=4))
            .map(|_| CheckoutItem {
                sku: sku(fastrand::usize(..opts.skus)),
                qty: fastrand::u32(1..=3),
            })
            .collect(),
    };
    CheckoutRequest {
        checkout_id: format!("co-{run_id}-{n:06}"),
        token: format!("tok-{user}"),
        card: card.to_string(),
        items,
    }
}

async fn checkout(client: &reqwest::Client, url: &str, scenario: Scenario, request: CheckoutRequest) -> CheckoutRecord {
    let started = Instant::now();
    let mut call = client.post(url).json(&request);
    if scenario == Scenario::BrokenHop {
        // The browser carries no trace context, but baggage travels on its own.
        call = call.header("baggage", format!("shop.chaos={CHAOS_DROP_FRAUD_HEADERS}"));
    }
    let (status, body, error) = match call.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let error = body["message"].as_str().map(str::to_string);
            (status, body, error)
        }
        Err(e) => (0, Value::Null, Some(e.to_string())),
    };
    CheckoutRecord {
        checkout_id: request.checkout_id,
        scenario,
        trace_id: body["trace_id"].as_str().map(str::to_string),
        http_status: status,
        duration_ms: started.elapsed().as_millis() as u64,
        items: request.items.len(),
        error,
    }
}

/// Prints a link to the first slow and the first failing checkout, once each.
#[derive(Default)]
struct Links {
    slow: bool,
    failing: bool,
}

impl Links {
    fn note(&mut self, r: &CheckoutRecord, ui_url: &str) {
        let Some(trace_id) = &r.trace_id else { return };
        let link = format!("{}/trace/{trace_id}", ui_url.trim_end_matches('/'));
        if !self.slow && r.scenario == Scenario::SlowInventory && r.http_status < 400 {
            self.slow = true;
            println!(
                "skein demo: slow checkout ({:.1} s, {} cart lines → one SELECT with {} bind parameters): {link}",
                r.duration_ms as f64 / 1000.0,
                r.items,
                r.items
            );
        }
        if !self.failing && r.http_status >= 400 {
            self.failing = true;
            println!(
                "skein demo: failing checkout (HTTP {}, {}): {link}",
                r.http_status,
                r.error.as_deref().unwrap_or("error")
            );
        }
    }
}

fn print_progress(records: &[CheckoutRecord], elapsed: Duration, skipped: u64) {
    let ok = records.iter().filter(|r| (200..300).contains(&r.http_status)).count();
    let mut durations: Vec<u64> = records.iter().map(|r| r.duration_ms).collect();
    durations.sort_unstable();
    let pct = |p: f64| {
        durations
            .get(((durations.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "skein demo: {:>4.0}s  {} checkouts ({} ok, {} failed{})  p50 {} ms  p99 {} ms",
        elapsed.as_secs_f64(),
        records.len(),
        ok,
        records.len() - ok,
        if skipped > 0 {
            format!(", {skipped} ticks skipped: too many in flight")
        } else {
            String::new()
        },
        pct(0.5),
        pct(0.99)
    );
}

/// The closing summary, per scenario.
pub fn print_summary(records: &[CheckoutRecord]) {
    println!("skein demo: {} checkouts", records.len());
    for scenario in Scenario::ALL {
        let mine: Vec<&CheckoutRecord> = records.iter().filter(|r| r.scenario == scenario).collect();
        if mine.is_empty() {
            continue;
        }
        let ok = mine.iter().filter(|r| (200..300).contains(&r.http_status)).count();
        let mut ms: Vec<u64> = mine.iter().map(|r| r.duration_ms).collect();
        ms.sort_unstable();
        println!(
            "  {:<15} {:>5} checkouts  {:>5} ok  median {:>6} ms  max {:>6} ms",
            scenario.name(),
            mine.len(),
            ok,
            ms[ms.len() / 2],
            ms[ms.len() - 1]
        );
    }
}
