//! `jaeger.api_v2.QueryService` over gRPC: the protocol of the Jaeger UI's query backend and of
//! Grafana's Jaeger data source in gRPC mode. Spans are the api_v2 model messages of
//! `skein_model::jaeger::proto`, each with its process embedded (as jaeger-query sends them).
//!
//! Messages follow jaeger-idl `proto/api_v2/query.proto` (field numbers from there).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::StreamExt;
use prost::Message;
use skein_model::jaeger::proto::{span_from_model, DependencyLink, Span};
use skein_model::TraceId;
use skein_query::{Asked, QueryEngine};
use tonic::body::Body;
use tonic::Status;

use super::server::{
    self, chunk_by_size, duration_ns, internal, search_depth, timestamp_ns, BoxFuture, Noted, Timestamp,
};
use super::v3::{dependency_window, operations};
use crate::jaeger::incomplete_note;
use crate::jaeger::v3::V3Search;

pub const SERVICE_NAME: &str = "jaeger.api_v2.QueryService";

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetTraceRequest {
    /// 16 bytes (8 accepted: a 64-bit id).
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    pub end_time: Option<Timestamp>,
    #[prost(bool, tag = "4")]
    pub raw_traces: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SpansResponseChunk {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArchiveTraceRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    pub end_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArchiveTraceResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceQueryParameters {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(string, tag = "2")]
    pub operation_name: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub tags: BTreeMap<String, String>,
    #[prost(message, optional, tag = "4")]
    pub start_time_min: Option<Timestamp>,
    #[prost(message, optional, tag = "5")]
    pub start_time_max: Option<Timestamp>,
    #[prost(message, optional, tag = "6")]
    pub duration_min: Option<server::Duration>,
    #[prost(message, optional, tag = "7")]
    pub duration_max: Option<server::Duration>,
    #[prost(int32, tag = "8")]
    pub search_depth: i32,
    #[prost(bool, tag = "9")]
    pub raw_traces: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FindTracesRequest {
    #[prost(message, optional, tag = "1")]
    pub query: Option<TraceQueryParameters>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetServicesRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetServicesResponse {
    #[prost(string, repeated, tag = "1")]
    pub services: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOperationsRequest {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub span_kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub span_kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetOperationsResponse {
    /// Deprecated upstream (`operationNames`), still read by older UIs: the distinct names.
    #[prost(string, repeated, tag = "1")]
    pub operation_names: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub operations: Vec<Operation>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetDependenciesRequest {
    #[prost(message, optional, tag = "1")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "2")]
    pub end_time: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetDependenciesResponse {
    #[prost(message, repeated, tag = "1")]
    pub dependencies: Vec<DependencyLink>,
}

/// The tower service for `jaeger.api_v2.QueryService`.
#[derive(Clone)]
pub struct QueryServiceV2 {
    engine: QueryEngine,
}

impl QueryServiceV2 {
    pub fn new(engine: QueryEngine) -> Self {
        QueryServiceV2 { engine }
    }
}

impl tonic::server::NamedService for QueryServiceV2 {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for QueryServiceV2 {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let q = self.engine.clone();
        match req.uri().path().strip_prefix("/jaeger.api_v2.QueryService/") {
            Some("GetTrace") => server::server_streaming(q, req, get_trace),
            Some("FindTraces") => server::server_streaming(q, req, find_traces),
            Some("ArchiveTrace") => server::unary(q, req, archive_trace),
            Some("GetServices") => server::unary(q, req, get_services),
            Some("GetOperations") => server::unary(q, req, get_operations),
            Some("GetDependencies") => server::unary_noted(q, req, get_dependencies),
            _ => server::unimplemented(req.uri().path()),
        }
    }
}

/// A 16-byte trace id, or an 8-byte (64-bit) one left-padded with zeros.
pub fn trace_id_of(bytes: &[u8]) -> Result<TraceId, Status> {
    let mut id = [0u8; 16];
    match bytes.len() {
        16 => id.copy_from_slice(bytes),
        8 => id[8..].copy_from_slice(bytes),
        n => {
            return Err(Status::invalid_argument(format!(
                "trace_id must be 16 bytes (or 8 for a 64-bit id), got {n}"
            )))
        }
    }
    crate::jaeger::http::not_all_zeros(id, &skein_model::hex::encode(&id)).map_err(Status::invalid_argument)
}

/// A trace as response chunks, each under the chunk byte budget.
fn span_chunks(spans: &[skein_model::Span]) -> Vec<SpansResponseChunk> {
    let converted: Vec<Span> = spans.iter().map(span_from_model).collect();
    chunk_by_size(converted, |s| s.encoded_len())
        .into_iter()
        .map(|spans| SpansResponseChunk { spans })
        .collect()
}

async fn get_trace(q: QueryEngine, req: GetTraceRequest) -> Result<Noted<SpansResponseChunk>, Status> {
    let id = trace_id_of(&req.trace_id)?;
    let spans = q.trace(&id).await.map_err(internal)?;
    if spans.is_empty() {
        return Err(server::trace_not_found(&q, &id));
    }
    let note = incomplete_note(&q, Asked::Trace(&id));
    Ok((
        futures::stream::iter(span_chunks(&spans).into_iter().map(Ok)).boxed(),
        note,
    ))
}

/// skein keeps every trace until retention removes it, so there is no separate archive to copy
/// into: archiving succeeds when the trace exists (and says NOT_FOUND when it does not).
async fn archive_trace(q: QueryEngine, req: ArchiveTraceRequest) -> Result<ArchiveTraceResponse, Status> {
    let id = trace_id_of(&req.trace_id)?;
    let spans = q.trace(&id).await.map_err(internal)?;
    if spans.is_empty() {
        return Err(server::trace_not_found(&q, &id));
    }
    Ok(ArchiveTraceResponse {})
}

/// api_v2 `TraceQueryParameters` as a search. Unlike api_v3, the time window is optional here
/// (jaeger-query does not require it): an absent bound is open.
pub fn search_of(p: Option<TraceQueryParameters>) -> Result<skein_query::TraceQuery, Status> {
    let p = p.ok_or_else(|| Status::invalid_argument("query is required"))?;
    let search = V3Search {
        service: Some(p.service_name),
        operation: Some(p.operation_name),
        span_kind: None,
        attributes: p.tags.into_iter().collect(),
        start_min: Some(timestamp_ns(p.start_time_min, "query.start_time_min")?.unwrap_or(0)),
        start_max: Some(timestamp_ns(p.start_time_max, "query.start_time_max")?.unwrap_or(u64::MAX)),
        duration_min_nano: duration_ns(p.duration_min, "query.duration_min")?,
        duration_max_nano: duration_ns(p.duration_max, "query.duration_max")?,
        search_depth: search_depth(p.search_depth, "query.search_depth")?,
    };
    search.into_query().map_err(Status::invalid_argument)
}

async fn find_traces(q: QueryEngine, req: FindTracesRequest) -> Result<Noted<SpansResponseChunk>, Status> {
    let query = search_of(req.query)?;
    let query = q
        .within_max_traces(query, "query.search_depth")
        .map_err(Status::invalid_argument)?;
    let hits = q.search(&query).await.map_err(internal)?;
    let note = incomplete_note(&q, Asked::Search(&query));
    // One trace at a time: a big result never sits in memory whole.
    let stream = futures::stream::iter(hits)
        .then(move |hit| {
            let q = q.clone();
            async move { q.trace(&hit.trace_id).await.map_err(internal) }
        })
        .flat_map(|r| {
            let items: Vec<Result<SpansResponseChunk, Status>> = match r {
                Ok(spans) => span_chunks(&spans).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        });
    Ok((stream.boxed(), note))
}

async fn get_services(q: QueryEngine, _req: GetServicesRequest) -> Result<GetServicesResponse, Status> {
    Ok(GetServicesResponse { services: q.services() })
}

async fn get_operations(q: QueryEngine, req: GetOperationsRequest) -> Result<GetOperationsResponse, Status> {
    let ops = operations(&q, &req.service, &req.span_kind)?;
    let mut operation_names: Vec<String> = ops.iter().map(|o| o.name.clone()).collect();
    operation_names.dedup();
    Ok(GetOperationsResponse {
        operation_names,
        operations: ops
            .into_iter()
            .map(|o| Operation {
                name: o.name,
                span_kind: o.span_kind,
            })
            .collect(),
    })
}

async fn get_dependencies(
    q: QueryEngine,
    req: GetDependenciesRequest,
) -> Result<(GetDependenciesResponse, Option<String>), Status> {
    let (start, end) = dependency_window(req.start_time, req.end_time)?;
    let deps = q.dependencies(start, end).await.map_err(internal)?;
    let note = incomplete_note(&q, Asked::Window(start, end));
    let response = GetDependenciesResponse {
        dependencies: deps
            .into_iter()
            .map(|d| DependencyLink {
                parent: d.parent,
                child: d.child,
                call_count: d.call_count,
                source: String::new(),
            })
            .collect(),
    };
    Ok((response, note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use server::timestamp_from_nanos;

    #[test]
    fn trace_ids_of_both_widths() {
        let mut long = [0u8; 16];
        long[15] = 7;
        assert_eq!(trace_id_of(&long).unwrap(), long);
        assert_eq!(trace_id_of(&[0, 0, 0, 0, 0, 0, 0, 7]).unwrap(), long);
        let e = trace_id_of(&[1, 2, 3]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("trace_id"), "{}", e.message());
        assert!(trace_id_of(&[0; 16]).is_err());
    }

    #[test]
    fn open_time_window_and_defaults() {
        let q = search_of(Some(TraceQueryParameters {
            service_name: "svc".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!((q.start_min, q.start_max), (Some(0), Some(u64::MAX)));
        assert_eq!((q.service.as_deref(), q.operation, q.limit), (Some("svc"), None, 20));
        let e = search_of(Some(TraceQueryParameters {
            start_time_min: Some(timestamp_from_nanos(10_000_000_000)),
            start_time_max: Some(timestamp_from_nanos(5_000_000_000)),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(search_of(None).unwrap_err().message().contains("query"));
    }
}
