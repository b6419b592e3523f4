//! `jaeger.api_v3.QueryService` over gRPC: traces as OTLP `TracesData`, the same search
//! semantics as the api_v3 HTTP gateway (`jaeger::v3`), whose parameter validation it shares.
//!
//! Messages follow jaeger-idl `proto/api_v3/query_service.proto` (field numbers from there).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::StreamExt;
use skein_model::otlp::pb::trace::v1::TracesData;
use skein_model::otlp::proto::encode_spans;
use skein_model::{Span, SpanKind};
use skein_query::{Asked, QueryEngine};
use tonic::body::Body;
use tonic::Status;

use super::server::{
    self, chunk_by_size, duration_ns, internal, search_depth, timestamp_ns, BoxFuture, Noted, Timestamp,
};
use crate::jaeger::http::parse_trace_id;
use crate::jaeger::incomplete_note;
use crate::jaeger::v3::{summary_of, V3Search};

pub const SERVICE_NAME: &str = "jaeger.api_v3.QueryService";

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetTraceRequest {
    /// Hex, 64- or 128-bit.
    #[prost(string, tag = "1")]
    pub trace_id: String,
    #[prost(message, optional, tag = "2")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "3")]
    pub end_time: Option<Timestamp>,
    #[prost(bool, tag = "4")]
    pub raw_traces: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceQueryParameters {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(string, tag = "2")]
    pub operation_name: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub attributes: BTreeMap<String, String>,
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
    /// `jaeger.expression.v1.Call`, experimental upstream. Kept as raw bytes only to refuse it:
    /// ignoring a predicate would answer with more traces than were asked for.
    #[prost(bytes = "vec", optional, tag = "10")]
    pub filter: Option<Vec<u8>>,
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
    #[prost(message, repeated, tag = "1")]
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
pub struct DependenciesResponse {
    #[prost(message, repeated, tag = "1")]
    pub dependencies: Vec<Dependency>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Dependency {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(string, tag = "2")]
    pub child: String,
    #[prost(uint64, tag = "3")]
    pub call_count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FindTraceSummariesRequest {
    #[prost(message, optional, tag = "1")]
    pub query: Option<TraceQueryParameters>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FindTraceSummariesResponse {
    #[prost(message, repeated, tag = "1")]
    pub summaries: Vec<TraceSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceSummary {
    #[prost(string, tag = "1")]
    pub trace_id: String,
    #[prost(string, tag = "2")]
    pub root_service_name: String,
    #[prost(string, tag = "3")]
    pub root_operation_name: String,
    #[prost(fixed64, tag = "4")]
    pub min_start_time_unix_nano: u64,
    #[prost(fixed64, tag = "5")]
    pub max_end_time_unix_nano: u64,
    #[prost(int32, tag = "6")]
    pub span_count: i32,
    #[prost(int32, tag = "7")]
    pub error_span_count: i32,
    #[prost(int32, tag = "8")]
    pub orphan_span_count: i32,
    #[prost(message, repeated, tag = "9")]
    pub services: Vec<ServiceSummary>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceSummary {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "2")]
    pub span_count: i32,
    #[prost(int32, tag = "3")]
    pub error_span_count: i32,
}

/// The tower service for `jaeger.api_v3.QueryService`.
#[derive(Clone)]
pub struct QueryServiceV3 {
    engine: QueryEngine,
}

impl QueryServiceV3 {
    pub fn new(engine: QueryEngine) -> Self {
        QueryServiceV3 { engine }
    }
}

impl tonic::server::NamedService for QueryServiceV3 {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for QueryServiceV3 {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let q = self.engine.clone();
        match req.uri().path().strip_prefix("/jaeger.api_v3.QueryService/") {
            Some("GetTrace") => server::server_streaming(q, req, get_trace),
            Some("FindTraces") => server::server_streaming(q, req, find_traces),
            Some("FindTraceSummaries") => server::server_streaming(q, req, find_trace_summaries),
            Some("GetServices") => server::unary(q, req, get_services),
            Some("GetOperations") => server::unary(q, req, get_operations),
            Some("GetDependencies") => server::unary_noted(q, req, get_dependencies),
            _ => server::unimplemented(req.uri().path()),
        }
    }
}

/// A trace as `TracesData` messages, each under the chunk byte budget.
fn traces_data_chunks(spans: Vec<Span>) -> Vec<TracesData> {
    chunk_by_size(spans, Span::heap_size)
        .into_iter()
        .map(|chunk| TracesData {
            resource_spans: encode_spans(chunk.iter()),
        })
        .collect()
}

async fn get_trace(q: QueryEngine, req: GetTraceRequest) -> Result<Noted<TracesData>, Status> {
    let id = parse_trace_id(&req.trace_id).map_err(|e| Status::invalid_argument(format!("trace_id: {e}")))?;
    let spans = q.trace(&id).await.map_err(internal)?;
    if spans.is_empty() {
        return Err(server::trace_not_found(&q, &id));
    }
    let note = incomplete_note(&q, Asked::Trace(&id));
    Ok((
        futures::stream::iter(traces_data_chunks(spans).into_iter().map(Ok)).boxed(),
        note,
    ))
}

/// Decodes `TraceQueryParameters` into the search the HTTP gateway would run.
pub fn search_of(p: Option<TraceQueryParameters>) -> Result<skein_query::TraceQuery, Status> {
    let p = p.ok_or_else(|| Status::invalid_argument("query is required"))?;
    if p.filter.is_some() {
        return Err(Status::invalid_argument(
            "query.filter (structured filters) is not supported; use service_name, operation_name, attributes and durations",
        ));
    }
    let search = V3Search {
        service: Some(p.service_name),
        operation: Some(p.operation_name),
        span_kind: None,
        attributes: p.attributes.into_iter().collect(),
        start_min: timestamp_ns(p.start_time_min, "query.start_time_min")?,
        start_max: timestamp_ns(p.start_time_max, "query.start_time_max")?,
        duration_min_nano: duration_ns(p.duration_min, "query.duration_min")?,
        duration_max_nano: duration_ns(p.duration_max, "query.duration_max")?,
        search_depth: search_depth(p.search_depth, "query.search_depth")?,
    };
    search.into_query().map_err(Status::invalid_argument)
}

async fn find_traces(q: QueryEngine, req: FindTracesRequest) -> Result<Noted<TracesData>, Status> {
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
            let items: Vec<Result<TracesData, Status>> = match r {
                Ok(spans) if spans.is_empty() => Vec::new(),
                Ok(spans) => traces_data_chunks(spans).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        });
    Ok((stream.boxed(), note))
}

async fn find_trace_summaries(
    q: QueryEngine,
    req: FindTraceSummariesRequest,
) -> Result<Noted<FindTraceSummariesResponse>, Status> {
    let query = search_of(req.query)?;
    let query = q
        .within_max_traces(query, "query.search_depth")
        .map_err(Status::invalid_argument)?;
    let traces = q.find_trace_outlines(&query).await.map_err(internal)?;
    let summaries = traces
        .iter()
        .map(|spans| {
            let s = summary_of(spans);
            TraceSummary {
                trace_id: s.trace_id,
                root_service_name: s.root_service,
                root_operation_name: s.root_name,
                min_start_time_unix_nano: s.start,
                max_end_time_unix_nano: s.end,
                span_count: s.span_count as i32,
                error_span_count: s.error_count as i32,
                orphan_span_count: s.orphan_count as i32,
                services: s
                    .services
                    .into_iter()
                    .map(|(name, spans, errors)| ServiceSummary {
                        name,
                        span_count: spans as i32,
                        error_span_count: errors as i32,
                    })
                    .collect(),
            }
        })
        .collect();
    let chunk = FindTraceSummariesResponse { summaries };
    let note = incomplete_note(&q, Asked::Search(&query));
    Ok((futures::stream::iter([Ok(chunk)]).boxed(), note))
}

async fn get_services(q: QueryEngine, _req: GetServicesRequest) -> Result<GetServicesResponse, Status> {
    Ok(GetServicesResponse { services: q.services() })
}

/// `span_kind` as Jaeger writes it (`server`, `client` …; empty when unspecified).
pub fn kind_name(k: SpanKind) -> String {
    if k == SpanKind::Unspecified {
        String::new()
    } else {
        k.as_jaeger().to_string()
    }
}

/// An optional `span_kind` request field: empty is "any".
pub fn parse_kind(s: &str) -> Result<Option<SpanKind>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    SpanKind::parse(s).map(Some).ok_or_else(|| {
        Status::invalid_argument(format!(
            "span_kind {s:?} is not a span kind (server, client, producer, consumer, internal)"
        ))
    })
}

pub fn operations(q: &QueryEngine, service: &str, span_kind: &str) -> Result<Vec<Operation>, Status> {
    if service.is_empty() {
        return Err(Status::invalid_argument("service is required"));
    }
    let kind = parse_kind(span_kind)?;
    Ok(q.operations(service, kind)
        .into_iter()
        .map(|(name, k)| Operation {
            name,
            span_kind: kind_name(k),
        })
        .collect())
}

async fn get_operations(q: QueryEngine, req: GetOperationsRequest) -> Result<GetOperationsResponse, Status> {
    Ok(GetOperationsResponse {
        operations: operations(&q, &req.service, &req.span_kind)?,
    })
}

/// The dependency window: `end` defaults to now and `start` to a day before it.
pub fn dependency_window(start: Option<Timestamp>, end: Option<Timestamp>) -> Result<(u64, u64), Status> {
    let end = timestamp_ns(end, "end_time")?.unwrap_or_else(skein_store::now_unix_nano);
    let start = timestamp_ns(start, "start_time")?.unwrap_or(end.saturating_sub(24 * 3600 * 1_000_000_000));
    if start > end {
        return Err(Status::invalid_argument("start_time is after end_time"));
    }
    Ok((start, end))
}

async fn get_dependencies(
    q: QueryEngine,
    req: GetDependenciesRequest,
) -> Result<(DependenciesResponse, Option<String>), Status> {
    let (start, end) = dependency_window(req.start_time, req.end_time)?;
    let deps = q.dependencies(start, end).await.map_err(internal)?;
    let note = incomplete_note(&q, Asked::Window(start, end));
    let response = DependenciesResponse {
        dependencies: deps
            .into_iter()
            .map(|d| Dependency {
                parent: d.parent,
                child: d.child,
                call_count: d.call_count,
            })
            .collect(),
    };
    Ok((response, note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use server::{duration_from_nanos, timestamp_from_nanos};

    fn params() -> TraceQueryParameters {
        TraceQueryParameters {
            service_name: "checkout".into(),
            start_time_min: Some(timestamp_from_nanos(1_000)),
            start_time_max: Some(timestamp_from_nanos(2_000_000_000)),
            ..Default::default()
        }
    }

    #[test]
    fn query_parameters_become_the_gateway_search() {
        let mut p = params();
        p.operation_name = "GET /cart".into();
        p.attributes.insert("http.response.status_code".into(), "500".into());
        p.duration_min = Some(duration_from_nanos(5_000_000));
        p.search_depth = 7;
        let q = search_of(Some(p)).unwrap();
        assert_eq!(q.service.as_deref(), Some("checkout"));
        assert_eq!(q.operation.as_deref(), Some("GET /cart"));
        assert_eq!(q.attributes, vec![("http.response.status_code".into(), "500".into())]);
        assert_eq!(q.min_duration_nano, Some(5_000_000));
        assert_eq!((q.start_min, q.start_max), (Some(1_000), Some(2_000_000_000)));
        assert_eq!(q.limit, 7);
        // Defaults: empty strings are no condition, depth 20.
        let q = search_of(Some(TraceQueryParameters {
            service_name: String::new(),
            ..params()
        }))
        .unwrap();
        assert_eq!((q.service, q.limit), (None, 20));
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let cases: Vec<(Option<TraceQueryParameters>, &str)> = vec![
            (None, "query is required"),
            (
                Some(TraceQueryParameters {
                    start_time_min: None,
                    ..params()
                }),
                "start_time_min",
            ),
            (
                Some(TraceQueryParameters {
                    start_time_min: Some(timestamp_from_nanos(5_000_000_000)),
                    ..params()
                }),
                "is after",
            ),
            (
                Some(TraceQueryParameters {
                    search_depth: -3,
                    ..params()
                }),
                "query.search_depth",
            ),
            (
                Some(TraceQueryParameters {
                    duration_min: Some(duration_from_nanos(10)),
                    duration_max: Some(duration_from_nanos(5)),
                    ..params()
                }),
                "duration_min",
            ),
            (
                Some(TraceQueryParameters {
                    filter: Some(vec![]),
                    ..params()
                }),
                "query.filter",
            ),
        ];
        for (p, want) in cases {
            let e = search_of(p).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(want), "{want:?} not in {:?}", e.message());
        }
    }

    #[test]
    fn filter_field_is_seen_even_when_empty() {
        // A client that sets `filter` to an empty Call still sends field 10 on the wire.
        let bytes = [0x52, 0x00];
        let p = TraceQueryParameters::decode(&bytes[..]).unwrap();
        assert_eq!(p.filter, Some(vec![]));
    }

    #[test]
    fn span_kinds_parse_and_print_like_jaeger() {
        assert_eq!(parse_kind("").unwrap(), None);
        assert_eq!(parse_kind("server").unwrap(), Some(SpanKind::Server));
        assert_eq!(parse_kind("SPAN_KIND_CLIENT").unwrap(), Some(SpanKind::Client));
        assert!(parse_kind("sideways").unwrap_err().message().contains("sideways"));
        assert_eq!(kind_name(SpanKind::Unspecified), "");
        assert_eq!(kind_name(SpanKind::Producer), "producer");
    }
}
