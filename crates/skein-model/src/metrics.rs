//! skein's own metrics, rendered in the Prometheus text format at `/metrics`.
//!
//! A process-wide registry of counters, gauges and histograms. Handles are cheap `Arc`s of
//! atomics; hot paths look a handle up once and keep it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);
impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);
impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram of seconds with fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
pub struct HistogramInner {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }))
    }
    pub fn observe(&self, seconds: f64) {
        let h = &self.0;
        if let Some(i) = h.bounds.iter().position(|b| seconds <= *b) {
            h.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        h.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

struct Family {
    help: &'static str,
    series: BTreeMap<Labels, Metric>,
}

static REGISTRY: LazyLock<Mutex<BTreeMap<&'static str, Family>>> = LazyLock::new(Default::default);

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn with_family<T>(name: &'static str, help: &'static str, f: impl FnOnce(&mut Family) -> T) -> T {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let fam = reg.entry(name).or_insert_with(|| Family {
        help,
        series: BTreeMap::new(),
    });
    f(fam)
}

pub fn counter(name: &'static str, help: &'static str, l: &[(&str, &str)]) -> Counter {
    with_family(name, help, |fam| {
        match fam
            .series
            .entry(labels(l))
            .or_insert_with(|| Metric::Counter(Counter::default()))
        {
            Metric::Counter(c) => c.clone(),
            _ => Counter::default(),
        }
    })
}

pub fn gauge(name: &'static str, help: &'static str, l: &[(&str, &str)]) -> Gauge {
    with_family(name, help, |fam| {
        match fam
            .series
            .entry(labels(l))
            .or_insert_with(|| Metric::Gauge(Gauge::default()))
        {
            Metric::Gauge(g) => g.clone(),
            _ => Gauge::default(),
        }
    })
}

pub fn histogram(name: &'static str, help: &'static str, l: &[(&str, &str)]) -> Histogram {
    with_family(name, help, |fam| {
        match fam
            .series
            .entry(labels(l))
            .or_insert_with(|| Metric::Histogram(Histogram::new(LATENCY_BUCKETS)))
        {
            Metric::Histogram(h) => h.clone(),
            _ => Histogram::new(LATENCY_BUCKETS),
        }
    })
}

fn fmt_labels(l: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
            )
        })
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Everything registered, in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    for (name, fam) in reg.iter() {
        let kind = match fam.series.values().next() {
            Some(Metric::Counter(_)) => "counter",
            Some(Metric::Gauge(_)) => "gauge",
            Some(Metric::Histogram(_)) => "histogram",
            None => continue,
        };
        let _ = writeln!(out, "# HELP {name} {}", fam.help);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (l, m) in &fam.series {
            match m {
                Metric::Counter(c) => {
                    let _ = writeln!(out, "{name}{} {}", fmt_labels(l, None), c.get());
                }
                Metric::Gauge(g) => {
                    let _ = writeln!(out, "{name}{} {}", fmt_labels(l, None), g.get());
                }
                Metric::Histogram(h) => {
                    let mut cumulative = 0;
                    for (i, b) in h.0.bounds.iter().enumerate() {
                        cumulative += h.0.counts[i].load(Ordering::Relaxed);
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {cumulative}",
                            fmt_labels(l, Some(("le", b.to_string())))
                        );
                    }
                    let count = h.0.count.load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {count}",
                        fmt_labels(l, Some(("le", "+Inf".into())))
                    );
                    let sum = h.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                    let _ = writeln!(out, "{name}_sum{} {sum}", fmt_labels(l, None));
                    let _ = writeln!(out, "{name}_count{} {count}", fmt_labels(l, None));
                }
            }
        }
    }
    out
}
