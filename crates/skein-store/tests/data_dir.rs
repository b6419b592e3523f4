//! The data directory: one process at a time, and no leftovers of interrupted block writes.

use skein_model::{KeyValue, Resource, Span};
use skein_store::{Store, StoreConfig, StoreError};

fn span(i: u8) -> Span {
    Span {
        trace_id: [i; 16],
        span_id: [i; 8],
        name: "op".into(),
        start_unix_nano: 1_700_000_000_000_000_000,
        end_unix_nano: 1_700_000_000_001_000_000,
        resource: std::sync::Arc::new(Resource {
            attributes: vec![KeyValue::string("service.name", "svc")],
            dropped_attributes_count: 0,
        }),
        ..Span::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_on_the_same_directory_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    let err = match Store::open(dir.path(), StoreConfig::default()).await {
        Err(e) => e,
        Ok(_) => panic!("two stores opened one data directory"),
    };
    assert!(matches!(err, StoreError::InUse(..)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("in use by another skein process"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "names the holder: {msg}"
    );
    // Shutdown hands the directory on, even while the old handle is still around.
    first.shutdown().await.unwrap();
    let again = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    assert_eq!(
        first.compact_once().await.unwrap(),
        0,
        "a shut-down store writes nothing"
    );
    assert!(matches!(
        first.import(vec![span(1)]).await,
        Err(StoreError::ShuttingDown)
    ));
    again.shutdown().await.unwrap();
    drop(first);
    // Dropping a store without shutdown releases it too.
    let third = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    drop(third);
    let fourth = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    fourth.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_without_a_meta_are_removed_at_open_and_complete_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    store.import((1..=3).map(span).collect()).await.unwrap();
    store.shutdown().await.unwrap();
    drop(store);

    // What interrupted writes leave: a data file without its meta, and a staging file of a put
    // cut short (which the object store's listing does not show).
    let blocks = dir.path().join("blocks");
    std::fs::create_dir_all(blocks.join("01INCOMPLETE")).unwrap();
    std::fs::write(blocks.join("01INCOMPLETE/data.parquet"), vec![0u8; 4096]).unwrap();
    std::fs::write(blocks.join("01INCOMPLETE/traces.parquet"), vec![0u8; 100]).unwrap();
    std::fs::create_dir_all(blocks.join("01STAGING")).unwrap();
    std::fs::write(blocks.join("01STAGING/data.parquet#1"), vec![0u8; 100]).unwrap();

    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    assert!(!blocks.join("01INCOMPLETE").exists());
    assert!(!blocks.join("01STAGING").exists());
    let stats = store.stats();
    assert_eq!((stats.blocks, stats.block_spans), (1, 3), "the complete block is kept");
    let left: Vec<_> = std::fs::read_dir(&blocks).unwrap().flatten().collect();
    assert_eq!(left.len(), 1);
    store.shutdown().await.unwrap();
}

/// What skein did not write, or a meta lost on its own, does not stop the store from opening
/// and destroys nothing that may be the only copy of spans: a block with every data file but
/// no meta is kept and reported; a file or directory whose name is not UTF-8 is ignored; a
/// directory named like a WAL segment is no segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_entries_and_a_lost_meta_are_not_fatal_and_nothing_is_deleted() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    store.import(vec![span(1)]).await.unwrap();
    store.import(vec![span(2)]).await.unwrap();
    let ids: Vec<String> = store.snapshot().blocks.iter().map(|b| b.meta.id.clone()).collect();
    store.shutdown().await.unwrap();
    drop(store);
    assert_eq!(ids.len(), 2);

    let blocks = dir.path().join("blocks");
    std::fs::remove_file(blocks.join(&ids[1]).join("meta.json")).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"odd\xfe");
    std::fs::write(blocks.join(&ids[0]).join(odd), b"x").unwrap();
    std::fs::create_dir(blocks.join(odd)).unwrap();
    std::fs::create_dir(dir.path().join("wal").join("0000000000000099.wal")).unwrap();

    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    let stats = store.stats();
    assert_eq!(
        (stats.blocks, stats.block_spans),
        (1, 1),
        "the block with its meta is served"
    );
    assert_eq!(
        store.unloadable_blocks(),
        [ids[1].clone()],
        "the one without is reported"
    );
    for file in ["data.parquet", "traces.parquet", "bloom"] {
        assert!(blocks.join(&ids[1]).join(file).exists(), "{file} kept");
    }
    assert!(blocks.join(odd).exists() && blocks.join(&ids[0]).join(odd).exists());
    store.shutdown().await.unwrap();
}

/// Bytes changed on disk inside a page that still decodes (here the last byte of the
/// uncompressed span ids) are caught by the block's checksums: the read fails as damage, where
/// it used to return a span id that was never sent, and a merge copied it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_changed_on_disk_fail_their_checksum() {
    use parquet::file::reader::FileReader;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    store.import(vec![span(1)]).await.unwrap();
    let id = store.snapshot().blocks[0].meta.id.clone();
    assert!(store.snapshot().blocks[0].meta.sums_crc32c.is_some());
    store.shutdown().await.unwrap();
    drop(store);

    let data = dir.path().join("blocks").join(&id).join("data.parquet");
    let mut bytes = std::fs::read(&data).unwrap();
    let reader = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes.clone())).unwrap();
    let group = reader.metadata().row_group(0);
    let column = (0..group.num_columns())
        .find(|&c| group.column(c).column_path().string() == "span_id")
        .unwrap();
    let (start, len) = group.column(column).byte_range();
    bytes[(start + len - 1) as usize] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();

    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    let block = store.snapshot().blocks[0].clone();
    let err = block.trace(&[1; 16]).await.unwrap_err();
    assert!(
        err.is_damage() && err.to_string().contains("checksum mismatch"),
        "{err}"
    );
    store.shutdown().await.unwrap();
}

