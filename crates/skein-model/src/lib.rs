//! The one span model. Every protocol is translated to and from these types at the edge
//! (ingest or api), exactly once.

pub mod hex;
pub mod jaeger;
mod key;
pub mod metrics;
pub mod otlp;
mod span;
pub mod units;
pub mod zipkin;

pub use key::{Key, MAX_INTERNED_BYTES, MAX_INTERNED_KEYS};
pub use span::*;
