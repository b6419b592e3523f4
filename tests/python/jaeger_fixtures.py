"""Writes the Jaeger golden fixtures in crates/skein-model/tests/fixtures/jaeger/ with encoders
that are not ours: Apache Thrift's Python library (binary and compact protocols) driving the
jaeger.thrift/agent.thrift classes generated for opentelemetry-exporter-jaeger-thrift, and
Google's protobuf runtime with the api_v2 model/collector classes of
opentelemetry-exporter-jaeger-proto-grpc. Re-run after changing the trace below:

    PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python .test-deps/venv/bin/python tests/python/jaeger_fixtures.py

The Rust test crates/skein-model/tests/jaeger_golden.rs holds the expected model for each file.
"""

import os
import struct

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry.exporter.jaeger.proto.grpc.gen import collector_pb2, model_pb2
from opentelemetry.exporter.jaeger.thrift.gen.agent import Agent
from opentelemetry.exporter.jaeger.thrift.gen.jaeger import ttypes as j
from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.transport import TTransport

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../crates/skein-model/tests/fixtures/jaeger")

TRACE_HIGH = 0x0102030405060708
TRACE_LOW = -2  # 0xfffffffffffffffe: thrift ids are signed
SHORT_TRACE_LOW = 0x77
START = 1_700_000_000_123_456  # µs


def i64_bytes(v):
    return struct.pack(">q", v)


# ---- the trace, as thrift ----------------------------------------------------------------

def thrift_batch():
    process = j.Process(
        serviceName="fixture-svc",
        tags=[
            j.Tag(key="host.name", vType=j.TagType.STRING, vStr="h1"),
            j.Tag(key="cpus", vType=j.TagType.LONG, vLong=8),
        ],
    )
    root = j.Span(
        traceIdLow=TRACE_LOW,
        traceIdHigh=TRACE_HIGH,
        spanId=0x0A,
        parentSpanId=0,
        operationName="root-op",
        flags=1,
        startTime=START,
        duration=2500,
        tags=[
            j.Tag(key="span.kind", vType=j.TagType.STRING, vStr="server"),
            j.Tag(key="s", vType=j.TagType.STRING, vStr="text ✓"),
            j.Tag(key="d", vType=j.TagType.DOUBLE, vDouble=1.5),
            j.Tag(key="b", vType=j.TagType.BOOL, vBool=True),
            j.Tag(key="l", vType=j.TagType.LONG, vLong=-42),
            j.Tag(key="bin", vType=j.TagType.BINARY, vBinary=b"\x00\xff"),
            j.Tag(key="otel.status_code", vType=j.TagType.STRING, vStr="OK"),
        ],
        logs=[
            j.Log(
                timestamp=START + 100,
                fields=[
                    j.Tag(key="event", vType=j.TagType.STRING, vStr="started"),
                    j.Tag(key="k", vType=j.TagType.STRING, vStr="v"),
                ],
            )
        ],
    )
    child = j.Span(
        traceIdLow=TRACE_LOW,
        traceIdHigh=TRACE_HIGH,
        spanId=0x0B,
        parentSpanId=0x0A,  # the legacy field alone makes the parent
        operationName="child-op",
        references=[
            j.SpanRef(refType=j.SpanRefType.FOLLOWS_FROM, traceIdLow=0x99, traceIdHigh=0, spanId=0x0F),
        ],
        flags=2,
        startTime=START + 500,
        duration=1000,
        tags=[
            j.Tag(key="error", vType=j.TagType.BOOL, vBool=True),
            j.Tag(key="otel.status_description", vType=j.TagType.STRING, vStr="boom"),
            j.Tag(key="otel.scope.name", vType=j.TagType.STRING, vStr="lib"),
            j.Tag(key="otel.scope.version", vType=j.TagType.STRING, vStr="2.0"),
            j.Tag(key="w3c.tracestate", vType=j.TagType.STRING, vStr="k=v"),
            j.Tag(key="span.kind", vType=j.TagType.STRING, vStr="client"),
        ],
    )
    short = j.Span(
        traceIdLow=SHORT_TRACE_LOW,
        traceIdHigh=0,
        spanId=0x0C,
        parentSpanId=0,
        operationName="short-id",
        references=[
            # A CHILD_OF into another trace is a link; the one into this trace is the parent.
            j.SpanRef(refType=j.SpanRefType.CHILD_OF, traceIdLow=0x55, traceIdHigh=0, spanId=0x0D),
            j.SpanRef(refType=j.SpanRefType.CHILD_OF, traceIdLow=SHORT_TRACE_LOW, traceIdHigh=0, spanId=0x0E),
        ],
        flags=0,
        startTime=START,
        duration=0,
        tags=[j.Tag(key="span.kind", vType=j.TagType.STRING, vStr="producer")],
    )
    return j.Batch(process=process, spans=[root, child, short])


