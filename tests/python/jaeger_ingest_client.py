"""Sends one small trace to skein through OpenTelemetry's (deprecated) Python Jaeger exporters.

    python jaeger_ingest_client.py agent HOST PORT        # UDP agent, thrift compact emitBatch
    python jaeger_ingest_client.py collector URL          # HTTP POST /api/traces, thrift binary
    python jaeger_ingest_client.py grpc HOST:PORT         # jaeger.api_v2.CollectorService/PostSpans
    python jaeger_ingest_client.py raw-grpc HOST:PORT HEX # PostSpans with these request bytes (grpcio)

The trace: a SERVER root with typed attributes, a CLIENT child that fails (error status, an
event) and an INTERNAL child with a link to the root. Prints what was sent as one JSON line:
{"trace_id", "root", "db", "work", "service", "export": "SUCCESS"|"FAILURE"} (ids in hex);
raw-grpc prints {"code": "OK"|"INVALID_ARGUMENT"|..., "details"}.
The grpc mode needs PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (the exporter's _pb2 files
predate protobuf 4); the caller sets it.
"""

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


def exporter(mode, args):
    if mode == "agent":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter

        return JaegerExporter(agent_host_name=args[0], agent_port=int(args[1]))
    if mode == "collector":
        from opentelemetry.exporter.jaeger.thrift import JaegerExporter

        return JaegerExporter(collector_endpoint=args[0])
    if mode == "grpc":
        from opentelemetry.exporter.jaeger.proto.grpc import JaegerExporter

        return JaegerExporter(collector_endpoint=args[0], insecure=True)
    raise SystemExit(f"unknown mode {mode!r}")


def raw_grpc(target, hex_bytes):
    import grpc

    with grpc.insecure_channel(target) as channel:
        post = channel.unary_unary(
            "/jaeger.api_v2.CollectorService/PostSpans",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            post(bytes.fromhex(hex_bytes), timeout=30)
            print(json.dumps({"code": "OK", "details": ""}))
        except grpc.RpcError as e:
            print(json.dumps({"code": e.code().name, "details": e.details()}))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "raw-grpc":
        return raw_grpc(*args)
    service = f"py-jaeger-{mode}"
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    # Spans are collected and exported in one batch by hand, so the exit code can report the result.
    finished = []

    class Collect:
        def on_start(self, span, parent_context=None):
            pass

        def on_end(self, span):
            finished.append(span)

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    provider.add_span_processor(Collect())
    tracer = provider.get_tracer("jaeger-ingest-test", "1.2.3")

    with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.method", "GET")
        root.set_attribute("http.status_code", 200)
        root.set_attribute("ratio", 0.25)
        root.set_attribute("cached", True)
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as db:
            db.set_attribute("db.system", "postgresql")
            db.add_event("retry", {"attempt": 2})
            db.set_status(Status(StatusCode.ERROR, "db down"))
        link = Link(root.get_span_context(), {"why": "fan-in"})
        with tracer.start_as_current_span("work", kind=SpanKind.INTERNAL, links=[link]) as work:
            work.set_attribute("items", 3)

    result = exporter(mode, args).export(finished)
    ctx = lambda s: s.get_span_context()  # noqa: E731
    print(
        json.dumps(
            {
                "trace_id": format(ctx(root).trace_id, "032x"),
                "root": format(ctx(root).span_id, "016x"),
                "db": format(ctx(db).span_id, "016x"),
                "work": format(ctx(work).span_id, "016x"),
                "service": service,
                "export": result.name,
            }
        )
    )


if __name__ == "__main__":
    main()
