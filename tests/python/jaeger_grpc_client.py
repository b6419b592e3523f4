"""A third-party gRPC client for skein's Jaeger query APIs (grpcio + grpcio-tools).

Compiles the official-shaped .proto files in tests/python/proto at run time (OTLP's TracesData
comes from the installed opentelemetry-proto package, fed to protoc as a descriptor set), then
runs the calls of a plan read from stdin and prints one JSON result per call:

  stdin:  {"target": "127.0.0.1:16685",
           "calls": [{"api": "v2", "method": "GetTrace", "request": {...proto3 JSON...},
                      "gzip": false, "target": optional override}]}

  api: "v2" (jaeger.api_v2.QueryService), "v3" (jaeger.api_v3.QueryService) or "collector"
  (jaeger.api_v2.CollectorService, PostSpans: Jaeger's gRPC span ingest).
  A call {"raw_path": "/pkg.Service/Method", "raw_hex": "..."} sends those bytes as a unary
  request instead (for malformed requests and unknown methods); responses are then hex.
  stdout: [{"ok": true, "responses": [{...}, ...], "metadata": {initial metadata}}
           | {"ok": false, "code": "NOT_FOUND", "details": "..."}]

Requests and responses use protobuf's JSON mapping with the .proto field names (bytes fields
as base64, 64-bit integers as strings).
"""

import importlib
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2, json_format
from grpc_tools import protoc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "proto")
PROTOS = [
    "jaeger/api_v2/model.proto",
    "jaeger/api_v2/query.proto",
    "jaeger/api_v2/collector.proto",
    "jaeger/api_v3/query_service.proto",
]


def otel_descriptor_set(path):
    """The installed OTLP .proto definitions, as a FileDescriptorSet protoc can import from."""
    fds = descriptor_pb2.FileDescriptorSet()
    for module in (common_pb2, resource_pb2, trace_pb2):
        module.DESCRIPTOR.CopyToProto(fds.file.add())
    with open(path, "wb") as f:
        f.write(fds.SerializeToString())


def compile_protos(out):
    deps = os.path.join(out, "otel.pb")
    otel_descriptor_set(deps)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"--descriptor_set_in={deps}",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {args}")
    sys.path.insert(0, out)


def load_apis():
    v2 = importlib.import_module("jaeger.api_v2.query_pb2")
    v2_grpc = importlib.import_module("jaeger.api_v2.query_pb2_grpc")
    v3 = importlib.import_module("jaeger.api_v3.query_service_pb2")
    v3_grpc = importlib.import_module("jaeger.api_v3.query_service_pb2_grpc")
    collector = importlib.import_module("jaeger.api_v2.collector_pb2")
    collector_grpc = importlib.import_module("jaeger.api_v2.collector_pb2_grpc")
    return {
        "v2": (v2, v2_grpc, "QueryService"),
        "v3": (v3, v3_grpc, "QueryService"),
        "collector": (collector, collector_grpc, "CollectorService"),
    }


def run_raw(channel, call):
    rpc = channel.unary_unary(call["raw_path"], request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        response = rpc(bytes.fromhex(call["raw_hex"]), timeout=60)
    except grpc.RpcError as e:
        return {"ok": False, "code": e.code().name, "details": e.details()}
    return {"ok": True, "responses": [response.hex()]}


def run_call(channel, apis, call):
    if "raw_path" in call:
        return run_raw(channel, call)
    pb2, pb2_grpc, service_name = apis[call["api"]]
    service = pb2.DESCRIPTOR.services_by_name[service_name]
    method = service.methods_by_name[call["method"]]
    request_class = getattr(pb2, method.input_type.name)
    request = json_format.ParseDict(call.get("request", {}), request_class())
    stub = getattr(pb2_grpc, f"{service_name}Stub")(channel)
    compression = grpc.Compression.Gzip if call.get("gzip") else grpc.Compression.NoCompression
    rpc = getattr(stub, call["method"])
    metadata = {}
    try:
        if method.server_streaming:
            call = rpc(request, timeout=60, compression=compression)
            responses = list(call)
            metadata = {k: v for k, v in call.initial_metadata() if isinstance(v, str)}
        else:
            response, call = rpc.with_call(request, timeout=60, compression=compression)
            responses = [response]
            metadata = {k: v for k, v in call.initial_metadata() if isinstance(v, str)}
    except grpc.RpcError as e:
        return {"ok": False, "code": e.code().name, "details": e.details()}
    return {
        "ok": True,
        "responses": [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in responses],
        "metadata": metadata,
    }


def main():
    plan = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as out:
        compile_protos(out)
        apis = load_apis()
        results = []
        for call in plan["calls"]:
            with grpc.insecure_channel(call.get("target", plan["target"])) as channel:
                results.append(run_call(channel, apis, call))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
