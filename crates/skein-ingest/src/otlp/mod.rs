//! OTLP/gRPC (`TraceService/Export`) and OTLP/HTTP (`POST /v1/traces`) trace receivers.

pub mod config;
pub mod grpc;
pub mod http;

pub use config::OtlpConfig;
