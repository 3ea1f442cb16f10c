"""An OTLP/gRPC trace receiver that keeps count and throws the spans away: what the bench's
traced server exports to, and what a test reads the exported spans from.

`python -m devtools.otlp_sink --port N` serves until SIGTERM, then prints the counts as one
JSON line. Needs the `tracing` extra (its opentelemetry-proto package).
"""

import argparse
import json
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.trace.v1 import trace_pb2

_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Sink:
    """The receiver's counts; with `keep`, the spans too."""

    keep: bool = False
    requests: int = 0
    spans: int = 0
    kept: list[trace_pb2.Span] = field(default_factory=list)
    services: set[str] = field(default_factory=set)  # the resources' service.name
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def export(self, body: bytes, _context: grpc.ServicerContext) -> bytes:
        """Count (and keep) the spans of one Export call; answer an empty response."""
        request = pb.ExportTraceServiceRequest.FromString(body)
        spans = [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
        with self._lock:
            self.requests += 1
            self.spans += len(spans)
            if self.keep:
                self.kept.extend(spans)
                self.services |= {
                    a.value.string_value
                    for r in request.resource_spans
                    for a in r.resource.attributes
                    if a.key == "service.name"
                }
        return b""  # an empty ExportTraceServiceResponse: all accepted

    def serve(self, port: int = 0) -> tuple[grpc.Server, int]:
        """Start receiving on 127.0.0.1:`port` (0: any); the server and its port."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            self.export
        )
        service, method = _METHOD.rsplit("/", 1)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.lstrip("/"), {method: handler}),)
        )
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        return server, bound


def main() -> None:
    """Serve until SIGTERM or SIGINT; print the counts."""
    parser = argparse.ArgumentParser(prog="python -m devtools.otlp_sink")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sink = Sink()
    server, port = sink.serve(args.port)
    print(f"otlp sink on 127.0.0.1:{port}", flush=True)
    stop.wait()
    server.stop(1).wait()
    print(json.dumps({"export_requests": sink.requests, "spans": sink.spans}), flush=True)


if __name__ == "__main__":
    main()
