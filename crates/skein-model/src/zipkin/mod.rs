//! Zipkin codecs: JSON v2, JSON v1 and proto3 to and from the one model.
