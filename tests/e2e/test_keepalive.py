"""A client may send keepalive pings every 5 s (server.CLIENT_PING_MIN_SECONDS), with no call
in flight, without being told GOAWAY "too_many_pings" (gRPC's default allows one every 5
minutes: the third early ping closed the connection)."""

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from profile_service.transport.server import CLIENT_PING_MIN_SECONDS


def test_a_client_pinging_at_the_documented_rate_keeps_its_connection(
    running_server: object, capfd: pytest.CaptureFixture[str]
) -> None:
    port = running_server.port  # type: ignore[attr-defined]
    options = [
        ("grpc.keepalive_time_ms", CLIENT_PING_MIN_SECONDS * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
    ]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        # Idle for three ping intervals and a bit: gRPC's default policy would have struck
        # out on the third ping.
        time.sleep(3.4 * CLIENT_PING_MIN_SECONDS)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
    _, err = capfd.readouterr()
    assert "too_many_pings" not in err
