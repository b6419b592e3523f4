//! Which trace-context header format each hop speaks, and one place that injects and extracts
//! them. Clients pick the format of their hop; servers accept any of them (a mixed estate), and
//! both sides record the format on their span as `demo.propagation` so a test can check that each
//! format's hop joined the trace.
//!
//! B3 comes from `opentelemetry-zipkin`, whose whole crate (propagator included) is marked
//! deprecated in 0.33 in favour of OTLP export; the propagator itself is maintained and correct.
#![allow(deprecated)]

use std::collections::HashMap;

use http::HeaderMap;
use opentelemetry::propagation::{text_map_propagator::FieldIter, Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_zipkin::{B3Encoding, Propagator as B3Propagator};

/// The header format one hop uses to carry the trace context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// W3C `traceparent` + `tracestate`.
    W3c,
    /// Zipkin B3 single header: `b3: {trace}-{span}-{sampled}`.
    B3Single,
    /// Zipkin B3 multi header: `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`.
    B3Multi,
    /// Jaeger `uber-trace-id: {trace}:{span}:0:{flags}`.
    Jaeger,
    /// No headers at all: the deliberately broken hop (the callee starts a new trace).
    Dropped,
}

impl Format {
    pub fn label(self) -> &'static str {
        match self {
            Format::W3c => "w3c",
            Format::B3Single => "b3-single",
            Format::B3Multi => "b3-multi",
            Format::Jaeger => "jaeger",
            Format::Dropped => "none",
        }
    }
}

/// All propagators, built once and shared by every service.
#[derive(Debug)]
pub struct Propagators {
    w3c: TraceContextPropagator,
    baggage: BaggagePropagator,
    b3_single: B3Propagator,
    b3_multi: B3Propagator,
    jaeger: JaegerPropagator,
}

impl Default for Propagators {
    fn default() -> Self {
        Propagators {
            w3c: TraceContextPropagator::new(),
            baggage: BaggagePropagator::new(),
            b3_single: B3Propagator::with_encoding(B3Encoding::SingleHeader),
            b3_multi: B3Propagator::with_encoding(B3Encoding::MultipleHeader),
            jaeger: JaegerPropagator::default(),
        }
    }
}

impl Propagators {
    fn for_format(&self, format: Format) -> Option<&dyn TextMapPropagator> {
        match format {
            Format::W3c => Some(&self.w3c),
            Format::B3Single => Some(&self.b3_single),
            Format::B3Multi => Some(&self.b3_multi),
            Format::Jaeger => Some(&self.jaeger),
            Format::Dropped => None,
        }
    }

    /// Writes `cx` in `format`, plus W3C `baggage` (independent of the trace-context format, as
    /// an OTel SDK configured with `OTEL_PROPAGATORS=b3,baggage` does). `Dropped` writes nothing.
    pub fn inject(&self, format: Format, cx: &Context, headers: &mut HeaderMap) {
        if let Some(p) = self.for_format(format) {
            p.inject_context(cx, &mut HeaderInjector(headers));
            self.baggage.inject_context(cx, &mut HeaderInjector(headers));
        }
    }

    /// The remote parent (if any) and which format carried it.
    pub fn extract(&self, headers: &HeaderMap) -> (Context, Format) {
        let format = if headers.contains_key("traceparent") {
            Format::W3c
        } else if headers.contains_key("b3") {
            Format::B3Single
        } else if headers.contains_key("x-b3-traceid") {
            Format::B3Multi
        } else if headers.contains_key("uber-trace-id") {
            Format::Jaeger
        } else {
            Format::Dropped
        };
        let extractor = HeaderExtractor(headers);
        let cx = self.baggage.extract_with_context(&Context::new(), &extractor);
        let cx = match self.for_format(format) {
            Some(p) => p.extract_with_context(&cx, &extractor),
            None => cx,
        };
        (cx, format)
    }

