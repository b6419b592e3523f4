use std::sync::Arc;

use crate::Key;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// OTLP span kinds, with OTLP's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
#[repr(u8)]
pub enum SpanKind {
    #[default]
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

impl SpanKind {
    pub fn from_i32(v: i32) -> Option<SpanKind> {
        Some(match v {
            0 => SpanKind::Unspecified,
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => return None,
        })
    }

    /// The lower-case name Jaeger uses in `span.kind` and `spanKind=`.
    pub fn as_jaeger(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    pub fn parse(s: &str) -> Option<SpanKind> {
        let s = s.trim().to_ascii_lowercase();
        let s = s.strip_prefix("span_kind_").unwrap_or(&s);
        Some(match s {
            "unspecified" | "" => SpanKind::Unspecified,
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl StatusCode {
    pub fn from_i32(v: i32) -> Option<StatusCode> {
        Some(match v {
            0 => StatusCode::Unset,
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

/// A typed attribute value (OTLP `AnyValue`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum AnyValue {
    #[default]
    Empty,
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<AnyValue>),
    KvList(Vec<KeyValue>),
}

impl AnyValue {
    /// A display form used for search matching and for protocols without typed values.
    pub fn to_display_string(&self) -> String {
        match self {
            AnyValue::Empty => String::new(),
            AnyValue::String(s) => s.clone(),
            AnyValue::Bool(b) => b.to_string(),
            AnyValue::Int(i) => i.to_string(),
            AnyValue::Double(d) => d.to_string(),
            AnyValue::Bytes(b) => crate::hex::encode(b),
            AnyValue::Array(_) | AnyValue::KvList(_) => {
                serde_json::to_string(&crate::otlp::json::any_value_plain(self)).unwrap_or_default()
            }
        }
    }

    /// Approximate heap bytes, for memory accounting.
    pub fn heap_size(&self) -> usize {
        match self {
            AnyValue::String(s) => s.len() + 16,
            AnyValue::Bytes(b) => b.len() + 16,
            AnyValue::Array(a) => {
                a.iter()
                    .map(|v| v.heap_size() + std::mem::size_of::<AnyValue>())
                    .sum::<usize>()
                    + 16
            }
            AnyValue::KvList(kv) => kv.iter().map(KeyValue::heap_size).sum(),
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyValue {
    pub key: Key,
    pub value: AnyValue,
}

impl KeyValue {
    pub fn new(key: impl Into<Key>, value: AnyValue) -> Self {
        KeyValue { key: key.into(), value }
    }
    pub fn string(key: impl Into<Key>, value: impl Into<String>) -> Self {
        KeyValue::new(key, AnyValue::String(value.into()))
    }
    /// Inline size plus the key's (unless interned) and value's allocations, each with
    /// allocator overhead.
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<KeyValue>() + self.key.heap_size() + self.value.heap_size()
    }
}

pub fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: String,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}

/// Where spans came from: the process (`service.name`, host, SDK …).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
}

pub const UNKNOWN_SERVICE: &str = "unknown_service";

impl Resource {
    pub fn service_name(&self) -> &str {
        match find_attr(&self.attributes, "service.name") {
            Some(AnyValue::String(s)) if !s.is_empty() => s,
            _ => UNKNOWN_SERVICE,
        }
    }

    /// Memory of one shared copy: the `Arc`'s allocation and the attributes'.
    pub fn heap_size(&self) -> usize {
        16 + std::mem::size_of::<Resource>() + self.attributes.iter().map(KeyValue::heap_size).sum::<usize>()
    }
}

/// The instrumentation library that made the spans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    pub name: String,
    pub version: String,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
}

impl Scope {
    /// Memory of one shared copy: the `Arc`'s allocation, the strings and the attributes.
    pub fn heap_size(&self) -> usize {
        16 + std::mem::size_of::<Scope>()
            + self.name.len()
            + self.version.len()
            + self.attributes.iter().map(KeyValue::heap_size).sum::<usize>()
    }
}

/// Memory held by `spans`: each span's own (`Span::heap_size`), plus its resource and scope
/// once per run of spans sharing them (`HeapSizer`).
pub fn spans_heap_size(spans: &[Span]) -> usize {
    let mut sizer = HeapSizer::default();
    spans.iter().map(|s| sizer.size(s)).sum()
}

/// Sizes spans one after another, counting a resource or scope with the first span of each run
/// that shares it. An export shares one resource among all its spans, so that adds little; a
/// client that gives every span a resource of its own (a unique `service.name`) would
/// otherwise fill a memory budget far past its limit unseen.
#[derive(Default)]
pub struct HeapSizer {
    last: Option<(*const Resource, *const Scope)>,
}

impl HeapSizer {
    pub fn size(&mut self, s: &Span) -> usize {
        let (resource, scope) = (Arc::as_ptr(&s.resource), Arc::as_ptr(&s.scope));
        let mut size = s.heap_size();
        if self.last.is_none_or(|(r, _)| r != resource) {
            size += s.resource.heap_size();
        }
        if self.last.is_none_or(|(_, c)| c != scope) {
            size += s.scope.heap_size();
        }
        self.last = Some((resource, scope));
        size
    }
}

/// One span. Resource and scope are shared by every span of the same export (`Arc`), so a
/// batch of a thousand spans from one process carries its resource once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// All zeros for a root span.
    pub parent_span_id: SpanId,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes_count: u32,
    pub events: Vec<Event>,
    pub dropped_events_count: u32,
    pub links: Vec<Link>,
    pub dropped_links_count: u32,
    pub status: Status,
    pub resource: Arc<Resource>,
    pub scope: Arc<Scope>,
}

impl Span {
    pub fn is_root(&self) -> bool {
        self.parent_span_id == [0; 8]
    }
    pub fn duration_nano(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
    pub fn service_name(&self) -> &str {
        self.resource.service_name()
    }
    pub fn is_error(&self) -> bool {
        self.status.code == StatusCode::Error
    }
    /// Approximate memory held by this span (not counting the shared resource and scope).
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Span>()
            + self.name.len()
            + self.trace_state.len()
            + self.status.message.len()
            + self.attributes.iter().map(KeyValue::heap_size).sum::<usize>()
            + self
                .events
                .iter()
                .map(|e| 64 + e.name.len() + e.attributes.iter().map(KeyValue::heap_size).sum::<usize>())
                .sum::<usize>()
            + self
                .links
                .iter()
                .map(|l| 96 + l.trace_state.len() + l.attributes.iter().map(KeyValue::heap_size).sum::<usize>())
                .sum::<usize>()
    }
}

/// The unit that moves through the flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanBatch {
    pub spans: Vec<Span>,
}

impl SpanBatch {
    pub fn len(&self) -> usize {
        self.spans.len()
    }
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Why one span of a batch was not accepted; reported back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    #[error("trace id must be 16 bytes, got {0}")]
    TraceIdLength(usize),
    #[error("trace id is all zeros")]
    ZeroTraceId,
    #[error("span id must be 8 bytes, got {0}")]
    SpanIdLength(usize),
    #[error("span id is all zeros")]
    ZeroSpanId,
    #[error("parent span id must be empty or 8 bytes, got {0}")]
    ParentIdLength(usize),
    #[error("end time {end} is before start time {start}")]
    EndBeforeStart { start: u64, end: u64 },
    #[error("{0} is neither hex nor base64")]
    IdEncoding(&'static str),
    #[error("invalid span kind {0}")]
    Kind(i32),
    #[error("invalid status code {0}")]
    StatusCode(i32),
    /// A link (OTLP) or reference (Jaeger) whose ids are unusable, by its index in the span.
    #[error("{what} {index}: {problem}")]
    LinkIds {
        what: &'static str,
        index: usize,
        problem: String,
    },
    #[error("trace already has {limit} spans (limits.max_spans_per_trace)")]
    TooManySpansInTrace { limit: usize },
    #[error("span id sent twice in this request for one trace; the first copy is kept")]
    DuplicateSpanId,
    /// Zero is what a sender leaves when it never set the time (OTLP calls the field required).
    #[error("start time is 0 (not set)")]
    ZeroStartTime,
    #[error("{0} is negative or out of range")]
    TimeRange(&'static str),
    #[error("required field {0} is missing")]
    MissingField(&'static str),
    /// A field that is present but unusable (Zipkin/Jaeger: bad hex id, wrong JSON type …).
    #[error("{0}")]
    Malformed(String),
}

impl SpanError {
    /// An OTLP link's id of the wrong length: `id` is "trace id" or "span id".
    pub fn link_id_length(index: usize, id: &str, want: usize, got: usize) -> SpanError {
        SpanError::LinkIds {
            what: "link",
            index,
            problem: format!("{id} must be {want} bytes, got {got}"),
        }
    }

    /// Short label for metrics (`reason="…"`).
    pub fn reason(&self) -> &'static str {
        match self {
            SpanError::TraceIdLength(_) | SpanError::ZeroTraceId => "invalid_trace_id",
            SpanError::IdEncoding(_) => "invalid_id_encoding",
            SpanError::SpanIdLength(_) | SpanError::ZeroSpanId | SpanError::ParentIdLength(_) => "invalid_span_id",
            SpanError::EndBeforeStart { .. } => "invalid_time",
            SpanError::Kind(_) | SpanError::StatusCode(_) => "invalid_enum",
            SpanError::LinkIds { .. } => "invalid_link",
            SpanError::TooManySpansInTrace { .. } => "trace_too_large",
            SpanError::DuplicateSpanId => "duplicate_span_id",
            SpanError::ZeroStartTime => "invalid_time",
            SpanError::TimeRange(_) => "invalid_time",
            SpanError::MissingField(_) => "missing_field",
            SpanError::Malformed(_) => "malformed",
        }
    }
}

/// A span refused at the edge, with where it was in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub index: usize,
    pub error: SpanError,
}

/// Result of decoding a request: the spans that are well-formed and those that are not.
#[derive(Debug, Default)]
pub struct Decoded {
    pub batch: SpanBatch,
    pub rejected: Vec<Rejected>,
    /// Upper bounds on the sizes that ingest limits cap, when the decoder noted them (`None`:
    /// unknown, every span must be checked).
    pub sizes: Option<DecodedSizes>,
}

/// Upper bounds, over a whole request, on what ingest limits cap: noting them while decoding
/// lets a request well inside the limits skip a second pass over every attribute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodedSizes {
    /// At least the byte length of every string the length limit caps: attribute values'
    /// strings or bytes (nested ones too; resources and scopes counted by their whole encoded
    /// size), span and event names, status messages, trace states.
    pub longest_string: usize,
    /// At least the byte length of every attribute key, nested ones and those of resources
    /// and scopes included.
    pub longest_key: usize,
    /// The most attributes of one span, event, link, resource or scope.
    pub most_attributes: usize,
    /// The most events of one span.
    pub most_events: usize,
    /// The most links of one span.
    pub most_links: usize,
}

impl Decoded {
    /// One line for OTLP's `partial_success.error_message`.
    pub fn rejection_message(&self) -> Option<String> {
        rejection_message(&self.rejected)
    }
}

/// The count of rejected spans plus the first one's position and reason.
pub fn rejection_message(rejected: &[Rejected]) -> Option<String> {
    let first = rejected.first()?;
    Some(format!(
        "{} span(s) rejected; first: span #{}: {}",
        rejected.len(),
        first.index,
        first.error
    ))
}