def thrift_bytes(write, protocol):
    buf = TTransport.TMemoryBuffer()
    write(protocol(buf))
    return buf.getvalue()


def emit_batch_bytes(protocol):
    buf = TTransport.TMemoryBuffer()
    client = Agent.Client(protocol(buf))
    client._seqid = 0
    client.emitBatch(thrift_batch())
    return buf.getvalue()


# ---- the same trace, as api_v2 protobuf ----------------------------------------------------

def ts(micros):
    t = Timestamp()
    t.FromMicroseconds(micros)
    return t


def dur(micros):
    d = Duration()
    d.FromMicroseconds(micros)
    return d


def kv(key, **v):
    return model_pb2.KeyValue(key=key, **v)


def proto_request():
    trace_id = i64_bytes(TRACE_HIGH) + i64_bytes(TRACE_LOW)
    short_trace = i64_bytes(SHORT_TRACE_LOW)  # 8 bytes: a 64-bit id
    process = model_pb2.Process(
        service_name="fixture-svc",
        tags=[kv("host.name", v_str="h1"), kv("cpus", v_type=model_pb2.INT64, v_int64=8)],
    )
    root = model_pb2.Span(
        trace_id=trace_id,
        span_id=i64_bytes(0x0A),
        operation_name="root-op",
        flags=1,
        start_time=ts(START),
        duration=dur(2500),
        tags=[
            kv("span.kind", v_str="server"),
            kv("s", v_str="text ✓"),
            kv("d", v_type=model_pb2.FLOAT64, v_float64=1.5),
            kv("b", v_type=model_pb2.BOOL, v_bool=True),
            kv("l", v_type=model_pb2.INT64, v_int64=-42),
            kv("bin", v_type=model_pb2.BINARY, v_binary=b"\x00\xff"),
            kv("otel.status_code", v_str="OK"),
        ],
        logs=[model_pb2.Log(timestamp=ts(START + 100), fields=[kv("event", v_str="started"), kv("k", v_str="v")])],
    )
    child = model_pb2.Span(
        trace_id=trace_id,
        span_id=i64_bytes(0x0B),
        operation_name="child-op",
        references=[
            model_pb2.SpanRef(trace_id=trace_id, span_id=i64_bytes(0x0A), ref_type=model_pb2.CHILD_OF),
            model_pb2.SpanRef(
                trace_id=bytes(8) + i64_bytes(0x99), span_id=i64_bytes(0x0F), ref_type=model_pb2.FOLLOWS_FROM
            ),
        ],
        flags=2,
        start_time=ts(START + 500),
        duration=dur(1000),
        tags=[
            kv("error", v_type=model_pb2.BOOL, v_bool=True),
            kv("otel.status_description", v_str="boom"),
            kv("otel.scope.name", v_str="lib"),
            kv("otel.scope.version", v_str="2.0"),
            kv("w3c.tracestate", v_str="k=v"),
            kv("span.kind", v_str="client"),
        ],
    )
    short = model_pb2.Span(
        trace_id=short_trace,
        span_id=i64_bytes(0x0C),
        operation_name="short-id",
        references=[
            model_pb2.SpanRef(trace_id=i64_bytes(0x55), span_id=i64_bytes(0x0D), ref_type=model_pb2.CHILD_OF),
            model_pb2.SpanRef(trace_id=short_trace, span_id=i64_bytes(0x0E), ref_type=model_pb2.CHILD_OF),
        ],
        start_time=ts(START),
        duration=dur(0),
        tags=[kv("span.kind", v_str="producer")],
    )
    batch = model_pb2.Batch(spans=[root, child, short], process=process)
    return collector_pb2.PostSpansRequest(batch=batch).SerializeToString()


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {
        "batch.binary.thrift": thrift_bytes(thrift_batch().write, TBinaryProtocol.TBinaryProtocol),
        "batch.compact.thrift": thrift_bytes(thrift_batch().write, TCompactProtocol.TCompactProtocol),
        "emit_batch.binary.thrift": emit_batch_bytes(TBinaryProtocol.TBinaryProtocol),
        "emit_batch.compact.thrift": emit_batch_bytes(TCompactProtocol.TCompactProtocol),
        "post_spans.pb": proto_request(),
    }
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
