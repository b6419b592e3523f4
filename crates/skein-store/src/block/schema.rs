//! The block's column layout: one row per span, sorted by (trace id, start time).

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use skein_model::AnyValue;

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const START: &str = "start_unix_nano";
/// Not stored: a row's position in the span table, which the reader can give alongside
/// stored columns (`BlockHandle::scan_where`).
pub const ROW_NUMBER: &str = "row_number";
pub const DURATION: &str = "duration_nano";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const TRACE_STATE: &str = "trace_state";
pub const FLAGS: &str = "flags";
pub const SERVICE: &str = "service_name";
pub const RESOURCE: &str = "resource";
pub const SCOPE: &str = "scope";
pub const ATTRS: &str = "attributes";
pub const EVENTS: &str = "events";
pub const LINKS: &str = "links";
pub const DROPPED: &str = "dropped_counts";
/// On disk only: how many rows back, within the same trace, the parent span is (0: none or
/// not in this block, then `parent_span_id` holds it). Readers turn it back into ids.
pub const PARENT_OFFSET: &str = "parent_offset";

/// How an attribute is stored in a column of its own (hot or per-block dedicated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotType {
    Str,
    Int,
    Double,
    Bool,
}

impl HotType {
    pub fn of(v: &AnyValue) -> Option<HotType> {
        Some(match v {
            AnyValue::String(_) => HotType::Str,
            AnyValue::Int(_) => HotType::Int,
            AnyValue::Double(_) => HotType::Double,
            AnyValue::Bool(_) => HotType::Bool,
            _ => return None,
        })
    }

    pub fn data_type(self) -> DataType {
        match self {
            HotType::Str => DataType::Utf8,
            HotType::Int => DataType::Int64,
            HotType::Double => DataType::Float64,
            HotType::Bool => DataType::Boolean,
        }
    }
}

/// Column-name prefix of per-block dedicated attribute columns: `attr.<key>`.
pub const DEDICATED_PREFIX: &str = "attr.";

/// A span attribute key that one block stores in a column of its own. Each block picks the
/// keys frequent in its spans, so a workload's own attributes get dictionary-encoded, typed
/// columns (small on disk, scanned without decoding the generic column).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dedicated {
    pub key: String,
    #[serde(rename = "type")]
    pub ty: HotType,
    /// From format 5: a double column whose values have at most this many decimal places
    /// stores them as integers, `value × 10^decimals`, which zstd packs tighter than the
    /// doubles' binary fractions (amounts, prices: 1.65 → 1.15 B/span on the loader's). Readers
    /// see doubles; a value that is not such a decimal stays in the generic column
    /// (`to_decimal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u8>,
}

impl Dedicated {
    pub fn new(key: impl Into<String>, ty: HotType) -> Dedicated {
        Dedicated {
            key: key.into(),
            ty,
            decimals: None,
        }
    }

    pub fn column(&self) -> String {
        format!("{DEDICATED_PREFIX}{}", self.key)
    }

    /// The column's type in the Parquet file (readers and writers exchange `ty.data_type()`).
    pub fn file_type(&self) -> DataType {
        match self.decimals {
            Some(_) => DataType::Int64,
            None => self.ty.data_type(),
        }
    }
}

/// Whether a typed column of `ty` takes `v`: of its type and, for a decimal column, such a
/// decimal.
pub fn column_takes(ty: HotType, decimals: Option<u8>, v: &AnyValue) -> bool {
    match (decimals, v) {
        (Some(d), AnyValue::Double(x)) => to_decimal(*x, d).is_some(),
        (Some(_), _) => false,
        (None, v) => HotType::of(v) == Some(ty),
    }
}

/// Most decimal places a decimal column keeps (powers of ten up to here are exact doubles).
pub const MAX_DECIMALS: u8 = 9;
const POWERS_OF_TEN: [f64; MAX_DECIMALS as usize + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// `v` as an integer count of `10^-decimals`, when that integer gives `v` back bit for bit
/// (`from_decimal`) and is below 2^53 in size: not for NaN, infinities, -0.0, more decimal
/// places, or values that large.
pub fn to_decimal(v: f64, decimals: u8) -> Option<i64> {
    let scale = *POWERS_OF_TEN.get(decimals as usize)?;
    let n = (v * scale).round();
    if !n.is_finite() || n.abs() >= (1u64 << 53) as f64 {
        return None;
    }
    let n = n as i64;
    (from_decimal(n, decimals).to_bits() == v.to_bits()).then_some(n)
}

/// The fewest decimal places (`to_decimal`) that hold every one of `values`, or `None` when
/// some value needs more than `MAX_DECIMALS` or is no such decimal (or there are no values).
/// Every value, not most: a value the column refuses goes to the generic column, which a
/// search for the key then decodes for every row of the block.
pub fn decimals_of(values: impl IntoIterator<Item = f64>) -> Option<u8> {
    let values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return None;
    }
    (0..=MAX_DECIMALS).find(|&d| values.iter().all(|&v| to_decimal(v, d).is_some()))
}

