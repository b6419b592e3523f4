//! skein's patch to zstd-safe 8.2.0 (see vendor/README.md): a process-wide pool of
//! compression and decompression contexts.
//!
//! Creating a context runs zstd's BMI2 check: three `cpuid` instructions. Inside a virtual
//! machine each `cpuid` traps to the hypervisor (about 6 µs each, measured), so a context
//! costs ~18 µs before it does any work, and the `parquet` crate creates a compressor and a
//! decompressor for every column chunk it reads or writes: about 30 % of the CPU of a trace
//! lookup. Here a dropped context is reset to its defaults (session and parameters, which
//! also forgets any dictionary) and kept for the next `create` on any thread. A context that
//! grew big (a compressor that compressed, a streaming decompressor with its window) is freed
//! instead, so these lists hold at most ~6.5 MB (64 decompressors of 96 KB and 64 unused
//! compressors of 5 KB). It is one pool, not one per thread, because a server has many
//! short-lived blocking threads (file reads, block writes, compaction) that would each keep
//! their own.
//!
//! A compressor given nothing but a level (see `Plain` in lib.rs) compresses on a working
//! context borrowed from a third list for the call. Working contexts keep their tables, so
//! a few of them serve every column of every file being written, where each column's own
//! context used to hold its tables for the whole file.

#[cfg(feature = "std")]
mod imp {
    use core::ptr::NonNull;
    use std::sync::Mutex;
    use std::vec::Vec;

    /// Contexts of each kind kept for the whole process. `parquet` opens every column chunk of
    /// a row group before reading any, so one trace lookup holds ~20 zstd contexts of each kind
    /// at once (with 4 kept a lookup still created most of its own), and a compaction more.
    const KEEP: usize = 64;
    /// Contexts larger than this (zstd's own `ZSTD_sizeof_*` figure) are freed, not kept: a
    /// decompressor takes 96 KB, an unused compressor 5 KB, but one that compressed 64 KB at
    /// level 1 keeps 300 KB of tables (900 KB at level 6). Writers pay for creation as before.
    const KEEP_BYTES: usize = 128 << 10;

    struct Kept<T>(Vec<NonNull<T>>);
    // Safety: a zstd context has no thread affinity; a kept one has no other owner.
    unsafe impl<T> Send for Kept<T> {}

    static CCTX: Mutex<Kept<zstd_sys::ZSTD_CCtx>> = Mutex::new(Kept(Vec::new()));
    /// Working compression contexts, tables and all: about as many are in use at once as
    /// threads compress, so a few are kept, up to `KEEP_WORKING_BYTES` each (level 6 on a
    /// 1 MB page takes ~3 MB).
    static WORKING: Mutex<Kept<zstd_sys::ZSTD_CCtx>> = Mutex::new(Kept(Vec::new()));
    const KEEP_WORKING: usize = 4;
    const KEEP_WORKING_BYTES: usize = 8 << 20;
    static DCTX: Mutex<Kept<zstd_sys::ZSTD_DCtx>> = Mutex::new(Kept(Vec::new()));

    fn take<T>(kept: &Mutex<Kept<T>>) -> Option<NonNull<T>> {
        kept.lock().ok()?.0.pop()
    }

    fn put<T>(kept: &Mutex<Kept<T>>, ctx: NonNull<T>, keep: usize) -> bool {
        match kept.lock() {
            Ok(mut k) if k.0.len() < keep => {
                k.0.push(ctx);
                true
            }
            _ => false,
        }
    }

    fn len<T>(kept: &Mutex<Kept<T>>) -> usize {
        kept.lock().map_or(0, |k| k.0.len())
    }

    /// A kept compression context, reset to defaults, if there is one.
    pub(crate) fn take_cctx() -> Option<NonNull<zstd_sys::ZSTD_CCtx>> {
        take(&CCTX)
    }

    /// A kept decompression context, reset to defaults, if there is one.
    pub(crate) fn take_dctx() -> Option<NonNull<zstd_sys::ZSTD_DCtx>> {
        take(&DCTX)
    }

    /// Resets `ctx` and keeps it; `false` when it is not kept and the caller must free it.
    pub(crate) fn keep_cctx(ctx: NonNull<zstd_sys::ZSTD_CCtx>) -> bool {
        keep_compressor(&CCTX, ctx, KEEP, KEEP_BYTES)
    }

