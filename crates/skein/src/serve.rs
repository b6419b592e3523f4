//! `skein serve`: wires store → pipeline → receivers, and the query API, then waits for a
//! signal and shuts down in order (stop accepting, cut the head into a block).

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

async fn bind(name: &str, addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.trim().is_empty() {
        tracing::info!(receiver = name, "disabled");
        return Ok(None);
    }
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {name} on {addr}"))?;
    let local: SocketAddr = l.local_addr()?;
    // A stable, parseable line: tests and scripts read the real port from it when given port 0.
    println!("skein: listening {name} {local}");
    Ok(Some(l))
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let store = skein_store::Store::open(&cfg.data_dir, cfg.store.clone())
        .await
        .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?;
    let maintenance = store.start_maintenance();
    let pipeline = skein_pipeline::Pipeline::new(cfg.limits.clone(), store.clone());
    let engine = skein_query::QueryEngine::new(store.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    if let Some(l) = bind("otlp_grpc", &cfg.otlp.grpc_addr).await? {
        let svc = skein_ingest::otlp::grpc::service(pipeline.clone(), cfg.otlp.max_request_bytes as usize);
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = tokio_stream_of(l);
            tonic::transport::Server::builder()
                .layer(tower::util::MapResponseLayer::new(
                    skein_ingest::otlp::grpc::invalid_argument_on_decode_error,
                ))
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
                .context("OTLP gRPC server")
        }));
    }
    if let Some(l) = bind("otlp_http", &cfg.otlp.http_addr).await? {
        let app = skein_ingest::otlp::http::router(pipeline.clone(), &cfg.otlp);
        tasks.push(spawn_http(l, app, stop_rx.clone(), "OTLP HTTP server"));
    }
    if let Some(l) = bind("query_http", &cfg.query.http_addr).await? {
        let app = skein_api::router(engine.clone());
        tasks.push(spawn_http(l, app, stop_rx.clone(), "query HTTP server"));
    }
    println!(
        "skein: ready data_dir={} startup={:?}",
        cfg.data_dir.display(),
        started.elapsed()
    );

    shutdown_signal().await;
    tracing::info!("shutting down: refusing new requests, flushing the head into a block");
    let _ = stop_tx.send(true);
    for t in tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(10), t).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server stopped with an error"),
            Err(_) => tracing::warn!("a server did not stop within 10s"),
            _ => {}
        }
    }
    maintenance.abort();
    store.shutdown().await.context("flushing the store")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn tokio_stream_of(l: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}

fn spawn_http(
    l: TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context(what)
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
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
