//! Jaeger gRPC query APIs on 16685: `jaeger.api_v2.QueryService` (Jaeger UI, Grafana's Jaeger
//! data source in gRPC mode) and `jaeger.api_v3.QueryService` (OTLP traces).
//!
//! No protoc: the messages are hand-written prost structs with jaeger-idl's field numbers, and
//! each service is a small `tower::Service` over `tonic::server::Grpc` (see `server`).

pub mod server;
pub mod v2;
pub mod v3;
