use super::*;
use crate::jaeger::{JaegerProcess, JaegerSpan};

fn both() -> [Protocol; 2] {
    [Protocol::Binary, Protocol::Compact]
}

fn writer_bytes(protocol: Protocol, f: impl Fn(&mut dyn ProtocolWriterDyn)) -> Vec<u8> {
    match protocol {
        Protocol::Binary => {
            let mut w = BinaryWriter::new();
            f(&mut w);
            w.into_bytes()
        }
        Protocol::Compact => {
            let mut w = CompactWriter::new();
            f(&mut w);
            w.into_bytes()
        }
    }
}

/// Object-safe view of the writer for tests.
trait ProtocolWriterDyn {
    fn field(&mut self, ty: TType, id: i16);
    fn i64(&mut self, v: i64);
    fn i32(&mut self, v: i32);
    fn bool(&mut self, v: bool);
    fn binary(&mut self, v: &[u8]);
    fn list(&mut self, elem: TType, len: usize);
    fn begin(&mut self);
    fn end(&mut self);
}

impl<W: ProtocolWriter> ProtocolWriterDyn for W {
    fn field(&mut self, ty: TType, id: i16) {
        self.write_field_begin(ty, id)
    }
    fn i64(&mut self, v: i64) {
        self.write_i64(v)
    }
    fn i32(&mut self, v: i32) {
        self.write_i32(v)
    }
    fn bool(&mut self, v: bool) {
        self.write_bool(v)
    }
    fn binary(&mut self, v: &[u8]) {
        self.write_binary(v)
    }
    fn list(&mut self, elem: TType, len: usize) {
        self.write_list_begin(elem, len)
    }
    fn begin(&mut self) {
        self.write_struct_begin()
    }
    fn end(&mut self) {
        self.write_struct_end()
    }
}

fn one_span_batch(protocol: Protocol) -> Vec<u8> {
    let span = JaegerSpan {
        trace_id: [1; 16],
        span_id: [2; 8],
        operation_name: "op".into(),
        start_unix_nano: 1_000_000,
        ..JaegerSpan::default()
    };
    let process = JaegerProcess {
        service_name: "svc".into(),
        tags: vec![],
    };
    encode_batch(protocol, &process, &[span], Some(42), Some(ClientStats::default()))
}

#[test]
fn seq_no_and_client_stats_round_trip() {
    for p in both() {
        let stats = ClientStats {
            full_queue_dropped_spans: 1,
            too_large_dropped_spans: -2,
            failed_to_emit_spans: i64::MAX,
        };
        let bytes = encode_batch(p, &JaegerProcess::default(), &[], Some(-7), Some(stats));
        let b = decode_batch(p, &bytes).unwrap();
        assert_eq!((b.seq_no, b.stats), (Some(-7), Some(stats)), "{p:?}");
    }
}

#[test]
fn hostile_list_length_is_refused_before_allocating() {
    for p in both() {
        // Batch { 1: Process {}, 2: list<struct> of 2^31-1 elements } and nothing else.
        let bytes = writer_bytes(p, |w| {
            w.begin();
            w.field(TType::Struct, 1);
            w.begin();
            w.end();
            w.field(TType::List, 2);
            w.list(TType::Struct, i32::MAX as usize);
        });
        let e = decode_batch(p, &bytes).unwrap_err();
        assert!(e.to_string().contains("claims 2147483647 elements"), "{p:?}: {e}");
        assert!(e.to_string().starts_with("Batch.spans"), "{p:?}: {e}");
    }
}

#[test]
fn hostile_string_length_is_refused() {
    for p in both() {
        let bytes = writer_bytes(p, |w| {
            w.begin();
            w.field(TType::Struct, 1);
            w.begin();
            w.field(TType::Binary, 1);
            // A length prefix promising far more than follows.
            match p {
                Protocol::Binary => w.i32(1 << 30),
                Protocol::Compact => w.binary(&[]), // replaced below
            }
        });
        let bytes = if p == Protocol::Compact {
            // varint 2^30 as the string length.
            let mut b = bytes[..bytes.len() - 1].to_vec();
            b.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
            b
        } else {
            bytes
        };
        let e = decode_batch(p, &bytes).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{p:?}: {e}");
        assert!(e.to_string().contains("process.serviceName"), "{p:?}: {e}");
    }
}

#[test]
fn deep_nesting_in_unknown_fields_is_bounded() {
    for p in both() {
        let depth = 200;
        let bytes = writer_bytes(p, |w| {
            w.begin();
            for _ in 0..depth {
                w.field(TType::Struct, 9);
                w.begin();
            }
            for _ in 0..depth {
                w.end();
            }
            w.end();
        });
        let e = decode_batch(p, &bytes).unwrap_err();
        assert!(e.to_string().contains("nesting deeper"), "{p:?}: {e}");
    }
}

#[test]
fn unknown_fields_are_skipped() {
    for p in both() {
        // A Batch with an unknown field 7 (list<bool>, string) around the known ones.
        let bytes = writer_bytes(p, |w| {
            w.begin();
            w.field(TType::List, 7);
            w.list(TType::Bool, 3);
            w.bool(true);
            w.bool(false);
            w.bool(true);
            w.field(TType::Struct, 1);
            w.begin();
            w.field(TType::Binary, 1);
            w.binary(b"svc");
            w.field(TType::Binary, 30); // a field-id jump larger than compact's delta
            w.binary(b"ignored");
            w.end();
            w.field(TType::List, 2);
            w.list(TType::Struct, 0);
            w.field(TType::I64, 3);
            w.i64(5);
            w.end();
        });
        let b = decode_batch(p, &bytes).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(b.process.service_name, "svc");
        assert_eq!(b.seq_no, Some(5));
    }
}

