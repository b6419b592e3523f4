//! One TOML file, every key overridable by `SKEIN_*` environment variables and by flags.
//!
//! Precedence: defaults < file < environment < `--set key=value` and dedicated flags.
//! Nested keys use `__` in the environment: `SKEIN_STORE__RETENTION=3d` sets `store.retention`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use skein_ingest::otlp::OtlpConfig;
use skein_model::units::serde_bytes;
use skein_pipeline::Limits;
use skein_store::StoreConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the WAL and (for the local backend) blocks live.
    pub data_dir: PathBuf,
    /// Log filter, e.g. `info` or `skein_store=debug,info` (`RUST_LOG` wins when set).
    pub log_level: String,
    /// `text` (one line an event, for people) or `json` (one JSON object a line, for log
    /// shippers such as Loki, Elasticsearch or CloudWatch).
    pub log_format: LogFormat,
    pub otlp: OtlpConfig,
    pub zipkin: ZipkinConfig,
    pub jaeger: JaegerConfig,
    pub query: QueryConfig,
    pub store: StoreConfig,
    pub limits: Limits,
    pub sampling: SamplingConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Web UI, Jaeger-compatible HTTP query API, `/metrics`, `/health`, `/ready`.
    pub http_addr: String,
    /// Jaeger gRPC query API (`jaeger.api_v2.QueryService`, `jaeger.api_v3.QueryService`).
    pub grpc_addr: String,
    /// Queries reading spans (searches, trace lookups, dependencies) that run at once, over
    /// every query API together; the others wait their turn. Bounds the memory queries hold.
    pub max_concurrent: usize,
    /// How long such a query may wait for its turn, and again how long it may run once admitted;
    /// past either the client gets an error (a running query's work is cancelled). Also how long
    /// an HTTP client may leave its answer unread before its connection is closed. `0s`: no limit.
    #[serde(with = "skein_model::units::serde_duration")]
    pub timeout: std::time::Duration,
    /// Most traces one search may ask for (`limit`, `searchDepth`); asking for more is a 400.
    /// Each trace found is held until the answer is sent.
    pub max_traces: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            http_addr: "0.0.0.0:16686".into(),
            grpc_addr: "0.0.0.0:16685".into(),
            max_concurrent: 8,
            timeout: std::time::Duration::from_secs(60),
            max_traces: skein_query::DEFAULT_MAX_TRACES,
        }
    }
}

/// Zipkin: ingest (`POST /api/v2/spans`, `/api/v1/spans`) and the v2 query API share one port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinConfig {
    /// Listen address; empty disables Zipkin ingest and query.
    pub http_addr: String,
    /// Largest request accepted, after decompression.
    #[serde(with = "serde_bytes")]
    pub max_request_bytes: u64,
    /// Origins allowed to call from browsers (CORS); `["*"]` allows any, `[]` none.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ZipkinConfig {
    fn default() -> Self {
        ZipkinConfig {
            http_addr: "0.0.0.0:9411".into(),
            max_request_bytes: 16 << 20,
            cors_allowed_origins: vec!["*".into()],
        }
    }
}

/// Jaeger's collector and agent ingest ports. Each address, when empty, disables that receiver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerConfig {
    /// `POST /api/traces` with a thrift binary `Batch` (jaeger-collector's HTTP port).
    pub thrift_http_addr: String,
    /// `jaeger.api_v2.CollectorService/PostSpans`.
    pub grpc_addr: String,
    /// UDP agent, compact thrift `emitBatch`.
    pub agent_compact_addr: String,
    /// UDP agent, binary thrift `emitBatch`.
    pub agent_binary_addr: String,
    /// Largest request accepted, after decompression.
    #[serde(with = "serde_bytes")]
    pub max_request_bytes: u64,
}

impl Default for JaegerConfig {
    fn default() -> Self {
        JaegerConfig {
            thrift_http_addr: "0.0.0.0:14268".into(),
            grpc_addr: "0.0.0.0:14250".into(),
            agent_compact_addr: "0.0.0.0:6831".into(),
            agent_binary_addr: "0.0.0.0:6832".into(),
            max_request_bytes: 16 << 20,
        }
    }
}

