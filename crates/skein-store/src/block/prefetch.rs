//! Software prefetch for walking spans in trace-id order. A block lists its spans sorted by
//! trace id, an order unrelated to where the head's spans lie in memory, so each span's
//! struct, attribute list, strings and events are cache misses, one after the other (a load
//! depends on the pointer the previous one read). Asking for them a few spans ahead lets the
//! misses of several spans overlap: in `cargo bench --bench block -- "block stages"`,
//! converting 100,000 sorted spans to Arrow took 112 ms without it and 77–83 ms with it, about
//! as long as converting them in the order they were made (docs/benchmarks.md, "Prefetching
//! the head's spans").

use skein_model::{AnyValue, Span};

/// How many spans ahead each stage asks for: the struct first, then what it points to, then
/// what the attribute list points to. Each stage's loads land before the next stage reads them.
const STRUCT_AHEAD: usize = 12;
const PARTS_AHEAD: usize = 8;
const VALUES_AHEAD: usize = 4;

/// The spans of `spans` in order, each span's memory asked for a few spans before it is
/// yielded.
pub(crate) fn walk<'a>(spans: &'a [&'a Span]) -> impl Iterator<Item = &'a Span> + 'a {
    spans.iter().enumerate().map(|(i, s)| {
        ahead_of(spans, i);
        *s
    })
}

/// Asks for the memory of the spans that come some way after index `i`.
#[inline]
fn ahead_of(spans: &[&Span], i: usize) {
    if let Some(s) = spans.get(i + STRUCT_AHEAD) {
        lines(*s as *const Span as *const u8, std::mem::size_of::<Span>());
    }
    if let Some(s) = spans.get(i + PARTS_AHEAD) {
        lines(
            s.attributes.as_ptr() as *const u8,
            std::mem::size_of_val(s.attributes.as_slice()),
        );
        lines(
            s.events.as_ptr() as *const u8,
            std::mem::size_of_val(s.events.as_slice()),
        );
        line(s.name.as_ptr());
    }
    if let Some(s) = spans.get(i + VALUES_AHEAD) {
        for kv in &s.attributes {
            if let AnyValue::String(v) = &kv.value {
                line(v.as_ptr());
            }
        }
        for e in &s.events {
            line(e.name.as_ptr());
            lines(
                e.attributes.as_ptr() as *const u8,
                std::mem::size_of_val(e.attributes.as_slice()),
            );
        }
    }
}

/// Asks for every cache line of `len` bytes at `p` (at most a few: longer lists are rare, and
/// the first lines are what the walk reads first).
#[inline]
fn lines(p: *const u8, len: usize) {
    const LINE: usize = 64;
    const MAX_LINES: usize = 16;
    for k in 0..len.div_ceil(LINE).min(MAX_LINES) {
        line(p.wrapping_add(k * LINE));
    }
}

#[inline]
fn line(p: *const u8) {
    // SAFETY: a prefetch is a hint. It never faults and changes nothing the program can
    // observe, whatever the address (a dangling one of an empty list included); SSE, which it
    // needs, is part of every x86_64 CPU.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
