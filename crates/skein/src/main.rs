//! `skein`: one binary — receive spans, keep them durably, answer queries.

mod config;
mod connections;
mod demo;
mod generate;
mod http_server;
mod load;
mod open_files;
mod query_bench;
mod serve;
mod starting;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// Ingest allocates many small strings per span; mimalloc handles that with less contention and
// fragmentation than glibc malloc on a busy multi-threaded server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "skein", version, about = "A distributed tracing backend in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone, Default)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "SKEIN_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// Data directory (WAL and blocks); overrides `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override any configuration key, e.g. `--set store.retention=3d` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<config::Config> {
        let mut sets = self.sets.clone();
        if let Some(d) = &self.data_dir {
            sets.push(format!("data_dir={}", toml::Value::String(d.display().to_string())));
        }
        let env = std::env::vars().filter(|(k, _)| k != "SKEIN_CONFIG_FILE");
        config::load(self.config.as_deref(), env, &sets)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: OTLP in on 4317/4318, Jaeger-compatible queries on 16686.
    Serve(ConfigArgs),
    /// Print the effective configuration (defaults, file, environment and flags applied).
    Config(ConfigArgs),
    /// Send realistic OTLP load to a running skein and report throughput and latency.
    Load(load::LoadArgs),
    /// Fill a store with loader spans over a past time window, straight into blocks (for
    /// measuring queries at scale; see docs/benchmarks.md).
    Generate(generate::GenerateArgs),
    /// Measure trace-by-id and attribute-search latency against a running skein.
    BenchQuery(query_bench::QueryBenchArgs),
    /// Run skein plus a small instrumented shop that sends it real traces (see docs/demo.md).
    Demo(demo::DemoArgs),
}

/// mimalloc option `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc.h).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Allocator settings for a server that frees a whole head of spans every few seconds. Each
/// stays as the environment sets it (`MIMALLOC_PURGE_DELAY`, `MIMALLOC_ALLOW_THP`).
///
/// - Freed pages go back to the OS 100 ms after they empty, not mimalloc's 1 s: at full rate
///   that delay kept ~110 MiB more resident, for ~5–10 % of the throughput (docs/benchmarks.md,
///   "Searches compare dictionary indexes; allocator purge delay").
/// - No transparent huge pages for the process, as mimalloc itself does with
///   `MIMALLOC_ALLOW_THP=0`; set here because mimalloc reads its options before `main`.
///   mimalloc asks for huge pages on its memory, and the kernel (in its common `madvise` mode
///   too) then backs a first touch anywhere in an empty 2 MiB range with all of it, so purged
///   memory came back 2 MiB at a time. At full rate that was ~100 MiB more resident at the same
///   throughput ("Transparent huge pages off").
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Safety: called first thing in `main`, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) }
    }
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // Safety: a plain system call that sets a flag of this process. It cannot fail on a
        // kernel that knows it (3.15+); an older one keeps huge pages, nothing worse.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

/// Errors are printed with their causes and exit 1, without the backtrace `anyhow` would add
/// when `RUST_BACKTRACE` is set: a configuration error should read as one.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Config(args) => {
            let cfg = args.load()?;
            print!("{}", config::to_toml(&cfg)?);
            Ok(())
        }
        Command::Serve(args) => {
            let cfg = args.load()?;
            init_logging(&cfg.log_level, cfg.log_format);
            runtime()?.block_on(serve::run(cfg))
        }
        Command::Generate(args) => {
            init_logging("warn", config::LogFormat::Text);
            runtime()?.block_on(generate::run(args))
        }
        Command::BenchQuery(args) => runtime()?.block_on(query_bench::run(args)),
        Command::Demo(args) => {
            // skein's own logs stay quiet so the demo's links stand out (RUST_LOG still wins).
            init_logging("warn", config::LogFormat::Text);
            runtime()?.block_on(demo::run(args))
        }
        Command::Load(args) => {
            init_logging("warn", config::LogFormat::Text);
            runtime()?.block_on(async move { load::run(args).await.map(|_| ()) })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn init_logging(level: &str, format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only on a terminal: a log file or journald gets plain text to grep.
        config::LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object a line; an event's fields sit beside `message`, not nested.
        config::LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    // One test: `tune_allocator` changes the whole process, and tests run side by side in it.
    #[test]
    fn allocator_is_tuned_unless_the_environment_says_otherwise() {
        let purge_from_env = std::env::var("MIMALLOC_PURGE_DELAY").ok();
        if purge_from_env.is_none() {
            // mimalloc's own default for purge_delay is 1000: the index names that option.
            assert_eq!(purge_delay(), 1000);
        }
        tune_allocator();
        assert_eq!(purge_delay().to_string(), purge_from_env.as_deref().unwrap_or("100"));

        #[cfg(target_os = "linux")]
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1);
            // Where a user sees it, on kernels that report it: /proc/PID/status.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
                assert!(line.ends_with('0'), "{line}");
            }
        }
    }
}
