//! Jaeger codecs: thrift (binary, compact) and protobuf (api_v2 model) to and from the one model.
