//! Jaeger receivers: thrift over HTTP (14268), UDP agent (6831 compact, 6832 binary), gRPC
//! collector (14250). All decode with `skein_model::jaeger` and hand the spans to the pipeline.
//!
//! Rejected spans: the good spans of a request are stored; if any span was rejected the answer
//! is an error naming the first bad span and how many were stored (HTTP 400, gRPC
//! INVALID_ARGUMENT), since neither Jaeger protocol has a partial-success reply.

pub mod agent;
pub mod grpc;
pub mod http;

use skein_pipeline::Outcome;

/// The error message for a request some of whose spans were rejected; `None` if all were stored.
fn rejection_message(outcome: &Outcome) -> Option<String> {
    outcome
        .message()
        .map(|m| format!("{m}; the other {} span(s) were stored", outcome.accepted))
}
