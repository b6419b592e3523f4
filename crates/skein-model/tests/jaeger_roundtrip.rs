//! Property round trips through every Jaeger codec: model → thrift (binary, compact; bare batch
//! and agent emitBatch) → model, and model → api_v2 protobuf → model, for everything the Jaeger
//! formats can carry (µs times, the five tag types, links without attributes).

use std::sync::Arc;

use proptest::prelude::*;
use prost::Message;
use skein_model::jaeger::convert::{group_by_process, jaeger_flags, LINK_REF_TYPE};
use skein_model::jaeger::thrift::{self, Protocol};
use skein_model::jaeger::{batch_to_model, proto};
use skein_model::{KeyValue, Span};

mod support;
use support::micro_spans::spans;

/// What survives Jaeger: its own flag bits only; each link (a FOLLOWS_FROM reference there)
/// comes back noting that type.
fn expected(spans: &[Span]) -> Vec<Span> {
    let mut out: Vec<Span> = spans
        .iter()
        .cloned()
        .map(|mut s| {
            s.flags = jaeger_flags(s.flags);
            for l in &mut s.links {
                l.attributes = vec![KeyValue::string(LINK_REF_TYPE, "follows_from")];
            }
            s
        })
        .collect();
    out.sort_by_key(|s| (s.span_id, s.trace_id));
    out
}

fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.span_id, s.trace_id));
    spans
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn thrift_batches_round_trip(spans in spans()) {
        for protocol in [Protocol::Binary, Protocol::Compact] {
            let mut back = Vec::new();
            for (i, (process, jspans)) in group_by_process(&spans).into_iter().enumerate() {
                let bytes = thrift::encode_batch(protocol, &process, &jspans, Some(i as i64), None);
                let batch = thrift::decode_batch(protocol, &bytes).expect("decodes");
                let decoded = batch_to_model(batch.process, batch.spans);
                prop_assert!(decoded.rejected.is_empty());
                back.extend(decoded.batch.spans);

                let bytes = thrift::encode_emit_batch(protocol, i as i32, &process, &jspans);
                let batch = thrift::decode_emit_batch(protocol, &bytes).expect("decodes");
                let again = batch_to_model(batch.process, batch.spans);
                prop_assert_eq!(&again.batch.spans[..], &back[back.len() - jspans.len()..]);
            }
            prop_assert_eq!(sorted(back), expected(&spans));
        }
    }

    #[test]
    fn proto_batches_round_trip(spans in spans()) {
        let mut back = Vec::new();
        for batch in proto::batches_from_model(&spans) {
            let bytes = proto::PostSpansRequest { batch: Some(batch) }.encode_to_vec();
            let req = proto::PostSpansRequest::decode(bytes.as_slice()).unwrap();
            let decoded = proto::decode_post_spans(req);
            prop_assert!(decoded.rejected.is_empty());
            back.extend(decoded.batch.spans);
        }
        prop_assert_eq!(sorted(back), expected(&spans));
    }

    /// The query service's shape: every span carries its own process, the batch none.
    #[test]
    fn proto_spans_with_own_process_round_trip(spans in spans()) {
        let batch = proto::Batch {
            spans: spans.iter().map(proto::span_from_model).collect(),
            process: None,
        };
        let decoded = proto::decode_post_spans(proto::PostSpansRequest { batch: Some(batch) });
        prop_assert!(decoded.rejected.is_empty());
        let back = decoded.batch.spans;
        // Equal processes share one resource again.
        for (i, a) in back.iter().enumerate() {
            for b in &back[i + 1..] {
                if a.resource == b.resource {
                    prop_assert!(Arc::ptr_eq(&a.resource, &b.resource));
                }
            }
        }
        prop_assert_eq!(sorted(back), expected(&spans));
    }
}
