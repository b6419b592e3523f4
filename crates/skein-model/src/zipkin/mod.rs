//! Zipkin codecs: JSON v2, JSON v1 and proto3 to and from the one model.
//!
//! Every wire format is first read into [`ZipkinSpan`] (the v2 shape with decoded ids), then
//! converted to the model here, once, following OpenTelemetry's Zipkin mapping:
//!
//! * `localEndpoint.serviceName` → resource `service.name`; its ip/port → span attributes
//!   `network.local.address` / `network.local.port`.
//! * `remoteEndpoint` → `peer.service`, `network.peer.address`, `network.peer.port`; on client
//!   and producer spans also `server.address` / `server.port` (semconv: the server's address
//!   when no host name is known). Tags of the same name win over derived values.
//! * `kind` → span kind (no kind → `INTERNAL`); `annotations` → events (name = value; OTel's
//!   `{"<name>": {<attributes>}}` values become the event with its attributes).
//! * tags → attributes, typed only when lossless: `true`/`false` → bool, text that prints back
//!   identically as an i64 → int, as a finite f64 → double; anything else (`007`, `1.50`,
//!   `1e3`, `NaN`) stays a string. So the tag text is always recoverable.
//! * `error` tag → status ERROR with the tag value as message (`""`/`"true"` → no message);
//!   `otel.status_code` / `otel.status_description` win when present; `otel.scope.name` /
//!   `otel.scope.version` (and the older `otel.library.*`) → scope.
//! * 64-bit trace ids are left-padded to 16 bytes; written back as 16 hex characters.
//! * `debug: true` → attribute `zipkin.debug = true`.
//! * `shared: true` (a server span reusing its client's span id): the model needs unique span
//!   ids (trace-by-id and compaction dedupe by span id), so the server span gets a derived id
//!   ([`shared_span_id`], deterministic so retries still dedupe), its parent becomes the client
//!   span, and it carries `zipkin.shared = true` and the parent the reporter sent as
//!   `zipkin.parent_id` (hex), which the Zipkin encoder gives back when the client span is not
//!   in the answer (never sent, or sampled out). Children of the shared id from the same
//!   service in the same request are re-parented onto the server span. The Zipkin encoder
//!   undoes all of this, so the Zipkin API shows the original ids. (Jaeger does the same at
//!   query time with its `ZipkinSpanIDUniquifier` adjuster.)

pub mod json_v1;
pub mod json_v2;
pub mod proto;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::*;

