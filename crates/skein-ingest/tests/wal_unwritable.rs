//! When the WAL cannot be written (a full disk, an I/O error), receivers refuse with "retry
//! later" — 503 with Retry-After on HTTP, UNAVAILABLE with RetryInfo on gRPC — so SDKs keep
//! the spans and send them again, and once writes work the next request is stored. Nothing of a
//! refused request stays in the WAL, and every acknowledged one replays.
//!
//! The failure is real: the process's file-size limit (`RLIMIT_FSIZE`) lets the kernel write
//! part of the group commit and then refuse the rest, as a disk filling up does. The limit
//! holds for the whole process, so this test has a binary of its own. Real sockets,
//! in-process server.

mod common;

use prost::Message;
use skein_model::otlp::pb::collector::trace::v1::trace_service_client::TraceServiceClient;
use skein_model::otlp::pb::collector::trace::v1::ExportTraceServiceRequest;

fn request(n: u8) -> ExportTraceServiceRequest {
    common::request(
        n,
        &format!("span {n} with a name long enough to cross the file size limit"),
    )
}

/// Sets the soft limit on the size of files this process writes.
fn limit_file_size(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

/// The WAL segment being written: the newest file in `wal/`.
fn newest_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let wal = data_dir.join("wal");
    let seqs = skein_store::wal::list_segments(&wal).unwrap();
    skein_store::wal::segment_path(&wal, *seqs.last().expect("a WAL segment"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_with_retry_advice_while_the_wal_cannot_be_written() {
    // Past the limit the kernel sends SIGXFSZ, which would end the process; ignored, the
    // write fails with EFBIG instead.
    // SAFETY: sets the disposition of one signal for this test process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let dir = tempfile::tempdir().unwrap();
    let common::Receivers {
        store,
        http_url: url,
        grpc_url,
    } = common::start(dir.path()).await;
    let client = reqwest::Client::new();
    let post = |n: u8| {
        client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request(n).encode_to_vec())
            .send()
    };
    let mut grpc_client = TraceServiceClient::connect(grpc_url).await.unwrap();

    assert_eq!(post(1).await.unwrap().status(), 200);
    let segment = newest_segment(dir.path());
    let acknowledged = std::fs::metadata(&segment).unwrap().len();

    // Room for half a request more: each group commit writes part of itself, then fails.
    let half = request(2).encoded_len() as u64 / 2;
    limit_file_size(acknowledged + half);
    let refused = post(2).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = refused.text().await.unwrap();
    assert!(
        body.contains("cannot store spans") && body.contains("retry later"),
        "{body}"
    );
    let err = grpc_client.export(request(3)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(!err.details().is_empty(), "RetryInfo attached");
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        acknowledged,
        "nothing of the refused requests stays in the WAL"
    );

    // Writes work again: the next requests are stored, right after the first one.
    limit_file_size(libc::RLIM_INFINITY);
    assert_eq!(post(4).await.unwrap().status(), 200);
    grpc_client.export(request(5)).await.unwrap();
    let replay = skein_store::wal::replay_segment(&segment).unwrap();
    assert_eq!(replay.truncated_bytes, 0);
    let stored: Vec<Vec<u8>> = [1, 4, 5].iter().map(|&n| request(n).encode_to_vec()).collect();
    assert_eq!(replay.records, stored, "the acknowledged requests, whole and in order");

    let metrics = skein_model::metrics::render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("skein_wal_write_failures_total ") && !l.ends_with(" 0")),
        "failures counted"
    );
    store.shutdown().await.unwrap();
}
