//! Parquet footers of recently read block files, kept up to a memory budget. A footer with its
//! page locations takes megabytes for a block of a million spans, and parsing it again costs
//! more than the trace lookup that needs it; keeping every footer read grows with the store
//! (1.3 GB for 100 million spans), so the least recently used ones are dropped.

use std::collections::HashMap;
use std::sync::Mutex;

use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use skein_model::metrics::{self, Gauge};

/// (block id, file name)
type Key = (String, &'static str);

pub struct FooterCache {
    budget: usize,
    inner: Mutex<Lru>,
    kept: Gauge,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Key, Entry>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    footer: ArrowReaderMetadata,
    bytes: usize,
    used: u64,
}

impl FooterCache {
    pub fn new(budget: usize) -> FooterCache {
        FooterCache {
            budget,
            inner: Mutex::new(Lru::default()),
            kept: metrics::gauge(
                "skein_footer_cache_bytes",
                "Memory of the block footers kept for queries (store.footer_cache_bytes bounds it)",
                &[],
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic elsewhere cannot leave the map inconsistent: every update is one step.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, block: &str, file: &'static str) -> Option<ArrowReaderMetadata> {
        let mut lru = self.lock();
        lru.clock += 1;
        let now = lru.clock;
        let e = lru.entries.get_mut(&(block.to_string(), file))?;
        e.used = now;
        Some(e.footer.clone())
    }

    /// Keeps `footer`, dropping the least recently used ones past the budget. A footer larger
    /// than the whole budget is not kept.
    pub fn insert(&self, block: &str, file: &'static str, footer: ArrowReaderMetadata) {
        let bytes = footer.metadata().memory_size();
        if bytes > self.budget {
            return;
        }
        let mut lru = self.lock();
        lru.clock += 1;
        let used = lru.clock;
        if let Some(old) = lru
            .entries
            .insert((block.to_string(), file), Entry { footer, bytes, used })
        {
            lru.bytes -= old.bytes;
        }
        lru.bytes += bytes;
        tracing::debug!(block, file, bytes, kept = lru.bytes, "footer cached");
        while lru.bytes > self.budget {
            // Linear in the entries, which number in the hundreds; runs only on a miss.
            let Some(oldest) = lru.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(e) = lru.entries.remove(&oldest) {
                lru.bytes -= e.bytes;
            }
        }
        self.kept.set(lru.bytes as i64);
    }

    /// Forgets a block's footers (it was compacted away or expired).
    pub fn remove_block(&self, block: &str) {
        let mut lru = self.lock();
        let gone: Vec<Key> = lru.entries.keys().filter(|(b, _)| b == block).cloned().collect();
        for k in gone {
            if let Some(e) = lru.entries.remove(&k) {
                lru.bytes -= e.bytes;
            }
        }
        self.kept.set(lru.bytes as i64);
    }

    /// Bytes of footers kept now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}