/// A body that is not Zipkin at all (as opposed to one span that is invalid).
#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    #[error("invalid Zipkin JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid Zipkin JSON: expected an array of spans, got {0}")]
    NotArray(&'static str),
    #[error("invalid Zipkin proto3 ListOfSpans: {0}")]
    Proto(#[from] prost::DecodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s.to_ascii_uppercase().as_str() {
            "CLIENT" => Kind::Client,
            "SERVER" => Kind::Server,
            "PRODUCER" => Kind::Producer,
            "CONSUMER" => Kind::Consumer,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Client => "CLIENT",
            Kind::Server => "SERVER",
            Kind::Producer => "PRODUCER",
            Kind::Consumer => "CONSUMER",
        }
    }

    fn to_model(kind: Option<Kind>) -> SpanKind {
        match kind {
            None => SpanKind::Internal,
            Some(Kind::Client) => SpanKind::Client,
            Some(Kind::Server) => SpanKind::Server,
            Some(Kind::Producer) => SpanKind::Producer,
            Some(Kind::Consumer) => SpanKind::Consumer,
        }
    }

    fn from_model(kind: SpanKind) -> Option<Kind> {
        match kind {
            SpanKind::Client => Some(Kind::Client),
            SpanKind::Server => Some(Kind::Server),
            SpanKind::Producer => Some(Kind::Producer),
            SpanKind::Consumer => Some(Kind::Consumer),
            SpanKind::Internal | SpanKind::Unspecified => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Endpoint {
    pub service_name: String,
    pub ipv4: String,
    pub ipv6: String,
    pub port: u16,
}

impl Endpoint {
    fn is_empty(&self) -> bool {
        self.service_name.is_empty() && self.ipv4.is_empty() && self.ipv6.is_empty() && self.port == 0
    }

    fn ip(&self) -> Option<&str> {
        [&self.ipv4, &self.ipv6]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(String::as_str)
    }
}

/// One Zipkin v2 span as read off the wire, ids decoded and checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZipkinSpan {
    pub trace_id: TraceId,
    /// All zeros for a root span.
    pub parent_id: SpanId,
    pub id: SpanId,
    pub kind: Option<Kind>,
    pub name: String,
    pub timestamp_us: u64,
    pub duration_us: u64,
    pub local: Option<Endpoint>,
    pub remote: Option<Endpoint>,
    pub annotations: Vec<(u64, String)>,
    pub tags: Vec<(String, String)>,
    pub debug: bool,
    pub shared: bool,
}

pub const SHARED_ATTR: &str = "zipkin.shared";
/// On a shared server span: the `parentId` its reporter sent (the client span's parent).
pub const SHARED_PARENT_ATTR: &str = "zipkin.parent_id";
pub const DEBUG_ATTR: &str = "zipkin.debug";

/// The span id given to a `shared` server span: a fixed mix of the id it shares with its
/// client, so the same span sent twice still dedupes.
pub fn shared_span_id(id: SpanId) -> SpanId {
    let mut z = u64::from_be_bytes(id) ^ 0x5a49_504b_494e_5348; // "ZIPKINSH"
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 || z.to_be_bytes() == id {
        z = !z;
    }
    z.to_be_bytes()
}

/// Parses a hex trace id of 1–32 characters (64-bit ids are left-padded).
pub fn trace_id_from_hex(s: &str) -> Result<TraceId, SpanError> {
    let id = hex::decode_id::<16>(s)
        .ok_or_else(|| SpanError::Malformed(format!("traceId {s:?} is not 16 or 32 hex characters")))?;
    if id == [0; 16] {
        return Err(SpanError::ZeroTraceId);
    }
    Ok(id)
}

/// Parses a hex span id of 1–16 characters; `field` names it in errors.
pub fn span_id_from_hex(field: &str, s: &str) -> Result<SpanId, SpanError> {
    hex::decode_id::<8>(s).ok_or_else(|| SpanError::Malformed(format!("{field} {s:?} is not 16 hex characters")))
}

/// A tag value as a typed attribute, only where the text prints back identically.
pub fn typed_tag(v: String) -> AnyValue {
    match v.as_str() {
        "true" => return AnyValue::Bool(true),
        "false" => return AnyValue::Bool(false),
        _ => {}
    }
    let first = v.as_bytes().first().copied().unwrap_or(b'x');
    if first == b'-' || first.is_ascii_digit() {
        if let Ok(i) = v.parse::<i64>() {
            if i.to_string() == v {
                return AnyValue::Int(i);
            }
        } else if let Ok(d) = v.parse::<f64>() {
            if d.is_finite() && d.to_string() == v {
                return AnyValue::Double(d);
            }
        }
    }
    AnyValue::String(v)
}

/// Shares one resource per service and one scope per (name, version) within a request.
#[derive(Default)]
struct Shared {
    resources: HashMap<String, Arc<Resource>>,
    scopes: HashMap<(String, String), Arc<Scope>>,
}

impl Shared {
    fn resource(&mut self, service: &str) -> Arc<Resource> {
        self.resources
            .entry(service.to_string())
            .or_insert_with(|| {
                let attributes = if service.is_empty() {
                    Vec::new()
                } else {
                    vec![KeyValue::string("service.name", service)]
                };
                Arc::new(Resource {
                    attributes,
                    dropped_attributes_count: 0,
                })
            })
            .clone()
    }

    fn scope(&mut self, name: String, version: String) -> Arc<Scope> {
        self.scopes
            .entry((name.clone(), version.clone()))
            .or_insert_with(|| {
                Arc::new(Scope {
                    name,
                    version,
                    ..Scope::default()
                })
            })
            .clone()
    }
}

/// Converts checked wire spans (with their index in the request) into the model, rejecting
/// the invalid ones alone.
pub fn decoded_from(mut spans: Vec<(usize, Result<ZipkinSpan, SpanError>)>) -> Decoded {
    mark_unflagged_shared(&mut spans);
    let mut shared = Shared::default();
    let mut out = Decoded::default();
    // original shared id → (derived id, service) of the server span that reused it
    let mut remapped: HashMap<SpanId, (SpanId, String)> = HashMap::new();
    for (index, span) in spans {
        match span.and_then(|z| to_model(z, &mut shared)) {
            Ok(s) => {
                if find_attr(&s.attributes, SHARED_ATTR) == Some(&AnyValue::Bool(true)) {
                    remapped.insert(s.parent_span_id, (s.span_id, s.service_name().to_string()));
                }
                out.batch.spans.push(s)
            }
            Err(error) => out.rejected.push(Rejected { index, error }),
        }
    }
    if !remapped.is_empty() {
        for s in &mut out.batch.spans {
            if let Some((server, service)) = remapped.get(&s.parent_span_id) {
                if *server != s.span_id && s.span_id != s.parent_span_id && s.service_name() == service {
                    s.parent_span_id = *server;
                }
            }
        }
    }
    out
}

/// A SERVER span that reuses the id of a CLIENT span sent with it is the server half of a
/// shared span even without `shared: true` (older reporters leave it out); Zipkin fixes such
/// pairs up when it merges a trace. Unmarked, the two would be one span id twice.
fn mark_unflagged_shared(spans: &mut [(usize, Result<ZipkinSpan, SpanError>)]) {
    let clients: std::collections::HashSet<(TraceId, SpanId)> = spans
        .iter()
        .filter_map(|(_, z)| z.as_ref().ok())
        .filter(|z| z.kind == Some(Kind::Client))
        .map(|z| (z.trace_id, z.id))
        .collect();
    if clients.is_empty() {
        return;
    }
    for z in spans.iter_mut().filter_map(|(_, z)| z.as_mut().ok()) {
        if z.kind == Some(Kind::Server) && !z.shared && clients.contains(&(z.trace_id, z.id)) {
            z.shared = true;
        }
    }
}

fn to_model(z: ZipkinSpan, shared: &mut Shared) -> Result<Span, SpanError> {
    let start = z
        .timestamp_us
        .checked_mul(1000)
        .ok_or(SpanError::TimeRange("timestamp"))?;
    let end = z
        .duration_us
        .checked_mul(1000)
        .and_then(|d| start.checked_add(d))
        .ok_or(SpanError::TimeRange("duration"))?;
    let local = z.local.unwrap_or_default();
    let mut attributes = Vec::with_capacity(z.tags.len() + 4);
    let (mut error_tag, mut otel_code, mut otel_description) = (None, None, None);
    let (mut scope_name, mut scope_version) = (String::new(), String::new());
    for (k, v) in z.tags {
        match k.as_str() {
            "error" => error_tag = Some(v),
            "otel.status_code" => otel_code = Some(v),
            "otel.status_description" => otel_description = Some(v),
            "otel.scope.name" | "otel.library.name" => scope_name = v,
            "otel.scope.version" | "otel.library.version" => scope_version = v,
            _ => attributes.push(KeyValue::new(k, typed_tag(v))),
        }
    }
    let mut status = Status::default();
    if let Some(e) = error_tag {
        if e == "false" {
            attributes.push(KeyValue::new("error", AnyValue::Bool(false)));
        } else {
            status.code = StatusCode::Error;
            if e != "true" {
                status.message = e;
            }
        }
    }
    match otel_code.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None => {}
        Some("ERROR") => status.code = StatusCode::Error,
        Some("OK") => status.code = StatusCode::Ok,
        Some("UNSET") => status.code = StatusCode::Unset,
        Some(_) => attributes.push(KeyValue::string("otel.status_code", otel_code.unwrap_or_default())),
    }
    if let Some(d) = otel_description.filter(|d| !d.is_empty()) {
        status.message = d;
    }
    if status.code != StatusCode::Error && status.code != StatusCode::Ok {
        status.message.clear();
    }
    let mut derive = |key: &str, value: AnyValue| {
        if !attributes.iter().any(|kv| kv.key == key) {
            attributes.push(KeyValue::new(key, value));
        }
    };
    if let Some(ip) = local.ip() {
        derive("network.local.address", AnyValue::String(ip.to_string()));
    }
    if local.port != 0 {
        derive("network.local.port", AnyValue::Int(local.port as i64));
    }
    if let Some(remote) = z.remote.as_ref() {
        if !remote.service_name.is_empty() {
            derive("peer.service", AnyValue::String(remote.service_name.clone()));
        }
        let client_side = matches!(z.kind, Some(Kind::Client | Kind::Producer));
        if let Some(ip) = remote.ip() {
            derive("network.peer.address", AnyValue::String(ip.to_string()));
            if client_side {
                derive("server.address", AnyValue::String(ip.to_string()));
            }
        }
        if remote.port != 0 {
            derive("network.peer.port", AnyValue::Int(remote.port as i64));
            if client_side {
                derive("server.port", AnyValue::Int(remote.port as i64));
            }
        }
    }
    if z.debug {
        derive(DEBUG_ATTR, AnyValue::Bool(true));
    }
    let (mut span_id, mut parent_span_id) = (z.id, z.parent_id);
    if z.shared {
        derive(SHARED_ATTR, AnyValue::Bool(true));
        if z.parent_id != [0; 8] {
            derive(SHARED_PARENT_ATTR, AnyValue::String(crate::hex::encode(&z.parent_id)));
        }
        parent_span_id = z.id;
        span_id = shared_span_id(z.id);
    }
    let events = z
        .annotations
        .into_iter()
        .map(|(ts, value)| {
            let (name, attributes) = event_from_annotation(value);
            Event {
                time_unix_nano: ts.saturating_mul(1000),
                name,
                attributes,
                ..Event::default()
            }
        })
        .collect();
    Ok(Span {
        trace_id: z.trace_id,
        span_id,
        parent_span_id,
        name: z.name,
        kind: Kind::to_model(z.kind),
        start_unix_nano: start,
        end_unix_nano: end,
        attributes,
        events,
        status,
        resource: shared.resource(&local.service_name),
        scope: shared.scope(scope_name, scope_version),
        ..Span::default()
    })
}

