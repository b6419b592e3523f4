"""A third-party gRPC client for jaeger.api_v2.SamplingManager (grpcio + grpcio-tools).

Compiles tests/python/proto/jaeger/api_v2/sampling.proto at run time and asks for each
service's strategy:

  python jaeger_sampling_client.py HOST:PORT SERVICE [SERVICE ...]

Prints a JSON list, one entry per service: {"ok": true, "response": {...proto3 JSON, defaults
included...}} or {"ok": false, "code": "INVALID_ARGUMENT", "details": "..."}.
"""

import importlib
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

PROTO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proto")


def compile_sampling_proto(out):
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "jaeger/api_v2/sampling.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {args}")
    sys.path.insert(0, out)


def main():
    target, services = sys.argv[1], sys.argv[2:]
    with tempfile.TemporaryDirectory() as out:
        compile_sampling_proto(out)
        pb2 = importlib.import_module("jaeger.api_v2.sampling_pb2")
        pb2_grpc = importlib.import_module("jaeger.api_v2.sampling_pb2_grpc")
        results = []
        with grpc.insecure_channel(target) as channel:
            stub = pb2_grpc.SamplingManagerStub(channel)
            for service in services:
                try:
                    r = stub.GetSamplingStrategy(pb2.SamplingStrategyParameters(serviceName=service), timeout=60)
                except grpc.RpcError as e:
                    results.append({"ok": False, "code": e.code().name, "details": e.details()})
                    continue
                response = json_format.MessageToDict(r, always_print_fields_with_no_presence=True)
                results.append({"ok": True, "response": response})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
