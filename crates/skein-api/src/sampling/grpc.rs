//! `jaeger.api_v2.SamplingManager/GetSamplingStrategy` on tonic, written by hand (no protoc).
//! Messages follow jaeger-idl `proto/api_v2/sampling.proto` field for field.

use std::sync::Arc;
use std::task::{Context, Poll};

use skein_model::metrics::{self, Counter};
use skein_pipeline::sampling::{StrategyResponse, StrategyStore};
use std::convert::Infallible;

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;

use crate::jaeger::grpc::server::{self, BoxFuture};

pub const GET_SAMPLING_STRATEGY_PATH: &str = "/jaeger.api_v2.SamplingManager/GetSamplingStrategy";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SamplingStrategyType {
    Probabilistic = 0,
    RateLimiting = 1,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProbabilisticSamplingStrategy {
    #[prost(double, tag = "1")]
    pub sampling_rate: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitingSamplingStrategy {
    #[prost(int32, tag = "1")]
    pub max_traces_per_second: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperationSamplingStrategy {
    #[prost(string, tag = "1")]
    pub operation: String,
    #[prost(message, optional, tag = "2")]
    pub probabilistic_sampling: Option<ProbabilisticSamplingStrategy>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PerOperationSamplingStrategies {
    #[prost(double, tag = "1")]
    pub default_sampling_probability: f64,
    #[prost(double, tag = "2")]
    pub default_lower_bound_traces_per_second: f64,
    #[prost(message, repeated, tag = "3")]
    pub per_operation_strategies: Vec<OperationSamplingStrategy>,
    #[prost(double, tag = "4")]
    pub default_upper_bound_traces_per_second: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingStrategyResponse {
    #[prost(enumeration = "SamplingStrategyType", tag = "1")]
    pub strategy_type: i32,
    #[prost(message, optional, tag = "2")]
    pub probabilistic_sampling: Option<ProbabilisticSamplingStrategy>,
    #[prost(message, optional, tag = "3")]
    pub rate_limiting_sampling: Option<RateLimitingSamplingStrategy>,
    #[prost(message, optional, tag = "4")]
    pub operation_sampling: Option<PerOperationSamplingStrategies>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingStrategyParameters {
    #[prost(string, tag = "1")]
    pub service_name: String,
}

impl From<&StrategyResponse> for SamplingStrategyResponse {
    fn from(r: &StrategyResponse) -> Self {
        SamplingStrategyResponse {
            strategy_type: r.strategy_type.number(),
            probabilistic_sampling: r
                .probabilistic_sampling
                .as_ref()
                .map(|p| ProbabilisticSamplingStrategy {
                    sampling_rate: p.sampling_rate,
                }),
            rate_limiting_sampling: r.rate_limiting_sampling.as_ref().map(|l| RateLimitingSamplingStrategy {
                max_traces_per_second: l.max_traces_per_second,
            }),
            operation_sampling: r.operation_sampling.as_ref().map(|o| PerOperationSamplingStrategies {
                default_sampling_probability: o.default_sampling_probability,
                default_lower_bound_traces_per_second: o.default_lower_bound_traces_per_second,
                per_operation_strategies: o
                    .per_operation_strategies
                    .iter()
                    .map(|s| OperationSamplingStrategy {
                        operation: s.operation.clone(),
                        probabilistic_sampling: Some(ProbabilisticSamplingStrategy {
                            sampling_rate: s.probabilistic_sampling.sampling_rate,
                        }),
                    })
                    .collect(),
                default_upper_bound_traces_per_second: o.default_upper_bound_traces_per_second,
            }),
        }
    }
}

struct Inner {
    store: Arc<StrategyStore>,
    requests: Counter,
    bad_requests: Counter,
}

/// The gRPC service; add it to the `tonic::transport::Server` on the Jaeger collector port.
#[derive(Clone)]
pub struct SamplingManagerServer(Arc<Inner>);

pub fn service(store: Arc<StrategyStore>) -> SamplingManagerServer {
    let name = "skein_sampling_requests_total";
    let help = "Remote sampling strategy requests, by endpoint and outcome";
    SamplingManagerServer(Arc::new(Inner {
        store,
        requests: metrics::counter(name, help, &[("endpoint", "grpc"), ("outcome", "ok")]),
        bad_requests: metrics::counter(name, help, &[("endpoint", "grpc"), ("outcome", "bad_request")]),
    }))
}

impl NamedService for SamplingManagerServer {
    const NAME: &'static str = "jaeger.api_v2.SamplingManager";
}

async fn get_sampling_strategy(
    inner: Arc<Inner>,
    request: SamplingStrategyParameters,
) -> Result<SamplingStrategyResponse, Status> {
    let service = request.service_name;
    if service.is_empty() {
        inner.bad_requests.inc();
        return Err(Status::invalid_argument("service_name is required"));
    }
    inner.requests.inc();
    Ok((&inner.store.strategy_for(&service)).into())
}

impl tower::Service<http::Request<Body>> for SamplingManagerServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == GET_SAMPLING_STRATEGY_PATH {
            server::unary(self.0.clone(), req, get_sampling_strategy)
        } else {
            server::unimplemented(req.uri().path())
        }
    }
}