/// Remote sampling for SDKs (Jaeger's protocol): the strategies each service's SDK is told to use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// jaeger-agent's sampling port: `GET /sampling?service=` and `GET /?service=`; empty disables
    /// it (`/api/sampling` on the Jaeger collector HTTP port and the gRPC `SamplingManager` on
    /// the Jaeger collector gRPC port are served whenever those ports are).
    pub http_addr: String,
    /// A Jaeger strategies JSON file (`default_strategy`, `service_strategies`). Empty: every
    /// service gets probabilistic 1.0 (keep everything; see docs/sampling.md).
    pub strategies_file: String,
    /// How often the strategies file is checked for changes; `0s` never reloads.
    #[serde(with = "skein_model::units::serde_duration")]
    pub reload_interval: std::time::Duration,
    /// Adaptive per-operation probabilities from observed root-span throughput (off by default).
    pub adaptive: skein_pipeline::sampling::AdaptiveConfig,
    /// Sampling at ingest, before the WAL (off by default: keep everything).
    pub head: skein_pipeline::sampling::head::HeadSamplingConfig,
    /// Tail-based sampling: whole traces decided by policies (on when policies are listed).
    pub tail: skein_pipeline::sampling::tail::TailSamplingConfig,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            http_addr: "0.0.0.0:5778".into(),
            strategies_file: String::new(),
            reload_interval: std::time::Duration::from_secs(10),
            adaptive: Default::default(),
            head: Default::default(),
            tail: Default::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./skein-data"),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            otlp: OtlpConfig::default(),
            zipkin: ZipkinConfig::default(),
            jaeger: JaegerConfig::default(),
            query: QueryConfig::default(),
            store: StoreConfig::default(),
            limits: Limits::default(),
            sampling: SamplingConfig::default(),
        }
    }
}

/// Parses an override value the way TOML would, falling back to a plain string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(root: &mut toml::Table, path: &[String], value: toml::Value, origin: &str) -> anyhow::Result<()> {
    let (last, parents) = path.split_last().context("empty configuration key")?;
    let mut table = root;
    for p in parents {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("{origin}: {p} is not a section"),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// Loads the effective configuration.
pub fn load(
    file: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
    sets: &[String],
) -> anyhow::Result<Config> {
    let mut root = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading config file {}", f.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("parsing config file {}", f.display()))?
        }
        None => toml::Table::new(),
    };
    let mut env: Vec<(String, String)> = env.filter(|(k, _)| k.starts_with("SKEIN_")).collect();
    env.sort();
    for (k, v) in env {
        let path: Vec<String> = k["SKEIN_".len()..]
            .to_ascii_lowercase()
            .split("__")
            .map(str::to_string)
            .collect();
        set_path(&mut root, &path, parse_value(&v), &format!("environment variable {k}"))?;
    }
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s:?}: expected key=value"))?;
        let path: Vec<String> = k.trim().split('.').map(str::to_string).collect();
        set_path(&mut root, &path, parse_value(v.trim()), &format!("--set {k}"))?;
    }
    // The path names the key whose value has the wrong type (`store.head_max_spans: invalid
    // value: integer `-5`, expected usize`); serde alone says only the type.
    let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_string();
        let hint = if message.contains("expected a sequence") {
            " (a list, e.g. [\"a\", \"b\"])"
        } else {
            ""
        };
        match path.as_str() {
            "." => anyhow::anyhow!("invalid configuration: {message}{hint}"),
            _ => anyhow::anyhow!("invalid configuration: {path}: {message}{hint}"),
        }
    })?;
    validate(&cfg)?;
    Ok(cfg)
}

/// Checks what the types alone cannot (ranges, policies), so `skein config` reports the same
/// errors `skein serve` would.
fn validate(cfg: &Config) -> anyhow::Result<()> {
    let invalid = |e: String| anyhow::anyhow!("invalid configuration: {e}");
    cfg.sampling.adaptive.validate().map_err(invalid)?;
    cfg.sampling.head.validate().map_err(invalid)?;
    cfg.sampling.tail.policies().map_err(invalid)?;
    if cfg.query.max_concurrent == 0 {
        return Err(invalid("query.max_concurrent must be at least 1".into()));
    }
    if cfg.query.max_traces == 0 {
        return Err(invalid("query.max_traces must be at least 1".into()));
    }
    // Zeros that would stop ingest or cut a block per request, rather than mean "no limit".
    let s = &cfg.store;
    for (key, zero) in [
        ("store.head_max_spans", s.head_max_spans == 0),
        ("store.head_max_bytes", s.head_max_bytes == 0),
        ("store.head_max_age", s.head_max_age.is_zero()),
        ("store.wal_queue_depth", s.wal_queue_depth == 0),
        ("store.retention", s.retention.is_zero()),
        ("store.compaction_interval", s.compaction_interval.is_zero()),
        ("store.compaction_target_spans", s.compaction_target_spans == 0),
        ("limits.max_inflight_bytes", cfg.limits.max_inflight_bytes == 0),
        (
            "limits.max_attribute_key_length",
            cfg.limits.max_attribute_key_length == 0,
        ),
    ] {
        if zero {
            return Err(invalid(format!("{key} must be more than 0")));
        }
    }
    check_log_level(&cfg.log_level).map_err(invalid)?;
    Ok(())
}

