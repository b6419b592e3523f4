use std::sync::Arc;

use proptest::prelude::*;

use super::*;

#[test]
fn tags_are_typed_only_when_lossless() {
    assert_eq!(typed_tag("true".into()), AnyValue::Bool(true));
    assert_eq!(typed_tag("false".into()), AnyValue::Bool(false));
    assert_eq!(typed_tag("200".into()), AnyValue::Int(200));
    assert_eq!(typed_tag("-7".into()), AnyValue::Int(-7));
    assert_eq!(typed_tag("0.25".into()), AnyValue::Double(0.25));
    for s in [
        "007",
        "1.50",
        "1e3",
        "NaN",
        "inf",
        "+5",
        "True",
        "",
        "12a",
        "99999999999999999999",
    ] {
        assert_eq!(typed_tag(s.into()), AnyValue::String(s.into()), "{s}");
    }
}

#[test]
fn shared_ids_are_stable_and_distinct() {
    let id = [0, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(shared_span_id(id), shared_span_id(id));
    assert_ne!(shared_span_id(id), id);
    assert_ne!(shared_span_id(id), [0; 8]);
}

#[test]
fn shared_server_span_gets_own_id_and_encodes_back() {
    let body = br#"[
      {"traceId":"463ac35c9f6413ad","id":"000000000000000a","kind":"CLIENT","name":"call",
       "timestamp":1000,"duration":50,"localEndpoint":{"serviceName":"front"}},
      {"traceId":"463ac35c9f6413ad","parentId":"0000000000000001","id":"000000000000000b","kind":"CLIENT",
       "name":"call2","timestamp":1000,"duration":50,"localEndpoint":{"serviceName":"front"}},
      {"traceId":"463ac35c9f6413ad","parentId":"000000000000000b","id":"000000000000000c","kind":"SERVER",
       "name":"serve","timestamp":1010,"duration":30,"localEndpoint":{"serviceName":"other"}},
      {"traceId":"463ac35c9f6413ad","parentId":"0000000000000001","id":"000000000000000b","kind":"SERVER",
       "shared":true,"name":"serve","timestamp":1010,"duration":30,"localEndpoint":{"serviceName":"back"}},
      {"traceId":"463ac35c9f6413ad","parentId":"000000000000000b","id":"000000000000000d",
       "name":"child","timestamp":1011,"duration":3,"localEndpoint":{"serviceName":"back"}}
    ]"#;
    let d = json_v2::decode(body).unwrap();
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    let spans = &d.batch.spans;
    let client = &spans[1];
    let server = &spans[3];
    let child = &spans[4];
    assert_eq!(server.parent_span_id, client.span_id);
    assert_ne!(server.span_id, client.span_id);
    assert_eq!(child.parent_span_id, server.span_id, "server-side child re-parented");
    // Another service's span under the shared id is not re-parented.
    assert_eq!(spans[2].parent_span_id, client.span_id);
    let out = json_v2::encode(spans);
    let out = out.as_array().unwrap();
    assert_eq!(out[3]["id"], "000000000000000b");
    assert_eq!(out[3]["parentId"], "0000000000000001");
    assert_eq!(out[3]["shared"], true);
    assert_eq!(out[4]["parentId"], "000000000000000b");
    assert_eq!(out[0]["traceId"], "463ac35c9f6413ad");
    assert!(out[3]["tags"].get("zipkin.shared").is_none());
}

/// A shared server span whose client half is not stored (sent elsewhere and lost, or sampled
/// out) still gives back the parent its reporter sent; its attributes keep it for the other
/// APIs, where it hangs under the client's id.
#[test]
fn a_shared_span_without_its_client_keeps_its_parent() {
    let body = br#"[
      {"traceId":"463ac35c9f6413ad","id":"00000000000000a1","kind":"SERVER","name":"gw",
       "timestamp":1000,"duration":50,"localEndpoint":{"serviceName":"gw"}},
      {"traceId":"463ac35c9f6413ad","parentId":"00000000000000a1","id":"00000000000000a2","kind":"SERVER",
       "shared":true,"name":"serve","timestamp":1010,"duration":30,"localEndpoint":{"serviceName":"back"}}
    ]"#;
    let d = json_v2::decode(body).unwrap();
    let server = &d.batch.spans[1];
    assert_eq!(server.parent_span_id, [0, 0, 0, 0, 0, 0, 0, 0xa2]);
    assert_eq!(
        find_attr(&server.attributes, SHARED_PARENT_ATTR),
        Some(&AnyValue::String("00000000000000a1".into()))
    );
    let out = json_v2::encode(&d.batch.spans);
    assert_eq!(out[1]["id"], "00000000000000a2");
    assert_eq!(out[1]["parentId"], "00000000000000a1");
    assert_eq!(out[1]["shared"], true);
    assert!(out[1]["tags"].get(SHARED_PARENT_ATTR).is_none(), "{out}");
}

