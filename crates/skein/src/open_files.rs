//! The open-files limit. Every client connection, WAL segment and block being read holds a
//! file descriptor, and the usual soft limit is 1,024 (systemd's default for services), which a
//! fleet of a thousand SDKs holding a gRPC connection each would exhaust. Like the Go runtime
//! does for Jaeger and Tempo, `skein serve` raises the soft limit to the hard one at start.

/// Below this many descriptors a busy server runs out; the start warns.
#[cfg(unix)]
const ENOUGH: libc::rlim_t = 4096;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs what it did.
pub fn raise_limit() {
    #[cfg(unix)]
    {
        let Some(mut lim) = skein_api::process_metrics::open_files_limit() else {
            return;
        };
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            // SAFETY: setrlimit only reads the struct passed by pointer.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
                lim.rlim_cur = before;
            }
        }
        let now = lim.rlim_cur;
        if now != before {
            tracing::info!(from = before, to = now, "raised the open-files limit");
        }
        if now < ENOUGH {
            tracing::warn!(
                limit = now,
                "only {now} file descriptors may be open (each connection takes one): raise the \
                 hard limit (`ulimit -Hn`, systemd `LimitNOFILE=`, Docker `--ulimit nofile=`) to at \
                 least {ENOUGH}"
            );
        }
    }
}

/// The soft open-files limit, if there is one.
pub fn soft_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        skein_api::process_metrics::open_files_limit()
            .map(|lim| lim.rlim_cur)
            .filter(|&cur| cur != libc::RLIM_INFINITY)
    }
    #[cfg(not(unix))]
    None
}
