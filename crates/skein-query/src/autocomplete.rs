//! Attribute keys and values for autocompletion (Zipkin's `autocompleteKeys/Values`, the web
//! UI's search box), and a service's remote services.
//!
//! These look only at *recent* data, so they stay fast however big the store grows: the newest
//! [`RECENT_HEAD_SPANS`] spans of the in-memory heads, then the last [`RECENT_BLOCK_SPANS`]
//! rows of each of the [`RECENT_BLOCKS`] newest blocks. Keys or values seen only in older data
//! are not offered.

use std::collections::BTreeSet;

use skein_model::{AnyValue, Span};
use skein_store::block::read::batch_to_spans;

use crate::{QueryEngine, QueryError};

/// Head spans looked at, newest first.
pub const RECENT_HEAD_SPANS: usize = 100_000;
/// Newest blocks whose last rows are looked at...
pub const RECENT_BLOCKS: usize = 2;
/// ...and how many of their rows.
pub const RECENT_BLOCK_SPANS: usize = 16 * 1024;

impl QueryEngine {
    /// Calls `f` on recent spans (see the module doc for the bound), newest data first. Spans
    /// read from blocks carry no parent ids.
    pub async fn visit_recent_spans(&self, mut f: impl FnMut(&Span)) -> Result<(), QueryError> {
        let snap = self.store.snapshot();
        let mut seen = 0usize;
        // heads[0] is the active head; chunks are in arrival order, so walk them backwards.
        'heads: for h in &snap.heads {
            for chunk in h.chunks.iter().rev() {
                for s in chunk.iter().rev() {
                    if seen >= RECENT_HEAD_SPANS {
                        break 'heads;
                    }
                    seen += 1;
                    f(s);
                }
            }
        }
        let mut blocks: Vec<_> = snap.blocks.iter().collect();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.meta.max_end));
        for b in blocks.into_iter().take(RECENT_BLOCKS) {
            // Every column but the parent, which these spans' visitors do not need.
            let names = b.meta.layout().column_names();
            let cols: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|c| *c != skein_store::block::schema::PARENT_SPAN_ID)
                .collect();
            for batch in b.scan_last_rows(&cols, RECENT_BLOCK_SPANS).await? {
                for s in batch_to_spans(&batch)? {
                    f(&s);
                }
            }
        }
        Ok(())
    }

    /// Span and resource attribute keys of recent spans (of `service` when given), sorted.
    pub async fn attribute_keys(&self, service: Option<&str>) -> Result<Vec<String>, QueryError> {
        let mut keys: BTreeSet<String> = BTreeSet::new();
        self.visit_recent_spans(|s| {
            if service.is_some_and(|svc| s.service_name() != svc) {
                return;
            }
            for kv in s.attributes.iter().chain(s.resource.attributes.iter()) {
                if !keys.contains(kv.key.as_str()) {
                    keys.insert(kv.key.to_string());
                }
            }
        })
        .await?;
        Ok(keys.into_iter().collect())
    }

    /// Distinct values (as text) of attribute `key` on recent spans or their resources, sorted,
    /// at most `limit` (0 = no cap).
    pub async fn attribute_values(
        &self,
        key: &str,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, QueryError> {
        let mut values: BTreeSet<String> = BTreeSet::new();
        self.visit_recent_spans(|s| {
            if service.is_some_and(|svc| s.service_name() != svc) {
                return;
            }
            for kv in s.attributes.iter().chain(s.resource.attributes.iter()) {
                if kv.key == key && !matches!(kv.value, AnyValue::Empty) {
                    values.insert(kv.value.to_display_string());
                }
            }
        })
        .await?;
        let mut out: Vec<String> = values.into_iter().collect();
        if limit > 0 {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Services that recent spans of `service` call: their `peer.service` values (Zipkin's
    /// `remoteEndpoint.serviceName`), sorted.
    pub async fn remote_services(&self, service: &str) -> Result<Vec<String>, QueryError> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        self.visit_recent_spans(|s| {
            if s.service_name() != service {
                return;
            }
            if let Some(AnyValue::String(peer)) = skein_model::find_attr(&s.attributes, "peer.service") {
                if !peer.is_empty() && !out.contains(peer) {
                    out.insert(peer.clone());
                }
            }
        })
        .await?;
        Ok(out.into_iter().collect())
    }
}