/// Older reporters send the server half of a shared span without `shared: true`; next to its
/// client it is shared all the same (as Zipkin's trace merge fixes it up), in either order.
/// A SERVER span alone, or next to a SERVER span with its id, is left as sent.
#[test]
fn a_server_span_reusing_its_clients_id_is_shared_without_the_flag() {
    let client = r#"{"traceId":"463ac35c9f6413ad","parentId":"0000000000000001","id":"000000000000000b",
       "kind":"CLIENT","name":"call","timestamp":1000,"duration":50,"localEndpoint":{"serviceName":"front"}}"#;
    let server = r#"{"traceId":"463ac35c9f6413ad","parentId":"0000000000000001","id":"000000000000000b",
       "kind":"SERVER","name":"serve","timestamp":1010,"duration":30,"localEndpoint":{"serviceName":"back"}}"#;
    for body in [format!("[{client},{server}]"), format!("[{server},{client}]")] {
        let d = json_v2::decode(body.as_bytes()).unwrap();
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        let (c, s) = match d.batch.spans[0].kind {
            SpanKind::Client => (&d.batch.spans[0], &d.batch.spans[1]),
            _ => (&d.batch.spans[1], &d.batch.spans[0]),
        };
        assert_eq!(s.parent_span_id, c.span_id, "{body}");
        assert_ne!(s.span_id, c.span_id);
        assert_eq!(json_v2::encode(&d.batch.spans)[0]["id"], "000000000000000b");
    }
    let alone = json_v2::decode(format!("[{server}]").as_bytes()).unwrap();
    assert_eq!(alone.batch.spans[0].span_id, [0, 0, 0, 0, 0, 0, 0, 0xb]);
}

#[test]
fn whole_body_errors_and_per_span_rejections() {
    assert!(matches!(
        json_v2::decode(b"{}"),
        Err(ZipkinError::NotArray("an object"))
    ));
    assert!(json_v2::decode(b"[{").is_err());
    let d = json_v2::decode(
        br#"[{"traceId":"zz","id":"1","timestamp":1},
             {"id":"1","timestamp":1},
             {"traceId":"1","id":"1","timestamp":1,"duration":-5},
             {"traceId":"1","id":"1","timestamp":1,"kind":"SIDEWAYS"},
             {"traceId":"1","id":"1"},
             7,
             {"traceId":"1","id":"1","timestamp":5}]"#,
    )
    .unwrap();
    assert_eq!(d.batch.spans.len(), 1);
    let reasons: Vec<String> = d.rejected.iter().map(|r| format!("{}: {}", r.index, r.error)).collect();
    assert_eq!(
        reasons,
        [
            "0: traceId \"zz\" is not 16 or 32 hex characters",
            "1: required field traceId is missing",
            "2: duration is negative or out of range",
            "3: kind \"SIDEWAYS\" is not one of CLIENT, SERVER, PRODUCER, CONSUMER",
            "4: required field timestamp is missing",
            "5: span must be a JSON object, got a number",
        ]
    );
}

// ---- property: model → Zipkin v2 JSON → model, for what Zipkin can carry ----------------------

fn tag_value() -> impl Strategy<Value = AnyValue> {
    prop_oneof![
        "[a-z][a-z /_.-]{0,12}".prop_map(AnyValue::String),
        any::<bool>().prop_map(AnyValue::Bool),
        any::<i64>().prop_map(AnyValue::Int),
        (-1_000_000i64..1_000_000, 1u32..1000).prop_map(|(i, f)| AnyValue::Double(i as f64 + f as f64 / 1024.0)),
    ]
}

