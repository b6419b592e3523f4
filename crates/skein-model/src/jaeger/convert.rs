//! The one Jaeger ⇄ model mapping, after OpenTelemetry's Jaeger translator:
//!
//! - process `serviceName` → resource `service.name`, process tags → resource attributes;
//! - the first CHILD_OF reference into the same trace → parent (else thrift's `parentSpanId`),
//!   every other reference → a link, which notes the reference's type in `opentracing.ref_type`
//!   (`child_of`/`follows_from`);
//! - logs → events, the `event` field naming the event;
//! - tags `span.kind` → kind; status from `error=true` (which wins), else `otel.status_code`,
//!   else an HTTP status code in `http.status_code` (5xx an error, 4xx too but on a server), with
//!   `otel.status_description` as its message; `otel.scope.name`/`otel.scope.version` (or the
//!   legacy `otel.library.*`) → scope, `w3c.tracestate` → trace state. Those tags are removed
//!   from the attributes (`http.status_code` is kept); a value that does not parse stays an
//!   ordinary attribute.
//!
//! Model → Jaeger writes the same tags back; links become references of the type their
//! `opentracing.ref_type` names, else FOLLOWS_FROM. Lossy by the nature of the format: dropped
//! counts, other link attributes and state and flags, scope attributes and the type of
//! array/kvlist values (sent as their JSON text).

use std::sync::Arc;

use super::{JaegerLog, JaegerProcess, JaegerRef, JaegerSpan, RefType};
use crate::{AnyValue, Decoded, Event, KeyValue, Link, Rejected, Resource, Scope, Span, SpanError, SpanKind};
use crate::{Status, StatusCode};

pub const TAG_SPAN_KIND: &str = "span.kind";
pub const TAG_STATUS_CODE: &str = "otel.status_code";
pub const TAG_ERROR: &str = "error";
pub const TAG_STATUS_DESCRIPTION: &str = "otel.status_description";
/// Read for a status only when neither `error=true` nor `otel.status_code` gives one, as
/// OpenTelemetry's translator does; the older semantic conventions' name, which Jaeger
/// clients use.
pub const TAG_HTTP_STATUS_CODE: &str = "http.status_code";
/// On a link: the type of the Jaeger reference it came from or goes back to.
pub const LINK_REF_TYPE: &str = "opentracing.ref_type";
const REF_CHILD_OF: &str = "child_of";
const REF_FOLLOWS_FROM: &str = "follows_from";
pub const TAG_SCOPE_NAME: &str = "otel.scope.name";
pub const TAG_SCOPE_VERSION: &str = "otel.scope.version";
// Written by older OTel SDKs and collectors; read, never written.
pub const TAG_LIBRARY_NAME: &str = "otel.library.name";
pub const TAG_LIBRARY_VERSION: &str = "otel.library.version";
pub const TAG_TRACE_STATE: &str = "w3c.tracestate";
pub const FIELD_EVENT: &str = "event";
const SERVICE_NAME: &str = "service.name";

// ---- Jaeger → model ---------------------------------------------------------------------

pub fn resource_from_process(process: JaegerProcess) -> Resource {
    let mut attributes = process.tags;
    if !process.service_name.is_empty() && !attributes.iter().any(|kv| kv.key == SERVICE_NAME) {
        attributes.insert(0, KeyValue::string(SERVICE_NAME, process.service_name));
    }
    Resource {
        attributes,
        dropped_attributes_count: 0,
    }
}

/// Hands out one `Arc` per distinct scope, so the spans of one library share it as they would
/// coming from an SDK.
#[derive(Default)]
pub struct ScopeCache(Vec<Arc<Scope>>);

impl ScopeCache {
    fn get(&mut self, name: String, version: String) -> Arc<Scope> {
        if let Some(s) = self.0.iter().find(|s| s.name == name && s.version == version) {
            return s.clone();
        }
        let s = Arc::new(Scope {
            name,
            version,
            ..Scope::default()
        });
        self.0.push(s.clone());
        s
    }
}

