//! A WAL append that fails partway must leave nothing of itself in the segment: replay stops
//! at the first damaged record, so leftover bytes would hide every record acknowledged after
//! them. The failure here is real: the process's file-size limit (`RLIMIT_FSIZE`) makes the
//! kernel write part of the append and then refuse the rest, as a disk filling up does. The
//! limit holds for the whole process, so this test has a binary of its own.

use std::fs;

use skein_store::wal::{encode_record, replay_segment, segment_path, Segment};

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

fn record(byte: u8, len: usize) -> Vec<u8> {
    let mut framed = Vec::new();
    encode_record(&vec![byte; len], &mut framed);
    framed
}

#[test]
fn a_failed_append_leaves_nothing_before_later_records() {
    // Past the limit the kernel sends SIGXFSZ, which would end the process; ignored, the
    // write fails with EFBIG instead.
    // SAFETY: sets the disposition of one signal for this test process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = segment_path(dir.path(), 1);
    let mut seg = Segment::create(dir.path(), 1).unwrap();
    seg.append_durable(&record(1, 100)).unwrap();
    let acknowledged = seg.len;

    // Room for 50 more bytes: the next append writes that much of itself, then fails.
    limit_file_size(acknowledged + 50);
    let err = seg.append_durable(&record(2, 1000)).unwrap_err();
    limit_file_size(libc::RLIM_INFINITY);
    assert!(err.to_string().contains("writing WAL"), "{err}");
    assert_eq!(seg.len, acknowledged);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        acknowledged,
        "the failed append was cut off"
    );

    // The next append goes right after the last acknowledged record, and both replay.
    seg.append_durable(&record(3, 100)).unwrap();
    let replay = replay_segment(&path).unwrap();
    assert_eq!(replay.records, vec![vec![1u8; 100], vec![3u8; 100]]);
    assert_eq!(replay.truncated_bytes, 0);
}