/// The double a decimal column's integer stands for (one correctly rounded division).
/// `decimals` is at most `MAX_DECIMALS` (block metas are checked when loaded).
pub fn from_decimal(n: i64, decimals: u8) -> f64 {
    n as f64 / POWERS_OF_TEN[decimals as usize]
}

/// A block's span schema: the fixed columns followed by its dedicated attribute columns.
/// `schema` is what readers and writers exchange; `file_schema` is what Parquet stores, where
/// parents are mostly row offsets (a random 8-byte id compresses to nothing; "3 rows back"
/// compresses to a few bits).
#[derive(Debug, Clone)]
pub struct Layout {
    pub dedicated: Vec<Dedicated>,
    /// Keys of `dedicated` whose values repeat (few distinct values among the spans
    /// sampled): their dictionary-encoded columns are stored uncompressed (see `write::props`).
    pub low_cardinality: BTreeSet<String>,
    pub schema: SchemaRef,
    pub file_schema: SchemaRef,
}

impl Layout {
    pub fn new(dedicated: Vec<Dedicated>) -> Layout {
        let mut fields: Vec<Field> = SPANS.fields().iter().map(|f| f.as_ref().clone()).collect();
        for d in &dedicated {
            fields.push(Field::new(d.column(), d.ty.data_type(), true));
        }
        let schema = Arc::new(Schema::new(fields.clone()));
        let fixed = SPANS.fields().len();
        for (f, d) in fields[fixed..].iter_mut().zip(&dedicated) {
            *f = Field::new(d.column(), d.file_type(), true);
        }
        fields[col(PARENT_SPAN_ID)] = Field::new(PARENT_SPAN_ID, DataType::FixedSizeBinary(8), true);
        fields.push(Field::new(PARENT_OFFSET, DataType::UInt32, false));
        Layout {
            dedicated,
            low_cardinality: BTreeSet::new(),
            schema,
            file_schema: Arc::new(Schema::new(fields)),
        }
    }

    /// Marks these keys' dedicated columns as low-cardinality (keys without a column are ignored).
    pub fn with_low_cardinality<'a>(mut self, keys: impl IntoIterator<Item = &'a str>) -> Layout {
        for k in keys {
            if self.position(k).is_some() {
                self.low_cardinality.insert(k.to_string());
            }
        }
        self
    }

    /// The fixed schema only.
    pub fn fixed() -> Layout {
        Layout::new(Vec::new())
    }

    /// Index among `dedicated` of the column for `key`.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.dedicated.iter().position(|d| d.key == key)
    }

    /// The columns readers see (parents as ids).
    pub fn column_names(&self) -> Vec<String> {
        self.schema.fields().iter().map(|f| f.name().clone()).collect()
    }
}

/// Attributes that get a column of their own: searched often, cheap to scan, compress well.
/// An attribute whose value is not of the column's type stays in the generic column.
pub const HOT: &[(&str, &str, HotType)] = &[
    ("attr_http_request_method", "http.request.method", HotType::Str),
    (
        "attr_http_response_status_code",
        "http.response.status_code",
        HotType::Int,
    ),
    ("attr_http_route", "http.route", HotType::Str),
    ("attr_url_full", "url.full", HotType::Str),
    ("attr_server_address", "server.address", HotType::Str),
    ("attr_db_system", "db.system", HotType::Str),
    ("attr_db_statement", "db.statement", HotType::Str),
    ("attr_db_query_text", "db.query.text", HotType::Str),
    ("attr_rpc_system", "rpc.system", HotType::Str),
    ("attr_rpc_service", "rpc.service", HotType::Str),
    ("attr_rpc_method", "rpc.method", HotType::Str),
    ("attr_error", "error", HotType::Bool),
];

pub fn hot_index(key: &str) -> Option<usize> {
    HOT.iter().position(|(_, k, _)| *k == key)
}

pub static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new(TRACE_ID, DataType::FixedSizeBinary(16), false),
        Field::new(SPAN_ID, DataType::FixedSizeBinary(8), false),
        Field::new(PARENT_SPAN_ID, DataType::FixedSizeBinary(8), false),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(KIND, DataType::UInt8, false),
        Field::new(START, DataType::Int64, false),
        Field::new(DURATION, DataType::Int64, false),
        Field::new(STATUS_CODE, DataType::UInt8, false),
        Field::new(STATUS_MESSAGE, DataType::Utf8, false),
        Field::new(TRACE_STATE, DataType::Utf8, false),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(SERVICE, DataType::Utf8, false),
        Field::new(RESOURCE, shared_bytes(), false),
        Field::new(SCOPE, shared_bytes(), false),
    ];
    for (col, _, t) in HOT {
        fields.push(Field::new(*col, t.data_type(), true));
    }
    fields.push(Field::new(ATTRS, DataType::Binary, false));
    // Null for a span without events (from format 6; earlier blocks store an empty list).
    fields.push(Field::new(EVENTS, DataType::Binary, true));
    fields.push(Field::new(LINKS, DataType::Binary, false));
    // dropped attribute, event and link counts, as one u64 (21 bits each)
    fields.push(Field::new(DROPPED, DataType::UInt64, false));
    Arc::new(Schema::new(fields))
});

