//! `skein serve`: wires store → pipeline → receivers, and the query API, then waits for a
//! signal and shuts down in order (stop accepting, cut the head into a block).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::http::Method;
use skein_api::slow_readers::CutStalledReaders;
use skein_api::ErrorShapes::{PlainText, QueryApis};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::connections::Pool;
use crate::http_server;

async fn bind(name: &str, addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.trim().is_empty() {
        tracing::info!(receiver = name, "disabled");
        return Ok(None);
    }
    let l = listen(addr)
        .await
        .with_context(|| format!("binding {name} on {addr}"))?;
    let local: SocketAddr = l.local_addr()?;
    // A stable, parseable line: tests and scripts read the real port from it when given port 0.
    println!("skein: listening {name} {local}");
    Ok(Some(l))
}

/// Connections waiting to be accepted, per port (the kernel caps it at `net.core.somaxconn`).
/// `TcpListener::bind` gave 128 here, and the backlog must also hold the clients waiting for a
/// connection slot (`connections`), so skein asks for what Go servers such as Jaeger and Tempo
/// get: somaxconn, 4,096 on current kernels.
const BACKLOG: u32 = 4096;

/// A listener on the first of `addr`'s addresses that can be bound.
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let listen_on = |a: SocketAddr| -> std::io::Result<TcpListener> {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std's bind does on Unix: a restart may reuse a port with connections in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(a)?;
        socket.listen(BACKLOG)
    };
    let mut last = None;
    // Like `TcpListener::bind`: the first address that works (IPv6 may be off on the host).
    for a in tokio::net::lookup_host(addr).await? {
        match listen_on(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")))
}

/// Like [`bind`], for the UDP receivers (Jaeger agent ports).
async fn bind_udp(name: &str, addr: &str) -> anyhow::Result<Option<tokio::net::UdpSocket>> {
    if addr.trim().is_empty() {
        tracing::info!(receiver = name, "disabled");
        return Ok(None);
    }
    let s = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("binding {name} on {addr} (udp)"))?;
    println!("skein: listening {name} {}", s.local_addr()?);
    Ok(Some(s))
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    run_until(cfg, shutdown_signal()).await
}

