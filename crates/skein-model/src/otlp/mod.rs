//! OTLP codecs: protobuf (`wire_decode` reads it straight into the model, `wire` writes it;
//! `proto` converts the generated structs), also the WAL's record format; and the OTLP JSON
//! mapping (`json`).

pub mod json;
pub mod proto;
pub mod wire;
pub mod wire_decode;

pub use opentelemetry_proto::tonic as pb;
