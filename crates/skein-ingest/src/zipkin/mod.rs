//! Zipkin receivers: `POST /api/v2/spans` (JSON v2, proto3) and `/api/v1/spans` (JSON v1).