/// `run`, but stopping when `stop_when` resolves instead of on a signal (`skein demo` runs the
/// server in-process and stops it itself).
pub async fn run_until(cfg: Config, stop_when: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    crate::open_files::raise_limit();
    if cfg.store.max_pending_blocks == 0 {
        tracing::warn!(
            "store.max_pending_blocks = 0: no head may wait to become a block, so every span request \
             is refused with \"retry later\" (only useful to test how senders handle backpressure)"
        );
    }
    // Sampling configuration errors stop the start before anything is opened.
    let head_sampler =
        skein_pipeline::sampling::head::HeadSampler::new(&cfg.sampling.head).map_err(anyhow::Error::msg)?;
    let tail_policies = cfg.sampling.tail.policies().map_err(anyhow::Error::msg)?;
    // A bad strategies file stops the start before anything is opened, too.
    let strategies_file = Some(cfg.sampling.strategies_file.trim())
        .filter(|f| !f.is_empty())
        .map(std::path::Path::new);
    let strategies = skein_pipeline::sampling::StrategyStore::open(strategies_file).map_err(anyhow::Error::msg)?;
    cfg.sampling.adaptive.validate().map_err(anyhow::Error::msg)?;
    let read_timeout = cfg.limits.read_timeout();

    // Every port is bound before the store opens (a port in use stops the start at once) and
    // answers "starting" until it is open (`starting`).
    let mut tcp = Vec::new();
    for (name, addr) in [
        ("sampling_http", &cfg.sampling.http_addr),
        ("otlp_grpc", &cfg.otlp.grpc_addr),
        ("otlp_http", &cfg.otlp.http_addr),
        ("zipkin_http", &cfg.zipkin.http_addr),
        ("jaeger_thrift_http", &cfg.jaeger.thrift_http_addr),
        ("jaeger_grpc", &cfg.jaeger.grpc_addr),
        ("query_grpc", &cfg.query.grpc_addr),
        ("query_http", &cfg.query.http_addr),
    ] {
        if let Some(l) = bind(name, addr).await? {
            tcp.push((name, l));
        }
    }
    let mut udp = Vec::new();
    for (name, addr, protocol) in [
        (
            "jaeger_agent_compact",
            &cfg.jaeger.agent_compact_addr,
            skein_model::jaeger::thrift::Protocol::Compact,
        ),
        (
            "jaeger_agent_binary",
            &cfg.jaeger.agent_binary_addr,
            skein_model::jaeger::thrift::Protocol::Binary,
        ),
    ] {
        if let Some(socket) = bind_udp(name, addr).await? {
            udp.push((socket, protocol));
        }
    }
    // Connections may take only so many descriptors: the store keeps the rest (`connections`).
    let max_connections = match cfg.limits.max_connections {
        0 => crate::connections::automatic(tcp.len()),
        n => {
            crate::connections::check(n, tcp.len());
            Some(n)
        }
    };
    match max_connections {
        Some(n) => crate::connections::limit(n),
        None => tracing::info!("no open-files limit: client connections are not capped"),
    }
    let starting = crate::starting::answer_while_opening(tcp, read_timeout);
    // Opening reads and replays files synchronously: off the runtime's workers, which keep
    // answering on the ports meanwhile.
    let opening = {
        let (dir, store_cfg) = (cfg.data_dir.clone(), cfg.store.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || runtime.block_on(skein_store::Store::open(&dir, store_cfg)))
    };
    let store = opening
        .await?
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    let mut ports: std::collections::HashMap<&str, TcpListener> = starting.finish().await?.into_iter().collect();
    let maintenance = store.start_maintenance();
    let scrub = store.start_scrub();
    let mut pipeline =
        skein_pipeline::Pipeline::new(cfg.limits.clone(), store.clone()).with_head_sampler(Arc::new(head_sampler));
    let tail_sampler = if let Some(policies) = tail_policies {
        let t = skein_pipeline::sampling::tail::TailSampler::start(store.clone(), &cfg.sampling.tail, policies)
            .map_err(anyhow::Error::msg)?;
        let t = Arc::new(t);
        pipeline = pipeline.with_tail_sampler(t.clone());
        tracing::info!(
            policies = cfg.sampling.tail.policies.len(),
            decision_wait = ?cfg.sampling.tail.decision_wait,
            pending = store.pending_stats().traces,
            "tail sampling on"
        );
        Some(t)
    } else {
        // Spans a previous run left waiting for a decision are kept.
        store.hold_for_decisions(None);
        None
    };
    let engine = skein_query::QueryEngine::new(store.clone()).with_max_traces(cfg.query.max_traces);
    // One set of query slots for every query API (HTTP, Zipkin, gRPC).
    let admission = skein_api::admission::QueryAdmission::new(cfg.query.max_concurrent, cfg.query.timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    // ---- Remote sampling strategies (served on 5778, 14268 and 14250) ----
    // Adaptive mode: the pipeline counts root spans, a task turns them into probabilities.
    let pipeline = if cfg.sampling.adaptive.enabled() {
        pipeline.with_root_span_counter(strategies.enable_adaptive(cfg.sampling.adaptive.clone()))
    } else {
        pipeline
    };
    let adaptive_task = strategies.spawn_adaptive({
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    });
    let strategies_reloader = strategies.spawn_reloader(cfg.sampling.reload_interval, {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    });
    if let Some(l) = ports.remove("sampling_http") {
        let app = skein_api::sampling::agent_router(strategies.clone());
        let name = "remote sampling HTTP server";
        let l = http_server::Accepting::new(l, name, Pool::Senders);
        tasks.push(http_server::spawn(
            l,
            app,
            PlainText,
            read_timeout,
            stop_rx.clone(),
            name,
        ));
    }

    if let Some(l) = ports.remove("otlp_grpc") {
        let svc = skein_ingest::otlp::grpc::service(pipeline.clone(), cfg.otlp.max_request_bytes as usize);
        let receive_budget = skein_ingest::receive_budget(pipeline.clone(), "otlp_grpc");
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = tokio_stream_of(l, read_timeout, "OTLP gRPC server", Pool::Senders);
            tonic::transport::Server::builder()
                .http2_keepalive_interval(read_timeout)
                .http2_keepalive_timeout(http_server::ping_timeout(read_timeout))
                // Outermost, to see the answers as sent.
                .layer(skein_ingest::refusals::RefusalLog::new("otlp_grpc"))
                .layer(tower::util::MapResponseLayer::new(
                    skein_ingest::otlp::grpc::sender_errors("otlp.max_request_bytes", Some("otlp_grpc")),
                ))
                .layer(tower::util::MapRequestLayer::new(receive_budget))
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .context("OTLP gRPC server")
        }));
    }
    if let Some(l) = ports.remove("otlp_http") {
        let app = skein_ingest::otlp::http::router(pipeline.clone(), &cfg.otlp)
            .layer(skein_ingest::refusals::RefusalLog::new("otlp_http"));
        let name = "OTLP HTTP server";
        let l = http_server::Accepting::new(l, name, Pool::Senders);
        tasks.push(http_server::spawn(
            l,
            app,
            PlainText,
            read_timeout,
            stop_rx.clone(),
            name,
        ));
    }
    // ---- Zipkin: ingest and the v2 query API share one port ----
    if let Some(l) = ports.remove("zipkin_http") {
        let app = skein_ingest::zipkin::router(pipeline.clone(), cfg.zipkin.max_request_bytes as usize)
            .merge(skein_api::zipkin::router(engine.clone()))
            .layer(admission.clone())
            .layer(skein_ingest::refusals::RefusalLog::new("zipkin_http"))
            .layer(skein_ingest::zipkin::cors(
                &cfg.zipkin.cors_allowed_origins,
                &[Method::GET, Method::POST, Method::OPTIONS],
            ));
        let name = "Zipkin HTTP server";
        let l = CutStalledReaders::new(http_server::Accepting::new(l, name, Pool::Senders), cfg.query.timeout);
        tasks.push(http_server::spawn(
            l,
            app,
            PlainText,
            read_timeout,
            stop_rx.clone(),
            name,
        ));
    }
    // ---- Jaeger ingest (collector HTTP/gRPC, agent UDP) ----
    let jaeger_max = cfg.jaeger.max_request_bytes as usize;
    if let Some(l) = ports.remove("jaeger_thrift_http") {
        let app = skein_ingest::jaeger::http::router(pipeline.clone(), jaeger_max)
            .merge(skein_api::sampling::collector_router(strategies.clone()))
            .layer(skein_ingest::refusals::RefusalLog::new("jaeger_thrift_http"));
        let name = "Jaeger thrift HTTP server";
        let l = http_server::Accepting::new(l, name, Pool::Senders);
        tasks.push(http_server::spawn(
            l,
            app,
            PlainText,
            read_timeout,
            stop_rx.clone(),
            name,
        ));
    }
    if let Some(l) = ports.remove("jaeger_grpc") {
        let svc = skein_ingest::jaeger::grpc::service(pipeline.clone(), jaeger_max);
        let receive_budget = skein_ingest::receive_budget(pipeline.clone(), "jaeger_grpc");
        let sampling_svc = skein_api::sampling::grpc::service(strategies.clone());
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(read_timeout)
                .http2_keepalive_timeout(http_server::ping_timeout(read_timeout))
                // Outermost, to see the answers as sent.
                .layer(skein_ingest::refusals::RefusalLog::new("jaeger_grpc"))
                .layer(tower::util::MapResponseLayer::new(
                    skein_ingest::otlp::grpc::sender_errors("jaeger.max_request_bytes", Some("jaeger_grpc")),
                ))
                .layer(tower::util::MapRequestLayer::new(receive_budget))
                .add_service(svc)
                .add_service(sampling_svc)
                .serve_with_incoming_shutdown(
                    tokio_stream_of(l, read_timeout, "Jaeger gRPC collector server", Pool::Senders),
                    async move {
                        let _ = rx.wait_for(|s| *s).await;
                    },
                )
                .await
                .context("Jaeger gRPC collector server")
        }));
    }
    // Datagrams sent while the store opened wait in the sockets' buffers.
    for (socket, protocol) in udp {
        let mut rx = stop_rx.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let run = skein_ingest::jaeger::agent::run(socket, protocol, pipeline.clone(), shutdown);
        tasks.push(tokio::spawn(async move {
            run.await;
            Ok(())
        }));
    }
    if let Some(l) = ports.remove("query_grpc") {
        // Jaeger api_v2 and api_v3 QueryService; undecodable requests become INVALID_ARGUMENT.
        use skein_api::jaeger::grpc::{v2::QueryServiceV2, v3::QueryServiceV3};
        let (v2, v3) = (QueryServiceV2::new(engine.clone()), QueryServiceV3::new(engine.clone()));
        let mut rx = stop_rx.clone();
        let admission = admission.clone();
        tasks.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(read_timeout)
                .http2_keepalive_timeout(http_server::ping_timeout(read_timeout))
                .layer(tower::util::MapResponseLayer::new(
                    skein_ingest::otlp::grpc::sender_errors("the 1 MiB limit of query requests", None),
                ))
                .layer(admission)
                .add_service(v2)
                .add_service(v3)
                .serve_with_incoming_shutdown(
                    tokio_stream_of(l, read_timeout, "Jaeger gRPC query server", Pool::Queries),
                    async move {
                        let _ = rx.wait_for(|s| *s).await;
                    },
                )
                .await
                .context("Jaeger gRPC query server")
        }));
    }
    if let Some(l) = ports.remove("query_http") {
        let app = skein_api::router(engine.clone()).layer(admission.clone());
        let name = "query HTTP server";
        let l = CutStalledReaders::new(http_server::Accepting::new(l, name, Pool::Queries), cfg.query.timeout);
        tasks.push(http_server::spawn(
            l,
            app,
            QueryApis,
            read_timeout,
            stop_rx.clone(),
            name,
        ));
    }
    // Polled once before "ready", so the signal handlers are in place by then: whoever reads
    // that line may send SIGTERM at once, and the default action would end the process without
    // a clean stop. (Before this a signal still ends it on the spot, a WAL replay included;
    // that loses nothing acknowledged, which is all in the WAL.)
    let mut stop_when = std::pin::pin!(stop_when);
    let stopped = futures::FutureExt::now_or_never(stop_when.as_mut()).is_some();
    println!(
        "skein: ready data_dir={} startup={:?}",
        cfg.data_dir.display(),
        started.elapsed()
    );
    if !stopped {
        stop_when.await;
    }
    tracing::info!("shutting down: refusing new requests, flushing the head into a block");
    let _ = stop_tx.send(true);
    // One deadline for all servers: a client that stops reading holds its connection open, and
    // waiting 10 s per server would add up past an orchestrator's grace period.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server stopped with an error"),
            Err(_) => tracing::warn!("a server did not stop within 10s of the signal; flushing anyway"),
            _ => {}
        }
    }
    // Scrubbing only reads; merges and expiry are left to finish or stop by themselves
    // (`Store::shutdown` waits for them), never cut off half way.
    if let Some(t) = scrub {
        t.abort();
    }
    strategies_reloader.abort();
    if let Some(t) = adaptive_task {
        t.abort();
    }
    if let Some(t) = tail_sampler {
        // Undecided traces stay in the WAL and are decided after the next start.
        let _ = tokio::task::spawn_blocking(move || t.stop()).await;
    }
    store.shutdown().await.context("flushing the store")?;
    maintenance.abort();
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The gRPC servers' connections; each must send its first byte within `read_timeout`
/// ([`http_server::OpeningBy`]).
///
/// An accept that fails for want of file descriptors (or memory) is logged and retried after a
/// second (`http_server::accept`); tonic would retry it at once and spin a core.
fn tokio_stream_of(
    l: TcpListener,
    read_timeout: Option<std::time::Duration>,
    server: &'static str,
    pool: Pool,
) -> impl futures::Stream<Item = std::io::Result<http_server::OpeningBy<crate::connections::Connection>>> {
    futures::stream::unfold(l, move |l| async move {
        let (stream, _) = http_server::accept(&l, server, pool).await;
        Some((Ok(http_server::OpeningBy::new(stream, read_timeout)), l))
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    // A supervisor or an operator may send SIGHUP expecting a reload; its default action would
    // end the process on the spot, without flushing.
    #[cfg(unix)]
    let hangup = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            while s.recv().await.is_some() {
                tracing::warn!(
                    "SIGHUP ignored: skein does not reload its configuration (the sampling strategies \
                     file is read again every sampling.reload_interval); restart it to apply other changes"
                );
            }
        }
        std::future::pending::<()>().await
    };
    #[cfg(not(unix))]
    let hangup = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
        _ = hangup => {},
    }
}
