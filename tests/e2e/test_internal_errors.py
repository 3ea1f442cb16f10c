"""An exception no handler expected is INTERNAL with no detail, wherever on the path it rises.

The real service's database case is in test_faults.py; here a stand-in servicer raises from the
handler itself (where a bug in auth or in the proto mapping would), on a real server and port.
"""

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from profile_service.transport.access_log import AccessLogInterceptor
from profile_service.transport.internal_errors import InternalErrorInterceptor
from profile_service.transport.unary_interceptor import register
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import rpc_error, wait_for

SECRET_TEXT = "limitations=knee surgery"


class _Faulty(pb_grpc.ProfileServiceServicer):
    async def Get(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        raise ValueError(SECRET_TEXT)

    async def SoftDelete(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.NOT_FOUND, "profile not found")


@pytest.fixture(scope="module")
def faulty_stub() -> Iterator[pb_grpc.ProfileServiceStub]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()  # on the loop that will serve it
        register(
            server,
            _Faulty(),
            pb.DESCRIPTOR.services_by_name["ProfileService"],
            [AccessLogInterceptor(), InternalErrorInterceptor()],
            lambda message_class: message_class.FromString,
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.ProfileServiceStub(channel)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_an_unexpected_exception_is_internal_and_logged_by_class_only(
    faulty_stub: pb_grpc.ProfileServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    error = rpc_error(lambda: faulty_stub.Get(pb.GetRequest(), timeout=5))
    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    # The access log still sees the call, with its status and request id.
    assert any(k == "x-request-id" for k, _ in error.trailing_metadata() or ())

    def logged() -> str:
        return "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)

    # The status leaves as soon as the handler aborts; the access log's line follows it.
    assert wait_for(lambda: "INTERNAL" in logged())
    assert "ValueError" in logged()
    assert SECRET_TEXT not in logged()


def test_a_deliberate_abort_passes_through_unchanged(
    faulty_stub: pb_grpc.ProfileServiceStub,
) -> None:
    error = rpc_error(lambda: faulty_stub.SoftDelete(pb.SoftDeleteRequest(), timeout=5))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "profile not found")
