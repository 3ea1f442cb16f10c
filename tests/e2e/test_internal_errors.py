"""An exception no handler expected is INTERNAL with no detail, wherever on the path it rises.

The real service's database case is in test_faults.py; here a stand-in servicer raises from the
handler itself (where a bug in auth or in the proto mapping would), on a real server and port.
"""

import logging
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from profile_service._proto.profile.v1 import profile_service_pb2 as pb
from profile_service._proto.profile.v1 import profile_service_pb2_grpc as pb_grpc
from profile_service.access_log import AccessLogInterceptor
from profile_service.internal_errors import InternalErrorInterceptor
from profile_service.unary_interceptor import intercepted
from tests.e2e.conftest import rpc_error

SECRET_TEXT = "limitations=knee surgery"


class _Faulty(pb_grpc.ProfileServiceServicer):
    def Get(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise ValueError(SECRET_TEXT)

    def SoftDelete(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.NOT_FOUND, "profile not found")


@pytest.fixture(scope="module")
def faulty_stub() -> Iterator[pb_grpc.ProfileServiceStub]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    api = intercepted(
        _Faulty(),
        pb.DESCRIPTOR.services_by_name["ProfileService"],
        [AccessLogInterceptor(), InternalErrorInterceptor()],
    )
    pb_grpc.add_ProfileServiceServicer_to_server(api, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.ProfileServiceStub(channel)
    finally:
        server.stop(grace=None)


def test_an_unexpected_exception_is_internal_and_logged_by_class_only(
    faulty_stub: pb_grpc.ProfileServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    error = rpc_error(lambda: faulty_stub.Get(pb.GetRequest(), timeout=5))
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    # The access log still sees the call, with its status and request id.
    assert any(k == "x-request-id" for k, _ in error.trailing_metadata() or ())
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "ValueError" in logged
    assert "INTERNAL" in logged
    assert SECRET_TEXT not in logged


def test_a_deliberate_abort_passes_through_unchanged(
    faulty_stub: pb_grpc.ProfileServiceStub,
) -> None:
    error = rpc_error(lambda: faulty_stub.SoftDelete(pb.SoftDeleteRequest(), timeout=5))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "profile not found")
