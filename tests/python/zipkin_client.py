"""Sends one small trace to skein's Zipkin port with a real third-party Zipkin client and prints
what it sent (ids as hex) as one JSON line, for crates/skein/tests/zipkin.rs to read back.

usage: zipkin_client.py MODE HOST PORT
  otel-v2 / otel-v1        opentelemetry-sdk + opentelemetry-exporter-zipkin-json (JSON v2 / v1)
  pyzipkin-v1 / pyzipkin-v2 / pyzipkin-proto
                           py_zipkin with JSON v1, JSON v2 or proto3 encoding
Exits non-zero when the server did not accept a request.
"""

import json
import logging
import sys
import time


def otel(version, host, port):
    from opentelemetry.exporter.zipkin.json import Protocol, ZipkinExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.trace import SpanKind, Status, StatusCode

    protocol, path = (Protocol.V2, "/api/v2/spans") if version == "v2" else (Protocol.V1, "/api/v1/spans")
    results = []

    class CheckedExporter(ZipkinExporter):
        def export(self, spans):
            r = super().export(spans)
            results.append(r)
            return r

    exporter = CheckedExporter(
        version=protocol,
        endpoint=f"http://{host}:{port}{path}",
        local_node_ipv4="10.1.2.3",
        local_node_port=8080,
        # The v1 encoder fails on the default None.
        max_tag_value_length=4096,
    )
    service = f"otel-zipkin-{version}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.instrumentation", "2.0.1")
    with tracer.start_as_current_span(
        "GET /cart",
        kind=SpanKind.SERVER,
        attributes={"http.method": "GET", "http.status_code": 200, "cart.ratio": 0.5, "cart.gift": True},
    ) as root:
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT, attributes={"zip": "007"}) as child:
            child.add_event("retrying", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.shutdown()
    if not results or any(r != SpanExportResult.SUCCESS for r in results):
        sys.exit(f"export failed: {results}")
    ctx, child_ctx = root.get_span_context(), child.get_span_context()
    return {
        "service": service,
        "trace_id": format(ctx.trace_id, "032x"),
        "root_id": format(ctx.span_id, "016x"),
        "child_id": format(child_ctx.span_id, "016x"),
    }


def pyzipkin(encoding_name, host, port):
    from py_zipkin import Encoding, Kind
    from py_zipkin.transport import SimpleHTTPTransport
    from py_zipkin.zipkin import zipkin_span

    encoding = {"v1": Encoding.V1_JSON, "v2": Encoding.V2_JSON, "proto": Encoding.V2_PROTO3}[encoding_name]
    service = f"pyzipkin-{encoding_name}"
    # SimpleHTTPTransport asserts a 202 answer; py_zipkin logs such failures instead of raising,
    # so count good sends and collect logged errors.
    sent, errors = [], []

    class CountingTransport(SimpleHTTPTransport):
        def send(self, payload):
            super().send(payload)
            sent.append(len(payload))

    class Collect(logging.Handler):
        def emit(self, record):
            errors.append(record.getMessage())

    logging.getLogger("py_zipkin").addHandler(Collect(level=logging.ERROR))
    transport = CountingTransport(host, port)
    with zipkin_span(
        service_name=service,
        span_name="handle order",
        transport_handler=transport,
        sample_rate=100.0,
        encoding=encoding,
        binary_annotations={"order.id": "A-17", "http.status_code": "201"},
    ) as root:
        with zipkin_span(
            service_name=service,
            span_name="query inventory",
            kind=Kind.CLIENT,
            binary_annotations={"db.system": "postgresql"},
            annotations={"cache.miss": time.time()},
        ) as child:
            child.add_sa_binary_annotation(port=5432, service_name="inventory-db", host="10.0.0.42")
            child.update_binary_annotations({"error": "timeout"})
    if errors or not sent:
        sys.exit(f"py_zipkin did not deliver the spans: sent={sent} errors={errors}")
    attrs = root.zipkin_attrs
    return {
        "service": service,
        "trace_id": attrs.trace_id,
        "root_id": attrs.span_id,
        "child_id": child.zipkin_attrs.span_id,
    }


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kind, _, version = mode.partition("-")
    out = otel(version, host, port) if kind == "otel" else pyzipkin(version, host, port)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