// ---- model → Zipkin v2 (query API) ---------------------------------------------------------

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match find_attr(attrs, key) {
        Some(AnyValue::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn port_attr(attrs: &[KeyValue], key: &str) -> Option<u16> {
    match find_attr(attrs, key) {
        Some(AnyValue::Int(p)) => u16::try_from(*p).ok().filter(|p| *p != 0),
        _ => None,
    }
}

/// Sets the endpoint's address from an attribute holding an IP; returns whether it did.
fn set_ip(ep: &mut Endpoint, value: Option<&str>) -> bool {
    match value.and_then(|v| v.parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(ip)) => ep.ipv4 = ip.to_string(),
        Some(IpAddr::V6(ip)) => ep.ipv6 = ip.to_string(),
        None => return false,
    }
    true
}

/// A model span in Zipkin v2 terms, ready to be written as JSON.
fn from_model(s: &Span, ids: &IdView) -> ZipkinSpan {
    let attrs = &s.attributes;
    let is_shared = find_attr(attrs, SHARED_ATTR) == Some(&AnyValue::Bool(true)) && !s.is_root();
    let (id, parent_id) = if is_shared {
        // The client span's own parent, when the client span is in the same answer; else the
        // parent the reporter sent.
        let sent = string_attr(attrs, SHARED_PARENT_ATTR).and_then(crate::hex::decode_id::<8>);
        let parent = ids.parent_of.get(&s.parent_span_id).copied().or(sent);
        (s.parent_span_id, parent.unwrap_or([0; 8]))
    } else {
        let parent = ids
            .shared_origin
            .get(&s.parent_span_id)
            .copied()
            .unwrap_or(s.parent_span_id);
        (s.span_id, parent)
    };
    let mut consumed: Vec<&str> = vec![SHARED_ATTR, SHARED_PARENT_ATTR, DEBUG_ATTR];
    let mut local = Endpoint {
        service_name: s.service_name().to_string(),
        ..Endpoint::default()
    };
    if set_ip(&mut local, string_attr(attrs, "network.local.address")) {
        consumed.push("network.local.address");
    }
    if let Some(p) = port_attr(attrs, "network.local.port") {
        local.port = p;
        consumed.push("network.local.port");
    }
    let mut remote = Endpoint::default();
    if let Some(peer) = string_attr(attrs, "peer.service") {
        remote.service_name = peer.to_string();
        consumed.push("peer.service");
    }
    let peer_ip = string_attr(attrs, "network.peer.address");
    if set_ip(&mut remote, peer_ip) {
        consumed.push("network.peer.address");
    }
    // server.address/server.port name the other side only where this span is the caller; on a
    // SERVER span they are its own address (OpenTelemetry's semantic conventions), a tag.
    let calls_out = matches!(s.kind, SpanKind::Client | SpanKind::Producer);
    let server_ip = string_attr(attrs, "server.address").filter(|_| calls_out);
    // server.address is dropped from the tags when it is the address written as the endpoint.
    let server_ip_used = remote.ip().is_none() && set_ip(&mut remote, server_ip);
    if server_ip_used || (server_ip.is_some() && server_ip == remote.ip()) {
        consumed.push("server.address");
    }
    let peer_port = port_attr(attrs, "network.peer.port");
    let server_port = port_attr(attrs, "server.port").filter(|_| calls_out);
    if let Some(p) = peer_port.or(server_port) {
        remote.port = p;
        if peer_port.is_some() {
            consumed.push("network.peer.port");
        }
        if server_port == Some(p) {
            consumed.push("server.port");
        }
    }
    let mut tags: Vec<(String, String)> = attrs
        .iter()
        .filter(|kv| !consumed.contains(&kv.key.as_str()))
        .map(|kv| (kv.key.to_string(), kv.value.to_display_string()))
        .collect();
    match s.status.code {
        StatusCode::Error => {
            let msg = if s.status.message.is_empty() {
                "true".to_string()
            } else {
                s.status.message.clone()
            };
            tags.retain(|(k, _)| k != "error");
            tags.push(("error".into(), msg));
        }
        StatusCode::Ok => {
            tags.push(("otel.status_code".into(), "OK".into()));
            if !s.status.message.is_empty() {
                tags.push(("otel.status_description".into(), s.status.message.clone()));
            }
        }
        StatusCode::Unset => {}
    }
    if !s.scope.name.is_empty() {
        tags.push(("otel.scope.name".into(), s.scope.name.clone()));
        if !s.scope.version.is_empty() {
            tags.push(("otel.scope.version".into(), s.scope.version.clone()));
        }
    }
    tags.sort();
    tags.dedup_by(|a, b| a.0 == b.0);
    ZipkinSpan {
        trace_id: s.trace_id,
        parent_id,
        id,
        kind: Kind::from_model(s.kind),
        name: s.name.clone(),
        timestamp_us: s.start_unix_nano / 1000,
        duration_us: s.duration_nano() / 1000,
        local: Some(local),
        remote: (!remote.is_empty()).then_some(remote),
        annotations: s
            .events
            .iter()
            .map(|e| (e.time_unix_nano / 1000, event_value(e)))
            .collect(),
        tags,
        debug: find_attr(attrs, DEBUG_ATTR) == Some(&AnyValue::Bool(true)),
        shared: is_shared,
    }
}

/// OTel's Zipkin exporters write an event as the annotation value `{"<name>": {<attributes>}}`;
/// such a value becomes that event again. Any other value is the event name.
fn event_from_annotation(value: String) -> (String, Vec<KeyValue>) {
    if !value.starts_with('{') {
        return (value, Vec::new());
    }
    let Ok(serde_json::Value::Object(outer)) = serde_json::from_str::<serde_json::Value>(&value) else {
        return (value, Vec::new());
    };
    let Some((name, serde_json::Value::Object(attrs))) = outer.iter().next().filter(|_| outer.len() == 1) else {
        return (value, Vec::new());
    };
    let attributes = attrs
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => AnyValue::String(s.clone()),
                serde_json::Value::Bool(b) => AnyValue::Bool(*b),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => AnyValue::Int(i),
                    None => AnyValue::Double(n.as_f64().unwrap_or(0.0)),
                },
                other => AnyValue::String(other.to_string()),
            };
            KeyValue::new(k.clone(), v)
        })
        .collect();
    (name.clone(), attributes)
}