/// The Arrow type of the resource and scope columns: encoded protobuf messages that many rows
/// share, as a dictionary, so a batch holds each distinct message once and readers decode or
/// match it once instead of once per row. On disk this is the same dictionary-encoded Parquet
/// byte-array column as a plain `Binary` one (blocks written before read back the same way).
pub fn shared_bytes() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Binary))
}

pub fn col(name: &str) -> usize {
    SPANS.index_of(name).expect("column in schema")
}

// The per-trace summary table, a row per trace in the span table's order. From format 4 it
// holds no trace ids: the span table has them, and a summary is found by its trace's first row
// (`BlockHandle::summaries`). Formats 1 to 3 store them as the first column, `SUM_TRACE_ID`.
pub const SUM_TRACE_ID: &str = "trace_id";
pub const SUM_ROOT_SERVICE: &str = "root_service";
pub const SUM_ROOT_NAME: &str = "root_name";
/// The trace's start in formats 1 to 6. Format 7 leaves it out: it is the start of the
/// trace's first row in the span table (rows are sorted by start within a trace), which
/// summaries are found through anyway.
pub const SUM_START: &str = "start_unix_nano";
/// The trace's end in formats 1 to 3; format 4 stores `SUM_DURATION` instead, which packs
/// tighter (0.14 B/span less on the loader's spans).
pub const SUM_END: &str = "end_unix_nano";
pub const SUM_DURATION: &str = "duration_nano";
pub const SUM_SPANS: &str = "span_count";
pub const SUM_ERRORS: &str = "error_count";
pub const SUM_SERVICES: &str = "services";

pub static SUMMARIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(SUM_ROOT_SERVICE, DataType::Utf8, false),
        Field::new(SUM_ROOT_NAME, DataType::Utf8, false),
        Field::new(SUM_DURATION, DataType::Int64, false),
        // Rows of the trace in the span table: their running total is where each trace starts.
        Field::new(SUM_SPANS, DataType::UInt32, false),
        Field::new(SUM_ERRORS, DataType::UInt32, false),
        // "service=count" pairs joined by '\n'
        Field::new(SUM_SERVICES, DataType::Utf8, false),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Decimals come back bit for bit; anything that would not (more places, -0.0, NaN,
    /// infinities, beyond 2^53) is refused, so it stays a double in the generic column.
    #[test]
    fn decimals_round_trip_exactly_or_are_refused() {
        for (v, places, n) in [
            (12.34, 2, 1234),
            (-0.01, 2, -1),
            (516.86, 2, 51686),
            (7.0, 0, 7),
            (7.0, 3, 7000),
            (0.25, 2, 25),
            (1e15, 0, 1_000_000_000_000_000),
            (123_456.789_012_345, 9, 123_456_789_012_345),
        ] {
            assert_eq!(to_decimal(v, places), Some(n), "{v} at {places}");
            assert_eq!(from_decimal(n, places).to_bits(), v.to_bits(), "{v}");
        }
        for (v, places) in [
            (0.1 + 0.2, 9),
            (1.0 / 3.0, 9),
            (12.345, 2),
            (-0.0, 2),
            (f64::NAN, 0),
            (f64::INFINITY, 0),
            (1e300, 0),
            (9_007_199_254_740_993.0, 0),
            (1.5, 10),
        ] {
            assert_eq!(to_decimal(v, places), None, "{v} at {places}");
        }
        assert_eq!(decimals_of([1.5, 2.25, 3.0]), Some(2));
        assert_eq!(decimals_of([4.0, 5.0]), Some(0));
        assert_eq!(decimals_of([0.1 + 0.2]), None);
        assert_eq!(decimals_of(std::iter::empty()), None);
        // One value with no short form costs the column its decimals.
        let mostly = |odd: usize| (0..100).map(move |i| if i < odd { 1.0 / 3.0 } else { i as f64 / 100.0 });
        assert_eq!(decimals_of(mostly(0)), Some(2));
        assert_eq!(decimals_of(mostly(1)), None);
        // Places are checked for every value at once: 1e14 fits 0 places, not 2 (2^53).
        assert_eq!(decimals_of([1e14, 0.25]), None);
        assert_eq!(decimals_of([1e12, 0.25]), Some(2));
    }
}