/// Converts a batch: spans without their own process get `process`. Spans that failed to decode
/// (`Err`) or are malformed are reported in `rejected` by their position in the batch.
pub fn batch_to_model(
    process: JaegerProcess,
    spans: impl IntoIterator<Item = Result<JaegerSpan, SpanError>>,
) -> Decoded {
    let batch_resource = Arc::new(resource_from_process(process));
    let mut own_resources: Vec<(JaegerProcess, Arc<Resource>)> = Vec::new();
    let mut scopes = ScopeCache::default();
    let mut out = Decoded::default();
    for (index, span) in spans.into_iter().enumerate() {
        let converted = span.and_then(|mut span| {
            let resource = match span.process.take() {
                None => batch_resource.clone(),
                Some(p) => match own_resources.iter().find(|(q, _)| *q == p) {
                    Some((_, r)) => r.clone(),
                    None => {
                        let r = Arc::new(resource_from_process(p.clone()));
                        own_resources.push((p, r.clone()));
                        r
                    }
                },
            };
            span_to_model(span, resource, &mut scopes)
        });
        match converted {
            Ok(s) => out.batch.spans.push(s),
            Err(error) => out.rejected.push(Rejected { index, error }),
        }
    }
    out
}

/// Converts one span; `span.process` is ignored (the caller resolved it into `resource`).
pub fn span_to_model(span: JaegerSpan, resource: Arc<Resource>, scopes: &mut ScopeCache) -> Result<Span, SpanError> {
    if span.trace_id == [0; 16] {
        return Err(SpanError::ZeroTraceId);
    }
    if span.span_id == [0; 8] {
        return Err(SpanError::ZeroSpanId);
    }
    let end_unix_nano = span
        .start_unix_nano
        .checked_add(span.duration_nano)
        .ok_or(SpanError::TimeRange("startTime + duration"))?;

    let mut parent = None;
    let mut links = Vec::new();
    for r in span.references {
        if parent.is_none() && r.ref_type == RefType::ChildOf && r.trace_id == span.trace_id {
            parent = Some(r.span_id);
        } else {
            let ref_type = match r.ref_type {
                RefType::ChildOf => REF_CHILD_OF,
                RefType::FollowsFrom => REF_FOLLOWS_FROM,
            };
            links.push(Link {
                trace_id: r.trace_id,
                span_id: r.span_id,
                attributes: vec![KeyValue::string(LINK_REF_TYPE, ref_type)],
                ..Link::default()
            });
        }
    }

    let mut attributes = span.tags;
    let kind = take(&mut attributes, TAG_SPAN_KIND, |v| str_of(v).and_then(SpanKind::parse)).unwrap_or_default();
    let code_sent = attributes.iter().any(|kv| kv.key == TAG_STATUS_CODE);
    let code = take(&mut attributes, TAG_STATUS_CODE, |v| {
        let s = str_of(v)?;
        [
            ("OK", StatusCode::Ok),
            ("ERROR", StatusCode::Error),
            ("UNSET", StatusCode::Unset),
        ]
        .into_iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map(|(_, code)| code)
    });
    // Jaeger clients mark failures with `error=true` alone (some as the string "true").
    let error = take(&mut attributes, TAG_ERROR, |v| match v {
        AnyValue::Bool(true) => Some(()),
        AnyValue::String(s) if s.eq_ignore_ascii_case("true") => Some(()),
        _ => None,
    });
    // As OpenTelemetry's translator: `error=true` is the final word, then `otel.status_code`,
    // and only when neither was sent, an HTTP status code.
    let code = match (error, code) {
        (Some(()), _) => StatusCode::Error,
        (None, Some(code)) => code,
        (None, None) if code_sent => StatusCode::Unset,
        (None, None) => attributes
            .iter()
            .find(|kv| kv.key == TAG_HTTP_STATUS_CODE)
            .and_then(|kv| http_status(&kv.value, kind))
            .unwrap_or(StatusCode::Unset),
    };
    let message = take(&mut attributes, TAG_STATUS_DESCRIPTION, string_of).unwrap_or_default();
    let scope_name = take(&mut attributes, TAG_SCOPE_NAME, string_of)
        .or_else(|| take(&mut attributes, TAG_LIBRARY_NAME, string_of))
        .unwrap_or_default();
    let scope_version = take(&mut attributes, TAG_SCOPE_VERSION, string_of)
        .or_else(|| take(&mut attributes, TAG_LIBRARY_VERSION, string_of))
        .unwrap_or_default();
    let trace_state = take(&mut attributes, TAG_TRACE_STATE, string_of).unwrap_or_default();

    let events = span.logs.into_iter().map(log_to_event).collect();

    Ok(Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_span_id: parent.unwrap_or(span.parent_span_id),
        trace_state,
        flags: span.flags,
        name: span.operation_name,
        kind,
        start_unix_nano: span.start_unix_nano,
        end_unix_nano,
        attributes,
        events,
        links,
        status: Status { code, message },
        resource,
        scope: scopes.get(scope_name, scope_version),
        ..Span::default()
    })
}