/// An event as an annotation value: its name, or OTel's `{"<name>": {<attributes>}}` when it
/// has attributes.
fn event_value(e: &Event) -> String {
    if e.attributes.is_empty() {
        return e.name.clone();
    }
    let attrs: serde_json::Map<String, serde_json::Value> = e
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), crate::otlp::json::any_value_plain(&kv.value)))
        .collect();
    serde_json::json!({ e.name.clone(): attrs }).to_string()
}

/// Id facts about the spans being encoded together, to undo the `shared` remapping.
struct IdView {
    parent_of: HashMap<SpanId, SpanId>,
    /// derived id of a shared server span → the id it shares with its client
    shared_origin: HashMap<SpanId, SpanId>,
}

impl IdView {
    fn of(spans: &[Span]) -> IdView {
        let mut parent_of = HashMap::with_capacity(spans.len());
        let mut shared_origin = HashMap::new();
        for s in spans {
            parent_of.insert(s.span_id, s.parent_span_id);
            if find_attr(&s.attributes, SHARED_ATTR) == Some(&AnyValue::Bool(true)) && !s.is_root() {
                shared_origin.insert(s.span_id, s.parent_span_id);
            }
        }
        IdView {
            parent_of,
            shared_origin,
        }
    }
}

/// Model spans (typically one trace) as Zipkin v2 spans.
pub fn encode(spans: &[Span]) -> Vec<ZipkinSpan> {
    let ids = IdView::of(spans);
    spans.iter().map(|s| from_model(s, &ids)).collect()
}

/// A trace id as Zipkin writes it: 16 hex characters when the high half is zero.
pub fn trace_id_hex(id: &TraceId) -> String {
    if id[..8] == [0; 8] {
        hex::encode(&id[8..])
    } else {
        hex::encode(id)
    }
}

#[cfg(test)]
mod tests;
