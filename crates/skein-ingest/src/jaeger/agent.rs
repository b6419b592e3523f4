//! The Jaeger agent's UDP ports: one datagram is one thrift `Agent.emitBatch` message, compact
//! protocol on 6831, binary on 6832. UDP has no reply, so nothing here ever waits for the store
//! inside the receive loop: each batch is submitted on its own task under a memory reservation,
//! and when there is no room the datagram is dropped and counted. Bad packets are counted and
//! logged (at most once per interval), never fatal. Datagrams the kernel drops before skein
//! reads them (a full socket receive buffer) are read from `/proc/net/udp` and counted too.

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
        "Jaeger agent datagrams dropped, by protocol and reason (bad_packet, backpressure, store, kernel_buffer)",
        &[("protocol", protocol), ("reason", reason)],
    )
}

/// Receives datagrams until `shutdown` completes.
pub async fn run(socket: UdpSocket, protocol: Protocol, pipeline: Pipeline, shutdown: impl Future<Output = ()>) {
    let name = metrics_name(protocol);
    let m = ProtocolMetrics::new(name);
    let bad_packets = dropped(name, "bad_packet");
    let no_room = dropped(name, "backpressure");
    let store_failed = dropped(name, "store");
    let log = crate::refusals::RefusalLog::new(name);
    let _kernel_drops = KernelDrops::of(&socket, name);
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
                log.note(Some(from), &format!("dropped a bad datagram: {e}"));
                continue;
            }
        };
        let decoded = batch_to_model(batch.process, batch.spans);
        let (pipeline, m, no_room, store_failed, log) = (
            pipeline.clone(),
            m.clone(),
            no_room.clone(),
            store_failed.clone(),
            log.clone(),
        );
        tokio::spawn(async move {
            let mut reservation = reservation;
            match pipeline.submit(&mut reservation, decoded, None, &m).await {
                Ok(outcome) => {
                    if let Some(msg) = outcome.message() {
                        log.note(Some(from), &msg);
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

/// Counts the datagrams the kernel dropped on one socket because its receive buffer was full
/// (the `drops` column of `/proc/net/udp`, matched by the socket's inode), every few seconds,
/// into `skein_udp_datagrams_dropped_total{reason="kernel_buffer"}`, with a warning when they
/// grow. Nothing else reports them: the sender is never told, and skein never sees them.
/// Stops with the receiver (dropping this aborts the task). Linux only; elsewhere it does nothing.
struct KernelDrops(Option<tokio::task::JoinHandle<()>>);

impl KernelDrops {
    const EVERY: Duration = Duration::from_secs(5);

    fn of(socket: &UdpSocket, protocol: &'static str) -> KernelDrops {
        let Some(inode) = socket_inode(socket) else {
            return KernelDrops(None);
        };
        let counter = dropped(protocol, "kernel_buffer");
        let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
        KernelDrops(Some(tokio::spawn(async move {
            // From zero, not from a first reading: the socket is ours since its bind, so every
            // drop counted on it is one of ours, including those while the store opened and
            // those before this task first ran (a first reading would hide them).
            let mut seen = 0u64;
            let mut log_after: Option<Instant> = None;
            // Drops since the last line logged: each line covers everything since the one before.
            let mut unlogged = 0u64;
            loop {
                tokio::time::sleep(Self::EVERY).await;
                let Some(now) = udp_drops(inode) else { continue };
                let new = now.saturating_sub(seen);
                seen = now;
                counter.add(new);
                unlogged += new;
                if unlogged > 0 && log_after.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    tracing::warn!(
                        protocol,
                        port,
                        dropped = unlogged,
                        "the kernel dropped Jaeger agent datagrams: the socket's receive buffer was full \
                         (raise net.core.rmem_default, or send through the collector ports, which push back)"
                    );
                    log_after = Some(Instant::now());
                    unlogged = 0;
                }
            }
        })))
    }
}

impl Drop for KernelDrops {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The inode of a socket, from its `/proc/self/fd` link (`socket:[12345]`).
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        None
    }
}

/// The kernel's drop count of the UDP socket with this inode (IPv4 or IPv6 table).
fn udp_drops(inode: u64) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .find_map(|text| drops_in_table(&text, inode))
}

/// Reads one `/proc/net/udp` table: after the header, each line's 10th field is the inode and
/// its last field the drop count.
fn drops_in_table(text: &str, inode: u64) -> Option<u64> {
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 13 || fields[9].parse::<u64>().ok()? != inode {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_drops_of_one_socket_from_the_udp_table() {
        let table = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  117: 0100007F:1AAB 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 48213 2 0000000000000000 0
  118: 0100007F:1AAC 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 48214 2 0000000000000000 1234
";
        assert_eq!(drops_in_table(table, 48214), Some(1234));
        assert_eq!(drops_in_table(table, 48213), Some(0));
        assert_eq!(drops_in_table(table, 1), None);
    }

    /// The socket is found in the live table, before any drop.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn finds_its_own_socket() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let inode = socket_inode(&socket).expect("a socket inode");
        assert_eq!(udp_drops(inode), Some(0));
    }

    /// Drops before the counter started (while the store opened, or before its task first ran)
    /// are counted: the socket is new, so its kernel count is all ours.
    #[cfg(target_os = "linux")]
    #[tokio::test(start_paused = true)]
    async fn drops_before_the_counter_started_are_counted() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A small receive buffer (the kernel doubles it, and has a floor), whatever the host's
        // net.core.rmem_default.
        let size: libc::c_int = 4096;
        // SAFETY: setsockopt reads `size` for its length; the descriptor is the socket's own.
        let set = unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
        let to = socket.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Nothing reads: the receive buffer fills and the kernel drops the rest.
        for _ in 0..5_000 {
            sender.send_to(&[0u8; 512], to).unwrap();
        }
        let before = udp_drops(socket_inode(&socket).unwrap()).unwrap();
        assert!(before > 0, "the kernel dropped nothing");
        let counter = dropped("test_early_drops", "kernel_buffer");
        let _counting = KernelDrops::of(&socket, "test_early_drops");
        tokio::time::sleep(KernelDrops::EVERY * 2).await;
        assert_eq!(counter.get(), before);
    }
}