/// The status an HTTP status code means (OpenTelemetry's HTTP conventions, as its translator
/// applies them): an error from 500 up and below 100, and from 400 up except on a server span
/// (a server answering 4xx did its job); unset otherwise. A code that is not a number says
/// nothing.
fn http_status(v: &AnyValue, kind: SpanKind) -> Option<StatusCode> {
    let code = match v {
        AnyValue::Int(n) => *n,
        AnyValue::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let failed = match code {
        100..=399 => false,
        400..=499 => kind != SpanKind::Server,
        _ => true,
    };
    Some(if failed { StatusCode::Error } else { StatusCode::Unset })
}

fn log_to_event(log: JaegerLog) -> Event {
    let mut attributes = log.fields;
    let name = take(&mut attributes, FIELD_EVENT, string_of).unwrap_or_default();
    Event {
        time_unix_nano: log.time_unix_nano,
        name,
        attributes,
        dropped_attributes_count: 0,
    }
}

/// Removes the first attribute named `key` whose value `f` accepts, returning what `f` made of
/// it. A value `f` rejects stays an ordinary attribute.
fn take<T>(attrs: &mut Vec<KeyValue>, key: &str, f: impl Fn(&AnyValue) -> Option<T>) -> Option<T> {
    let (index, out) = attrs.iter().enumerate().find_map(|(i, kv)| {
        if kv.key == key {
            f(&kv.value).map(|t| (i, t))
        } else {
            None
        }
    })?;
    attrs.remove(index);
    Some(out)
}

fn str_of(v: &AnyValue) -> Option<&str> {
    match v {
        AnyValue::String(s) => Some(s),
        _ => None,
    }
}

fn string_of(v: &AnyValue) -> Option<String> {
    str_of(v).map(str::to_string)
}

// ---- model → Jaeger ---------------------------------------------------------------------

/// The process of a resource: `service.name` becomes `serviceName`, the rest its tags.
pub fn process_from_resource(resource: &Resource) -> JaegerProcess {
    let tags = resource
        .attributes
        .iter()
        // Only the service.name that became serviceName is redundant; an odd one (empty, not a
        // string) stays a tag so nothing is lost.
        .filter(|kv| !(kv.key == SERVICE_NAME && matches!(&kv.value, AnyValue::String(s) if !s.is_empty())))
        .map(jaeger_tag)
        .collect();
    JaegerProcess {
        service_name: resource.service_name().to_string(),
        tags,
    }
}

/// Jaeger's own flag bits: sampled (1), debug (2), firehose (8). The rest of OTLP's flags
/// (W3C trace flags, the remote-parent bits) mean nothing to it.
pub fn jaeger_flags(flags: u32) -> u32 {
    flags & (1 | 2 | 8)
}

/// One span in Jaeger's shape, without its process (see [`process_from_resource`]).
pub fn span_from_model(span: &Span) -> JaegerSpan {
    let mut references = Vec::with_capacity(span.links.len() + 1);
    // The parent goes first: the Jaeger UI takes the first reference as the parent.
    if !span.is_root() {
        references.push(JaegerRef {
            ref_type: RefType::ChildOf,
            trace_id: span.trace_id,
            span_id: span.parent_span_id,
        });
    }
    references.extend(span.links.iter().map(|l| {
        let child_of = l
            .attributes
            .iter()
            .any(|kv| kv.key == LINK_REF_TYPE && matches!(&kv.value, AnyValue::String(t) if t == REF_CHILD_OF));
        JaegerRef {
            ref_type: if child_of {
                RefType::ChildOf
            } else {
                RefType::FollowsFrom
            },
            trace_id: l.trace_id,
            span_id: l.span_id,
        }
    }));

    let extra = tags_from_fields(span);
    let mut tags = Vec::with_capacity(span.attributes.len() + extra.len());
    // The span's own fields are authoritative; an attribute of the same name would only show up
    // as a confusing duplicate.
    tags.extend(
        span.attributes
            .iter()
            .filter(|kv| !extra.iter().any(|e| e.key == kv.key))
            .map(jaeger_tag),
    );
    tags.extend(extra);

    let logs = span
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            // OTel omits the field for an unnamed event, so an empty name round-trips as empty.
            if !e.name.is_empty() {
                fields.push(KeyValue::string(FIELD_EVENT, e.name.clone()));
            }
            fields.extend(e.attributes.iter().map(jaeger_tag));
            JaegerLog {
                time_unix_nano: e.time_unix_nano,
                fields,
            }
        })
        .collect();

    JaegerSpan {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_span_id: span.parent_span_id,
        operation_name: span.name.clone(),
        references,
        flags: jaeger_flags(span.flags),
        start_unix_nano: span.start_unix_nano,
        duration_nano: span.duration_nano(),
        tags,
        logs,
        process: None,
    }
}