prop_compose! {
    fn zipkin_shaped_span()(
        wide in any::<bool>(),
        trace in any::<[u8; 16]>(),
        id in any::<u64>().prop_filter("non-zero", |v| *v != 0),
        parent in any::<u64>(),
        kind in prop_oneof![Just(SpanKind::Internal), Just(SpanKind::Client), Just(SpanKind::Server),
                            Just(SpanKind::Producer), Just(SpanKind::Consumer)],
        name in "[a-z /]{0,16}",
        start_us in 1u64..4_000_000_000_000_000,
        dur_us in 0u64..100_000_000,
        service in "[a-z]{1,8}",
        peer in proptest::option::of("[a-z]{1,8}"),
        peer_ip in proptest::option::of(any::<[u8; 4]>()),
        tags in proptest::collection::btree_map("[a-z]{1,6}(\\.[a-z]{1,6})?", tag_value(), 0..6),
        events in proptest::collection::vec(
            (0u64..1_000_000, "[a-z ]{1,10}", proptest::collection::btree_map("[a-z]{1,5}", "[a-z]{0,5}", 0..3)),
            0..3,
        ),
        status in prop_oneof![Just(None), Just(Some(String::new())), "[a-z ]{1,10}".prop_map(Some)],
        scope in proptest::option::of(("[a-z.]{1,10}", "[0-9.]{0,5}")),
        debug in any::<bool>(),
    ) -> Span {
        let mut trace_id = trace;
        if !wide { trace_id[..8].copy_from_slice(&[0; 8]); }
        if trace_id == [0; 16] { trace_id[15] = 1; }
        let mut attributes: Vec<KeyValue> = tags
            .into_iter()
            .filter(|(k, _)| !k.starts_with("otel.") && !k.starts_with("zipkin.") && k != "error")
            .map(|(k, v)| KeyValue::new(k, v))
            .collect();
        if let Some(p) = peer { attributes.push(KeyValue::string("peer.service", p)); }
        if let Some(ip) = peer_ip {
            let ip = std::net::Ipv4Addr::from(ip).to_string();
            attributes.push(KeyValue::string("network.peer.address", ip.clone()));
            if matches!(kind, SpanKind::Client | SpanKind::Producer) {
                attributes.push(KeyValue::string("server.address", ip));
            }
        }
        if debug { attributes.push(KeyValue::new(DEBUG_ATTR, AnyValue::Bool(true))); }
        let resource = Resource {
            attributes: vec![KeyValue::string("service.name", service)],
            dropped_attributes_count: 0,
        };
        let (scope_name, scope_version) = scope.unwrap_or_default();
        let scope_version = if scope_name.is_empty() { String::new() } else { scope_version };
        Span {
            trace_id,
            span_id: id.to_be_bytes(),
            parent_span_id: parent.to_be_bytes(),
            name,
            kind,
            start_unix_nano: start_us * 1000,
            end_unix_nano: (start_us + dur_us) * 1000,
            attributes,
            events: events.into_iter().map(|(off, n, attrs)| Event {
                time_unix_nano: (start_us + off) * 1000,
                name: n,
                attributes: attrs.into_iter().map(|(k, v)| KeyValue::string(k, v)).collect(),
                ..Event::default()
            }).collect(),
            status: match status {
                None => Status::default(),
                Some(message) => Status { code: StatusCode::Error, message },
            },
            resource: Arc::new(resource),
            scope: Arc::new(Scope { name: scope_name, version: scope_version, ..Scope::default() }),
            ..Span::default()
        }
    }
}

fn normalized(mut s: Span) -> Span {
    s.attributes.sort_by(|a, b| a.key.cmp(&b.key));
    s
}

proptest! {
    #[test]
    fn model_to_v2_json_and_back(span in zipkin_shaped_span()) {
        let json = json_v2::encode(std::slice::from_ref(&span));
        let body = serde_json::to_vec(&json).unwrap();
        let back = json_v2::decode(&body).unwrap();
        prop_assert!(back.rejected.is_empty(), "{:?}", back.rejected);
        prop_assert_eq!(back.batch.spans.len(), 1);
        let got = back.batch.spans.into_iter().next().unwrap();
        prop_assert_eq!(normalized(got), normalized(span));
    }
}

/// proto3 has no encoder in production (the query API answers JSON); this one exists so the
/// proto3 decoder gets the same property round-trip as JSON v2.
fn to_proto3(spans: Vec<ZipkinSpan>) -> Vec<u8> {
    use prost::Message;
    let endpoint = |e: Endpoint| proto::PbEndpoint {
        service_name: e.service_name,
        ipv4: e
            .ipv4
            .parse::<std::net::Ipv4Addr>()
            .map(|a| a.octets().to_vec())
            .unwrap_or_default(),
        ipv6: e
            .ipv6
            .parse::<std::net::Ipv6Addr>()
            .map(|a| a.octets().to_vec())
            .unwrap_or_default(),
        port: e.port as i32,
    };
    let spans = spans
        .into_iter()
        .map(|z| proto::PbSpan {
            trace_id: z.trace_id.to_vec(),
            parent_id: if z.parent_id == [0; 8] {
                Vec::new()
            } else {
                z.parent_id.to_vec()
            },
            id: z.id.to_vec(),
            kind: match z.kind {
                None => 0,
                Some(Kind::Client) => 1,
                Some(Kind::Server) => 2,
                Some(Kind::Producer) => 3,
                Some(Kind::Consumer) => 4,
            },
            name: z.name,
            timestamp: z.timestamp_us,
            duration: z.duration_us,
            local_endpoint: z.local.map(endpoint),
            remote_endpoint: z.remote.map(endpoint),
            annotations: z
                .annotations
                .into_iter()
                .map(|(timestamp, value)| proto::PbAnnotation { timestamp, value })
                .collect(),
            tags: z.tags.into_iter().collect(),
            debug: z.debug,
            shared: z.shared,
        })
        .collect();
    proto::ListOfSpans { spans }.encode_to_vec()
}

proptest! {
    #[test]
    fn model_to_proto3_and_back(span in zipkin_shaped_span()) {
        let body = to_proto3(encode(std::slice::from_ref(&span)));
        let back = proto::decode(&body).unwrap();
        prop_assert!(back.rejected.is_empty(), "{:?}", back.rejected);
        prop_assert_eq!(back.batch.spans.len(), 1);
        let got = back.batch.spans.into_iter().next().unwrap();
        prop_assert_eq!(normalized(got), normalized(span));
    }
}
