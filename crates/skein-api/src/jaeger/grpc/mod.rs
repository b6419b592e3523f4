//! Jaeger gRPC query APIs: `jaeger.api_v2.QueryService` and `jaeger.api_v3.QueryService` (16685).