/// The tags OTel's mapping derives from span fields, in its order.
fn tags_from_fields(span: &Span) -> Vec<KeyValue> {
    let mut tags = Vec::new();
    if span.kind != SpanKind::Unspecified {
        tags.push(KeyValue::string(TAG_SPAN_KIND, span.kind.as_jaeger()));
    }
    match span.status.code {
        StatusCode::Unset => {}
        StatusCode::Ok => tags.push(KeyValue::string(TAG_STATUS_CODE, "OK")),
        StatusCode::Error => {
            tags.push(KeyValue::string(TAG_STATUS_CODE, "ERROR"));
            tags.push(KeyValue::new(TAG_ERROR, AnyValue::Bool(true)));
        }
    }
    if !span.status.message.is_empty() {
        tags.push(KeyValue::string(TAG_STATUS_DESCRIPTION, span.status.message.clone()));
    }
    if !span.scope.name.is_empty() {
        tags.push(KeyValue::string(TAG_SCOPE_NAME, span.scope.name.clone()));
    }
    if !span.scope.version.is_empty() {
        tags.push(KeyValue::string(TAG_SCOPE_VERSION, span.scope.version.clone()));
    }
    if !span.trace_state.is_empty() {
        tags.push(KeyValue::string(TAG_TRACE_STATE, span.trace_state.clone()));
    }
    tags
}

/// A tag Jaeger can carry: composite and empty values become their display text.
fn jaeger_tag(kv: &KeyValue) -> KeyValue {
    let value = match &kv.value {
        v @ (AnyValue::String(_) | AnyValue::Bool(_) | AnyValue::Int(_) | AnyValue::Double(_) | AnyValue::Bytes(_)) => {
            v.clone()
        }
        other => AnyValue::String(other.to_display_string()),
    };
    KeyValue::new(kv.key.clone(), value)
}