/// `log_level` is a level or a list of `target=level` directives. A bare word that is not a
/// level would be read by `tracing` as a target name and silence every log line, errors included.
fn check_log_level(spec: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "log_level {spec:?}: {directive:?} is not one of {} (or target=level)",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

pub fn to_toml(cfg: &Config) -> anyhow::Result<String> {
    Ok(toml::to_string_pretty(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("skein.toml");
        std::fs::write(
            &f,
            "data_dir = \"/from/file\"\n[store]\nretention = \"3d\"\nhead_max_spans = 10\n",
        )
        .unwrap();
        let env = vec![
            ("SKEIN_STORE__HEAD_MAX_SPANS".to_string(), "20".to_string()),
            ("HOME".into(), "/x".into()),
        ];
        let cfg = load(Some(&f), env.into_iter(), &["otlp.grpc_addr=127.0.0.1:0".into()]).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/from/file"));
        assert_eq!(cfg.store.retention, std::time::Duration::from_secs(3 * 86400));
        assert_eq!(cfg.store.head_max_spans, 20);
        assert_eq!(cfg.otlp.grpc_addr, "127.0.0.1:0");

        let err = load(None, std::iter::empty(), &["store.retension=3d".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("retension"), "{err}");
        let env = vec![("SKEIN_NOPE".to_string(), "1".to_string())];
        let err = load(None, env.into_iter(), &[]).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let err = load(None, std::iter::empty(), &["store.retention=soon".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
        let err = load(None, std::iter::empty(), &["query.max_concurrent=0".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("query.max_concurrent must be at least 1"), "{err}");
        // A value of the wrong type names its key, wherever it came from.
        let err = load(None, std::iter::empty(), &["store.head_max_spans=-5".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid configuration: store.head_max_spans: "),
            "{err}"
        );
        std::fs::write(dir.path().join("t.toml"), "[store]\nretention = 5\n").unwrap();
        let err = load(Some(&dir.path().join("t.toml")), std::iter::empty(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.retention: "), "{err}");
        let env = vec![("SKEIN_OTLP__CORS_ALLOWED_ORIGINS".to_string(), "http://a".to_string())];
        let err = load(None, env.into_iter(), &[]).unwrap_err().to_string();
        assert!(
            err.contains("otlp.cors_allowed_origins: ") && err.contains("a list"),
            "{err}"
        );
        // Zeros that would stop ingest are refused by name; a log level must be one.
        for key in [
            "store.head_max_spans=0",
            "store.head_max_bytes=0B",
            "store.head_max_age=0s",
            "store.wal_queue_depth=0",
            "store.retention=0s",
            "store.compaction_interval=0s",
            "store.compaction_target_spans=0",
            "limits.max_inflight_bytes=0B",
        ] {
            let err = load(None, std::iter::empty(), &[key.into()]).unwrap_err().to_string();
            let name = key.split('=').next().unwrap();
            assert!(err.contains(&format!("{name} must be more than 0")), "{err}");
        }
        let err = load(None, std::iter::empty(), &["log_level=verbose".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("log_level") && err.contains("\"verbose\" is not one of"),
            "{err}"
        );
        for ok in ["debug", "info,skein_store=debug", "WARN", "skein=trace,tower=off"] {
            load(None, std::iter::empty(), &[format!("log_level={ok}")]).expect(ok);
        }
        // What `skein config` prints loads back to the same configuration.
        let text = to_toml(&cfg).unwrap();
        std::fs::write(&f, text).unwrap();
        assert_eq!(load(Some(&f), std::iter::empty(), &[]).unwrap(), cfg);
    }
}