    /// Resets `ctx` and keeps it in `kept` (at most `keep` of them) if it takes no more than
    /// `max_bytes`; `false` when it is not kept and the caller must free it.
    fn keep_compressor(
        kept: &Mutex<Kept<zstd_sys::ZSTD_CCtx>>,
        ctx: NonNull<zstd_sys::ZSTD_CCtx>,
        keep: usize,
        max_bytes: usize,
    ) -> bool {
        // Safety: the caller owns `ctx` and gives it up when this returns true.
        let reusable = unsafe {
            let reset = zstd_sys::ZSTD_CCtx_reset(
                ctx.as_ptr(),
                zstd_sys::ZSTD_ResetDirective::ZSTD_reset_session_and_parameters,
            );
            zstd_sys::ZSTD_isError(reset) == 0
                && zstd_sys::ZSTD_sizeof_CCtx(ctx.as_ptr()) <= max_bytes
        };
        reusable && put(kept, ctx, keep)
    }

    /// Resets `ctx` and keeps it; `false` when it is not kept and the caller must free it.
    pub(crate) fn keep_dctx(ctx: NonNull<zstd_sys::ZSTD_DCtx>) -> bool {
        // Safety: as for `keep_cctx`.
        let reusable = unsafe {
            let reset = zstd_sys::ZSTD_DCtx_reset(
                ctx.as_ptr(),
                zstd_sys::ZSTD_ResetDirective::ZSTD_reset_session_and_parameters,
            );
            zstd_sys::ZSTD_isError(reset) == 0
                && zstd_sys::ZSTD_sizeof_DCtx(ctx.as_ptr()) <= KEEP_BYTES
        };
        reusable && put(&DCTX, ctx, KEEP)
    }

    pub(crate) fn kept() -> (usize, usize) {
        (len(&CCTX), len(&DCTX))
    }

    pub(crate) fn kept_working() -> usize {
        len(&WORKING)
    }

    /// A kept working compression context, reset to defaults, if there is one.
    pub(crate) fn take_working() -> Option<NonNull<zstd_sys::ZSTD_CCtx>> {
        take(&WORKING)
    }

    /// Resets a working context and keeps it, tables and all; `false` when it is not kept
    /// (too many kept, or grown too big) and the caller must free it.
    pub(crate) fn keep_working(ctx: NonNull<zstd_sys::ZSTD_CCtx>) -> bool {
        keep_compressor(&WORKING, ctx, KEEP_WORKING, KEEP_WORKING_BYTES)
    }
}

/// Without `std` there is no `Mutex`: every context is created and freed as before.
#[cfg(not(feature = "std"))]
mod imp {
    use core::ptr::NonNull;

    pub(crate) fn take_cctx() -> Option<NonNull<zstd_sys::ZSTD_CCtx>> {
        None
    }
    pub(crate) fn take_dctx() -> Option<NonNull<zstd_sys::ZSTD_DCtx>> {
        None
    }
    pub(crate) fn keep_cctx(_: NonNull<zstd_sys::ZSTD_CCtx>) -> bool {
        false
    }
    pub(crate) fn keep_dctx(_: NonNull<zstd_sys::ZSTD_DCtx>) -> bool {
        false
    }
    pub(crate) fn kept() -> (usize, usize) {
        (0, 0)
    }
    pub(crate) fn kept_working() -> usize {
        0
    }
    pub(crate) fn take_working() -> Option<NonNull<zstd_sys::ZSTD_CCtx>> {
        None
    }
    pub(crate) fn keep_working(_: NonNull<zstd_sys::ZSTD_CCtx>) -> bool {
        false
    }
}

pub(crate) use imp::*;

/// Runs `compress` on a working compression context set to `level`, then gives the context
/// back (kept for the next call when the pool takes it, else freed).
pub(crate) fn with_compressor(
    level: core::ffi::c_int,
    compress: impl FnOnce(*mut zstd_sys::ZSTD_CCtx) -> crate::SafeResult,
) -> crate::SafeResult {
    // Safety: a kept context has no other owner; one created here is owned until kept or
    // freed below.
    let ctx = match take_working() {
        Some(ctx) => ctx,
        None => core::ptr::NonNull::new(unsafe { zstd_sys::ZSTD_createCCtx() })
            .ok_or(crate::MEMORY_ALLOCATION_ERROR)?,
    };
    let set = crate::parse_code(unsafe {
        zstd_sys::ZSTD_CCtx_setParameter(
            ctx.as_ptr(),
            zstd_sys::ZSTD_cParameter::ZSTD_c_compressionLevel,
            level,
        )
    });
    let res = set.and_then(|_| compress(ctx.as_ptr()));
    // A failed call leaves the frame unfinished: `keep_working` resets it, and freeing ends it.
    if !keep_working(ctx) {
        unsafe { zstd_sys::ZSTD_freeCCtx(ctx.as_ptr()) };
    }
    res
}