/// Spans grouped by their resource, in first-appearance order: the batches a Jaeger client
/// would send for them.
pub fn group_by_process(spans: &[Span]) -> Vec<(JaegerProcess, Vec<JaegerSpan>)> {
    let mut groups: Vec<(&Arc<Resource>, JaegerProcess, Vec<JaegerSpan>)> = Vec::new();
    for span in spans {
        // Different exports of one process carry equal resources in different Arcs.
        let i = match groups
            .iter()
            .position(|(r, _, _)| Arc::ptr_eq(r, &span.resource) || **r == span.resource)
        {
            Some(i) => i,
            None => {
                groups.push((&span.resource, process_from_resource(&span.resource), Vec::new()));
                groups.len() - 1
            }
        };
        groups[i].2.push(span_from_model(span));
    }
    groups.into_iter().map(|(_, p, s)| (p, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jaeger_span(tags: Vec<KeyValue>) -> JaegerSpan {
        JaegerSpan {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: [0; 8],
            operation_name: "op".into(),
            references: Vec::new(),
            flags: 1,
            start_unix_nano: 1_000,
            duration_nano: 1_000,
            tags,
            logs: Vec::new(),
            process: None,
        }
    }

    fn to_model(tags: Vec<KeyValue>) -> Span {
        span_to_model(jaeger_span(tags), Arc::default(), &mut ScopeCache::default()).unwrap()
    }

    /// As OpenTelemetry's translator reads a Jaeger span's status: `error=true` first, then
    /// `otel.status_code`, and an HTTP status code only when neither was sent.
    #[test]
    fn status_follows_the_collectors_order() {
        let bool_tag = |k: &str, v| KeyValue::new(k, AnyValue::Bool(v));
        let int_tag = |k: &str, v| KeyValue::new(k, AnyValue::Int(v));
        let kind = |k: &str| KeyValue::string(TAG_SPAN_KIND, k);
        let cases: Vec<(Vec<KeyValue>, StatusCode, &str)> = vec![
            // `error=true` is the final word, whatever `otel.status_code` says.
            (
                vec![bool_tag(TAG_ERROR, true), KeyValue::string(TAG_STATUS_CODE, "OK")],
                StatusCode::Error,
                "",
            ),
            (
                vec![
                    KeyValue::string(TAG_STATUS_CODE, "UNSET"),
                    bool_tag(TAG_ERROR, true),
                    KeyValue::string(TAG_STATUS_DESCRIPTION, "boom"),
                ],
                StatusCode::Error,
                "boom",
            ),
            (vec![KeyValue::string(TAG_ERROR, "true")], StatusCode::Error, ""),
            (vec![KeyValue::string(TAG_STATUS_CODE, "ok")], StatusCode::Ok, ""),
            // An HTTP status code: 5xx is an error; 4xx on a client, not on a server.
            (
                vec![kind("server"), int_tag(TAG_HTTP_STATUS_CODE, 500)],
                StatusCode::Error,
                "",
            ),
            (
                vec![kind("client"), int_tag(TAG_HTTP_STATUS_CODE, 404)],
                StatusCode::Error,
                "",
            ),
            (
                vec![kind("server"), int_tag(TAG_HTTP_STATUS_CODE, 404)],
                StatusCode::Unset,
                "",
            ),
            (vec![int_tag(TAG_HTTP_STATUS_CODE, 200)], StatusCode::Unset, ""),
            (
                vec![KeyValue::string(TAG_HTTP_STATUS_CODE, "503")],
                StatusCode::Error,
                "",
            ),
            (
                vec![KeyValue::string(TAG_HTTP_STATUS_CODE, "n/a")],
                StatusCode::Unset,
                "",
            ),
            // …but not when a status was sent, even one that does not parse.
            (
                vec![
                    KeyValue::string(TAG_STATUS_CODE, "OK"),
                    int_tag(TAG_HTTP_STATUS_CODE, 500),
                ],
                StatusCode::Ok,
                "",
            ),
            (
                vec![
                    KeyValue::string(TAG_STATUS_CODE, "bogus"),
                    int_tag(TAG_HTTP_STATUS_CODE, 500),
                ],
                StatusCode::Unset,
                "",
            ),
            (
                vec![bool_tag(TAG_ERROR, false), int_tag(TAG_HTTP_STATUS_CODE, 502)],
                StatusCode::Error,
                "",
            ),
        ];
        for (tags, code, message) in cases {
            let what = format!("{tags:?}");
            let s = to_model(tags);
            assert_eq!((s.status.code, s.status.message.as_str()), (code, message), "{what}");
            let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_ref()).collect();
            // The status tags that were read are gone; the HTTP code stays an attribute.
            assert!(!keys.contains(&TAG_STATUS_DESCRIPTION), "{what}: {keys:?}");
            assert_eq!(
                keys.contains(&TAG_ERROR),
                what.contains("Bool(false)"),
                "{what}: {keys:?}"
            );
            assert_eq!(
                keys.contains(&TAG_HTTP_STATUS_CODE),
                what.contains(TAG_HTTP_STATUS_CODE),
                "{what}: {keys:?}"
            );
        }
    }

    /// A reference that becomes a link notes its type, and goes back to Jaeger as that type: a
    /// second CHILD_OF stays CHILD_OF.
    #[test]
    fn links_keep_their_reference_type() {
        let mut j = jaeger_span(Vec::new());
        let r = |ref_type, id| JaegerRef {
            ref_type,
            trace_id: [1; 16],
            span_id: [id; 8],
        };
        j.references = vec![
            r(RefType::ChildOf, 3),
            r(RefType::FollowsFrom, 4),
            r(RefType::ChildOf, 5),
        ];
        let s = span_to_model(j, Arc::default(), &mut ScopeCache::default()).unwrap();
        assert_eq!(s.parent_span_id, [3; 8]);
        let types: Vec<&AnyValue> = s.links.iter().map(|l| &l.attributes[0].value).collect();
        assert_eq!(
            types,
            [
                &AnyValue::String("follows_from".into()),
                &AnyValue::String("child_of".into())
            ]
        );
        let back: Vec<(RefType, crate::SpanId)> = span_from_model(&s)
            .references
            .iter()
            .map(|r| (r.ref_type, r.span_id))
            .collect();
        assert_eq!(
            back,
            [
                (RefType::ChildOf, [3; 8]),
                (RefType::FollowsFrom, [4; 8]),
                (RefType::ChildOf, [5; 8])
            ]
        );
    }

    #[test]
    fn only_jaegers_flag_bits_go_out() {
        for (flags, want) in [(0, 0), (1, 1), (3, 3), (0xb, 0xb), (5, 1), (0x301, 1), (0x100, 0)] {
            assert_eq!(jaeger_flags(flags), want, "{flags:#x}");
        }
    }
}
