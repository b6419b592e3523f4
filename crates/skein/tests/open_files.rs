//! File descriptors: `skein serve` raises its soft open-files limit to the hard one, and a
//! server that has run out of descriptors waits for one instead of spinning, then serves again.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;

/// Runs the server under this open-files limit (soft, hard).
fn limit_open_files(soft: u64, hard: u64) -> impl FnOnce(&mut std::process::Command) {
    move |cmd| {
        // SAFETY: setrlimit is async-signal-safe; the closure runs in the child before exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// This test process opens hundreds of sockets itself.
fn raise_own_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 2048,
        "this test needs 2,048 descriptors; the hard limit is {}",
        lim.rlim_cur
    );
}

/// Opens a connection and sends a request on it, leaving it open once answered (any status).
fn ask(addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(b"GET /health HTTP/1.1\r\nHost: skein\r\n\r\n")?;
    let mut got = [0u8; 9];
    c.read_exact(&mut got)?;
    assert_eq!(&got, b"HTTP/1.1 ", "answer on a fresh connection");
    Ok(c)
}

/// Seconds of CPU the process has used (utime + stime, at 100 ticks per second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
    let ticks = |n: usize| fields[n - 3].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

/// Started with a soft limit of 256 (below systemd's 1,024 default, to keep the test small)
/// and a hard limit of 2,048, the server lifts its own soft limit and holds 600 connections
/// open at once, each answered (on the OTLP/HTTP port: the query ports have 256 slots at most).
/// Without the raise, accepts past ~100 would wait for a slot (or, uncapped, fail with
/// `EMFILE`) and those clients wait forever.
#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(dir.path(), &[], limit_open_files(256, 2048));
    let text = metrics(&s).await;
    assert_eq!(
        metric(&text, "process_max_fds"),
        Some(2048.0),
        "the soft limit was not raised"
    );
    let held: Vec<TcpStream> = (0..600)
        .map(|i| ask(s.http).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let open = metric(&metrics(&s).await, "process_open_fds").expect("process_open_fds");
    assert!(open >= 600.0, "{open} descriptors open with 600 connections held");
    drop(held);
    assert!(s.stop());
}

/// Client connections may take only so many descriptors, so the store keeps the rest. With a
/// limit of 400 and 400 idle connections arriving at once on the OTLP/HTTP port, the server
/// serves `skein_connections_max{pool="senders"}` of them and leaves the others in the
/// backlog; meanwhile the head is cut into blocks, which needs new files, and the query port,
/// with slots of its own, still answers new connections. Without the cap the connections took
/// every descriptor and the cuts failed with "Too many open files". Once connections close,
/// the waiting ones are served.
#[tokio::test]
async fn connections_wait_for_a_slot_and_the_store_keeps_its_descriptors() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log).unwrap();
    // No read timeout: the idle connections stay until the test closes them.
    let sets = ["store.head_max_age=1s", "limits.read_timeout=0s"];
    let server = Server::start_with(&dir.path().join("data"), &sets, move |cmd| {
        cmd.stderr(log_file);
        limit_open_files(400, 400)(cmd);
    });
    let s = &server;
    // One client, so one connection to the OTLP port, opened before the flood and reused after.
    let client = reqwest::Client::new();
    let send = |n: u64| {
        let client = client.clone();
        async move {
            let start = skein_store::now_unix_nano() - n * 1_000_000;
            post_otlp(
                &client,
                s,
                "front",
                vec![server_span(rid(), rid(), None, "GET /", start)],
            )
            .await;
        }
    };
    send(0).await;
    let text = metrics(s).await;
    let senders = "skein_connections_open{pool=\"senders\"}";
    let max = metric(&text, "skein_connections_max{pool=\"senders\"}").expect("skein_connections_max");
    assert!(
        (100.0..300.0).contains(&max),
        "{max} slots for senders under a limit of 400"
    );
    let cuts_before = metric(&text, "skein_head_cuts_total").unwrap_or(0.0);

    let flood: Vec<TcpStream> = (0..400)
        .map(|i| {
            TcpStream::connect_timeout(&s.http, Duration::from_secs(10)).unwrap_or_else(|e| {
                panic!("connection {i}: {e} (the port's backlog must hold ~200: net.core.somaxconn?)")
            })
        })
        .collect();
    // `metrics` opens a new connection each time: the query port has slots of its own.
    eventually("every slot taken", Duration::from_secs(20), || async move {
        let open = metric(&metrics(s).await, senders)?;
        (open == max).then_some(())
    })
    .await;
    // Spans arrive and heads are cut while no slot is free.
    for n in 1..=3 {
        send(n).await;
        eventually("a head cut into a block", Duration::from_secs(20), || async move {
            let cuts = metric(&metrics(s).await, "skein_head_cuts_total")?;
            (cuts >= cuts_before + n as f64).then_some(())
        })
        .await;
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("Too many open files"),
        "the store ran out of descriptors:\n{logged}"
    );
    assert!(
        logged.contains("every connection slot is taken"),
        "waiting for a slot was not logged:\n{logged}"
    );

    // The first connections close; the last one, waiting in the backlog, is then served.
    let mut flood = flood;
    let mut last = flood.pop().unwrap();
    flood.drain(..300);
    last.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    last.write_all(b"GET /v1/traces HTTP/1.1\r\nHost: skein\r\n\r\n")
        .unwrap();
    let mut got = [0u8; 9];
    last.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"HTTP/1.1 ", "an answer to a connection that waited for a slot");
    drop((flood, last));
    assert!(server.stop());
}

