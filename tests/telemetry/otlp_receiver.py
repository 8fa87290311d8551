"""A real OTLP/gRPC trace receiver for the telemetry tests.

Serves opentelemetry.proto.collector.trace.v1.TraceService on 127.0.0.1 (a free port), prints
"listening <port>" first, then one JSON object per span received, as it arrives:
{"service": ..., "name": ..., "trace_id": hex, "span_id": hex, "parent_span_id": hex,
 "kind": int, "status": int, "attributes": {...}, "links": [{"trace_id", "span_id"}]}
Runs until its standard input closes (the test ends).
"""

import json
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

lock = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        for resource_spans in request.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    line = json.dumps(
                        {
                            "service": resource.get("service.name"),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "status": span.status.code,
                            "attributes": {a.key: value(a.value) for a in span.attributes},
                            "links": [
                                {"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()}
                                for l in span.links
                            ],
                        }
                    )
                    with lock:
                        print(line, flush=True)
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with lock:
        print(f"listening {port}", flush=True)
    sys.stdin.read()
    server.stop(grace=None)


if __name__ == "__main__":
    main()
