//! Protocol receivers. Each protocol folder decodes its wire format into the one model and
//! hands it to the pipeline; nothing past this crate knows which protocol a span came from.

pub mod arriving;
pub mod body;
mod grpc;
pub use grpc::receive_budget;
pub mod http;
pub mod jaeger;
pub mod otlp;
pub mod refusals;
pub mod zipkin;
