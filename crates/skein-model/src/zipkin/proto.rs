//! Zipkin proto3 (`zipkin.proto3.ListOfSpans`), messages written by hand with field numbers
//! from zipkin-api's `zipkin.proto`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use prost::Message;

use super::{Endpoint, Kind, ZipkinError, ZipkinSpan};
use crate::{Decoded, SpanError};

#[derive(Clone, PartialEq, Message)]
pub struct ListOfSpans {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<PbSpan>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub parent_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub id: Vec<u8>,
    /// 0 unspecified, 1 CLIENT, 2 SERVER, 3 PRODUCER, 4 CONSUMER.
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(string, tag = "5")]
    pub name: String,
    #[prost(fixed64, tag = "6")]
    pub timestamp: u64,
    #[prost(uint64, tag = "7")]
    pub duration: u64,
    #[prost(message, optional, tag = "8")]
    pub local_endpoint: Option<PbEndpoint>,
    #[prost(message, optional, tag = "9")]
    pub remote_endpoint: Option<PbEndpoint>,
    #[prost(message, repeated, tag = "10")]
    pub annotations: Vec<PbAnnotation>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "12")]
    pub debug: bool,
    #[prost(bool, tag = "13")]
    pub shared: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbEndpoint {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub ipv4: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub ipv6: Vec<u8>,
    #[prost(int32, tag = "4")]
    pub port: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct PbAnnotation {
    #[prost(fixed64, tag = "1")]
    pub timestamp: u64,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Decodes a `POST /api/v2/spans` body sent as `application/x-protobuf`.
pub fn decode(body: &[u8]) -> Result<Decoded, ZipkinError> {
    let list = ListOfSpans::decode(body)?;
    let spans = list
        .spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| (i, span_from(s)))
        .collect();
    Ok(super::decoded_from(spans))
}

fn endpoint_from(e: PbEndpoint, which: &str) -> Result<Endpoint, SpanError> {
    let ipv4 = match e.ipv4.len() {
        0 => String::new(),
        4 => Ipv4Addr::from([e.ipv4[0], e.ipv4[1], e.ipv4[2], e.ipv4[3]]).to_string(),
        n => return Err(SpanError::Malformed(format!("{which}.ipv4 must be 4 bytes, got {n}"))),
    };
    let ipv6 = match <[u8; 16]>::try_from(e.ipv6.as_slice()) {
        _ if e.ipv6.is_empty() => String::new(),
        Ok(b) => Ipv6Addr::from(b).to_string(),
        Err(_) => {
            return Err(SpanError::Malformed(format!(
                "{which}.ipv6 must be 16 bytes, got {}",
                e.ipv6.len()
            )))
        }
    };
    let port = u16::try_from(e.port)
        .map_err(|_| SpanError::Malformed(format!("{which}.port {} is not a port number", e.port)))?;
    Ok(Endpoint {
        service_name: e.service_name,
        ipv4,
        ipv6,
        port,
    })
}

fn span_from(s: PbSpan) -> Result<ZipkinSpan, SpanError> {
    let trace_id = match s.trace_id.len() {
        8 | 16 => {
            let mut id = [0u8; 16];
            id[16 - s.trace_id.len()..].copy_from_slice(&s.trace_id);
            id
        }
        0 => return Err(SpanError::MissingField("trace_id")),
        n => return Err(SpanError::Malformed(format!("trace_id must be 8 or 16 bytes, got {n}"))),
    };
    if trace_id == [0; 16] {
        return Err(SpanError::ZeroTraceId);
    }
    let id: [u8; 8] = match s.id.len() {
        0 => return Err(SpanError::MissingField("id")),
        _ => {
            s.id.as_slice()
                .try_into()
                .map_err(|_| SpanError::SpanIdLength(s.id.len()))?
        }
    };
    if id == [0; 8] {
        return Err(SpanError::ZeroSpanId);
    }
    let parent_id = match s.parent_id.len() {
        0 => [0; 8],
        8 => s.parent_id.as_slice().try_into().unwrap_or([0; 8]),
        n => return Err(SpanError::ParentIdLength(n)),
    };
    let kind = match s.kind {
        0 => None,
        1 => Some(Kind::Client),
        2 => Some(Kind::Server),
        3 => Some(Kind::Producer),
        4 => Some(Kind::Consumer),
        k => return Err(SpanError::Kind(k)),
    };
    if s.timestamp == 0 {
        return Err(SpanError::MissingField("timestamp"));
    }
    Ok(ZipkinSpan {
        trace_id,
        parent_id,
        id,
        kind,
        name: s.name,
        timestamp_us: s.timestamp,
        duration_us: s.duration,
        local: s
            .local_endpoint
            .map(|e| endpoint_from(e, "local_endpoint"))
            .transpose()?,
        remote: s
            .remote_endpoint
            .map(|e| endpoint_from(e, "remote_endpoint"))
            .transpose()?,
        annotations: s.annotations.into_iter().map(|a| (a.timestamp, a.value)).collect(),
        tags: s.tags.into_iter().collect(),
        debug: s.debug,
        shared: s.shared,
    })
}
