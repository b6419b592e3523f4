//! The Jaeger agent's UDP ports: one datagram is one thrift `Agent.emitBatch` message, compact
//! protocol on 6831, binary on 6832. UDP has no reply, so nothing here ever waits for the store
//! inside the receive loop: each batch is submitted on its own task under a memory reservation,
//! and when there is no room the datagram is dropped and counted. Bad packets are counted and
//! logged (at most once per interval), never fatal.

use std::future::Future;
use std::time::{Duration, Instant};

use skein_model::jaeger::batch_to_model;
use skein_model::jaeger::thrift::{self, Protocol};
use skein_model::metrics;
use skein_pipeline::{Pipeline, ProtocolMetrics, SubmitError};
use tokio::net::UdpSocket;

/// Largest UDP payload; Jaeger clients keep their datagrams under 65000 bytes.
const MAX_DATAGRAM: usize = 65_536;
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The protocol label of an agent port, as used by its metrics.
pub fn metrics_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Compact => "jaeger_agent_compact",
        Protocol::Binary => "jaeger_agent_binary",
    }
}

fn dropped(protocol: &'static str, reason: &str) -> metrics::Counter {
    metrics::counter(
        "skein_udp_datagrams_dropped_total",
        "Jaeger agent datagrams dropped, by protocol and reason (bad_packet, backpressure, store)",
        &[("protocol", protocol), ("reason", reason)],
    )
}

/// Logs a warning at most once per [`LOG_EVERY`], saying how many were held back.
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, protocol: &str, from: std::net::SocketAddr, what: &dyn std::fmt::Display) {
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(protocol, %from, suppressed = self.suppressed, "dropping bad Jaeger agent datagram: {what}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Receives datagrams until `shutdown` completes.
pub async fn run(socket: UdpSocket, protocol: Protocol, pipeline: Pipeline, shutdown: impl Future<Output = ()>) {
    let name = metrics_name(protocol);
    let m = ProtocolMetrics::new(name);
    let bad_packets = dropped(name, "bad_packet");
    let no_room = dropped(name, "backpressure");
    let store_failed = dropped(name, "store");
    let mut log = RateLimitedLog {
        last: None,
        suppressed: 0,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        let (n, from) = tokio::select! {
            _ = &mut shutdown => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors and the like surface here on some systems; keep serving.
                    tracing::debug!(protocol = name, error = %e, "UDP receive failed");
                    continue;
                }
            },
        };
        let packet = &buf[..n];
        let reservation = match pipeline.reserve(n) {
            Ok(r) => r,
            Err(_) => {
                m.backpressure.inc();
                m.request("dropped");
                no_room.inc();
                continue;
            }
        };
        let batch = match thrift::decode_emit_batch(protocol, packet) {
            Ok(b) => b,
            Err(e) => {
                m.request("bad_request");
                bad_packets.inc();
                log.warn(name, from, &e);
                continue;
            }
        };
        let decoded = batch_to_model(batch.process, batch.spans);
        let (pipeline, m, no_room, store_failed) = (pipeline.clone(), m.clone(), no_room.clone(), store_failed.clone());
        tokio::spawn(async move {
            let _reservation = reservation;
            match pipeline.submit(decoded, None, &m).await {
                Ok(outcome) => {
                    if let Some(msg) = outcome.message() {
                        tracing::debug!(protocol = name, "agent batch partly rejected: {msg}");
                    }
                }
                Err(e) => {
                    match e {
                        SubmitError::Overloaded(_) => no_room.inc(),
                        SubmitError::Unavailable(_) | SubmitError::Internal(_) => store_failed.inc(),
                    }
                    tracing::debug!(protocol = name, error = %e, "agent batch dropped");
                }
            }
        });
    }
}