/// A scrub reads every block whole: a changed byte no query has read yet, or a file cut
/// short, is found and the block left out, while intact blocks stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_finds_damage_no_query_has_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    for i in 1..=3 {
        store.import(vec![span(i)]).await.unwrap();
    }
    let ids: Vec<String> = store.snapshot().blocks.iter().map(|b| b.meta.id.clone()).collect();
    store.shutdown().await.unwrap();
    drop(store);

    let file = |id: &str, name: &str| dir.path().join("blocks").join(id).join(name);
    // A byte in the middle of the first block's span file; the end of the second's summaries.
    let data = file(&ids[0], "data.parquet");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let summaries = file(&ids[1], "traces.parquet");
    let len = std::fs::metadata(&summaries).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&summaries)
        .unwrap()
        .set_len(len - 1)
        .unwrap();

    let cfg = StoreConfig {
        scrub_interval: std::time::Duration::from_millis(200),
        ..StoreConfig::default()
    };
    let store = Store::open(dir.path(), cfg).await.unwrap();
    assert_eq!(store.snapshot().blocks.len(), 3, "nothing read yet");
    let scrub = store.start_scrub().expect("scrubbing is on");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.snapshot().blocks.len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the scrub did not find the damage"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let left: Vec<String> = store.snapshot().blocks.iter().map(|b| b.meta.id.clone()).collect();
    assert_eq!(left, vec![ids[2].clone()]);
    scrub.abort();
    store.shutdown().await.unwrap();
}

/// A block write cut off after its last data file but before its meta, or a delete cut off
/// after the meta, is removed at the next start: the block is marked incomplete, and its spans
/// are still in the WAL or in the blocks it merged (or were being deleted). A written block
/// keeps no mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_write_cut_off_before_its_meta_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    store.import(vec![span(1)]).await.unwrap();
    let id = store.snapshot().blocks[0].meta.id.clone();
    store.shutdown().await.unwrap();
    drop(store);
    let block = dir.path().join("blocks").join(&id);
    assert!(!block.join("incomplete").exists(), "a written block keeps its mark");

    // As the instant before the meta was written.
    std::fs::remove_file(block.join("meta.json")).unwrap();
    std::fs::write(block.join("incomplete"), b"").unwrap();
    let store = Store::open(dir.path(), StoreConfig::default()).await.unwrap();
    assert!(!block.exists(), "the interrupted write is removed");
    assert!(store.unloadable_blocks().is_empty(), "and not reported as a lost meta");
    store.shutdown().await.unwrap();
}
