//! Zipkin query API v2 (served on the Zipkin port beside ingest).
