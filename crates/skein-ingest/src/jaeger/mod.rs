//! Jaeger receivers: thrift over HTTP (14268), UDP agent (6831 compact, 6832 binary), gRPC collector (14250).
