//! Zipkin JSON v1 (`POST /api/v1/spans`): spans with endpoint-bearing `annotations` and
//! `binaryAnnotations`. Each v1 span becomes one or two v2 spans the way Zipkin's own v1
//! converter does it:
//!
//! * `cs`/`cr` make a CLIENT span, `sr`/`ss` a SERVER span, `ms` a PRODUCER, `mr` a CONSUMER;
//!   the endpoint of those annotations is the span's local endpoint and their timestamps give
//!   its start and duration. A v1 span holding both client and server sides becomes two spans,
//!   the server one `shared` (v1 always reused the span id across the RPC).
//! * A server-only v1 span with a parent and no `timestamp` is also `shared`: the client owned
//!   the span's timing, as in v1 reporting.
//! * `sa`/`ca`/`ma` binary annotations are the remote endpoint of the client, server and
//!   messaging span; `lc` (local component) is kept as a tag and its endpoint names the service
//!   of a local span.
//! * Other annotations and binary annotations go to the side whose service matches their
//!   endpoint, else to the first span.

use serde_json::{Map, Value};

use super::json_v2::{endpoint, ids, json_type, opt_bool, opt_str, opt_u64, tag_text};
use super::{Endpoint, Kind, ZipkinError, ZipkinSpan};
use crate::{Decoded, SpanError};

/// Decodes a `POST /api/v1/spans` JSON body.
pub fn decode(body: &[u8]) -> Result<Decoded, ZipkinError> {
    let items = match serde_json::from_slice::<Value>(body)? {
        Value::Array(items) => items,
        other => return Err(ZipkinError::NotArray(json_type(&other))),
    };
    let mut spans = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match convert(item) {
            Ok(converted) => spans.extend(converted.into_iter().map(|z| (i, Ok(z)))),
            Err(e) => spans.push((i, Err(e))),
        }
    }
    Ok(super::decoded_from(spans))
}

/// One side of an RPC (or the messaging/local span) being assembled.
#[derive(Default)]
struct Side {
    start: Option<u64>,
    end: Option<u64>,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
}

impl Side {
    fn present(&self) -> bool {
        self.start.is_some() || self.end.is_some()
    }
}

fn convert(v: &Value) -> Result<Vec<ZipkinSpan>, SpanError> {
    let o = v
        .as_object()
        .ok_or_else(|| SpanError::Malformed(format!("span must be a JSON object, got {}", json_type(v))))?;
    let (trace_id, id, parent_id) = ids(o)?;
    let timestamp = opt_u64(o, "timestamp")?;
    let duration = opt_u64(o, "duration")?;
    let (mut client, mut server, mut producer, mut consumer) =
        (Side::default(), Side::default(), Side::default(), Side::default());
    let mut plain: Vec<(u64, String, Option<Endpoint>)> = Vec::new();
    for a in array(o, "annotations")? {
        let a = object(a, "annotations")?;
        let ts = opt_u64(a, "timestamp")?.ok_or(SpanError::MissingField("annotations[].timestamp"))?;
        let value = opt_str(a, "value")?.unwrap_or_default();
        let ep = endpoint(a, "endpoint")?;
        let (side, is_start) = match value {
            "cs" => (&mut client, true),
            "cr" => (&mut client, false),
            "sr" => (&mut server, true),
            "ss" => (&mut server, false),
            "ms" => (&mut producer, true),
            "mr" => (&mut consumer, true),
            _ => {
                plain.push((ts, value.to_string(), ep));
                continue;
            }
        };
        if is_start {
            side.start = Some(ts);
        } else {
            side.end = Some(ts);
        }
        if side.local.is_none() {
            side.local = ep;
        }
    }
    let mut tags: Vec<(String, String, Option<Endpoint>)> = Vec::new();
    let mut local_component: Option<Endpoint> = None;
    for b in array(o, "binaryAnnotations")? {
        let b = object(b, "binaryAnnotations")?;
        let key = opt_str(b, "key")?.unwrap_or_default();
        let value = b.get("value").map(tag_text).unwrap_or_default();
        let ep = endpoint(b, "endpoint")?;
        let address = value == "true" || value == "1";
        match key {
            "sa" if address => client.remote = ep,
            "ca" if address => server.remote = ep,
            "ma" if address => {
                producer.remote = ep.clone();
                consumer.remote = ep;
            }
            _ => {
                if key == "lc" {
                    local_component = ep.clone();
                }
                tags.push((key.to_string(), value, ep));
            }
        }
    }
    let name = opt_str(o, "name")?.unwrap_or_default().to_string();
    let debug = opt_bool(o, "debug")?;
    let base = ZipkinSpan {
        trace_id,
        parent_id,
        id,
        name,
        debug,
        ..ZipkinSpan::default()
    };
    let both_rpc_sides = client.present() && server.present();
    let mut out = Vec::new();
    for (side, kind) in [
        (client, Kind::Client),
        (server, Kind::Server),
        (producer, Kind::Producer),
        (consumer, Kind::Consumer),
    ] {
        if !side.present() {
            continue;
        }
        let start = side.start.or(timestamp).or(side.end);
        let duration_us = match (side.start, side.end) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ if !both_rpc_sides => duration.unwrap_or(0),
            _ => 0,
        };
        let shared = kind == Kind::Server && (both_rpc_sides || (timestamp.is_none() && parent_id != [0; 8]));
        out.push(ZipkinSpan {
            kind: Some(kind),
            timestamp_us: start.ok_or(SpanError::MissingField("timestamp"))?,
            duration_us,
            local: side.local,
            remote: side.remote,
            shared,
            ..base.clone()
        });
    }
    if out.is_empty() {
        // A local span: no RPC or messaging annotations.
        let local = local_component
            .or_else(|| plain.iter().find_map(|(_, _, ep)| ep.clone()))
            .or_else(|| tags.iter().find_map(|(_, _, ep)| ep.clone()));
        let first_annotation = plain.iter().map(|(ts, _, _)| *ts).min();
        out.push(ZipkinSpan {
            timestamp_us: timestamp
                .or(first_annotation)
                .ok_or(SpanError::MissingField("timestamp"))?,
            duration_us: duration.unwrap_or(0),
            local,
            ..base
        });
    }
    // Attach the remaining annotations and tags to the span of the same service.
    let owner = |ep: &Option<Endpoint>, out: &[ZipkinSpan]| -> usize {
        ep.as_ref()
            .and_then(|ep| {
                out.iter()
                    .position(|z| z.local.as_ref().is_some_and(|l| l.service_name == ep.service_name))
            })
            .unwrap_or(0)
    };
    for (ts, value, ep) in plain {
        let i = owner(&ep, &out);
        out[i].annotations.push((ts, value));
    }
    for (key, value, ep) in tags {
        let i = owner(&ep, &out);
        out[i].tags.push((key, value));
    }
    Ok(out)
}

fn array<'a>(o: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], SpanError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(SpanError::Malformed(format!(
            "{key} must be an array, got {}",
            json_type(other)
        ))),
    }
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, SpanError> {
    v.as_object()
        .ok_or_else(|| SpanError::Malformed(format!("{what} must hold objects, got {}", json_type(v))))
}