/// With fewer slots than ports (`limits.max_connections=2`: one for the senders' six ports,
/// one for the two query ports) every port is still served, in turn: a slot goes to a
/// connection, never to a port waiting for one. Taking the slot before the accept left the
/// query HTTP port unserved for good while the query gRPC port sat on the slot (probe 8).
#[tokio::test]
async fn fewer_slots_than_ports_still_serve_every_port() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["limits.max_connections=2"]);
    let now = skein_store::now_unix_nano();
    let rounds = async {
        for _ in 0..3 {
            // A new client, so a new connection, each time.
            let text = metrics(&s).await;
            assert_eq!(metric(&text, "skein_connections_max{pool=\"queries\"}"), Some(1.0));
            let client = reqwest::Client::new();
            post_otlp(
                &client,
                &s,
                "front",
                vec![server_span(rid(), rid(), None, "GET /", now)],
            )
            .await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), rounds)
        .await
        .expect("every port answers with one slot per pool");
    assert!(s.stop());
}

/// When every descriptor is in use, connections wait in the ports' backlog. The accept loops
/// must then retry once a second (tonic alone retries at once, spinning a core) and log why
/// (axum alone logs nothing), and the ports must serve again once descriptors are free.
#[tokio::test]
async fn out_of_descriptors_the_grpc_ports_wait_then_serve_again() {
    raise_own_limit();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let data = dir.path().join("data");
    // Find how many descriptors an idle server holds, then leave it 40 more and no way up.
    let probe = Server::start(&data, &[]);
    let idle = std::fs::read_dir(format!("/proc/{}/fd", probe.pid())).unwrap().count() as u64;
    assert!(probe.stop());
    let limit = idle + 40;
    let log_file = std::fs::File::create(&log).unwrap();
    // Connection slots past the descriptors, to reach the accept loops' error path.
    let s = Server::start_with(&data, &["limits.max_connections=100000"], move |cmd| {
        cmd.stderr(log_file);
        limit_open_files(limit, limit)(cmd);
    });
    assert_eq!(metric(&metrics(&s).await, "process_max_fds"), Some(limit as f64));

    // More connections than descriptors left, on the OTLP gRPC and the query HTTP port; each
    // sends the HTTP/2 preface so the server has something to read from the ones it accepted.
    let grpc = s.addr("otlp_grpc");
    let flood: Vec<TcpStream> = (0..120)
        .map(|i| {
            let mut c = TcpStream::connect(if i % 2 == 0 { grpc } else { s.query }).unwrap();
            c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_seconds(s.pid());
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_seconds(s.pid()) - before;
    // Spinning takes a whole core (~4 s here); retrying once a second takes next to nothing.
    // The margin is wide enough for a loaded machine.
    assert!(
        used < 2.0,
        "the server used {used:.2} s of CPU in 4 s while out of descriptors"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    for server in ["OTLP gRPC server", "query HTTP server"] {
        let line = logged
            .lines()
            .find(|l| l.contains("cannot accept a connection") && l.contains(server));
        assert!(
            line.is_some_and(|l| l.contains("Too many open files")),
            "{server}: the accept error was not logged:\n{logged}"
        );
    }

    drop(flood);
    // With descriptors free again, a new client gets the server's HTTP/2 SETTINGS frame.
    eventually("the gRPC port serves again", Duration::from_secs(20), || async {
        let mut c = TcpStream::connect(grpc).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").ok()?;
        let mut frame = [0u8; 9];
        c.read_exact(&mut frame).ok()?;
        (frame[3] == 0x4).then_some(())
    })
    .await;
    assert!(s.stop());
}
