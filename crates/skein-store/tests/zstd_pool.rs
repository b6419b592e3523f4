//! `parquet` creates a zstd compressor and decompressor for every column chunk it opens, and
//! each creation runs `cpuid` three times (a trap to the hypervisor in a VM). The vendored
//! zstd-safe (vendor/README.md) keeps dropped contexts in a process-wide pool; a reused one
//! must have forgotten its dictionary and parameters. A decompressor takes a context only when
//! it first needs one, and a one-shot decompression borrows one for the call. A compressor
//! given nothing but a level (what `parquet` creates per column it writes) compresses on a
//! pooled working context and keeps its own small. Its own test binary: the pool is shared
//! by the whole process, so no other test may use zstd meanwhile.

use zstd::zstd_safe::{self, pooled_contexts, pooled_working_compressors, CCtx, CParameter, DCtx};

#[test]
fn zstd_contexts_are_reused_and_come_back_reset() {
    assert_eq!(pooled_contexts(), (0, 0), "nothing kept before the first drop");
    let dict = b"GET /api/traces?service=checkout&limit=20 HTTP/1.1 ".repeat(8);
    // 80 KB: compressing it grows a compressor's tables past what the pool keeps.
    let data = dict.repeat(200);
    let buffer = || Vec::with_capacity(data.len());
    let (mut with_dict, mut plain, mut out) = (buffer(), buffer(), buffer());

    let mut writer = CCtx::create();
    writer.load_dictionary(&dict).unwrap();
    writer.compress2(&mut with_dict, &data).unwrap();
    drop(writer);
    assert_eq!(pooled_contexts(), (0, 0), "a compressor that compressed is freed");

    let mut c = CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(19)).unwrap();
    c.load_dictionary(&dict).unwrap();
    let mut d = DCtx::create();
    d.load_dictionary(&dict).unwrap();
    d.decompress(&mut out, &with_dict).unwrap();
    assert_eq!(out, data);
    drop((c, d));
    assert_eq!(pooled_contexts(), (1, 1), "dropped contexts are kept");

    let mut c = CCtx::create();
    assert_eq!(pooled_contexts(), (0, 1), "the kept compressor is reused");
    c.compress2(&mut plain, &data).unwrap();
    out.clear();
    zstd_safe::decompress(&mut out, &plain).expect("a frame that needs no dictionary");
    assert_eq!(out, data);

    // A decompressor allocates nothing until it needs a context of its own: `parquet` keeps
    // one open per column chunk it reads. A one-shot decompression borrows a kept context.
    let mut idle: Vec<DCtx> = (0..100).map(|_| DCtx::create()).collect();
    assert_eq!(pooled_contexts(), (0, 1), "creating decompressors takes nothing");
    assert!(idle.iter().all(|d| d.sizeof() == 0));
    for d in &mut idle {
        out.clear();
        d.decompress(&mut out, &plain).unwrap();
        assert_eq!(out, data);
    }
    assert_eq!(pooled_contexts(), (0, 1), "each call gave the borrowed context back");
    drop(idle);

    let mut d = DCtx::create();
    out.clear();
    assert!(
        d.decompress(&mut out, &with_dict).is_err(),
        "the kept decompressor forgot the dictionary"
    );
    out.clear();
    d.decompress(&mut out, &plain).unwrap();
    assert_eq!(out, data);
    assert_eq!(pooled_contexts(), (0, 1));

    // Reused from any thread: the pool is not per thread. Loading a dictionary gives a
    // decompressor a context of its own.
    drop(d);
    std::thread::spawn(move || {
        let mut d = DCtx::create();
        d.load_dictionary(&dict).unwrap();
        assert_eq!(pooled_contexts(), (0, 0), "another thread takes the kept decompressor");
        let mut out = Vec::with_capacity(data.len());
        d.decompress(&mut out, &with_dict).unwrap();
        assert_eq!(out, data);
    })
    .join()
    .unwrap();

    // A compressor given only a level, like the one `parquet` keeps for each column of a file
    // it writes, compresses on a working context borrowed for the call: one served all fifty
    // here. Each compressor's own context stays small, so a dropped one is kept.
    let text: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("span-{} ", i.wrapping_mul(2_654_435_761) % 9973).into_bytes())
        .collect();
    let mut columns: Vec<zstd::bulk::Compressor> = (0..50).map(|_| zstd::bulk::Compressor::new(6).unwrap()).collect();
    let frames: Vec<Vec<u8>> = columns.iter_mut().map(|c| c.compress(&text).unwrap()).collect();
    assert_eq!(pooled_working_compressors(), 1);
    for c in &mut columns {
        assert!(
            c.context_mut().sizeof() < 64 << 10,
            "own context {} bytes",
            c.context_mut().sizeof()
        );
    }
    // The frames are what a context of its own compresses at level 6, not at the default.
    let mut own = CCtx::create();
    own.set_parameter(CParameter::CompressionLevel(6)).unwrap();
    own.set_parameter(CParameter::ChecksumFlag(false)).unwrap();
    let mut reference = Vec::with_capacity(text.len());
    own.compress2(&mut reference, &text).unwrap();
    assert!(own.sizeof() > 128 << 10, "the reference compressed with its own tables");
    let default_level = zstd::bulk::compress(&text, 1).unwrap();
    assert_ne!(reference, default_level);
    for f in &frames {
        assert_eq!(f, &reference);
        assert_eq!(zstd::bulk::decompress(f, text.len()).unwrap(), text);
    }
    let (kept_before, _) = pooled_contexts();
    drop(columns);
    assert_eq!(pooled_contexts().0, (kept_before + 50).min(64), "small again, so kept");
}