    /// Message headers of the in-process queue carry W3C context and baggage.
    pub fn inject_message(&self, cx: &Context, headers: &mut HashMap<String, String>) {
        self.w3c.inject_context(cx, headers);
        self.baggage.inject_context(cx, headers);
    }

    pub fn extract_message(&self, headers: &HashMap<String, String>) -> Context {
        let cx = self.baggage.extract_with_context(&Context::new(), headers);
        self.w3c.extract_with_context(&cx, headers)
    }
}

const UBER_TRACE_ID: &str = "uber-trace-id";

/// Jaeger's native `uber-trace-id` format. The official `opentelemetry-jaeger-propagator` crate
/// is only published for opentelemetry 0.32 (we are on 0.33), so this is a small re-statement
/// of the documented format: `{trace-id}:{span-id}:{parent-span-id (deprecated, 0)}:{flags}`,
/// hex ids (64-bit trace ids are left-padded), flags bit 0x1 = sampled; `:` may arrive URL-encoded.
#[derive(Debug)]
pub struct JaegerPropagator {
    fields: [String; 1],
}

impl Default for JaegerPropagator {
    fn default() -> Self {
        JaegerPropagator {
            fields: [UBER_TRACE_ID.to_string()],
        }
    }
}

impl JaegerPropagator {
    fn parse(value: &str) -> Option<SpanContext> {
        let value = value.replace("%3A", ":").replace("%3a", ":");
        let parts: Vec<&str> = value.trim().split(':').collect();
        let [trace, span, _parent, flags] = parts.as_slice() else {
            return None;
        };
        if trace.is_empty() || trace.len() > 32 || span.is_empty() || span.len() > 16 {
            return None;
        }
        let trace_id = TraceId::from_hex(&format!("{trace:0>32}")).ok()?;
        let span_id = SpanId::from_hex(&format!("{span:0>16}")).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let trace_flags = if flags & 0x1 == 0x1 {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let sc = SpanContext::new(trace_id, span_id, trace_flags, true, TraceState::default());
        sc.is_valid().then_some(sc)
    }
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let flags = if sc.is_sampled() { 1 } else { 0 };
        injector.set(UBER_TRACE_ID, format!("{}:{}:0:{flags:x}", sc.trace_id(), sc.span_id()));
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor.get(UBER_TRACE_ID).and_then(JaegerPropagator::parse) {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    fn remote(trace: &str, span: &str) -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex(trace).unwrap(),
            SpanId::from_hex(span).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn every_format_round_trips_through_headers() {
        let props = Propagators::default();
        let cx = remote("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        for format in [Format::W3c, Format::B3Single, Format::B3Multi, Format::Jaeger] {
            let mut headers = HeaderMap::new();
            props.inject(format, &cx, &mut headers);
            let (back, seen) = props.extract(&headers);
            assert_eq!(seen, format, "headers {headers:?}");
            assert_eq!(
                back.span().span_context().trace_id(),
                cx.span().span_context().trace_id()
            );
            assert_eq!(back.span().span_context().span_id(), cx.span().span_context().span_id());
            assert!(
                back.span().span_context().is_sampled(),
                "{format:?} lost the sampled flag"
            );
        }
        let mut headers = HeaderMap::new();
        props.inject(Format::Dropped, &cx, &mut headers);
        assert!(headers.is_empty());
        assert!(!props.extract(&headers).0.span().span_context().is_valid());
    }

    #[test]
    fn jaeger_accepts_short_ids_and_encoded_colons_and_rejects_garbage() {
        let sc = JaegerPropagator::parse("a3ce929d0e0e4736%3A0ba902b7%3A0%3A1").expect("parsed");
        assert_eq!(sc.trace_id().to_string(), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "000000000ba902b7");
        assert!(sc.is_sampled());
        assert!(JaegerPropagator::parse("0:0:0:1").is_none(), "zero ids are invalid");
        assert!(JaegerPropagator::parse("abc:def").is_none());
        assert!(JaegerPropagator::parse("xyz:0ba902b7:0:1").is_none());
    }
}
