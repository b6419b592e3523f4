//! OTLP codecs: protobuf (`proto`, also the WAL's record format) and the OTLP JSON mapping
//! (`json`).

pub mod json;
pub mod proto;
pub mod wire;

pub use opentelemetry_proto::tonic as pb;
