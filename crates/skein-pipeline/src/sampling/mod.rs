//! Remote sampling for SDKs: the strategies each service is told to use (Jaeger's remote
//! sampling protocol), loaded from a strategies file and reloaded when that file changes.
//! The endpoints that serve them live in `skein-api` (`sampling`).

mod adaptive;
/// Head (ingest) sampling: consistent probability, sampled flag, per-service rate limit.
pub mod head;
pub mod policies;
mod store;
mod strategies;
pub mod tail;

pub use adaptive::{Adaptive, AdaptiveConfig, RootSpanCounter, MAX_TRACKED_OPERATIONS};
pub use store::StrategyStore;
pub use strategies::*;

#[cfg(test)]
mod tests;