#[test]
fn missing_required_fields() {
    for p in both() {
        let bytes = writer_bytes(p, |w| {
            w.begin();
            w.field(TType::List, 2);
            w.list(TType::Struct, 0);
            w.end();
        });
        let e = decode_batch(p, &bytes).unwrap_err();
        assert!(e.to_string().contains("process (1) is missing"), "{p:?}: {e}");

        // A span without a start time is readable but rejected on its own.
        let bytes = writer_bytes(p, |w| {
            w.begin();
            w.field(TType::Struct, 1);
            w.begin();
            w.end();
            w.field(TType::List, 2);
            w.list(TType::Struct, 1);
            w.begin();
            w.field(TType::I64, 1);
            w.i64(1);
            w.field(TType::I64, 3);
            w.i64(1);
            w.end();
            w.end();
        });
        let b = decode_batch(p, &bytes).unwrap();
        assert_eq!(b.spans, vec![Err(crate::SpanError::MissingField("startTime"))]);
    }
}

#[test]
fn negative_times_are_rejected_per_span() {
    for p in both() {
        let bytes = writer_bytes(p, |w| {
            w.begin();
            w.field(TType::Struct, 1);
            w.begin();
            w.end();
            w.field(TType::List, 2);
            w.list(TType::Struct, 1);
            w.begin();
            w.field(TType::I64, 1);
            w.i64(1);
            w.field(TType::I64, 3);
            w.i64(1);
            w.field(TType::I64, 8);
            w.i64(-1);
            w.end();
            w.end();
        });
        let b = decode_batch(p, &bytes).unwrap();
        assert_eq!(b.spans, vec![Err(crate::SpanError::TimeRange("startTime"))]);
    }
}

#[test]
fn trailing_bytes_and_wrong_element_types_are_errors() {
    for p in both() {
        let mut bytes = one_span_batch(p);
        bytes.push(0);
        let e = decode_batch(p, &bytes).unwrap_err();
        assert!(e.to_string().contains("1 unexpected bytes"), "{p:?}: {e}");

        let bytes = writer_bytes(p, |w| {
            w.begin();
            w.field(TType::Struct, 1);
            w.begin();
            w.end();
            w.field(TType::List, 2);
            w.list(TType::I64, 1);
            w.i64(1);
            w.end();
        });
        let e = decode_batch(p, &bytes).unwrap_err();
        assert!(e.to_string().contains("spans: list of I64, want Struct"), "{p:?}: {e}");
    }
}

#[test]
fn emit_batch_envelope() {
    let span = JaegerSpan {
        trace_id: [1; 16],
        span_id: [2; 8],
        ..JaegerSpan::default()
    };
    for p in both() {
        let bytes = encode_emit_batch(p, 77, &JaegerProcess::default(), std::slice::from_ref(&span));
        let b = decode_emit_batch(p, &bytes).unwrap();
        assert_eq!(b.spans, vec![Ok(span.clone())]);

        // Other methods are refused by name.
        let bytes = writer_bytes(p, |_| {});
        assert!(decode_emit_batch(p, &bytes).is_err());
    }
    // The old non-strict binary envelope: name length, name, type byte, sequence id.
    let strict = encode_emit_batch(Protocol::Binary, 3, &JaegerProcess::default(), &[]);
    let mut old = Vec::new();
    old.extend_from_slice(&(EMIT_BATCH.len() as i32).to_be_bytes());
    old.extend_from_slice(EMIT_BATCH.as_bytes());
    old.push(MessageType::Oneway as u8);
    old.extend_from_slice(&3i32.to_be_bytes());
    let header_len = 4 + 4 + EMIT_BATCH.len() + 4;
    old.extend_from_slice(&strict[header_len..]);
    decode_emit_batch(Protocol::Binary, &old).unwrap();

    let mut zipkin = BinaryWriter::new();
    zipkin.write_message_begin("emitZipkinBatch", MessageType::Oneway, 1);
    let e = decode_emit_batch(Protocol::Binary, &zipkin.into_bytes()).unwrap_err();
    assert!(e.to_string().contains("emitZipkinBatch"), "{e}");
}

#[test]
fn compact_varints_are_bounded() {
    // An i64 varint of 11 continuation bytes.
    let mut b = vec![0x16]; // field 1, type i64
    b.extend_from_slice(&[0xff; 11]);
    let mut r = CompactReader::new(&b);
    r.read_struct_begin().unwrap();
    let (t, id) = r.read_field_begin().unwrap().unwrap();
    assert_eq!((t, id), (TType::I64, 1));
    let e = r.read_i64().unwrap_err();
    assert!(e.to_string().contains("longer than 10 bytes"), "{e}");
}

#[test]
fn compact_and_binary_scalars_round_trip() {
    for p in both() {
        let values = [0i64, 1, -1, i64::MIN, i64::MAX, 300, -300];
        let bytes = writer_bytes(p, |w| {
            w.list(TType::I64, values.len());
            for v in values {
                w.i64(v);
            }
        });
        let got: Vec<i64> = match p {
            Protocol::Binary => {
                let mut r = BinaryReader::new(&bytes);
                let (_, n) = r.read_list_begin().unwrap();
                (0..n).map(|_| r.read_i64().unwrap()).collect()
            }
            Protocol::Compact => {
                let mut r = CompactReader::new(&bytes);
                let (_, n) = r.read_list_begin().unwrap();
                (0..n).map(|_| r.read_i64().unwrap()).collect()
            }
        };
        assert_eq!(got, values, "{p:?}");
    }
}
