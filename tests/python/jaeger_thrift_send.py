"""Posts one Jaeger thrift Batch (binary protocol, HTTP POST /api/traces) with ids chosen by the
caller, through the thrift collector client and generated jaeger.thrift types shipped in
opentelemetry-exporter-jaeger-thrift. Used by crates/skein/tests/cross_protocol.rs.

  stdin:  {"url": "http://127.0.0.1:14268/api/traces",
           "service": "inventory",
           "spans": [{"trace_id": HEX32, "span_id": HEX16, "parent_id": HEX16 or "",
                      "name": "...", "start_us": N, "duration_us": N,
                      "tags": {"span.kind": "server", "error": true, ...}}]}
  stdout: {"status": HTTP status code}
"""

import json
import sys

from opentelemetry.exporter.jaeger.thrift.gen.jaeger import ttypes
from opentelemetry.exporter.jaeger.thrift.send import Collector


def signed64(hex_str):
    """Thrift carries ids as signed 64-bit integers."""
    v = int(hex_str, 16)
    return v - (1 << 64) if v >= (1 << 63) else v


def tag(key, value):
    if isinstance(value, bool):
        return ttypes.Tag(key=key, vType=ttypes.TagType.BOOL, vBool=value)
    if isinstance(value, int):
        return ttypes.Tag(key=key, vType=ttypes.TagType.LONG, vLong=value)
    if isinstance(value, float):
        return ttypes.Tag(key=key, vType=ttypes.TagType.DOUBLE, vDouble=value)
    return ttypes.Tag(key=key, vType=ttypes.TagType.STRING, vStr=str(value))


def span(s):
    high, low = signed64(s["trace_id"][:16]), signed64(s["trace_id"][16:])
    parent = signed64(s["parent_id"]) if s.get("parent_id") else 0
    refs = []
    if parent:
        refs.append(
            ttypes.SpanRef(
                refType=ttypes.SpanRefType.CHILD_OF, traceIdLow=low, traceIdHigh=high, spanId=parent
            )
        )
    return ttypes.Span(
        traceIdLow=low,
        traceIdHigh=high,
        spanId=signed64(s["span_id"]),
        parentSpanId=parent,
        operationName=s["name"],
        references=refs,
        flags=1,
        startTime=s["start_us"],
        duration=s["duration_us"],
        tags=[tag(k, v) for k, v in s.get("tags", {}).items()],
        logs=[],
    )


def main():
    req = json.load(sys.stdin)
    batch = ttypes.Batch(
        process=ttypes.Process(serviceName=req["service"], tags=[tag("host.name", "cross-protocol")]),
        spans=[span(s) for s in req["spans"]],
    )
    collector = Collector(thrift_url=req["url"])
    collector.submit(batch)
    json.dump({"status": collector.http_transport.code}, sys.stdout)


if __name__ == "__main__":
    main()
