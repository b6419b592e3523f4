//! The head: recent spans in memory, queryable as soon as they are durable.
//!
//! The head is a list of immutable chunks (one per group commit) plus an index from trace id
//! to span positions. Readers clone the chunk list (a few `Arc`s) and scan without holding a
//! lock, so a long search never stalls ingest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use skein_model::{Span, TraceId};

#[derive(Debug)]
pub struct Head {
    pub chunks: Vec<Arc<Vec<Span>>>,
    index: HashMap<TraceId, Vec<(u32, u32)>>,
    pub spans: usize,
    pub bytes: usize,
    pub created: Instant,
    pub min_start: u64,
    pub max_end: u64,
    /// WAL segments whose records are all in this head (the block cut from it covers them).
    pub wal_segments: Vec<u64>,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            chunks: Vec::new(),
            index: HashMap::new(),
            spans: 0,
            bytes: 0,
            created: Instant::now(),
            min_start: u64::MAX,
            max_end: 0,
            wal_segments: Vec::new(),
        }
    }
}

impl Head {
    pub fn insert(&mut self, spans: Vec<Span>) {
        let heap_bytes = skein_model::spans_heap_size(&spans);
        self.insert_measured(spans, heap_bytes);
    }

    /// Like `insert`, for spans whose `heap_size` the caller summed already.
    pub fn insert_measured(&mut self, spans: Vec<Span>, heap_bytes: usize) {
        if spans.is_empty() {
            return;
        }
        let chunk_idx = self.chunks.len() as u32;
        self.bytes += heap_bytes;
        for (i, s) in spans.iter().enumerate() {
            self.index.entry(s.trace_id).or_default().push((chunk_idx, i as u32));
            self.min_start = self.min_start.min(s.start_unix_nano);
            self.max_end = self.max_end.max(s.end_unix_nano);
        }
        self.spans += spans.len();
        self.chunks.push(Arc::new(spans));
    }

    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    pub fn trace_count(&self) -> usize {
        self.index.len()
    }

    pub fn spans_in_trace(&self, id: &TraceId) -> usize {
        self.index.get(id).map_or(0, Vec::len)
    }

    pub fn trace(&self, id: &TraceId) -> Vec<Span> {
        self.index
            .get(id)
            .map(|pos| {
                pos.iter()
                    .map(|(c, i)| self.chunks[*c as usize][*i as usize].clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn all_spans(&self) -> impl Iterator<Item = &Span> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

/// A read-only view of a head (active or frozen) taken at one moment.
#[derive(Clone, Debug)]
pub struct HeadView {
    pub chunks: Vec<Arc<Vec<Span>>>,
    pub min_start: u64,
    pub max_end: u64,
}

impl HeadView {
    pub fn of(head: &Head) -> HeadView {
        HeadView {
            chunks: head.chunks.clone(),
            min_start: head.min_start,
            max_end: head.max_end,
        }
    }
    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}
